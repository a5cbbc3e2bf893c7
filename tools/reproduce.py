#!/usr/bin/env python
"""Reproduce every published number of the project from the shipped models, with figures (`make reproduce`).

Thin entry point of the design card; the command is :mod:`fusionlab.commands.reproduce` (``python -m fusionlab reproduce``).
"""
import sys

from fusionlab.commands.reproduce import main

if __name__ == "__main__":
    sys.exit(main())
