"""Support code for the tests, one module per topic; no tests live here.

channel      TUF channels, keys and builds to publish (``channel``, ``make_keys``)
ci           the CI workflows and scripts run as steps on the host
dockerd      a private containerd + dockerd for the session
faultproxy   a reverse proxy that breaks requests on purpose
hostile, hostile_strategies
             hostile inputs (Hypothesis strategies) and the sandbox they run in
netns        network namespaces for qemu guests
node         a node's root on the host: slots, updater, channel and lock servers
node_console what a node's console says (services, clock, host key)
qemu_guest   a qemu guest booted with its boot chain, console read with a deadline
registry     real OCI registries (``registry`` session fixture)
sandbox      read-only namespaces to run untrusted builds in
sigstore     the real Sigstore bundle and the PyPI wheel it signs
ssh          SSH keys of each type, and OpenSSH's client logging in with one
stall        servers that stall or trickle, to test deadlines
"""
