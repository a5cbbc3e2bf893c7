#!/usr/bin/env python
"""Train the siamese CNN with Caffe's SGD solver, or evaluate a deploy model on a validation set.

Thin entry point of the design card; the command is :mod:`fusionlab.commands.train` (``python -m fusionlab train``).
"""
import sys

from fusionlab.commands.train import main

if __name__ == "__main__":
    sys.exit(main())
