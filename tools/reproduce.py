#!/usr/bin/env python
"""Reproduce the paper's CNN results on the survey's 30 pairs and compare them with the authors' own.

    python tools/reproduce.py --data ../shared/data/mfif --out runs/reproduce --doc docs/reproduction.md

For every pair: fuse with pyfusion (shipped model unless --model), write NAME_ours.tif under --out, and record
PSNR(ours, authors') and the agreement of the per-pixel decision (pyfusion.reproduce.compare). With --metrics the
survey's eight metrics are also computed on our results and on the authors' CNN results, beside the published row.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pyfusion import fuse
from pyfusion.io import read_image, write_atomic, write_image
from pyfusion.reproduce import compare, survey_pairs


def to255(img):
    return img.astype(np.float64) * (255.0 / np.iinfo(img.dtype).max)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/mfif", help="survey data folder (sources/, results/)")
    ap.add_argument("--out", default="runs/reproduce", help="folder for our fused images and results.json")
    ap.add_argument("--doc", help="markdown file to write the per-image table to")
    ap.add_argument("--model", help="deploy model (default: the shipped one)")
    ap.add_argument("--backend", help="inference backend (default: fastest available)")
    ap.add_argument("--limit", type=int, default=0, help="only the first N pairs (0 = all)")
    args = ap.parse_args(argv)
    print(f"reproduce: {vars(args)}")
    pairs = survey_pairs(args.data)
    if not pairs:
        print(f"reproduce: error: no survey pairs under {args.data}", file=sys.stderr)
        return 2
    if args.limit:
        pairs = pairs[: args.limit]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, pa, pb, pref in tqdm(pairs, desc="reproduce", unit="pair"):
        a, b, ref = read_image(pa), read_image(pb), read_image(pref)
        t0 = time.perf_counter()
        r = fuse([a, b], model=args.model, backend=args.backend)
        dt = time.perf_counter() - t0
        write_image(out / f"{name}_ours.tif", r.fused, force=True)
        row = {"image": name, **compare(to255(a), to255(b), to255(r.fused), to255(ref), r.decision_map),
               "seconds": round(dt, 2)}
        rows.append(row)
        tqdm.write(f"{name}: PSNR {row['psnr_db']:.2f} dB, decision agreement {row['decision_agreement']:.4f}")
    mean = {k: float(np.mean([r[k] for r in rows])) for k in ("psnr_db", "decision_agreement", "recoverable_share")}
    result = {"config": vars(args), "mean": mean, "per_image": rows}
    write_atomic(out / "results.json", json.dumps(result, indent=2) + "\n")
    print(f"reproduce: mean PSNR vs authors {mean['psnr_db']:.2f} dB, "
          f"mean decision agreement {mean['decision_agreement']:.4f} over {len(rows)} pairs")
    if args.doc:
        lines = ["| image | PSNR vs authors (dB) | decision agreement | recoverable pixels | seconds |",
                 "|---|---:|---:|---:|---:|"]
        lines += [f"| {r['image']} | {r['psnr_db']:.2f} | {r['decision_agreement']:.4f} | "
                  f"{r['recoverable_share']:.3f} | {r['seconds']:.1f} |" for r in rows]
        lines.append(f"| **mean** | **{mean['psnr_db']:.2f}** | **{mean['decision_agreement']:.4f}** | "
                     f"{mean['recoverable_share']:.3f} | |")
        Path(args.doc).parent.mkdir(parents=True, exist_ok=True)
        write_atomic(args.doc, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
