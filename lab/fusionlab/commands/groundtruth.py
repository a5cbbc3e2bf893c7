#!/usr/bin/env python
"""The project's ground-truth benchmark: synthetic multi-focus pairs from BSDS500 val photos (disk defocus of
several radii, random smooth focus regions with hard or soft edges; fusionlab.synthetic), fused by each method and
scored against the sharp photo (PSNR, SSIM), beside each source alone.

    python -m fusionlab groundtruth --methods "cnn;dwt;wavelet-cnn" --count 40 --out docs/groundtruth.md
    python -m fusionlab groundtruth --methods "wavelet-cnn;wavelet-cnn:levels=2;wavelet-cnn:levels=2,deep=net"

A method may carry options after a colon (``NAME:key=value,key=value``; numbers are parsed), so variants of
one method can be compared.

Writes a markdown table (means overall and per blur radius) to --out and every per-pair number to --json.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

import pyfusion
from fusionlab import synthetic
from pyfusion.io import write_atomic

from fusionlab import ROOT


def parse_method(spec: str) -> dict:
    """``"NAME:key=value,..."`` -> ``{"method": NAME, key: value, ...}`` (ints and floats parsed)."""
    name, _, opts = spec.partition(":")
    out = {"method": name}
    for item in filter(None, opts.split(",")):
        key, _, value = item.partition("=")
        for cast in (int, float):
            try:
                value = cast(value)
                break
            except ValueError:
                pass
        out[key] = value
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", default=str(ROOT.parent / "shared/data/train/bsds500/val"), help="sharp photos")
    ap.add_argument("--methods", default="cnn;dwt;wavelet-cnn", help="semicolon-separated methods[:options]")
    ap.add_argument("--count", type=int, default=40, help="pairs (default 40)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the masks (default 0)")
    ap.add_argument("--start", type=int, default=0, help="first photo (sorted order; default 0: the test set; "
                    "a tuning set: --start 50 --seed 1)")
    ap.add_argument("--out", help="markdown table to write")
    ap.add_argument("--json", default="runs/groundtruth.json", help="per-pair results (default runs/groundtruth.json)")
    args = ap.parse_args(argv)
    photos = sorted(Path(args.photos).glob("*.jpg"))
    if not photos:
        print(f"groundtruth: error: no photos in {args.photos}", file=sys.stderr)
        return 2
    methods = [m for m in args.methods.split(";") if m]
    rows = []
    for p in tqdm(synthetic.benchmark_pairs(photos, count=args.count, seed=args.seed, start=args.start), total=args.count,
                  desc="pairs", unit="pair"):
        row = {"pair": p.name, "radius": p.radius, "softness": p.softness,
               "source A": synthetic.scores(p.a, p.sharp), "source B": synthetic.scores(p.b, p.sharp)}
        for m in methods:
            t0 = time.perf_counter()
            fused = pyfusion.fuse([p.a, p.b], **parse_method(m)).fused
            row[m] = {**synthetic.scores(fused, p.sharp), "seconds": time.perf_counter() - t0}
        rows.append(row)
    cols = ["source A", "source B", *methods]
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    write_atomic(args.json, json.dumps({"config": vars(args), "pairs": rows}, indent=1) + "\n")

    def mean(sel, col, key):
        return float(np.mean([r[col][key] for r in sel]))

    groups = [("all", rows)] + [(f"radius {r}", [x for x in rows if x["radius"] == r]) for r in synthetic.RADII] \
        + [(f"edge sigma {s:g}", [x for x in rows if x["softness"] == s]) for s in synthetic.SOFTNESS]
    lines = [f"PSNR (dB) / SSIM against the sharp photo, means over {len(rows)} pairs "
             f"(`python -m fusionlab groundtruth --methods \"{args.methods}\" --count {args.count} --seed {args.seed} "
             f"--start {args.start}`).", "",
             "| pairs | n | " + " | ".join(cols) + " |", "|---|---:|" + "---:|" * len(cols)]
    for label, sel in groups:
        if sel:
            best = max(methods, key=lambda c: mean(sel, c, "psnr")) if methods else None
            cells = [f"{mean(sel, c, 'psnr'):.2f} / {mean(sel, c, 'ssim'):.4f}" for c in cols]
            cells = [f"**{x}**" if c == best else x for c, x in zip(cols, cells)]
            lines.append(f"| {label} | {len(sel)} | " + " | ".join(cells) + " |")
    wins = {m: sum(r[m]["psnr"] >= max(r[o]["psnr"] for o in methods) for r in rows) for m in methods}
    lines += ["", "Pairs on which each method has the highest PSNR: " + ", ".join(f"{m} {n}" for m, n in wins.items())]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        write_atomic(args.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
