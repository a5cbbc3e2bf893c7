"""Exact overlapping tiles of the score map, and the tile size that fits a memory budget.

Every registered net (:mod:`pyfusion.models`) has the same trunk, so one rule serves them all. Score ``i`` (rows;
columns alike) of a net with patch ``P``, stride 2 and head ``K = P/2`` sees input rows
``[2i - 4, 2i + P - 1 + 4]``: the K x K head reads conv3 rows ``i .. i+K-1``, conv3 (3x3, pad 1, half resolution)
pool rows ``i-1 .. i+K``, the 2x2/2 pool conv2 rows ``2i-2 .. 2i+2K+1``, conv2 and conv1 (3x3, pad 1) one more row
each way (``Model.halo_before`` = ``halo_after`` = 4). A tile for scores ``[i0, i1)`` therefore reads input rows
``[max(0, 2 i0 - 4), min(H, 2 (i1 - 1) + P + 4))``; it starts on the stride grid (the pool windows line up) and
keeps the scores ``i0 .. i1-1``. Inside the image a tile's zero padding only reaches scores it drops; at the image
border the tile edge *is* the image edge, so it gets exactly the whole image's zero padding (and Caffe's ceil-mode
last pool window). So a tile computes the same function as the whole image; backends that evaluate it in the
same order of operations for any input size (the winograd backend on its tile grid) give bit-identical scores,
others (ONNX Runtime, Caffe, whose BLAS blocking follows the matrix sizes) agree to float rounding (~1e-7).

A backend whose arithmetic depends on the tile position declares a grid (``GRID``, input pixels) and a function
``exact_scores(n, head)``: the leading scores of an ``n``-row tile that are exact; tiles then start on that grid
and reach further (the winograd backend's 4x4 Winograd tiles: grid 8).

References
----------
.. [1] Y. Liu, X. Chen, H. Peng, Z. Wang, "Multi-focus image fusion with a deep convolutional neural network",
   Information Fusion 36 (2017) 191-207, Sec. 3.3.1.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from .models import Model
from .util import available_bytes, gpu_free_bytes

__all__ = ["tile_plan", "tiled_scores", "input_extent", "choose_tile", "default_max_bytes"]

#: Default budget of the score-map stage: this fraction of MemAvailable, at most DEFAULT_MEMORY_CAP bytes.
DEFAULT_MEMORY_FRACTION = 0.25
DEFAULT_MEMORY_CAP = 2 << 30
#: Default budget on a GPU: this fraction of its free memory.
GPU_MEMORY_FRACTION = 0.5


def default_max_bytes(gpu: int | None = None) -> int:
    """Default budget of the score-map stage: ``min(0.25 * MemAvailable, 2 GiB)``; on GPU ``gpu``, half its free
    memory (:func:`pyfusion.util.gpu_free_bytes`; the CPU rule where that is unknown)."""
    if gpu is not None:
        free = gpu_free_bytes(gpu)
        if free:
            return int(GPU_MEMORY_FRACTION * free)
    return int(min(DEFAULT_MEMORY_FRACTION * available_bytes(), DEFAULT_MEMORY_CAP))


class Geometry:
    """Tiling rules of one (model, backend): the stride grid, or a backend's own grid and exactness rule."""

    def __init__(self, model: Model, backend=None):
        self.m = model
        self.grid = getattr(backend, "GRID", model.stride)
        self.exact = getattr(backend, "exact_scores", None)
        self.halo_grid = getattr(backend, "HALO_BEFORE", model.halo_before)

    def axis(self, n_img: int, n_score: int, tile: int) -> list[tuple[int, int, int, int]]:
        """Tiles along one axis: ``(i0, i1, s, e)``: scores ``[i0, i1)`` computed from input ``[s, e)``."""
        m, st = self.m, self.m.stride
        out = []
        for i0 in range(0, n_score, tile):
            i1 = min(n_score, i0 + tile)
            e = st * (i1 - 1) + m.patch + m.halo_after
            if self.exact is None:
                s = max(0, st * i0 - m.halo_before)
            else:  # the first scores of a tile see its zero padding, and the end follows the backend's grid
                s = max(0, (st * i0 - self.halo_grid) // self.grid * self.grid)
                while e < n_img and self.exact(e - s, m.head) < i1 - s // st:
                    e += 1
            out.append((i0, i1, s, min(e, n_img)))
        return out

    def extent(self, n_score_tile: int, n_img: int) -> int:
        """Input pixels one tile of ``n_score_tile`` scores reads along an axis of ``n_img`` pixels (at most)."""
        m, st = self.m, self.m.stride
        if self.exact is None:
            return min(n_img, st * (n_score_tile - 1) + m.patch + m.halo_before + m.halo_after)
        before = (self.halo_grid + self.grid - 1) // st  # scores at most before a tile's first kept one
        n = st * n_score_tile + m.patch
        while n < n_img and self.exact(n, m.head) < n_score_tile + before:
            n += 1
        return min(n, n_img)


def tile_plan(h: int, w: int, tile: tuple[int, int], *, model: Model, backend=None
              ) -> list[tuple[slice, slice, slice, slice]]:
    """Overlapping tiles of an ``h`` x ``w`` pair whose scores equal whole-image inference.

    Parameters
    ----------
    h, w : int
        Image size.
    tile : (int, int)
        Scores per tile (rows, columns), >= 1.
    model : Model
        The net's geometry.
    backend : module, optional
        A backend module with ``GRID``/``exact_scores`` (the winograd backend): tiles start on its grid and reach
        as far as its exactness rule needs. Default: the stride grid and the net's halo.

    Returns
    -------
    list of (out_rows, out_cols, in_rows, in_cols) slices
        ``scores[out_rows, out_cols] = net(a[in_rows, in_cols], b[in_rows, in_cols])[k_rows, k_cols]`` where
        ``k`` is ``out`` shifted by ``-in.start // stride`` (see :func:`tiled_scores`).
    """
    g = Geometry(model, backend)
    sh, sw = model.score_shape(h, w)
    th, tw = max(1, int(tile[0])), max(1, int(tile[1]))
    return [(slice(r0, r1), slice(c0, c1), slice(rs, re), slice(cs, ce))
            for r0, r1, rs, re in g.axis(h, sh, th) for c0, c1, cs, ce in g.axis(w, sw, tw)]


def tiled_scores(a: np.ndarray, b: np.ndarray, run: Callable, tile: tuple[int, int], *, model: Model,
                 backend=None, progress: bool = False) -> np.ndarray:
    """Score map of (``a``, ``b``) ((H, W, C) arrays) assembled from ``run(a_tile, b_tile)`` over the tile plan.

    ``progress``: a tqdm bar over the tiles (on stderr) when there is more than one.
    """
    h, w = a.shape[:2]
    out = np.empty(model.score_shape(h, w), np.float32)
    plan = tile_plan(h, w, tile, model=model, backend=backend)
    if progress and len(plan) > 1:
        from tqdm import tqdm

        plan = tqdm(plan, desc=f"score map ({getattr(backend, 'NAME', 'net')})", unit="tile")
    st = model.stride
    for rows, cols, rin, cin in plan:
        s = run(np.ascontiguousarray(a[rin, cin]), np.ascontiguousarray(b[rin, cin]))
        r0, c0 = rin.start // st, cin.start // st
        out[rows, cols] = s[rows.start - r0:rows.stop - r0, cols.start - c0:cols.stop - c0]
    return out


def input_extent(n_score_tile: int, n_img: int, *, model: Model, backend=None) -> int:
    """Input pixels one tile of ``n_score_tile`` scores reads along an axis of ``n_img`` pixels (at most)."""
    return Geometry(model, backend).extent(n_score_tile, n_img)


def choose_tile(h: int, w: int, *, model: Model, backend, max_bytes: int) -> tuple[int, int]:
    """Largest tile (scores per tile, rows x columns) whose estimated peak memory fits ``max_bytes`` bytes.

    ``backend.peak_bytes(model, h, w)`` is the backend's memory model. The whole image when it fits; else
    full-width strips if one strip row of 1+ scores fits; else square tiles. Never smaller than one score.
    """
    g = Geometry(model, backend)
    sh, sw = model.score_shape(h, w)

    def fits(th, tw):
        return backend.peak_bytes(model, g.extent(th, h), g.extent(tw, w)) <= max_bytes

    def largest(lo, hi, ok):
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if ok(mid) else (lo, mid - 1)
        return lo

    if fits(sh, sw):
        return sh, sw
    side = largest(1, max(sh, sw), lambda s: fits(min(s, sh), min(s, sw)))  # largest square (capped) that fits
    th, tw = min(side, sh), min(side, sw)
    if tw == sw:  # full-width strips: grow the rows
        th = largest(th, sh, lambda r: fits(r, sw))
    elif th == sh:
        tw = largest(tw, sw, lambda c: fits(sh, c))
    return th, tw
