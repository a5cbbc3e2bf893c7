"""Fusion methods: one module each; ``pyfusion.fuse(images, method=NAME)`` dispatches to them."""
