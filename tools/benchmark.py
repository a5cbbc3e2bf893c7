#!/usr/bin/env python
"""Benchmark the Caffe twin and the fast backends (winograd, ONNX Runtime) side by side on the same inputs.

Thin entry point of the design card; the command is :mod:`fusionlab.commands.benchmark` (``python -m fusionlab benchmark``).
"""
import sys

from fusionlab.commands.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
