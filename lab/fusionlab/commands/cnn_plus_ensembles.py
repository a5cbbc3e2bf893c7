#!/usr/bin/env python
"""Exploration for docs/cnn_plus.md: would averaging the focus maps of several registered nets place the
decision better than the shipped ``cnn`` net alone? Tuning pairs only (BSDS500 val photos from 50, mask seed 1).

    python -m fusionlab cnn-plus-ensembles --count 12

For each combination of nets: the pixel accuracy of the cleaned binary map (paper steps 3-5 on the averaged
focus map) against the true focus mask (> 0.5), and the PSNR against the sharp photo of ``cnn-plus`` built on that
map (its shipped band, focus radius and transition). Score maps are cached as in python -m fusionlab tune-cnn-plus.
"""
import argparse
import sys
from pathlib import Path

import numpy as np

from pyfusion import models

from fusionlab import synthetic
from pyfusion.constants import GF_EPS
from pyfusion.focus import binary_map, focus_map
from pyfusion.io import from_unit, to_gray, to_unit
from pyfusion.methods import cnn_plus
from pyfusion.methods.cnn import weighted_average
from pyfusion.refine import area_threshold, remove_small_regions

from fusionlab import ROOT
from fusionlab.commands.tune_cnn_plus import cached  # noqa: E402

COMBOS = ("cnn", "cnn_blur3", "cnn_patch8", "cnn_pseudo", "cnn_2ch", "cnn+cnn_blur3", "cnn+cnn_patch8",
          "cnn+cnn_pseudo", "cnn+cnn_2ch", "cnn+cnn_blur3+cnn_patch8+cnn_pseudo+cnn_2ch")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", default=str(ROOT.parent / "shared/data/train/bsds500/val"))
    ap.add_argument("--count", type=int, default=12)
    ap.add_argument("--combos", default=";".join(COMBOS), help="semicolon-separated, nets joined by '+'")
    ap.add_argument("--cache", default="runs/cnn_plus/scores")
    args = ap.parse_args(argv)
    combos = [tuple(c.split("+")) for c in args.combos.split(";") if c]
    nets = sorted({n for c in combos for n in c})
    fns = {n: cached(n, Path(args.cache)) for n in nets}
    acc = {c: [] for c in combos}
    psnr = {c: [] for c in combos}
    photos = sorted(Path(args.photos).glob("*.jpg"))
    for p in synthetic.benchmark_pairs(photos, count=args.count, seed=1, start=50):
        ga, gb = to_gray(to_unit(p.a)), to_gray(to_unit(p.b))
        fm = {}
        for n in nets:
            m = models.get(n)
            fm[n] = focus_map(fns[n](ga.astype(np.float32), gb.astype(np.float32)), ga.shape,
                              patch=m.patch, stride=m.stride)
        for c in combos:
            binary = binary_map(np.mean([fm[n] for n in c], axis=0))
            cleaned = remove_small_regions(binary, area=area_threshold(binary.shape))
            acc[c].append(float(np.mean((cleaned > 0.5) == (p.mask > 0.5))))
            refined, _ = cnn_plus.refine_boundary(cleaned, ga, gb, band=cnn_plus.BAND,
                                                  focus_radius=cnn_plus.FOCUS_RADIUS)
            w = cnn_plus.transition(refined, ga, gb, radius=cnn_plus.GF_RADIUS_PLUS, eps=GF_EPS)
            fused = from_unit(weighted_average(to_unit(p.a), to_unit(p.b), w), p.a.dtype)
            psnr[c].append(synthetic.scores(fused, p.sharp)["psnr"])
        print(p.name, " ".join(f"{acc[c][-1]:.4f}/{psnr[c][-1]:.2f}" for c in combos), flush=True)
    print(f"\nMeans over {args.count} tuning pairs (`python -m fusionlab cnn-plus-ensembles --count {args.count}`):\n")
    print("| nets (focus maps averaged) | decision accuracy | cnn-plus PSNR (dB) |\n|---|---:|---:|")
    for c in combos:
        print(f"| {' + '.join(c)} | {np.mean(acc[c]):.4f} | {np.mean(psnr[c]):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
