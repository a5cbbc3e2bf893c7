#!/usr/bin/env python
"""Demo (``make demo``): fuse a synthetic multi-focus pair made from a photo shipped with scikit-image.

Thin entry point of the design card; the command is :mod:`fusionlab.commands.demo` (``python -m fusionlab demo``).
"""
import sys

from fusionlab.commands.demo import main

if __name__ == "__main__":
    sys.exit(main())
