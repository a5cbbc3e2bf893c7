#!/usr/bin/env python
"""Compare method dtcwt with the survey's published DTCWT images (PSNR, identical pixels per image and set).

    python -m fusionlab dtcwt-check [--data DIR] [--pairs g_01,c_01] [--biort legall] [--border zero]
                                    [--colour ycbcr] [--levels N] [--qshift NAME] [--threads N]

Fuses the survey's pairs with ``pyfusion.fuse(..., method="dtcwt")`` (the defaults reproduce the survey's DTCWT
baseline) and prints, per pair, the PSNR of our 8-bit image against the published one
(``DATA/results/dtcwt/NAME_dtcwt.tif``; 10 log10(255^2 / MSE) over all pixels and channels, ``inf`` when equal)
and the share of identical 8-bit values, then per set (grayscale, colour, all): the mean PSNR over the pairs
whose images differ (identical ones have an infinite PSNR) with the number of identical ones, the PSNR of the
set's mean squared error (finite unless every image is identical), and the mean share of identical values.

The ablations of docs/dtcwt.md are options: ``--biort legall`` (LeGall 5/3 level-1 filters instead of
near_sym_a), ``--border zero`` (no border extension of the sub-bands: zeros outside for the window maximum and
no votes outside for the majority check), ``--colour ycbcr`` (the colour pairs fused in MATLAB's ``rgb2ycbcr``
space, BT.601 studio range, each of Y, Cb, Cr on its own, then converted back, instead of R, G, B).

Reference: Y. Liu, L. Wang, J. Cheng, C. Li, X. Chen, "Multi-focus image fusion: A Survey of the state of the
art", Information Fusion 64 (2020) 71-91 (sources and published results under ../shared/data/mfif).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from fusionlab import ROOT

# MATLAB rgb2ycbcr for [0, 1] doubles: ycbcr = (OFFSET + M @ rgb) / 255.
_YCBCR_M = np.array([[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]])
_YCBCR_OFFSET = np.array([16.0, 128.0, 128.0])


def rgb2ycbcr(x: np.ndarray) -> np.ndarray:
    """MATLAB ``rgb2ycbcr`` of an ``(H, W, 3)`` image in [0, 1] (result in [0, 1])."""
    return (_YCBCR_OFFSET + x @ _YCBCR_M.T) / 255.0


def ycbcr2rgb(y: np.ndarray) -> np.ndarray:
    """The inverse of :func:`rgb2ycbcr`."""
    return (y * 255.0 - _YCBCR_OFFSET) @ np.linalg.inv(_YCBCR_M).T


def fuse_pair(a, b, *, colour: str = "rgb", **options) -> np.ndarray:
    """The 8-bit fusion of one pair by method dtcwt; ``colour="ycbcr"`` fuses colour pairs in YCbCr."""
    import pyfusion
    from pyfusion.io import from_unit, to_unit
    from pyfusion.methods import dtcwt

    if colour == "rgb" or a.ndim == 2:
        return pyfusion.fuse([a, b], method="dtcwt", **options).fused
    fused, _ = dtcwt.fuse_unit([rgb2ycbcr(to_unit(a)), rgb2ycbcr(to_unit(b))], **options)
    return from_unit(ycbcr2rgb(fused), a.dtype)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data/mfif"),
                    help="survey data folder (sources/, results/dtcwt/)")
    ap.add_argument("--pairs", help="comma-separated survey pairs (default: all 30)")
    ap.add_argument("--biort", default="near_sym_a", help="level-1 filters (pyfusion.dtcwt.BIORT)")
    ap.add_argument("--qshift", default="qshift_06", help="Q-shift filters (pyfusion.dtcwt.QSHIFT)")
    ap.add_argument("--levels", type=int, default=4, help="decomposition levels")
    ap.add_argument("--border", default="es2", help="sub-band border rule: es2 or zero")
    ap.add_argument("--colour", default="rgb", choices=("rgb", "ycbcr"), help="colour space of the colour pairs")
    ap.add_argument("--threads", type=int, help="threads of the method (default: every core)")
    args = ap.parse_args(argv)

    from pyfusion.io import read_image

    from fusionlab.reproduce import psnr255, survey_pairs, survey_sets

    options = {"biort": args.biort, "qshift": args.qshift, "levels": args.levels, "border": args.border,
               "threads": args.threads}
    data = Path(args.data)
    t0 = time.perf_counter()
    try:
        pairs = survey_pairs(data, args.pairs.split(",") if args.pairs else None)
        if not pairs:
            raise ValueError(f"no survey pairs under {data}")
        rows = {}
        print("| pair | PSNR vs published (dB) | identical values |\n|---|---:|---:|")
        for name, pa, pb, _ in pairs:
            ref = data / "results" / "dtcwt" / f"{name}_dtcwt.tif"
            if not ref.is_file():
                raise ValueError(f"published image not found: {ref}")
            ours = fuse_pair(read_image(pa), read_image(pb), colour=args.colour, **options)
            theirs = read_image(ref)
            mse = float(np.mean((ours.astype(np.float64) - theirs) ** 2))
            rows[name] = (psnr255(ours, theirs), float(np.mean(ours == theirs)), mse)
            print(f"| {name} | {rows[name][0]:.2f} | {100 * rows[name][1]:.4f}% |", flush=True)
    except ValueError as e:
        print(f"dtcwt-check: error: {e}", file=sys.stderr)
        return 2
    print("\n| set | pairs | identical images | mean PSNR of the others (dB) | PSNR of the mean MSE (dB) | "
          "identical values |\n|---|---:|---:|---:|---:|---:|")
    for label, names in survey_sets(list(rows)).items():
        finite = [rows[n][0] for n in names if np.isfinite(rows[n][0])]
        mse = np.mean([rows[n][2] for n in names])
        pooled = 10 * np.log10(255.0 ** 2 / mse) if mse else float("inf")
        print(f"| {label} | {len(names)} | {len(names) - len(finite)} | "
              f"{np.mean(finite) if finite else float('inf'):.2f} | {pooled:.2f} | "
              f"{100 * np.mean([rows[n][1] for n in names]):.4f}% |")
    print(f"dtcwt-check: {len(rows)} pairs in {time.perf_counter() - t0:.0f} s "
          f"({', '.join(f'{k}={v}' for k, v in vars(args).items() if k not in ('data', 'pairs'))})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
