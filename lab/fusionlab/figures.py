"""Figures of the reproduction report (``make reproduce``): image panels and metric charts, as small PNG files.

matplotlib's object API (:class:`matplotlib.figure.Figure` on the Agg canvas) only: no pyplot, no global state,
no display. :func:`save_png` writes a figure atomically (:func:`pyfusion.io.write_atomic`), without the
``Software`` tag (the bytes depend on the inputs and the matplotlib version only).

References
----------
.. [1] Y. Liu, X. Chen, H. Peng, Z. Wang, "Multi-focus image fusion with a deep convolutional neural network",
   Information Fusion 36 (2017) 191-207.
.. [2] Y. Liu, L. Wang, J. Cheng, C. Li, X. Chen, "Multi-focus image fusion: a survey of the state of the art",
   Information Fusion 64 (2020) 71-91.
"""
from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np

__all__ = ["save_png", "pool", "pair_panel", "metric_ranges"]

#: marker and colour per row of :func:`metric_ranges` (cycled)
_MARKERS = ("o", "s", "D", "^", "v", "P", "X", "*")
_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive")


def save_png(fig, path, *, dpi: int = 100, colours: int = 0) -> Path:
    """Render ``fig`` (a :class:`matplotlib.figure.Figure`) to PNG and write it atomically to ``path``.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
    path : path-like
        Destination; its directory is created.
    dpi : int
        Resolution: the PNG is ``figsize * dpi`` pixels.
    colours : int
        0: an RGBA PNG as matplotlib writes it; else a palette PNG of at most this many colours (Pillow's median
        cut, no dithering; about a third of the size for photographs).

    Returns
    -------
    pathlib.Path
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from pyfusion.io import write_atomic

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    if colours:
        from PIL import Image

        buf.seek(0)
        img = Image.open(buf).convert("RGB").quantize(colours, method=Image.Quantize.MEDIANCUT,
                                                      dither=Image.Dither.NONE)
        buf = io.BytesIO()
        img.save(buf, format="PNG", optimize=True)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(p, buf.getvalue())


def pool(x, factor: int, *, how: str = "mean") -> np.ndarray:
    """Downscale ``x`` ((H, W) or (H, W, C)) by an integer ``factor`` over ``factor x factor`` blocks.

    Parameters
    ----------
    x : array_like
    factor : int
        Block side; 1 returns ``x`` as float64. The last partial blocks are padded by repeating the edge.
    how : {"mean", "maxabs"}
        ``"mean"``: the block average (an image); ``"maxabs"``: the value of largest magnitude in the block, sign
        kept (a difference image: thin bands of differing pixels stay visible).

    Returns
    -------
    numpy.ndarray
        ``(ceil(H / factor), ceil(W / factor)[, C])`` float64.
    """
    x = np.asarray(x, dtype=np.float64)
    if factor <= 1:
        return x
    h, w = x.shape[:2]
    ph, pw = -h % factor, -w % factor
    x = np.pad(x, ((0, ph), (0, pw)) + ((0, 0),) * (x.ndim - 2), mode="edge")
    blocks = x.reshape((x.shape[0] // factor, factor, x.shape[1] // factor, factor) + x.shape[2:])
    if how == "mean":
        return blocks.mean(axis=(1, 3))
    if how == "maxabs":
        b = np.moveaxis(blocks, 2, 1).reshape(blocks.shape[0], blocks.shape[2], factor * factor, *x.shape[2:])
        idx = np.abs(b).argmax(axis=2)
        return np.take_along_axis(b, idx[:, :, None], axis=2)[:, :, 0]
    raise ValueError(f"unknown pooling {how!r}; use 'mean' or 'maxabs'")


def _show(ax, img, title):
    ax.imshow(np.clip(img, 0.0, 1.0), cmap="gray" if img.ndim == 2 else None, vmin=0.0, vmax=1.0,
              interpolation="nearest")
    ax.set_title(title, fontsize=8, pad=3)
    ax.set_axis_off()


def pair_panel(a, b, ours, theirs, decision, *, title: str, amplify: float = 10.0, max_side: int = 300,
               dpi: int = 100):
    """One pair in six images: both sources, our decision map; our fused image, the authors', the difference.

    Parameters
    ----------
    a, b, ours, theirs : numpy.ndarray
        Sources, our fused image and the authors' on the 0-255 scale ((H, W) or (H, W, 3)).
    decision : numpy.ndarray
        Our decision map (weight of source A, (H, W); shown clipped to [0, 1]).
    title : str
        The figure's title (may hold a line break).
    amplify : float
        The difference ``ours - theirs`` is shown as ``0.5 + amplify * (ours - theirs) / 255`` (mid-grey: equal;
        lighter: ours brighter), clipped to [0, 1], per channel.
    max_side : int
        Each image is downscaled by the smallest integer factor that brings its longer side to ``max_side`` or
        less (:func:`pool`: block mean; the difference: the largest difference of each block), and drawn one
        image pixel to one PNG pixel at ``dpi``.
    dpi : int
        The resolution :func:`save_png` is to use.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.figure import Figure

    h, w = np.shape(a)[:2]
    factor = max(1, math.ceil(max(h, w) / max_side))
    diff = np.asarray(ours, np.float64) - np.asarray(theirs, np.float64)
    shown = [(pool(a, factor) / 255, "source A"), (pool(b, factor) / 255, "source B"),
             (pool(decision, factor), "our decision map (weight of A)"),
             (pool(ours, factor) / 255, "ours"), (pool(theirs, factor) / 255, "the authors'"),
             (0.5 + amplify * pool(diff, factor, how="maxabs") / 255, f"(ours − authors') ×{amplify:g}")]
    ih, iw = shown[0][0].shape[:2]
    margin, gap, label, top = 8, 8, 22, 16 * (title.count("\n") + 1) + 14     # pixels
    width = max(3 * iw + 2 * gap + 2 * margin, 480)
    left0 = (width - 3 * iw - 2 * gap) / 2
    height = top + 2 * (label + ih) + margin
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    for k, (img, text) in enumerate(shown):
        row, col = divmod(k, 3)
        bottom = height - top - (row + 1) * (label + ih)
        ax = fig.add_axes([(left0 + col * (iw + gap)) / width, bottom / height, iw / width, ih / height])
        _show(ax, img, text)
    fig.suptitle(title, fontsize=9, y=1 - 4 / height, va="top")
    return fig


def _value(v: float) -> str:
    return f"{v:.4f}" if abs(v) < 10 else f"{v:.2f}"


def metric_ranges(published: dict, ours: dict, *, lower_is_better=frozenset(), reference: str | None = None,
                  title: str = ""):
    """Our methods against the range of the published ones, one row per metric, on a common 0-1 scale.

    For each metric the published values span a grey bar from the worst (0) to the best (1) of them (for a
    metric in ``lower_is_better`` the scale is flipped: right is better); each of ``ours`` is a marker at
    ``(value - worst) / (best - worst)`` (outside the bar when outside the range). The worst and best values are
    written at the bar's ends.

    Parameters
    ----------
    published : dict
        ``{method: {metric: value}}``: the published rows (the survey's 18).
    ours : dict
        ``{label: {metric: value}}``: the rows to mark, in legend order.
    lower_is_better : set of str
    reference : str, optional
        A key of ``published`` also marked (a black bar), e.g. ``"CNN"``.
    title : str

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.figure import Figure

    metrics = list(next(iter(published.values())))
    n = len(metrics)

    def span(k):
        vals = [v[k] for v in published.values()]
        return (max(vals), min(vals)) if k in lower_is_better else (min(vals), max(vals))

    def pos(k, v):
        worst, best = span(k)
        return 0.5 if best == worst else (v - worst) / (best - worst)

    xs = [pos(k, v[k]) for v in ours.values() for k in metrics]
    lo, hi = min([-0.05] + xs) - 0.1, max([1.05] + xs) + 0.1
    fig = Figure(figsize=(7.0, 0.42 * n + 1.5))
    ax = fig.subplots()
    y = np.arange(n)[::-1]
    ax.barh(y, 1.0, left=0.0, height=0.5, color="0.82", label=f"published range ({len(published)} methods)")
    for yi, k in zip(y, metrics):
        worst, best = span(k)
        ax.text(-0.02, yi, _value(worst), ha="right", va="center", fontsize=7, color="0.35")
        ax.text(1.02, yi, _value(best), ha="left", va="center", fontsize=7, color="0.35")
    if reference is not None and reference in published:
        ax.scatter([pos(k, published[reference][k]) for k in metrics], y, marker="|", s=220, color="black",
                   linewidths=1.5, zorder=3, label=f"published {reference}")
    for i, (label, vals) in enumerate(ours.items()):
        offset = (i - (len(ours) - 1) / 2) * 0.12
        ax.scatter([pos(k, vals[k]) for k in metrics], y + offset, marker=_MARKERS[i % len(_MARKERS)], s=28,
                   color=_COLOURS[i % len(_COLOURS)], edgecolors="black", linewidths=0.4, zorder=4, label=label)
    ax.set_yticks(y, [f"{k} (lower better)" if k in lower_is_better else k for k in metrics], fontsize=8)
    ax.set_xlim(min(lo, -0.25), max(hi, 1.25))
    ax.set_ylim(-0.8, n - 0.2)
    ax.set_xticks([0, 0.5, 1], ["worst", "", "best"], fontsize=8)
    ax.set_xlabel("position in the published range (0: worst, 1: best published value; lower-is-better "
                  "metrics flipped)", fontsize=8)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    entries = len(ours) + 1 + (reference is not None and reference in published)
    rows = math.ceil(entries / 5)
    fig.legend(*ax.get_legend_handles_labels(), fontsize=7, loc="lower center", ncol=math.ceil(entries / rows),
               frameon=False)
    ax.set_title(title, fontsize=10)
    height = fig.get_figheight()
    fig.subplots_adjust(left=0.17, right=0.97, top=1 - 0.35 / height, bottom=(0.65 + 0.18 * rows) / height)
    return fig
