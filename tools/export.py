#!/usr/bin/env python
"""Net surgery: export a trained snapshot as the deploy twin's caffemodel (+ side-car JSON), and/or the fast ONNX

Thin entry point of the design card; the command is :mod:`fusionlab.commands.export` (``python -m fusionlab export``).
"""
import sys

from fusionlab.commands.export import main

if __name__ == "__main__":
    sys.exit(main())
