"""Software bills of materials: SPDX documents of what an image contains."""
