"""The on-node updater ``distbuild-update`` (imports no build code; DESIGN.md §6)."""
