#!/usr/bin/env python
"""The survey's eight metrics for the project's fusion methods on the survey's 30 pairs: the survey's 18 published
rows, ours and a check row (our metric code on the authors' CNN images), per set (grayscale, colour, all), and
PSNR of our images against the published ones of the same method.

    python -m fusionlab results --methods cnn,dwt,wavelet-cnn --out docs/results_survey.md

The same tables as `make reproduce` (tools/reproduce.py, fusionlab.reproduce.make_report), without the comparison
with the authors' images; --figures DIR adds the metric charts. Our fused images go to runs/results/METHOD/ and
are kept between runs (an interrupted run resumes; --force fuses again: do so after a model changes).
"""
import argparse
import shlex
import sys
from pathlib import Path

from fusionlab.reproduce import make_report

from fusionlab import ROOT


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data/mfif"), help="survey data folder")
    ap.add_argument("--methods", help="comma-separated methods (default: every method of pyfusion.fusion.METHODS)")
    ap.add_argument("--runs", default="runs/results", help="folder of our fused images")
    ap.add_argument("--out", help="markdown file to write (generated whole)")
    ap.add_argument("--figures", help="folder for the metric charts (PNG)")
    ap.add_argument("--force", action="store_true", help="fuse again even where a result exists")
    ap.add_argument("--limit", type=int, default=0, help="only the first N pairs (0 = all; survey order: colour first)")
    args = ap.parse_args(argv)
    try:
        make_report(args.data, args.runs, methods=args.methods.split(",") if args.methods else None,
                    limit=args.limit, survey_doc=args.out, figures=args.figures, force=args.force,
                    command=shlex.join(["python", "python -m fusionlab results", *[a for a in argv if a != "--force"]]),
                    log=lambda s: print(f"results: {s}"))
    except ValueError as e:
        print(f"results: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
