"""The pure core the build and the node share (DESIGN.md §6).

Errors, the architecture table, the grammar of names, atomic file writes, the
one door for processes, console output, the release index format and boot
control. Modules here import only the standard library and each other: the
node's image carries this package as it is (tests/unit/test_import_graph.py
checks the rule; rootfs/install_updater.py derives what it copies from it).
"""
