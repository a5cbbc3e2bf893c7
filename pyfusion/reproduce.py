"""Our fused images against the authors' own: PSNR and agreement of the per-pixel decision.

The authors' decision map is not published, only their fused image F = D A + (1 - D) B. Where the sources differ it
can be recovered per pixel by least squares over the channels:

    D_est = sum_c (F_c - B_c)(A_c - B_c) / sum_c (A_c - B_c)^2,

trusted only where ``sum_c (A_c - B_c)^2 >= min_diff^2 * channels`` (default: sources differ by at least 8 grey
levels, 0-255 units); elsewhere both sources are alike and any decision gives the same image. Decisions are
compared as ``D > 0.5`` (ours: the guided-filter decision map).

References
----------
.. [1] Y. Liu, X. Chen, H. Peng, Z. Wang, "Multi-focus image fusion with a deep convolutional neural network",
   Information Fusion 36 (2017) 191-207.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

MIN_DIFF = 8.0  # grey levels (0-255) by which the sources must differ for a pixel's decision to be recoverable


def _channels(x):
    x = np.asarray(x, dtype=np.float64)
    return x[..., None] if x.ndim == 2 else x


def estimate_decision(a, b, f, *, min_diff: float = MIN_DIFF):
    """Least-squares weight of ``a`` in ``f`` per pixel and the mask where it is recoverable (0-255 inputs)."""
    a, b, f = _channels(a), _channels(b), _channels(f)
    d = a - b
    den = (d * d).sum(-1)
    num = ((f - b) * d).sum(-1)
    mask = den >= (min_diff ** 2) * a.shape[-1]
    est = np.where(mask, num / np.where(mask, den, 1.0), np.nan)
    return est, mask


def psnr255(x, y) -> float:
    """PSNR in dB between two 0-255 images (inf when equal)."""
    mse = np.mean((np.asarray(x, np.float64) - np.asarray(y, np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))


def compare(a, b, ours, theirs, our_decision, *, min_diff: float = MIN_DIFF) -> dict:
    """PSNR(ours, theirs) and the share of recoverable pixels whose decision agrees (8-bit inputs, 0-255)."""
    est, mask = estimate_decision(a, b, theirs, min_diff=min_diff)
    agree = ((np.asarray(our_decision) > 0.5) == (est > 0.5))[mask]
    return {"psnr_db": psnr255(ours, theirs), "decision_agreement": float(agree.mean()) if agree.size else float("nan"),
            "recoverable_share": float(mask.mean())}


def survey_pairs(root) -> list[tuple[str, Path, Path, Path]]:
    """(name, A, B, authors' CNN result) for every pair of the survey's data under ``root`` (../shared/data/mfif)."""
    root = Path(root)
    out = []
    for kind in ("color", "grayscale"):
        for a in sorted((root / "sources" / kind).glob("*_1.tif")):
            name = a.name[: -len("_1.tif")]
            out.append((name, a, a.with_name(name + "_2.tif"), root / "results" / "cnn" / f"{name}_cnn.tif"))
    return out


def fuse_survey(root, method: str, out_dir, *, limit: int = 0, force: bool = False, progress: bool = True,
                **options) -> list[Path]:
    """Fuse every survey pair with ``method`` into ``out_dir/NAME_ours-METHOD.tif`` (pairs already there are kept
    unless ``force``: an interrupted run resumes). Returns the written paths in survey order."""
    from tqdm import tqdm

    from . import fuse
    from .io import read_image, write_image

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    pairs = survey_pairs(root)[:limit or None]
    for name, pa, pb, _ in tqdm(pairs, desc=f"fuse {method}", unit="pair", disable=not progress):
        out = out_dir / f"{name}_ours-{method}.tif"
        if force or not out.is_file():
            write_image(out, fuse([read_image(pa), read_image(pb)], method=method, **options).fused, force=True)
        paths.append(out)
    return paths


def metric_tables(results, survey, survey_methods, *, sets: dict, published=("CNN", "DWT")) -> str:
    """Markdown tables of the 8 metrics, one per image set: our rows (mean over the set), then the survey's
    published rows of ``published`` (mean over the same images), best value per column in bold."""
    from .metrics.table import LOWER_IS_BETTER, survey_means

    out = []
    for label, images in sets.items():
        rows = {}
        for m, per_image in results.items():
            sel = [i for i in images if i in per_image]
            if sel:
                rows[f"{m} (computed)"] = {k: float(np.mean([per_image[i][k] for i in sel]))
                                           for k in next(iter(per_image.values()))}
        pub = survey_means(survey, survey_methods, images) or {}
        best_pub = {k: (min if k in LOWER_IS_BETTER else max)(v[k] for v in pub.values())
                    for k in next(iter(rows.values()))} if pub else {}
        for m in published:
            if m in pub:
                rows[f"{m} (published)"] = pub[m]
        keys = list(next(iter(rows.values())))
        best = {k: (min if k in LOWER_IS_BETTER else max)(r[k] for r in rows.values()) for k in keys}
        out += [f"### {label} ({len(images)} pairs)", "",
                "| method | " + " | ".join(f"{k}{' (lower better)' if k in LOWER_IS_BETTER else ''}" for k in keys)
                + " |", "|---|" + "---:|" * len(keys)]
        for name, vals in rows.items():
            out.append(f"| {name} | " + " | ".join(f"**{vals[k]:.4f}**" if vals[k] == best[k] else f"{vals[k]:.4f}"
                                                  for k in keys) + " |")
        if best_pub:
            out.append("| best of the survey's 18 published rows | "
                       + " | ".join(f"{best_pub[k]:.4f}" for k in keys) + " |")
        out.append("")
    return "\n".join(out)
