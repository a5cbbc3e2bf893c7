#!/usr/bin/env python
"""Measure the paper's ablation nets and write their tables and curves into docs/ablations.md.

Thin entry point of the design card; the command is :mod:`fusionlab.commands.ablations` (``python -m fusionlab ablations``).
"""
import sys

from fusionlab.commands.ablations import main

if __name__ == "__main__":
    sys.exit(main())
