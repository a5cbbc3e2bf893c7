#!/usr/bin/env python
"""Measure the paper's ablation nets and write their tables and curves into docs/ablations.md.

    make ablations                                   # train and export every variant, then this tool
    python tools/ablations.py --doc docs/ablations.md [--names cnn cnn_blur3 ...]

Each variant's exported model (models/ablation/NAME.caffemodel and .onnx, made by `make ablation-NAME`) is
measured on: its own and the baseline's 10,000 validation pairs, the survey's 8 metrics on its 30 pairs, and PSNR /
SSIM on the synthetic ground-truth pairs of python -m fusionlab groundtruth. Measurements are kept in
runs/ablation/results.json (a rerun measures only what changed). The tables go between the markers
<!-- ablations:start --> and <!-- ablations:end --> of --doc; the curves to docs/figures/ablation_curves.png.
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np

from pyfusion import models

from fusionlab import ablations
from fusionlab.docblocks import has_block, replace_block
from pyfusion.metrics import LOWER_IS_BETTER, METRICS

from fusionlab import ROOT
BLOCK = "ablations"  # the generated part of --doc: between <!-- ablations:start --> and <!-- ablations:end -->


def _bold_best(values: dict, lower: bool, fmt: str) -> dict:
    best = (min if lower else max)(values.values())
    return {k: (f"**{v:{fmt}}**" if v == best else f"{v:{fmt}}") for k, v in values.items()}


def tables(results: dict, runs: dict) -> str:
    names = list(results)
    lines = ["### Training and validation", "",
             "| variant | what differs | iterations | examples seen | train wall s | val acc (own set) | "
             "val acc (baseline's pairs) | val loss (baseline's pairs) | paper says |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for n in names:
        v, st, log = results[n]["validation"], runs[n], ablations.read_log(ablations.RUNS / n)
        what, claim = ablations.VARIANTS[n]
        lines.append(f"| `{n}` | {what} | {st['iter']} | {log[-1]['examples']:,.0f} | {st['wall_s']:,.0f} | "
                     f"{v['own']['accuracy']:.4f} | {v['common']['accuracy']:.4f} | {v['common']['loss']:.4f} | "
                     f"{claim} |")
    lines += ["", "### The survey's 8 metrics (means over its 30 pairs; best per column in bold)", "",
              "| variant | " + " | ".join(f"{k}{' (lower better)' if k in LOWER_IS_BETTER else ''}" for k in METRICS)
              + " |", "|---|" + "---:|" * len(METRICS)]
    means = {n: {k: float(np.mean([img[k] for img in results[n]["survey"].values()])) for k in METRICS}
             for n in names}
    cols = {k: _bold_best({n: means[n][k] for n in names}, k in LOWER_IS_BETTER, ".4f") for k in METRICS}
    lines += [f"| `{n}` | " + " | ".join(cols[k][n] for k in METRICS) + " |" for n in names]
    gt = {n: results[n]["groundtruth"] for n in names}
    count = len(next(iter(gt.values())))
    psnr = _bold_best({n: float(np.mean([r["psnr"] for r in gt[n]])) for n in names}, False, ".2f")
    ssim = _bold_best({n: float(np.mean([r["ssim"] for r in gt[n]])) for n in names}, False, ".4f")
    wins = {n: sum(r["psnr"] >= max(gt[o][i]["psnr"] for o in names) for i, r in enumerate(gt[n])) for n in names}
    lines += ["", f"### Synthetic ground truth ({count} pairs of python -m fusionlab groundtruth's test set)", "",
              "| variant | PSNR (dB) | SSIM | pairs where its PSNR is highest |", "|---|---:|---:|---:|"]
    lines += [f"| `{n}` | {psnr[n]} | {ssim[n]} | {wins[n]} |" for n in names]
    lines += ["", "### Models (not in git: rebuild with the command; sha256 of the exported deploy caffemodel)", "",
              "| variant | command | sha256 |", "|---|---|---|"]
    lines += [f"| `{n}` | `make ablation-{n}` | `{results[n]['sha256']}` |" for n in names]
    lines += ["", "![validation curves](figures/ablation_curves.png)", ""]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--names", nargs="+", default=list(ablations.VARIANTS), choices=list(ablations.VARIANTS))
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data/mfif"), help="the survey's data folder")
    ap.add_argument("--photos", default=str(ROOT.parent / "shared/data/train/bsds500/val"), help="sharp photos")
    ap.add_argument("--count", type=int, default=40, help="ground-truth pairs (default 40)")
    ap.add_argument("--cache", default=str(ablations.RUNS / "results.json"), help="measurements kept here")
    ap.add_argument("--doc", help="markdown file with the ablations markers to update")
    ap.add_argument("--figure", default=str(ROOT / "docs/figures/ablation_curves.png"), help="curves PNG")
    args = ap.parse_args(argv)
    missing = [n for n in args.names if not ablations.weights(n).is_file()]
    if missing:
        print(f"ablations: error: no exported model for {', '.join(missing)}: run `make ablation-NAME`",
              file=sys.stderr)
        return 2
    try:
        models.check_file(ablations.weights(args.names[0]))
    except models.ModelError as e:
        print(f"ablations: error: {e}", file=sys.stderr)
        return 2
    if args.doc and Path(args.doc).exists() and not has_block(Path(args.doc).read_text(), BLOCK):
        print(f"ablations: error: {args.doc} lacks the {BLOCK} markers; refusing to overwrite it", file=sys.stderr)
        return 2
    photos = sorted(Path(args.photos).glob("*.jpg"))
    results = ablations.measure(args.names, data=args.data, photos=photos, cache=args.cache, count=args.count)
    runs = {n: json.loads((ablations.RUNS / n / "run.json").read_text()) for n in args.names}
    Path(args.figure).parent.mkdir(parents=True, exist_ok=True)
    ablations.curves_figure({n: ablations.read_log(ablations.RUNS / n) for n in args.names}, args.figure)
    print(f"ablations: curves -> {args.figure}")
    text = tables(results, runs)
    if args.doc:
        doc = Path(args.doc)
        try:
            replace_block(doc, BLOCK, text, append=False)
        except ValueError as e:
            print(f"ablations: error: {e}", file=sys.stderr)
            return 2
        print(f"ablations: tables -> {doc}")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
