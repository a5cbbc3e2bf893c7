#!/usr/bin/env python
"""Reproduce every published number of the project from the shipped models, with figures (`make reproduce`).

    python tools/reproduce.py --data ../shared/data/mfif --out runs/reproduce \\
        --survey docs/results_survey.md --doc docs/reproduction.md --figures docs/figures

Fuses the survey's 30 pairs with every method of the project (pyfusion.fusion.METHODS, or --methods) into
--out/METHOD/ (afresh, unless --resume), then writes (fusionlab.reproduce.make_report):

--survey FILE   the survey's eight metrics per set (grayscale, colour, all): its 18 published rows, ours, a check
                row (our metric code on the authors' CNN images), best per column in bold, our ranks; and PSNR of
                our images against the published ones of the same method. The whole file is generated.
--doc FILE      our cnn images against the authors' (PSNR, decision agreement), with the pair figures: into an
                existing FILE only between the marker lines <!-- reproduce:table:start --> and
                <!-- reproduce:table:end --> (the rest is kept; a FILE without them is refused, exit status 2), or
                as a new FILE holding the markers and the block.
--figures DIR   PNG figures: pair_NAME.png (sources, ours, the authors', our decision map, the difference) for
                the median pair of each set and the worst-agreeing one; metrics_SET.png (our methods against the
                published range of each metric).

All numbers also go to --out/results.json. Writes are atomic; the same inputs give the same files.
"""
import argparse
import shlex
import sys
import time
from pathlib import Path

from fusionlab.reproduce import make_report

from fusionlab import ROOT
QUIET = ("--resume", "--quiet")  # options that do not change the results: left out of the command the docs quote


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data/mfif"),
                    help="survey data folder (sources/, results/, metrics.json)")
    ap.add_argument("--out", default="runs/reproduce", help="folder for our fused images and results.json")
    ap.add_argument("--survey", help="markdown file for the metric tables (generated whole)")
    ap.add_argument("--doc", help="markdown file for ours vs the authors' images: replaced between its marker lines, "
                    "or created; an existing file without them is refused")
    ap.add_argument("--figures", help="folder for the PNG figures")
    ap.add_argument("--methods", help="comma-separated methods (default: every method of pyfusion.fusion.METHODS)")
    ap.add_argument("--pairs", help="comma-separated survey pairs, e.g. g_10,c_01 (default: all 30)")
    ap.add_argument("--limit", type=int, default=0, help="only the first N pairs (0 = all; survey order: colour first)")
    ap.add_argument("--model", help="cnn only: registered model name or deploy weights file (default: the shipped one)")
    ap.add_argument("--backend", help="inference backend of the CNN methods: winograd, onnx or caffe (default: "
                    "pyfusion.backends.default_backend)")
    ap.add_argument("--resume", action="store_true", help="keep fused images already in --out (only when they come "
                    "from the same models and options)")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args(argv)
    options = {"backend": args.backend} if args.backend else {}
    if args.model:
        options["cnn"] = {"model": args.model}
    t0 = time.perf_counter()
    try:
        make_report(args.data, args.out, methods=args.methods.split(",") if args.methods else None,
                    names=args.pairs.split(",") if args.pairs else None, limit=args.limit,
                    survey_doc=args.survey, reproduction_doc=args.doc, figures=args.figures,
                    force=not args.resume, progress=not args.quiet, options=options,
                    command=shlex.join(["python", "tools/reproduce.py", *[a for a in argv if a not in QUIET]]),
                    log=lambda s: print(f"reproduce: {s}"))
    except ValueError as e:
        print(f"reproduce: error: {e}", file=sys.stderr)
        return 2
    print(f"reproduce: done in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
