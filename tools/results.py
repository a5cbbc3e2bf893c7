#!/usr/bin/env python
"""Results of the project's fusion methods on the survey's 30 pairs: the 8 metrics beside the published CNN and
DWT rows (grayscale, colour, all), and PSNR of our images against the published ones.

    python tools/results.py --methods cnn,dwt,wavelet-cnn --out docs/results_survey.md

Our fused images go to runs/results/METHOD/ (kept between runs: an interrupted run resumes; --force redoes
them). The authors' CNN and DWT images are scored by the same metric code as a check.
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np

from pyfusion.io import read_image, write_atomic
from pyfusion.metrics.table import evaluate, find_cases, load_survey
from pyfusion.reproduce import fuse_survey, metric_tables, psnr255, survey_pairs

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data/mfif"), help="survey data folder")
    ap.add_argument("--methods", default="cnn,dwt,wavelet-cnn", help="comma-separated methods")
    ap.add_argument("--runs", default="runs/results", help="folder of our fused images")
    ap.add_argument("--out", help="markdown file to write")
    ap.add_argument("--force", action="store_true", help="fuse again even where a result exists")
    ap.add_argument("--limit", type=int, default=0, help="only the first N pairs (0 = all; survey order: colour first)")
    args = ap.parse_args(argv)
    data = Path(args.data)
    pairs = survey_pairs(data)[:args.limit or None]
    if not pairs:
        print(f"results: error: no survey pairs under {data}", file=sys.stderr)
        return 2
    methods = [m for m in args.methods.split(",") if m]
    dirs = [fuse_survey(data, m, Path(args.runs) / m, limit=args.limit, force=args.force)[0].parent for m in methods]
    sources = [data / "sources" / "color", data / "sources" / "grayscale"]
    cases, _ = find_cases(sources, dirs + [data / "results" / "cnn", data / "results" / "dwt"])
    names = [p[0] for p in pairs]
    cases = [c for c in cases if c.image in names]
    results = evaluate(cases, progress=True)
    survey, survey_methods = load_survey(data / "metrics.json")
    sets = {"grayscale": [n for n in names if n.startswith("g_")], "colour": [n for n in names if n.startswith("c_")],
            "all": names}
    lines = [f"`python tools/results.py --methods {args.methods}`. Rows `(computed)`: our metric code on our fused "
             "images (`OURS-…`) and on the authors' published images (`CNN`, `DWT`, a check of the metric code); "
             "rows `(published)`: the survey's values. Best value per column in bold.", "",
             metric_tables(results, survey, survey_methods, sets=sets)]
    refs = {"cnn": "cnn", "dwt": "dwt"}
    psnr_rows = []
    for name in names:
        row = [name]
        for m in methods:
            if m in refs:
                ours = read_image(Path(args.runs) / m / f"{name}_ours-{m}.tif")
                row.append(psnr255(ours, read_image(data / "results" / refs[m] / f"{name}_{refs[m]}.tif")))
        psnr_rows.append(row)
    cols = [m for m in methods if m in refs]
    if cols:
        lines += ["### PSNR of our images against the published ones (dB)", "",
                  "| image | " + " | ".join(f"ours {m} vs published {m.upper()}" for m in cols) + " |",
                  "|---|" + "---:|" * len(cols)]
        lines += [f"| {r[0]} | " + " | ".join(f"{v:.2f}" for v in r[1:]) + " |" for r in psnr_rows]
        for label, sel in sets.items():
            vals = [r for r in psnr_rows if r[0] in sel]
            lines.append(f"| **mean {label}** | " + " | ".join(f"**{np.mean([r[k] for r in vals]):.2f}**"
                                                             for k in range(1, len(cols) + 1)) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    write_atomic(Path(args.runs) / "metrics.json", json.dumps(results, indent=1) + "\n")
    if args.out:
        write_atomic(args.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
