#!/usr/bin/env python
"""Choose the one-pass method's small-region area, and the alignment's resampling, on tuning stacks (not the
benchmark's).

    python -m fusionlab tune-stack-ratio --start 50 --seed 1 --count 10 --ratios 0.01,0.003,0.001,0.0003
    python -m fusionlab tune-stack-ratio --start 50 --seed 1 --count 10 --ratios "" --interpolations linear,cubic

Synthetic stacks (fusionlab.synthetic.benchmark_stacks) from other photos and another seed than
python -m fusionlab stack-bench's benchmark (photos 0-19, seed 0). --ratios: PSNR of series fusion (the paper's way, area
0.01) and of one-pass fusion with each area ratio on the registered stacks; the rule (docs/stacks.md): the largest
ratio with the best mean PSNR. --interpolations: PSNR of one-pass fusion of the hand-held stacks with
align=True and each pyfusion.align interpolation (the benchmark's moved + align condition, one thread), against
the first; the rule: the one with the best mean PSNR.
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pyfusion import fuse

from fusionlab import stackbench, synthetic

from fusionlab import ROOT


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", default=str(ROOT.parent / "shared/data/train/bsds500/val"), help="sharp photos")
    ap.add_argument("--start", type=int, default=50, help="first photo (default 50)")
    ap.add_argument("--seed", type=int, default=1, help="seed (default 1)")
    ap.add_argument("--count", type=int, default=10, help="stacks (default 10)")
    ap.add_argument("--ratios", default="0.01,0.003,0.001,0.0003", help="comma-separated area ratios ('': none)")
    ap.add_argument("--interpolations", default="", help="comma-separated pyfusion.align interpolations of the "
                    "hand-held stacks (default none)")
    ap.add_argument("--json", default=str(ROOT / "runs/tune_stack_ratio.json"), help="per-stack results")
    args = ap.parse_args(argv)
    photos = sorted(Path(args.photos).glob("*.jpg"))
    if not photos:
        print(f"tune_stack_ratio: error: no photos in {args.photos}", file=sys.stderr)
        return 2
    ratios = [float(r) for r in args.ratios.split(",") if r]
    interps = [x for x in args.interpolations.split(",") if x]
    rows = []
    stacks = synthetic.benchmark_stacks(photos, count=args.count, seed=args.seed, start=args.start)
    for st in tqdm(stacks, total=args.count, desc="stacks", unit="stack"):
        frames = list(st.frames)
        row = {"stack": st.name, "frames": len(frames)}
        if ratios:
            row["series"] = synthetic.scores(fuse(frames, method="cnn", series=True).fused, st.sharp)["psnr"]
        for r in ratios:
            row[f"one-pass {r:g}"] = synthetic.scores(fuse(frames, method="cnn", region_ratio=r).fused, st.sharp)["psnr"]
        for name in interps:
            f = stackbench.fuse_frames(list(st.moved), "one-pass", align={"interpolation": name})
            x, y, w, h = f["crop"]
            row[f"moved + align, {name}"] = synthetic.scores(f["fused"], st.sharp[y:y + h, x:x + w])["psnr"]
        rows.append(row)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"config": vars(args), "stacks": rows}, indent=1) + "\n")
    if ratios:
        _table(rows, ["series"] + [f"one-pass {r:g}" for r in ratios], "fuser")
    if interps:
        _table(rows, [f"moved + align, {x}" for x in interps], "one-pass")
    return 0


def _table(rows, keys, label):
    """Mean PSNR of each key and the stacks where it is at least as good as the first key."""
    print(f"| {label} | mean PSNR (dB) | stacks at least as good as {keys[0]} |\n|---|---:|---:|")
    for key in keys:
        print(f"| {key} | {np.mean([r[key] for r in rows]):.3f} | "
              f"{'-' if key == keys[0] else sum(r[key] >= r[keys[0]] for r in rows)} |")


if __name__ == "__main__":
    sys.exit(main())
