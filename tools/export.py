#!/usr/bin/env python
"""Net surgery: export a trained snapshot as the deploy twin's caffemodel (+ side-car JSON).

    python tools/export.py --run runs/cpu --out models/cnn_fusion.caffemodel
    python tools/export.py --snapshot runs/cpu/snap_iter_10000.caffemodel --out models/x.caffemodel
"""
import argparse
import json
import re
import sys
from pathlib import Path

from pyfusion.export import export_deploy


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="run folder: its latest snapshot, config and log go into the side-car")
    src.add_argument("--snapshot", help="a train_val caffemodel")
    ap.add_argument("--out", required=True, help="deploy caffemodel to write")
    args = ap.parse_args(argv)
    print(f"export: {vars(args)}")
    extra = {}
    snap = args.snapshot
    if args.run:
        run = Path(args.run)
        snaps = sorted(run.glob("snap_iter_*.caffemodel"), key=lambda p: int(re.findall(r"_(\d+)\.", p.name)[0]))
        if not snaps:
            print(f"export: error: no snapshot in {run}", file=sys.stderr)
            return 2
        snap = snaps[-1]
        state = json.loads((run / "run.json").read_text())
        extra["training"] = state
        log = (run / "log.csv").read_text().splitlines()
        if len(log) > 1:
            last = dict(zip(log[0].split(","), log[-1].split(",")))
            extra["last_validation"] = last
    elif not Path(snap).is_file():
        print(f"export: error: snapshot not found: {snap}", file=sys.stderr)
        return 2
    meta = export_deploy(snap, args.out, extra=extra)
    print(f"export: {args.out} sha256 {meta['sha256']} from {snap}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
