"""Evaluation tables: pair source and fused images by name, compute the survey metrics, compare with the survey.

Naming scheme
-------------
* sources: ``NAME_1.ext`` and ``NAME_2.ext`` (one directory or several);
* fused results: ``NAME_METHOD.ext``, matched to the sources by ``NAME`` (the longest source name that is a
  prefix followed by ``_``); ``METHOD`` is compared case-insensitively and reported upper-case.

Extensions: .png .tif .tiff .bmp .jpg .jpeg .ppm .pgm .pnm. Images must be 8-bit (grey or RGB).

When every evaluated image name appears in the survey's ``metrics.json`` (per-image values of 18 methods),
the survey's published means over the same images are put beside the computed ones.
"""
from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pyfusion.io import write_atomic  # noqa: F401  (re-exported: tools/evaluate.py writes tables with it)
from pyfusion.metrics import LOWER_IS_BETTER, METRICS

__all__ = ["EvaluationError", "Case", "find_cases", "evaluate", "load_survey", "survey_means",
           "column_agreement", "published_gaps", "summarize", "render", "write_atomic", "find_survey_file"]

IMAGE_EXTS = frozenset({".png", ".tif", ".tiff", ".bmp", ".jpg", ".jpeg", ".ppm", ".pgm", ".pnm"})


class EvaluationError(ValueError):
    """A problem with the evaluation inputs; the message is one line meant for the user."""


@dataclass(frozen=True)
class Case:
    """One (source pair, fused result) to evaluate."""

    image: str
    method: str
    source1: Path
    source2: Path
    fused: Path


def _image_files(directory: Path):
    if not directory.is_dir():
        raise EvaluationError(f"{directory}: not a directory")
    return sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)


def find_sources(dirs):
    """Map NAME -> (NAME_1 path, NAME_2 path) over the given directories.

    Raises
    ------
    EvaluationError
        On a duplicated name, an incomplete pair, or when no pair is found.
    """
    found: dict[str, dict[str, Path]] = {}
    for d in dirs:
        for p in _image_files(Path(d)):
            stem = p.stem
            if len(stem) > 2 and stem[-2] == "_" and stem[-1] in "12":
                slot = found.setdefault(stem[:-2], {})
                if stem[-1] in slot:
                    raise EvaluationError(f"{p}: duplicate source (also {slot[stem[-1]]})")
                slot[stem[-1]] = p
    incomplete = sorted(n for n, s in found.items() if len(s) != 2)
    if incomplete:
        raise EvaluationError(f"source {incomplete[0]!r} lacks its {'_2' if '1' in found[incomplete[0]] else '_1'} "
                              f"image ({len(incomplete)} incomplete pair(s))")
    if not found:
        raise EvaluationError(f"no source pairs NAME_1.ext / NAME_2.ext in {', '.join(map(str, dirs))}")
    return {n: (s["1"], s["2"]) for n, s in sorted(found.items())}


def find_cases(source_dirs, fused_dirs, methods=None):
    """Pair every fused image ``NAME_METHOD.ext`` with its sources ``NAME_1.ext``, ``NAME_2.ext``.

    Parameters
    ----------
    source_dirs, fused_dirs : sequence of path-like
    methods : sequence of str, optional
        Keep only these methods (case-insensitive).

    Returns
    -------
    cases : list of Case
        Sorted by method then image.
    unmatched : list of Path
        Fused-directory images whose name matches no source pair.
    """
    sources = find_sources(source_dirs)
    names = sorted(sources, key=len, reverse=True)
    wanted = None if not methods else {m.upper() for m in methods}
    cases, unmatched, seen = [], [], {}
    for d in fused_dirs:
        for p in _image_files(Path(d)):
            stem = p.stem
            name = next((n for n in names if stem.startswith(n + "_") and len(stem) > len(n) + 1), None)
            if name is None:
                unmatched.append(p)
                continue
            method = stem[len(name) + 1:].upper()
            if method in ("1", "2") and Path(d).resolve() in {Path(s).resolve() for s in source_dirs}:
                continue  # the sources themselves, when fused and source directories coincide
            if wanted is not None and method not in wanted:
                continue
            key = (name, method)
            if key in seen:
                raise EvaluationError(f"{p}: duplicate result for {name} / {method} (also {seen[key]})")
            seen[key] = p
            cases.append(Case(name, method, sources[name][0], sources[name][1], p))
    if wanted is not None:
        missing = sorted(wanted - {c.method for c in cases})
        if missing:
            raise EvaluationError(f"no fused images for method {missing[0]} (expected NAME_{missing[0].lower()}.ext)")
    if not cases:
        raise EvaluationError(f"no fused images NAME_METHOD.ext matching the sources in {', '.join(map(str, fused_dirs))}")
    cases.sort(key=lambda c: (c.method, c.image))
    return cases, unmatched


def _read(path: Path):
    from pyfusion.io import FusionInputError, read_image

    try:
        img = read_image(path)
    except FusionInputError as e:
        raise EvaluationError(str(e)) from None
    if img.dtype != np.uint8:
        raise EvaluationError(f"{path}: {img.dtype} image; the metrics expect 8-bit images")
    return img


def evaluate(cases, metrics=None, progress=False):
    """Compute the metrics for every case.

    Parameters
    ----------
    cases : sequence of Case
    metrics : sequence of str, optional
        Names from :data:`pyfusion.metrics.METRICS` (default: all eight).
    progress : bool
        Show a tqdm progress bar (on stderr).

    Returns
    -------
    dict
        ``results[method][image][metric] -> float``.
    """
    names = list(METRICS) if metrics is None else list(metrics)
    results: dict[str, dict[str, dict[str, float]]] = {}
    it = cases
    if progress:
        from tqdm import tqdm

        it = tqdm(cases, desc="evaluating", unit="image")
    cache: dict[Path, np.ndarray] = {}
    for c in it:
        for p in (c.source1, c.source2):
            if p not in cache:
                cache[p] = _read(p)
        a, b, f = cache[c.source1], cache[c.source2], _read(c.fused)
        if a.shape != b.shape or a.shape != f.shape:
            raise EvaluationError(f"{c.fused}: shape {f.shape} does not match its sources {a.shape} / {b.shape}")
        results.setdefault(c.method, {})[c.image] = {m: float(METRICS[m](a, b, f)) for m in names}
    return results


def find_survey_file(start_dirs):
    """Look for ``metrics.json`` in each directory and up to three of its parents."""
    for d in start_dirs:
        p = Path(d).resolve()
        for q in [p, *list(p.parents)[:3]]:
            cand = q / "metrics.json"
            if cand.is_file():
                return cand
    return None


def load_survey(path):
    """Load the survey's ``metrics.json`` as ``{method: {metric: {image: value}}}`` plus the method order."""
    try:
        meta = json.loads(Path(path).read_text())
        methods, metric_names = meta["methods"], meta["metrics"]
        table: dict[str, dict[str, dict[str, float]]] = {m: {k: {} for k in metric_names} for m in methods}
        for ds in meta["datasets"].values():
            for mi, m in enumerate(methods):
                for ki, k in enumerate(metric_names):
                    for ii, img in enumerate(ds["images"]):
                        table[m][k][img] = float(ds["per_image"][mi][ki][ii])
    except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
        raise EvaluationError(f"{path}: not a survey metrics file ({type(e).__name__}: {e})") from None
    return table, methods


def survey_means(survey, methods, images):
    """The survey's per-method metric means over ``images``; None if any image is not in the survey."""
    any_method = next(iter(survey.values()))
    any_metric = next(iter(any_method.values()))
    if not images or any(img not in any_metric for img in images):
        return None
    return {m: {k: float(np.mean([survey[m][k][i] for i in images])) for k in survey[m]} for m in methods}


def column_agreement(means):
    """How far the metric columns of a table agree: the leader of each column and the rank correlation of each
    pair of columns over the methods.

    Parameters
    ----------
    means : dict
        ``{method: {metric: value}}`` (e.g. :func:`survey_means`); QCV (:data:`LOWER_IS_BETTER`) is negated first,
        so that higher is better everywhere.

    Returns
    -------
    leaders : dict
        ``{metric: method}``, the best method of each column.
    rho : dict
        ``{(m1, m2): float}``, Spearman's rank correlation of the two columns over the methods (average ranks
        for ties).
    """
    from scipy.stats import spearmanr

    methods = list(means)
    metrics = list(means[methods[0]])
    cols = {k: np.array([(-1 if k in LOWER_IS_BETTER else 1) * means[m][k] for m in methods]) for k in metrics}
    leaders = {k: methods[int(np.argmax(cols[k]))] for k in metrics}
    rho = {(k1, k2): float(spearmanr(cols[k1], cols[k2]).statistic) for k1 in metrics for k2 in metrics}
    return leaders, rho


def published_gaps(results, survey):
    """Largest gap to the survey's per-image values, per metric, over the (image, method) cases it covers.

    The gap is ``computed - published``, relative (``/ published``) for the metrics where lower is better
    (QCV), absolute otherwise. Cases whose method or image the survey lacks are left out.

    Returns
    -------
    dict
        ``{metric: {"gap": float, "image": str, "method": str, "cases": int}}``; empty if nothing overlaps.
    """
    out: dict[str, dict] = {}
    if not survey:
        return out
    for method, per_image in results.items():
        if method not in survey:
            continue
        for image, values in per_image.items():
            for k, v in values.items():
                ref = survey[method].get(k, {}).get(image)
                if ref is None:
                    continue
                gap = (v - ref) / ref if k in LOWER_IS_BETTER else v - ref
                cur = out.setdefault(k, {"gap": 0.0, "image": image, "method": method, "cases": 0})
                cur["cases"] += 1
                if not abs(gap) <= abs(cur["gap"]):  # also picks up NaN
                    cur.update(gap=float(gap), image=image, method=method)
    return out


def summarize(results):
    """Per-method means: ``{method: {metric: mean}}`` and the image list of each method."""
    means, images = {}, {}
    for method, per_image in results.items():
        imgs = sorted(per_image)
        images[method] = imgs
        metrics = list(next(iter(per_image.values())))
        means[method] = {k: float(np.mean([per_image[i][k] for i in imgs])) for k in metrics}
    return means, images


def _fmt(v):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "nan"
    return f"{v:.4f}"


def _rows(results, survey=None, survey_methods=None):
    """Table rows (method, source, n, {metric: mean}); survey rows use the computed images."""
    means, images = summarize(results)
    rows = [(m, "computed", len(images[m]), means[m]) for m in sorted(means)]
    all_images = sorted({i for imgs in images.values() for i in imgs})
    published = None
    if survey is not None:
        published = survey_means(survey, survey_methods, all_images)
        if published is not None:
            rows += [(m, "survey", len(all_images), published[m]) for m in survey_methods]
    return rows, published is not None


def render(results, fmt, survey=None, survey_methods=None):
    """Render the evaluation as 'md', 'csv' or 'json' text.

    Markdown and CSV hold one row per computed method (mean over its images) followed, when the images are
    the survey's, by the survey's 18 published rows (mean over the same images). JSON additionally holds
    every per-image value.
    """
    rows, has_survey = _rows(results, survey, survey_methods)
    metric_names = list(rows[0][3])
    if fmt == "md":
        head = ["method", "source", "images"] + [f"{k} {'(lower better)' if k in LOWER_IS_BETTER else ''}".strip()
                                                 for k in metric_names]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for m, src, n, vals in rows:
            lines.append("| " + " | ".join([m, src, str(n)] + [_fmt(vals.get(k)) for k in metric_names]) + " |")
        if not has_survey:
            lines.append("")
            lines.append("(survey rows omitted: not all images are in the survey's metrics.json, or none was given)")
        gaps = published_gaps(results, survey)
        if gaps:
            lines += ["", "Largest gap to the survey's per-image values (computed - published; QCV relative):", "",
                      "| metric | max gap | image | method | cases |", "|---|---|---|---|---|"]
            for k in metric_names:
                if k in gaps:
                    g = gaps[k]
                    lines.append(f"| {k} | {g['gap']:+.2e} | {g['image']} | {g['method']} | {g['cases']} |")
        return "\n".join(lines) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["method", "source", "images"] + metric_names)
        for m, src, n, vals in rows:
            w.writerow([m, src, n] + [repr(float(vals[k])) for k in metric_names])
        return buf.getvalue()
    if fmt == "json":
        doc = {
            "metrics": metric_names,
            "lower_is_better": sorted(LOWER_IS_BETTER & set(metric_names)),
            "computed": {m: {"mean": vals, "per_image": results[m]} for m, src, n, vals in rows if src == "computed"},
            "survey_mean": {m: vals for m, src, n, vals in rows if src == "survey"} if has_survey else None,
            "max_gap_to_survey": published_gaps(results, survey) or None,
        }
        return json.dumps(doc, indent=1, allow_nan=True) + "\n"
    raise EvaluationError(f"unknown output format {fmt!r} (use .md, .csv or .json)")
