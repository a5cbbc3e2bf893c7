#!/usr/bin/env python
"""Write prototxt/NAME_train_val.prototxt and NAME_deploy.prototxt for every registered model (or those named).

    python tools/make_prototxt.py [NAME ...] [--check]

The files are made by pyfusion.netspec from pyfusion.models.MODELS; --check only reports stale files (exit 1).
"""
import argparse
import sys

from fusionlab import ROOT
from pyfusion import models

from pyfusion import netspec
from pyfusion.io import write_atomic


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", help=f"models (default: all of {', '.join(models.MODELS)})")
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 if a file is missing or stale")
    args = ap.parse_args(argv)
    try:
        chosen = [models.get(n) for n in args.names] or list(models.MODELS.values())
    except models.ModelError as e:
        print(f"make_prototxt: error: {e}", file=sys.stderr)
        return 2
    stale = []
    for m in chosen:
        for path, text in ((m.train_val, netspec.train_val(m)), (m.deploy, netspec.deploy(m))):
            if path.is_file() and path.read_text() == text:
                continue
            stale.append(path)
            if not args.check:
                write_atomic(path, text)
                print(f"make_prototxt: wrote {path.relative_to(ROOT)}")
    if args.check and stale:
        print("make_prototxt: stale: " + ", ".join(str(p.relative_to(ROOT)) for p in stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
