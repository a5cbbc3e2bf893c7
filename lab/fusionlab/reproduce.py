"""The reproduction report: our methods on the survey's 30 pairs, against the published methods and images.

What ``make reproduce`` (``tools/reproduce.py``) builds, from the shipped models:

* :func:`fuse_survey`: every method of the project (:data:`pyfusion.fusion.METHODS`) on every survey pair;
* :func:`metric_tables`: the survey's eight metrics as the survey prints them (grayscale, colour, and all 30
  pairs): its 18 published rows, ours, and a check row (our metric code on the authors' published CNN images,
  which should equal the published CNN row), best value per column in bold, and each of our rows' rank;
* :func:`compare_survey`: our ``cnn`` images against the authors' (PSNR, decision agreement);
* figures (:mod:`fusionlab.figures`); :func:`make_report` does all of it.

Decision agreement: the authors' decision map is not published, only their fused image F = D A + (1 - D) B.
Where the sources differ it can be recovered per pixel by least squares over the channels:

    D_est = sum_c (F_c - B_c)(A_c - B_c) / sum_c (A_c - B_c)^2,

trusted only where ``sum_c (A_c - B_c)^2 >= min_diff^2 * channels`` (default: sources differ by at least 8 grey
levels, 0-255 units); elsewhere both sources are alike and any decision gives the same image. Decisions are
compared as ``D > 0.5`` (ours: the guided-filter decision map).

References
----------
.. [1] Y. Liu, X. Chen, H. Peng, Z. Wang, "Multi-focus image fusion with a deep convolutional neural network",
   Information Fusion 36 (2017) 191-207.
.. [2] Y. Liu, L. Wang, J. Cheng, C. Li, X. Chen, "Multi-focus image fusion: a survey of the state of the art",
   Information Fusion 64 (2020) 71-91.
"""
from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np

from fusionlab.docblocks import block_markers, has_block, replace_block

MIN_DIFF = 8.0  # grey levels (0-255) by which the sources must differ for a pixel's decision to be recoverable
AMPLIFY = 10.0  # the difference images of the pair figures: (ours - authors') x AMPLIFY around mid-grey
DIGITS = 4      # decimals of the metric tables; best values and ranks are judged at this precision

#: The generated block of the reproduction doc, between :data:`TABLE_START` and :data:`TABLE_END`.
DOC_BLOCK = "reproduce:table"
TABLE_START, TABLE_END = block_markers(DOC_BLOCK)


# ----------------------------------------------------------------------------------------- ours vs theirs
def _channels(x):
    x = np.asarray(x, dtype=np.float64)
    return x[..., None] if x.ndim == 2 else x


def to255(img) -> np.ndarray:
    """An image as float64 on the 0-255 scale (uint8 exactly; uint16 and [0, 1] floats scaled)."""
    img = np.asarray(img)
    if img.dtype == np.uint8:
        return img.astype(np.float64)
    from pyfusion.io import to_unit

    return to_unit(img) * 255.0


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


def difference_regions(ours, theirs, *, level: float = MIN_DIFF) -> dict:
    """Where two 0-255 images differ by more than ``level`` grey levels (in any channel).

    Returns
    -------
    dict
        ``differing_share``: the share of such pixels; ``largest_region_px``: the pixels of the largest
        8-connected region of them (0 when none).
    """
    from scipy import ndimage

    off = (np.abs(_channels(ours) - _channels(theirs)) > level).any(-1)
    labels, n = ndimage.label(off, structure=np.ones((3, 3), dtype=bool))
    largest = int(np.bincount(labels.ravel())[1:].max()) if n else 0
    return {"differing_share": float(off.mean()), "largest_region_px": largest}


def compare(a, b, ours, theirs, our_decision, *, min_diff: float = MIN_DIFF) -> dict:
    """Our fused image against theirs (8-bit inputs on the 0-255 scale).

    Returns
    -------
    dict
        ``psnr_db``: PSNR(ours, theirs); ``decision_agreement``: the share of recoverable pixels
        (:func:`estimate_decision`) whose decision agrees with ``our_decision > 0.5``; ``recoverable_share``;
        ``differing_share`` and ``largest_region_px`` (:func:`difference_regions` at ``min_diff``).
    """
    est, mask = estimate_decision(a, b, theirs, min_diff=min_diff)
    agree = ((np.asarray(our_decision) > 0.5) == (est > 0.5))[mask]
    return {"psnr_db": psnr255(ours, theirs), "decision_agreement": float(agree.mean()) if agree.size else float("nan"),
            "recoverable_share": float(mask.mean()), **difference_regions(ours, theirs, level=min_diff)}


# ------------------------------------------------------------------------------------------- survey data
def survey_pairs(root, names=None, limit: int = 0) -> list[tuple[str, Path, Path, Path]]:
    """(name, A, B, authors' CNN result) for the pairs of the survey's data under ``root`` (../shared/data/mfif).

    Parameters
    ----------
    root : path-like
        The survey folder (``sources/{color,grayscale}/NAME_{1,2}.tif``, ``results/cnn/NAME_cnn.tif``).
    names : sequence of str, optional
        Only these pairs (survey order kept); ValueError for a name that is not there.
    limit : int
        Only the first ``limit`` pairs (0: all), after ``names``.
    """
    root = Path(root)
    out = []
    for kind in ("color", "grayscale"):
        for a in sorted((root / "sources" / kind).glob("*_1.tif")):
            name = a.name[: -len("_1.tif")]
            out.append((name, a, a.with_name(name + "_2.tif"), root / "results" / "cnn" / f"{name}_cnn.tif"))
    if names is not None:
        missing = sorted(set(names) - {p[0] for p in out})
        if missing:
            raise ValueError(f"no survey pair {missing[0]!r} under {root}")
        out = [p for p in out if p[0] in set(names)]
    return out[:limit or None]


def survey_sets(names) -> dict[str, list[str]]:
    """The survey's image sets among ``names``: ``grayscale`` (``g_*``), ``colour`` (``c_*``) and ``all`` (empty
    sets left out; ``all`` only when it differs from the one set)."""
    names = list(names)
    sets = {"grayscale": [n for n in names if n.startswith("g_")], "colour": [n for n in names if n.startswith("c_")]}
    sets = {k: v for k, v in sets.items() if v}
    if len(sets) != 1:
        sets["all"] = names
    return sets


def fused_path(out_dir, name: str, method: str) -> Path:
    """Where :func:`fuse_survey` writes pair ``name`` fused by ``method``: ``out_dir/NAME_ours-METHOD.tif``."""
    return Path(out_dir) / f"{name}_ours-{method}.tif"


def map_path(out_dir, name: str, map_name: str) -> Path:
    """Where :func:`fuse_survey` writes a map of pair ``name``: ``out_dir/maps/NAME_MAP.npy`` (float32; a map
    may lie a little outside [0, 1], as the guided filter's decision map; read it with :func:`numpy.load`)."""
    return Path(out_dir) / "maps" / f"{name}_{map_name}.npy"


def fuse_survey(root, method: str, out_dir, *, limit: int = 0, names=None, force: bool = False,
                progress: bool = True, maps=(), **options) -> list[Path]:
    """Fuse survey pairs with ``method`` into ``out_dir/NAME_ours-METHOD.tif``.

    Parameters
    ----------
    root : path-like
        The survey folder (:func:`survey_pairs`).
    method : str
        A key of :data:`pyfusion.fusion.METHODS`.
    out_dir : path-like
        Created if missing.
    limit, names
        Which pairs (:func:`survey_pairs`).
    force : bool
        Fuse every pair again; otherwise a pair whose files are all there is kept (an interrupted run resumes).
    progress : bool
        A tqdm bar.
    maps : sequence of str
        Also write these maps of the result (e.g. ``"decision_map"``) as float32 ``.npy`` (:func:`map_path`).
    **options
        The method's options (:func:`pyfusion.fuse`).

    Returns
    -------
    list of pathlib.Path
        The fused images, in survey order.
    """
    from tqdm import tqdm

    from pyfusion import fuse
    from pyfusion.io import read_image, write_atomic, write_image

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if maps:
        (out_dir / "maps").mkdir(exist_ok=True)
    paths = []
    for name, pa, pb, _ in tqdm(survey_pairs(root, names, limit), desc=f"fuse {method}", unit="pair",
                                disable=not progress):
        out = fused_path(out_dir, name, method)
        wanted = [out] + [map_path(out_dir, name, m) for m in maps]
        if force or not all(p.is_file() for p in wanted):
            r = fuse([read_image(pa), read_image(pb)], method=method, **options)
            for m in maps:
                buf = io.BytesIO()
                np.save(buf, np.asarray(r.maps[m], dtype=np.float32))
                write_atomic(map_path(out_dir, name, m), buf.getvalue())
            write_image(out, r.fused, force=True)
        paths.append(out)
    return paths


def compare_survey(root, out_dir, *, method: str = "cnn", names=None, limit: int = 0,
                   progress: bool = True) -> list[dict]:
    """:func:`compare` for every pair: our ``method`` images (and decision maps) in ``out_dir``, as
    :func:`fuse_survey` wrote them with ``maps=("decision_map",)``, against the authors' CNN images.

    Returns
    -------
    list of dict
        One per pair, in survey order: ``image`` and :func:`compare`'s values.
    """
    from tqdm import tqdm

    from pyfusion.io import read_image

    rows = []
    for name, pa, pb, pref in tqdm(survey_pairs(root, names, limit), desc="compare", unit="pair",
                                   disable=not progress):
        a, b, ref = (to255(read_image(p)) for p in (pa, pb, pref))
        ours = to255(read_image(fused_path(out_dir, name, method)))
        decision = np.load(map_path(out_dir, name, "decision_map"))
        rows.append({"image": name, **compare(a, b, ours, ref, decision)})
    return rows


# ---------------------------------------------------------------------------------------- metric tables
def evaluate_survey(root, fused_dirs, names, *, progress: bool = True) -> dict:
    """The eight metrics of every fused image in ``fused_dirs`` and of the authors' CNN images, for ``names``.

    Returns
    -------
    dict
        ``{KEY: {image: {metric: value}}}`` (:func:`fusionlab.tables.evaluate`); KEY is ``OURS-METHOD``
        for our images (``NAME_ours-method.tif``) and ``CNN`` for the authors'.
    """
    from fusionlab.tables import evaluate, find_cases

    root = Path(root)
    sources = [root / "sources" / "color", root / "sources" / "grayscale"]
    cases, _ = find_cases(sources, [*fused_dirs, root / "results" / "cnn"])
    names = set(names)
    return evaluate([c for c in cases if c.image in names], progress=progress)


def our_key(method: str) -> str:
    """The key of ``method``'s images in :func:`evaluate_survey`'s results."""
    return f"OURS-{method.upper()}"


def _mean(per_image, images):
    keys = next(iter(per_image.values()))
    return {k: float(np.mean([per_image[i][k] for i in images])) for k in keys}


def set_rows(results, survey, survey_methods, images, *, ours: dict, checks: dict | None = None) -> dict:
    """The rows of one table: means over ``images``.

    Parameters
    ----------
    results : dict
        :func:`evaluate_survey`'s output.
    survey, survey_methods
        :func:`fusionlab.tables.load_survey`'s output.
    images : sequence of str
    ours : dict
        ``{row label: results key}``: our methods.
    checks : dict, optional
        ``{row label: results key}``: rows shown but not ranked (our metric code on published images).

    Returns
    -------
    dict
        ``{"published": {method: {metric: mean}}, "ours": {label: ...}, "check": {label: ...}}``;
        ``published`` is empty when an image is not in the survey.
    """
    from fusionlab.tables import survey_means

    return {"published": survey_means(survey, survey_methods, list(images)) or {},
            "ours": {label: _mean(results[key], images) for label, key in ours.items()},
            "check": {label: _mean(results[key], images) for label, key in (checks or {}).items()}}


def _shown(v: float) -> float:
    return float(f"{v:.{DIGITS}f}")


def ranks(rows: dict) -> dict:
    """Each of ``rows["ours"]`` against the published rows, per metric, at the tables' precision.

    Returns
    -------
    dict
        ``{label: {metric: {"rank": r, "of": n, "delta": d, "best": method}}}``: ``r`` is 1 + the number of
        published rows strictly better, of ``n`` = published rows + 1; ``d`` the gap to the best published value
        (positive: ours is better; for a lower-is-better metric ``best - ours``); ``best`` the published method
        holding it.
    """
    from pyfusion.metrics import LOWER_IS_BETTER

    pub = rows["published"]
    out = {}
    for label, vals in rows["ours"].items():
        out[label] = {}
        for k, v in vals.items():
            sign = -1.0 if k in LOWER_IS_BETTER else 1.0
            mine = sign * _shown(v)
            theirs = {m: sign * _shown(p[k]) for m, p in pub.items()}
            best = max(theirs, key=lambda m: (theirs[m], -list(pub).index(m))) if theirs else None
            out[label][k] = {"rank": 1 + sum(t > mine for t in theirs.values()), "of": len(theirs) + 1,
                             "delta": round(mine - theirs[best], DIGITS) if best else float("nan"), "best": best}
    return out


def _table(rows: dict) -> list[str]:
    from pyfusion.metrics import LOWER_IS_BETTER

    ranked = {**rows["published"], **rows["ours"]}
    keys = list(next(iter(ranked.values())))
    pick = {k: (min if k in LOWER_IS_BETTER else max) for k in keys}
    best = {k: pick[k](_shown(r[k]) for r in ranked.values()) for k in keys}
    lines = ["| method | " + " | ".join(f"{k}{' (lower better)' if k in LOWER_IS_BETTER else ''}" for k in keys)
             + " |", "|---|" + "---:|" * len(keys)]

    def row(label, vals, mark=True):
        cells = [f"**{vals[k]:.{DIGITS}f}**" if mark and _shown(vals[k]) == best[k] else f"{vals[k]:.{DIGITS}f}"
                 for k in keys]
        return f"| {label} | " + " | ".join(cells) + " |"

    lines += [row(m, v) for m, v in rows["published"].items()]
    lines += [row(f"**ours: `{m}`**", v) for m, v in rows["ours"].items()]
    lines += [row(f"check: {m}", v, mark=False) for m, v in rows["check"].items()]
    return lines


def _rank_lines(rows: dict) -> list[str]:
    rk = ranks(rows)
    if not rk or not rows["published"]:
        return []
    keys = list(next(iter(rows["ours"].values())))
    n = len(rows["published"])
    lines = [f"Rank of each of our methods among the {n} published ones and itself (1: best; in brackets the gap to "
             "the best published value, positive where ours is better):", "",
             "| ours | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
    for label, per in rk.items():
        lines.append(f"| `{label}` | " + " | ".join(
            f"{'**' if r['rank'] == 1 else ''}{r['rank']}/{r['of']}{'**' if r['rank'] == 1 else ''} "
            f"({r['delta']:+.{DIGITS}f})" for r in per.values()) + " |")
    best = next(iter(rk.values()))
    lines += ["", "Best published value per column: " + ", ".join(f"{k} {r['best']}" for k, r in best.items()) + ". "
              "Columns where each of ours reaches or beats it: "
              + "; ".join(f"`{label}` {', '.join(k for k, r in per.items() if r['rank'] == 1) or 'none'}"
                          for label, per in rk.items()) + "."]
    return lines


def _check_lines(rows: dict, reference: str = "CNN") -> list[str]:
    from pyfusion.metrics import LOWER_IS_BETTER

    pub = rows["published"].get(reference)
    out = []
    for label, vals in rows["check"].items():
        if pub is None:
            continue
        gaps = {k: (v - pub[k]) / pub[k] if k in LOWER_IS_BETTER else v - pub[k] for k, v in vals.items()}
        k = max(gaps, key=lambda m: abs(gaps[m]))
        out.append(f"Check row `{label}` minus the published {reference} row: largest gap {gaps[k]:+.2e} ({k}"
                   f"{', relative' if k in LOWER_IS_BETTER else ''}); per metric: "
                   + ", ".join(f"{m} {g:+.1e}" for m, g in gaps.items()) + ".")
    return out


def metric_tables(results, survey, survey_methods, *, sets: dict, ours: dict, checks: dict | None = None,
                  level: int = 3) -> str:
    """Markdown tables of the eight metrics, one per image set, as the survey prints them.

    Each table: the survey's published rows (means over the set, survey order), our rows, then the ``checks``
    rows; the best value per column in bold among the published rows and ours (at :data:`DIGITS` decimals; lower
    is better for :data:`pyfusion.metrics.LOWER_IS_BETTER`); then each of our rows' rank per column
    (:func:`ranks`), and the largest gap of each check row to the published CNN row.

    Parameters
    ----------
    results, survey, survey_methods, ours, checks
        As :func:`set_rows`.
    sets : dict
        ``{label: images}`` (:func:`survey_sets`).
    level : int
        Markdown heading level of each table's title.
    """
    out = []
    for label, images in sets.items():
        rows = set_rows(results, survey, survey_methods, images, ours=ours, checks=checks)
        out += [f"{'#' * level} {label} ({len(images)} pair{'s' if len(images) != 1 else ''})", "", *_table(rows), ""]
        for part in (_rank_lines(rows), _check_lines(rows)):
            out += part + [""] if part else []
    return "\n".join(out)


def _mean_psnr(values) -> str:
    finite = [v for v in values if np.isfinite(v)]
    same = len(values) - len(finite)
    return (f"**{np.mean(finite):.2f}**" if finite else "**inf**") + (f" ({same} identical)" if same else "")


def psnr_table(root, runs: dict, names, sets: dict) -> str:
    """PSNR (dB) of our images against the published images of the same method (``results/METHOD/``), per image
    and mean per set, for the methods in ``runs`` (``{method: folder}``) that have published images; "" if none.
    Identical images (infinite PSNR) are left out of a mean and counted beside it."""
    from pyfusion.io import read_image

    root = Path(root)
    cols = [m for m in runs if (root / "results" / m).is_dir()]
    if not cols:
        return ""
    vals = {n: [psnr255(to255(read_image(fused_path(runs[m], n, m))),
                        to255(read_image(root / "results" / m / f"{n}_{m}.tif"))) for m in cols] for n in names}
    lines = ["| image | " + " | ".join(f"ours `{m}` vs published {m.upper()}" for m in cols) + " |",
             "|---|" + "---:|" * len(cols)]
    lines += [f"| {n} | " + " | ".join(f"{v:.2f}" for v in vals[n]) + " |" for n in names]
    for label, sel in sets.items():
        lines.append(f"| **mean {label}** | " + " | ".join(_mean_psnr([vals[n][j] for n in sel])
                                                         for j in range(len(cols))) + " |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------ reproduction doc
def check_doc(path) -> str | None:
    """Why ``path`` cannot take the generated block (one line), or None: an existing file must have one
    :data:`TABLE_START` line and one later :data:`TABLE_END` line (:func:`pyfusion.io.has_block`)."""
    p = Path(path)
    if not p.exists():
        return None
    if not p.is_file():
        return f"{p}: not a file"
    if not has_block(p.read_text(encoding="utf-8"), DOC_BLOCK):
        return (f"{p}: exists without one '{TABLE_START}' line and one later '{TABLE_END}' line; "
                "refusing to overwrite it (add the markers around its table, or give a new file)")
    return None


def figure_pairs(rows) -> list[tuple[str, str]]:
    """The pairs to draw, from :func:`compare_survey`'s rows: the median pair of each set by decision agreement
    (the lower median), then the pair with the lowest agreement of all, each once: ``[(image, why)]``."""
    def key(r):
        v = r["decision_agreement"]
        return (np.inf if np.isnan(v) else v, r["image"])

    out = []
    for label, sel in survey_sets([r["image"] for r in rows]).items():
        if label == "all":
            continue
        ordered = sorted((r for r in rows if r["image"] in sel), key=key)
        out.append((ordered[(len(ordered) - 1) // 2]["image"], f"{label}, median decision agreement"))
    worst = min(rows, key=key)["image"]
    picked = dict(out)
    if worst in picked:
        picked[worst] += "; the lowest of all"
    else:
        picked[worst] = f"{'colour' if worst.startswith('c_') else 'grayscale'}, lowest decision agreement of all"
    return list(picked.items())


def reproduction_block(rows, figures=(), *, doc_dir=".", config: str = "") -> str:
    """The generated part of docs/reproduction.md: the mean, the per-image table and the pair figures.

    Parameters
    ----------
    rows : list of dict
        :func:`compare_survey`'s output.
    figures : sequence of (path, caption)
        PNG files, linked relative to ``doc_dir``.
    config : str
        A line saying how the block was made.
    """
    def mean(k):
        return float(np.nanmean([r[k] for r in rows]))

    low = sorted(rows, key=lambda r: (r["psnr_db"], r["image"]))[:3]
    lines = [config, "",
             f"**Mean over {len(rows)} pair{'s' if len(rows) != 1 else ''}: PSNR {mean('psnr_db'):.2f} dB, decision "
             f"agreement {mean('decision_agreement'):.4f}.** Lowest PSNR: "
             + ", ".join(f"{r['image']} {r['psnr_db']:.2f} dB (pixels off by > {MIN_DIFF:g} levels "
                         f"{100 * r['differing_share']:.2f}%, largest region {r['largest_region_px']} px)" for r in low)
             + ".", "",
             f"| image | PSNR vs authors (dB) | decision agreement | recoverable pixels | pixels off by > {MIN_DIFF:g} "
             "levels | largest such region (px) |", "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['image']} | {r['psnr_db']:.2f} | {r['decision_agreement']:.4f} | {r['recoverable_share']:.3f} | "
              f"{100 * r['differing_share']:.2f}% | {r['largest_region_px']} |" for r in rows]
    lines.append(f"| **mean** | **{mean('psnr_db'):.2f}** | **{mean('decision_agreement'):.4f}** | "
                 f"{mean('recoverable_share'):.3f} | {100 * mean('differing_share'):.2f}% | |")
    for path, caption in figures:
        rel = Path(os.path.relpath(path, doc_dir)).as_posix()
        lines += ["", f"![{Path(path).stem}]({rel})", "", caption]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------- report
def _prune(folder: Path, pattern: str, keep) -> list[Path]:
    keep = {Path(p).resolve() for p in keep}
    gone = [p for p in sorted(folder.glob(pattern)) if p.resolve() not in keep]
    for p in gone:
        p.unlink()
    return gone


def make_report(data, out, *, methods=None, names=None, limit: int = 0, survey_doc=None, reproduction_doc=None,
                figures=None, force: bool = True, progress: bool = True, options: dict | None = None,
                command: str = "python tools/reproduce.py", log=print) -> dict:
    """Fuse, measure and write the reproduction report.

    Parameters
    ----------
    data : path-like
        The survey folder (``../shared/data/mfif``: ``sources/``, ``results/cnn``, ``metrics.json``).
    out : path-like
        Our fused images go to ``out/METHOD/`` (:func:`fuse_survey`; ``cnn`` also its decision maps), all numbers
        to ``out/results.json``.
    methods : sequence of str, optional
        Default: every method of :data:`pyfusion.fusion.METHODS`.
    names, limit
        Which pairs (:func:`survey_pairs`).
    survey_doc : path-like, optional
        Markdown file for the metric tables (:func:`metric_tables`, with the metric charts when ``figures``) and
        :func:`psnr_table`; written whole.
    reproduction_doc : path-like, optional
        Markdown file for :func:`reproduction_block` (with the pair figures when ``figures``), between its
        marker lines (:func:`pyfusion.io.replace_block`); needs ``cnn`` in ``methods``.
    figures : path-like, optional
        Folder for the PNG figures: ``pair_NAME.png`` (:func:`figure_pairs`, with ``reproduction_doc``) and
        ``metrics_SET.png`` (grayscale / colour, with ``survey_doc``); other files of these two patterns there
        are removed (figures of earlier runs).
    force : bool
        Fuse every pair again (default); False keeps the images already in ``out`` (resume; the caller vouches
        that they come from the same models and options).
    progress : bool
        tqdm bars.
    options : dict, optional
        ``{option: value}`` given to every method that takes the option (e.g. ``backend``), and
        ``{method: {option: value}}`` to that method only (e.g. ``{"cnn": {"model": ...}}``).
    command : str
        How the report was made, quoted in the documents.
    log : callable
        Called with one line per file written.

    Returns
    -------
    dict
        ``written`` (paths in order), ``results`` (per-image metrics), ``tables`` (:func:`set_rows` per set),
        ``comparison`` (:func:`compare_survey`'s rows, or None).

    Raises
    ------
    ValueError
        No survey pair, an unknown pair or method, ``reproduction_doc`` without ``cnn``, or a document that may
        not be overwritten (:func:`check_doc`).
    """
    from pyfusion.backends import default_backend
    from pyfusion.fusion import METHODS, method_takes
    from pyfusion.io import write_atomic
    from pyfusion.metrics import LOWER_IS_BETTER
    from fusionlab.tables import load_survey

    data, out = Path(data), Path(out)
    methods = list(METHODS) if methods is None else list(methods)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method {unknown[0]!r}; choose from {', '.join(METHODS)}")
    if reproduction_doc is not None and "cnn" not in methods:
        raise ValueError("the reproduction document compares our cnn images with the authors': add method cnn")
    if reproduction_doc is not None and (why := check_doc(reproduction_doc)):
        raise ValueError(why)
    pairs = survey_pairs(data, names, limit)
    if not pairs:
        raise ValueError(f"no survey pairs under {data}")
    names = [p[0] for p in pairs]
    sets = survey_sets(names)
    options = dict(options or {})
    written = []

    def opts(m):  # the global options the method takes, then its own
        return {**{k: v for k, v in options.items() if k not in METHODS and k in method_takes(m)},
                **options.get(m, {})}

    runs = {}
    for m in methods:
        maps = ("decision_map",) if m == "cnn" and reproduction_doc is not None else ()
        fuse_survey(data, m, out / m, names=names, force=force, progress=progress, maps=maps, **opts(m))
        runs[m] = out / m
        log(f"fused {m}: {out / m}/ ({len(names)} images)")
    comparison = None
    if reproduction_doc is not None:
        comparison = compare_survey(data, runs["cnn"], names=names, progress=progress)
    results = evaluate_survey(data, list(runs.values()), names, progress=progress)
    survey, survey_methods = load_survey(data / "metrics.json")
    ours = {m: our_key(m) for m in methods}
    checks = {"our metric code on the published CNN images": "CNN"}
    tables = {label: set_rows(results, survey, survey_methods, sel, ours=ours, checks=checks)
              for label, sel in sets.items()}
    backends = sorted({opts(m).get("backend") or default_backend() for m in methods if "backend" in method_takes(m)})
    config = (f"Generated by `{command}` ({len(names)} survey pair{'s' if len(names) != 1 else ''}; the shipped "
              f"models of `pyfusion/models.py`{', backend ' + ', '.join(backends) if backends else ''}). "
              "Do not edit: rerun it.")

    metric_figs, pair_figs = {}, {}  # set label / pair name -> (path, caption)
    if figures is not None:
        from tqdm import tqdm

        from fusionlab import figures as fg
        from pyfusion.io import read_image

        fdir = Path(figures)
        jobs = []
        if survey_doc is not None:
            jobs += [("metrics", label) for label in sets if label != "all" and tables[label]["published"]]
        if comparison is not None and reproduction_doc is not None:
            jobs += [("pair", p) for p in figure_pairs(comparison)]
        for kind, what in tqdm(jobs, desc="figures", unit="figure", disable=not progress):
            if kind == "metrics":
                t = tables[what]
                fig = fg.metric_ranges(t["published"], {f"ours: {m}": v for m, v in t["ours"].items()},
                                       lower_is_better=LOWER_IS_BETTER, reference="CNN",
                                       title=f"The survey's {what} pairs ({len(sets[what])}): ours against the "
                                             f"{len(t['published'])} published methods")
                path = fdir / f"metrics_{what}.png"
                metric_figs[what] = (path, f"Each metric's grey bar spans the {len(t['published'])} published "
                                           f"methods' means over the {what} pairs, from the worst (left, value "
                                           "written) to the best (right, value written); markers: our methods; "
                                           "black bar: the published CNN.")
            else:
                name, why = what
                row = next(r for r in comparison if r["image"] == name)
                pa, pb, pref = next(p[1:] for p in pairs if p[0] == name)
                a, b, ref = (to255(read_image(p)) for p in (pa, pb, pref))
                ours_img = to255(read_image(fused_path(runs["cnn"], name, "cnn")))
                decision = np.load(map_path(runs["cnn"], name, "decision_map"))
                fig = fg.pair_panel(a, b, ours_img, ref, decision, amplify=AMPLIFY,
                                    title=f"{name} ({why})\nPSNR {row['psnr_db']:.2f} dB, decision agreement "
                                          f"{row['decision_agreement']:.4f}")
                path = fdir / f"pair_{name}.png"
                pair_figs[name] = (path, f"{name} ({why}). Top: the sources and our decision map (`cnn`, weight "
                                         "of A); bottom: our fused image, the authors', and the difference (ours − "
                                         f"authors') amplified ×{AMPLIFY:g} around mid-grey (lighter: ours "
                                         f"brighter; clipped at ±{127.5 / AMPLIFY:g} grey levels). Downscaled for "
                                         "the page: each image by block averages, the difference by the largest "
                                         "difference of each block.")
            fg.save_png(fig, path, colours=256 if kind == "pair" else 0)
            written.append(path)
            log(f"figure: {path}")
        for pattern, made, did in (("metrics_*.png", metric_figs, survey_doc is not None),
                                   ("pair_*.png", pair_figs, reproduction_doc is not None)):
            for p in _prune(fdir, pattern, [v[0] for v in made.values()]) if did and fdir.is_dir() else []:
                log(f"removed an earlier figure: {p}")

    if survey_doc is not None:
        doc = Path(survey_doc)
        doc.parent.mkdir(parents=True, exist_ok=True)
        lines = ["# The survey's eight metrics: the published methods and ours", "", config, "",
                 "Means over each set of the survey's pairs (Liu et al., \"Multi-focus image fusion: a survey of the "
                 "state of the art\", Information Fusion 64, 2020): the survey's 18 published rows (from its "
                 "per-image values in `metrics.json`), every method of this project (`ours`: our fused images, our "
                 "metric code `pyfusion.metrics`) and a check row: our metric code on the authors' published CNN "
                 "images, which should equal the published CNN row. Best value per column in bold, among the "
                 "published rows and ours, at the printed precision (QCV: lower is better). The survey prints the "
                 "grayscale and colour sets; `all` pools the pairs. Per-image values: "
                 f"`{Path(out).as_posix()}/results.json`.", ""]
        for label in sets:
            if label in metric_figs:
                path, caption = metric_figs[label]
                lines += [f"![{path.stem}]({Path(os.path.relpath(path, doc.parent)).as_posix()})", "", caption, ""]
        lines += [metric_tables(results, survey, survey_methods, sets=sets, ours=ours, checks=checks, level=2)]
        psnr = psnr_table(data, runs, names, sets)
        if psnr:
            lines += ["## PSNR of our images against the published ones (dB)", "", psnr]
        write_atomic(doc, "\n".join(lines).rstrip() + "\n")
        written.append(doc)
        log(f"survey tables: {doc}")

    if reproduction_doc is not None:
        doc = Path(reproduction_doc)
        doc.parent.mkdir(parents=True, exist_ok=True)
        block = reproduction_block(comparison, list(pair_figs.values()), doc_dir=doc.parent, config=config)
        replace_block(doc, DOC_BLOCK, block, append=False)
        written.append(doc)
        log(f"ours vs the authors' images: {doc}")

    summary = {"config": {"command": command, "methods": methods, "pairs": names,
                          "options": {m: {k: str(v) for k, v in opts(m).items()} for m in methods}},
               "tables": tables, "comparison": comparison, "per_image": results}
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "results.json", json.dumps(summary, indent=1) + "\n")
    written.append(out / "results.json")
    log(f"all numbers: {out / 'results.json'}")
    return {"written": written, "results": results, "tables": tables, "comparison": comparison}
