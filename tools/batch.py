#!/usr/bin/env python
"""Fuse every focus stack under IN_DIR into OUT_DIR on Dask: ``pyfusion batch`` (pyfusion.cli).

    python tools/batch.py IN_DIR OUT_DIR [--pattern REGEX] [--method NAME] [options]     (options: --help)
"""
import sys

from pyfusion.cli import main

if __name__ == "__main__":
    sys.exit(main(["batch", *sys.argv[1:]]))
