#!/usr/bin/env python
"""Write the clear/blurred patch-pair training or validation set (HDF5 shards + list.txt + manifest.json).

Thin entry point of the design card; the command is :mod:`fusionlab.commands.make_dataset` (``python -m fusionlab make-dataset``).
"""
import sys

from fusionlab.commands.make_dataset import main

if __name__ == "__main__":
    sys.exit(main())
