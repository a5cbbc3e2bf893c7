"""``python -m pyfusion``: the ``pyfusion`` command (:mod:`pyfusion.cli`)."""
import sys

from pyfusion.cli import main

sys.exit(main())
