#!/usr/bin/env python
"""Demo (``make demo``): fuse a synthetic multi-focus pair made from a photo shipped with scikit-image.

The sharp photo (``skimage.data.astronaut()`` by default) is blurred with a Gaussian; source A keeps the sharp
pixels left of a sinusoidal boundary, source B right of it. The pair is fused with the shipped model
(the registered ``cnn`` model, ``models/cnn_fusion.*``) and the script writes, under ``--out`` (default ``demo/``)::

    reference.png  source_a.png  source_b.png  fused.png  mask.png
    maps/score.png maps/focus.png maps/binary.png maps/cleaned.png maps/decision.png

then prints PSNR and SSIM against the sharp photo for the fused image and both sources
(``pyfusion.metrics`` when present, else ``skimage.metrics``). Everything is
deterministic. ``--oracle`` replaces the CNN by the true mask (patch-averaged), which shows what the
post-processing does with perfect scores and needs no Caffe.

Reference: Y. Liu, X. Chen, H. Peng, Z. Wang, "Multi-focus image fusion with a deep convolutional neural
network", Information Fusion 36 (2017) 191-207.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


import cv2  # noqa: E402
import numpy as np  # noqa: E402

from pyfusion.constants import PATCH, STRIDE  # noqa: E402
from pyfusion.models import get as get_model  # noqa: E402
from pyfusion.fusion import fuse  # noqa: E402
from pyfusion.methods.cnn import STAGES  # noqa: E402
from pyfusion.io import FusionInputError, from_unit, map_to_uint8, to_unit, write_image  # noqa: E402

PROG = "demo"
IMAGES = ("astronaut", "camera", "coffee", "chelsea")


def synthetic_pair(sharp: np.ndarray, *, sigma: float):
    """Source A sharp left of a sinusoidal boundary, B sharp right of it; returns (a, b, mask of A-sharp)."""
    h, w = sharp.shape[:2]
    y, x = np.mgrid[0:h, 0:w]
    mask = x < w / 2 + 0.12 * w * np.sin(2 * np.pi * y / h)
    blur = cv2.GaussianBlur(sharp, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    m = mask[:, :, None] if sharp.ndim == 3 else mask
    return np.where(m, sharp, blur), np.where(m, blur, sharp), mask


def oracle_scores(mask: np.ndarray):
    """A perfect 'net': the fraction of each 16x16 patch (stride 2) that is sharp in A."""
    sh = get_model("cnn").score_shape(*mask.shape[:2])
    sat = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1))
    sat[1:, 1:] = np.cumsum(np.cumsum(mask.astype(np.float64), 0), 1)
    r0 = STRIDE * np.arange(sh[0])
    c0 = STRIDE * np.arange(sh[1])
    r1 = np.minimum(r0 + PATCH, mask.shape[0])
    c1 = np.minimum(c0 + PATCH, mask.shape[1])
    total = sat[r1][:, c1] - sat[r0][:, c1] - sat[r1][:, c0] + sat[r0][:, c0]
    scores = (total / np.outer(r1 - r0, c1 - c0)).astype(np.float32)
    return lambda a, b: scores


def quality(reference: np.ndarray, img: np.ndarray):
    """PSNR (dB) and SSIM of 8-bit ``img`` against ``reference``, with their source.

    ``pyfusion.metrics.psnr``/``ssim`` (on grayscale, Zhou Wang's SSIM) when present, else ``skimage.metrics``.
    """
    try:
        from pyfusion.metrics import psnr, ssim
    except ImportError:
        from skimage.metrics import peak_signal_noise_ratio, structural_similarity

        channel_axis = 2 if reference.ndim == 3 else None
        return (peak_signal_noise_ratio(reference, img, data_range=255),
                structural_similarity(reference, img, data_range=255, channel_axis=channel_axis), "skimage.metrics")
    return psnr(reference, img), ssim(reference, img), "pyfusion.metrics, gray"


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("demo"), help="output directory (default demo/)")
    p.add_argument("--image", choices=IMAGES, default="astronaut", help="skimage.data photo (default astronaut)")
    p.add_argument("--size", type=int, default=0, help="crop the centre N x N (default: whole photo)")
    p.add_argument("--sigma", type=float, default=3.0, help="Gaussian blur sigma of the defocused parts")
    p.add_argument("--model", type=Path, help="deploy caffemodel (default: the shipped model)")
    p.add_argument("--backend", help="inference backend (see pyfusion.backends.BACKENDS)")
    p.add_argument("--oracle", action="store_true", help="use the true mask as score map instead of the CNN")
    args = p.parse_args(argv)
    if args.size and args.size < PATCH:
        p.error(f"--size must be at least {PATCH}")
    if args.oracle and (args.model or args.backend):
        p.error("--oracle does not use --model/--backend")
    return args


def run(args) -> int:
    from skimage import data

    photo = getattr(data, args.image)()
    if args.size:
        h, w = photo.shape[:2]
        n = min(args.size, h, w)
        photo = photo[(h - n) // 2:(h - n) // 2 + n, (w - n) // 2:(w - n) // 2 + n]
    sharp = to_unit(photo)
    a_f, b_f, mask = synthetic_pair(sharp, sigma=args.sigma)
    a, b = from_unit(a_f, photo.dtype), from_unit(b_f, photo.dtype)
    if args.oracle:
        result = fuse([a, b], score_fn=oracle_scores(mask))
    else:
        result = fuse([a, b], model=args.model, backend=args.backend)
    out = args.out
    (out / "maps").mkdir(parents=True, exist_ok=True)
    for name, img in (("reference", photo), ("source_a", a), ("source_b", b), ("fused", result.fused),
                      ("mask", map_to_uint8(mask))):
        write_image(out / f"{name}.png", img, force=True)
    for name in ("score", "focus", "binary", "cleaned", "decision"):
        write_image(out / "maps" / f"{name}.png", map_to_uint8(getattr(result, f"{name}_map")), force=True)
    h, w = photo.shape[:2]
    print(f"{args.image} {w}x{h}, blur sigma {args.sigma}, scores: {'oracle' if args.oracle else 'CNN'}")
    rows = [(name, *quality(photo, img)) for name, img in (("source A", a), ("source B", b), ("fused", result.fused))]
    print(f"{'image':<10} {'PSNR (dB)':>10} {'SSIM':>8}   vs the sharp photo ({rows[0][3]})")
    for name, psnr, ssim, _ in rows:
        print(f"{name:<10} {psnr:>10.2f} {ssim:>8.4f}")
    print(f"decision agrees with the true mask on {100 * np.mean(result.cleaned_map == mask):.2f}% of pixels")
    print("time " + ", ".join(f"{s} {result.timings[s]:.2f}s" for s in (*STAGES, "total")))
    print(f"wrote {out}/")
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except (FusionInputError, ValueError) as e:  # incl. pyfusion.models.ModelError (missing/corrupt model)
        print(f"{PROG}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except (ImportError, MemoryError, RuntimeError, OSError) as e:
        print(f"{PROG}: error: {type(e).__name__}: {' '.join(str(e).split())}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
