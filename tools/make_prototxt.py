#!/usr/bin/env python
"""Write prototxt/NAME_train_val.prototxt and NAME_deploy.prototxt for every registered model (or those named).

Thin entry point of the design card; the command is :mod:`fusionlab.commands.make_prototxt` (``python -m fusionlab make-prototxt``).
"""
import sys

from fusionlab.commands.make_prototxt import main

if __name__ == "__main__":
    sys.exit(main())
