#!/usr/bin/env python
"""Fuse two or more multi-focus images: ``pyfusion fuse`` (pyfusion.cli) under its design-card name.

    python tools/fuse.py A B [C ...] -o fused.png [--method NAME] [options]     (options: --help)
"""
import sys

from pyfusion.cli import main

if __name__ == "__main__":
    sys.exit(main(["fuse", *sys.argv[1:]]))
