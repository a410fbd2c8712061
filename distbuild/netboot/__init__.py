"""Network boot: the installer's boot files (UKI or U-Boot script), dnsmasq and HTTP boot.

- :mod:`.pe`: appending sections to a PE32+ EFI stub (stdlib only).
- :mod:`.uki`: the installer UKI and the kernel command line it carries.
- :mod:`.output`: the ``netboot`` build output (``<arch>/netboot/<board>/…``).
- :mod:`.site`: a TFTP/HTTP root, the dnsmasq proxy-DHCP configuration and
  the UEFI HTTP-boot URIs for one network (``distbuild netboot``).
"""
