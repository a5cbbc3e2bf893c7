#!/usr/bin/env python
"""Compute the survey's eight fusion metrics for fused images and compare with the published values.

Thin entry point of the design card; the command is :mod:`fusionlab.commands.evaluate` (``python -m fusionlab evaluate``).
"""
import sys

from fusionlab.commands.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
