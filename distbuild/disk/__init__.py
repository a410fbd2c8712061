"""Disk outputs: root images with dm-verity, initramfs, GPT disk images (chains: distbuild.bootchain)."""
