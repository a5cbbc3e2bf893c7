#!/usr/bin/env python
"""Fuse every focus stack under IN_DIR into OUT_DIR on Dask (pyfusion.batch).

    python tools/batch.py IN_DIR OUT_DIR [--pattern REGEX] [--method cnn|dwt|wavelet-cnn] [--align]
                          [--motion affine|homography|euclidean|translation] [--align-interp cubic|linear] [--skip-unaligned] [--model NAME|PATH] [--backend NAME]
                          [--threads N] [--workers N] [--max-memory GB] [--scheduler ADDRESS] [--ext .png]
                          [--force] [--no-progress]

One stack per sub-folder of IN_DIR (frames in file name order), or with --pattern the image files of IN_DIR
grouped by the regular expression's first group (e.g. --pattern '^(.+)_\\d+\\.jpg$'). Each stack is fused to
OUT_DIR/<name>.png; OUT_DIR/summary.json and summary.csv list every stack (frames, size, seconds, status, error).
A rerun skips the stacks already fused (output present, summary ok). By default a LocalCluster on 127.0.0.1 with
workers x threads <= cores; --scheduler ADDRESS uses a running cluster instead. Exit status: 0 all fused, 1 some
stack failed (the batch still goes on), 2 usage error (one line ``batch: error: ...``).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


from pyfusion.align import INTERPOLATION, INTERPOLATIONS, MOTIONS  # noqa: E402
from pyfusion.backends import BACKENDS  # noqa: E402
from pyfusion.batch import BatchError, run_batch  # noqa: E402
from pyfusion.fusion import METHODS, method_options  # noqa: E402

PROG = "batch"


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of usage + message
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def parse_args(argv=None):
    p = _Parser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("in_dir", type=Path, metavar="IN_DIR", help="folder of stacks (one sub-folder per stack)")
    p.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="fused images and summary.json/.csv")
    p.add_argument("--pattern", metavar="REGEX", help="group the files of IN_DIR by this regex's first group")
    p.add_argument("--method", default="cnn", choices=sorted(METHODS), help="fusion method (default cnn)")
    p.add_argument("--align", action="store_true", help="register the frames to the middle one first (ECC)")
    p.add_argument("--motion", choices=sorted(MOTIONS), default="affine",
                   help="alignment motion model (default affine; translation is more precise for pure shifts)")
    p.add_argument("--align-interp", choices=tuple(INTERPOLATIONS), default=INTERPOLATION,
                   help=f"resampling of the aligned frames (default {INTERPOLATION})")
    p.add_argument("--skip-unaligned", action="store_true",
                   help="leave out frames that fail to align (default: the stack fails)")
    p.add_argument("--model", help="registered model name or deploy weights file")
    p.add_argument("--backend", help="inference backend (winograd, onnx, caffe; default the fastest available)")
    p.add_argument("--threads", type=int, metavar="N", help="threads per fusion (default 1; workers x threads <= cores)")
    p.add_argument("--workers", type=int, metavar="N", help="local worker processes (default cores // threads)")
    p.add_argument("--max-memory", type=float, metavar="GB", help="memory for one score map in GB")
    p.add_argument("--scheduler", metavar="ADDRESS", help="use a running Dask scheduler (e.g. tcp://127.0.0.1:8786)")
    p.add_argument("--ext", default=".png", help="output format (default .png)")
    p.add_argument("--force", action="store_true", help="fuse every stack again, finished or not")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        p.error(f"--threads must be >= 1, got {args.threads}")
    if args.workers is not None and args.workers < 1:
        p.error(f"--workers must be >= 1, got {args.workers}")
    if args.max_memory is not None and not args.max_memory > 0:
        p.error(f"--max-memory must be > 0, got {args.max_memory}")
    if args.backend is not None and args.backend not in BACKENDS:
        p.error(f"--backend {args.backend!r}: choose from {', '.join(BACKENDS)}")
    return args


def options(args) -> dict:
    gb = None if args.max_memory is None else int(args.max_memory * 2**30)
    try:
        return method_options(args.method, [("--model", "model", args.model), ("--backend", "backend", args.backend),
                                            ("--max-memory", "max_memory", gb)])
    except ValueError as e:
        raise BatchError(str(e)) from None


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        align = {"motion": args.motion, "interpolation": args.align_interp,
                 "on_failure": "skip" if args.skip_unaligned else "stop"} if args.align else False
        records = run_batch(args.in_dir, args.out_dir, method=args.method, align=align, options=options(args),
                            pattern=args.pattern, scheduler=args.scheduler, workers=args.workers, threads=args.threads,
                            ext=args.ext, force=args.force, progress=not args.no_progress and sys.stderr.isatty())
    except BatchError as e:
        print(f"{PROG}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted (rerun to resume)", file=sys.stderr)
        return 130
    failed = [r for r in records if r["status"] != "ok"]
    done = sum(1 for r in records if r["status"] == "ok" and not r.get("resumed"))
    resumed = sum(1 for r in records if r.get("resumed"))
    print(f"{PROG}: {done} fused, {resumed} already done, {len(failed)} failed; summary in "
          f"{args.out_dir / 'summary.json'}", file=sys.stderr)
    for r in failed:
        print(f"{PROG}: failed {r['name']}: {r['error']}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
