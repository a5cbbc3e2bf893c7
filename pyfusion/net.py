"""The deploy net behind one small interface: :func:`score_map`.

The convolutional twin of the siamese CNN ([1]_, Sec. 3.3.1) turns an H x W pair into a
(ceil(H/2) - 7) x (ceil(W/2) - 7) map of P(source A in focus), one score per 16 x 16 patch at stride 2.

Backends
--------
``"winograd"`` (fastest on a CPU, the default when ``<model>.onnx`` exists and the C kernels are built)
    :mod:`pyfusion.winograd`: the folded model's weights (read from the ONNX file) run by C kernels that compute
    conv2 and conv3 with Winograd F(4x4, 3x3), ~4x fewer multiply-adds. Needs neither Caffe nor onnxruntime.
``"onnx"`` (the default where the C kernels are not built but onnxruntime imports; CUDA where a GPU exists)
    :mod:`pyfusion.onnx_export`'s folded model run by ONNX Runtime: both sources in one batch of two, the
    fc1/fc2/softmax head folded into one 8x8 filter and a sigmoid. Needs no Caffe.
``"caffe"`` (the reference)
    pycaffe on ``prototxt/deploy.prototxt``.

Tiling
------
Both backends run large pairs in overlapping tiles whose scores are identical to whole-image inference
(:func:`tile_plan`). Score ``i`` (rows; columns alike) sees input rows ``[2i - 4, 2i + 19]``: the 8x8 head reads
conv3 rows ``i .. i+7``, conv3 (3x3, pad 1, half resolution) pool rows ``i-1 .. i+8``, the 2x2/2 pool conv2 rows
``2i-2 .. 2i+17``, conv2 and conv1 (3x3, pad 1) one more row each way. A tile for scores ``[i0, i1)`` therefore
reads input rows ``[max(0, 2 i0 - 4), min(H, 2 i1 + 18))``; it starts on the stride-2 grid (the pool windows line
up) and keeps the scores ``i0 .. i1-1``. Inside the image a tile's zero padding only reaches its first and last
two score rows, which are dropped; at the image border the tile edge *is* the image edge, so it gets exactly the
whole image's zero padding (and Caffe's ceil-mode last pool window). The tile size comes from ``max_memory``.
The winograd backend's tiles also start on its 4x4 Winograd tile grid (multiples of 8 input pixels) and reach
further (:func:`winograd_exact_scores`), so its tiled scores are bit-identical too.

References
----------
.. [1] Y. Liu, X. Chen, H. Peng, Z. Wang, "Multi-focus image fusion with a deep convolutional neural network",
   Information Fusion 36 (2017) 191-207.
"""
from __future__ import annotations

import json
import math
import os
from functools import lru_cache
from pathlib import Path

import numpy as np

from .constants import FC1_KERNEL, PATCH, STRIDE

ROOT = Path(__file__).resolve().parents[1]
DEPLOY_PROTOTXT = ROOT / "prototxt" / "deploy.prototxt"
MODEL_DEFAULT = ROOT / "models" / "cnn_fusion.caffemodel"
BACKENDS = ("winograd", "onnx", "caffe")

#: Input rows a score row reaches above its patch (2i - HALO_BEFORE) and below it (2i + 15 + HALO_AFTER).
HALO_BEFORE = 4
HALO_AFTER = 4
#: The winograd backend's halo before a tile's first kept score: its first 4 scores see the tile's zero padding.
WINOGRAD_HALO_BEFORE = 8
#: Default budget of the score-map stage: this fraction of MemAvailable, at most DEFAULT_MEMORY_CAP bytes.
DEFAULT_MEMORY_FRACTION = 0.25
DEFAULT_MEMORY_CAP = 2 << 30
#: ONNX Runtime peak bytes per input pixel of a tile (both sources; measured ~1510 B/px on 300^2..1000^2 tiles,
#: VmHWM above the loaded process), and a fixed allowance.
ONNX_BYTES_PER_PIXEL = 1600
ONNX_BASE_BYTES = 16 << 20


class ModelError(ValueError):
    """A model file that is missing, corrupt or does not match its recorded sha256."""


def score_shape(h: int, w: int) -> tuple[int, int]:
    """Shape of the score map of an ``h`` x ``w`` pair: ``(ceil(h/2) - 7, ceil(w/2) - 7)``."""
    if h < PATCH or w < PATCH:
        raise ValueError(f"image {h}x{w} is smaller than one {PATCH}x{PATCH} patch")
    return math.ceil(h / STRIDE) - FC1_KERNEL + 1, math.ceil(w / STRIDE) - FC1_KERNEL + 1


# ----------------------------------------------------------------------------------------------- memory model
def caffe_bytes(h: int, w: int) -> int:
    """Estimated peak memory (bytes) of the Caffe deploy twin on an ``h`` x ``w`` pair.

    Dominated by the im2col buffer of the 8x8 fc1 convolution: 512*8*8 floats per output position. Every
    convolution layer keeps its own im2col buffer, so they add up (measured: within 3% on a 250 x 250 tile).
    """
    sh, sw = score_shape(h, w)
    hp, wp = math.ceil(h / 2), math.ceil(w / 2)
    blobs = 2 * (64 + 64 + 128 + 128) * h * w + 2 * 2 * 256 * hp * wp + 512 * hp * wp + (256 + 2 + 2) * sh * sw
    im2col = 512 * FC1_KERNEL * FC1_KERNEL * sh * sw + 2 * (128 * 9 * hp * wp + 64 * 9 * h * w + 9 * h * w)
    return 4 * (blobs + im2col)


def onnx_bytes(h: int, w: int) -> int:
    """Estimated peak memory (bytes) of the ONNX Runtime model on an ``h`` x ``w`` pair (both sources)."""
    return ONNX_BASE_BYTES + ONNX_BYTES_PER_PIXEL * h * w


def winograd_bytes(h: int, w: int) -> int:
    """Estimated peak memory (bytes) of the winograd backend on an ``h`` x ``w`` pair (both sources)."""
    from .backends import winograd

    return winograd.BASE_BYTES + winograd.BYTES_PER_PIXEL * h * w


BYTES = {"winograd": winograd_bytes, "onnx": onnx_bytes, "caffe": caffe_bytes}


def available_bytes() -> int:
    """Memory the process may use: MemAvailable from /proc/meminfo (fallback 4 GiB)."""
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 << 30


def default_max_memory() -> int:
    """Default budget of the score-map stage: ``min(0.25 * MemAvailable, 2 GiB)``."""
    return int(min(DEFAULT_MEMORY_FRACTION * available_bytes(), DEFAULT_MEMORY_CAP))


# ----------------------------------------------------------------------------------------------------- tiling
#: Input tile starts are multiples of this: the stride-2 grid, and for the winograd backend the 4x4 tile grid of
#: conv2 (full resolution) and conv3 (half resolution), so that every Winograd tile is the whole image's.
GRID = {"winograd": 8}


def winograd_exact_scores(n: int) -> int:
    """Leading scores of a winograd-backend tile of ``n`` input rows (ending inside the image) that are bit-identical
    to whole-image inference (rows; columns alike).

    A Winograd tile mixes all of its 6x6 input window in floating point, so an output is bit-identical only when
    the whole window is: conv1 rows ``< n - 1`` (the last row sees the tile's zero padding); conv2 tiles
    ``4t .. 4t+3`` that read conv1 rows ``4t - 1 .. 4t + 4 < n - 1``; the pooled rows of those; conv3 tiles read
    pooled rows ``4t - 1 .. 4t + 4`` alike; a score ``i`` reads conv3 rows ``i .. i + 7``.
    """
    r2 = 4 * ((n - 6) // 4 + 1) if n >= 6 else 0          # exact conv2 rows
    p2 = r2 // 2                                          # exact pooled rows
    r3 = 4 * ((p2 - 5) // 4 + 1) if p2 >= 5 else 0        # exact conv3 rows
    return max(0, r3 - FC1_KERNEL + 1)


def _axis_tiles(n_img: int, n_score: int, tile: int, grid: int = STRIDE) -> list[tuple[int, int, int, int]]:
    """Tiles along one axis: ``(i0, i1, s, e)``: scores ``[i0, i1)`` computed from input ``[s, e)``."""
    out = []
    for i0 in range(0, n_score, tile):
        i1 = min(n_score, i0 + tile)
        if grid == STRIDE:
            s = max(0, STRIDE * i0 - HALO_BEFORE)
            e = min(n_img, STRIDE * (i1 - 1) + PATCH + HALO_AFTER)
        else:  # winograd: the first 4 scores of a tile see its zero padding, and the end follows the tile grid
            s = max(0, (STRIDE * i0 - WINOGRAD_HALO_BEFORE) // grid * grid)
            e = STRIDE * (i1 - 1) + PATCH + HALO_AFTER
            while e < n_img and winograd_exact_scores(e - s) < i1 - s // STRIDE:
                e += 1
            e = min(e, n_img)
        out.append((i0, i1, s, e))
    return out


def tile_plan(h: int, w: int, tile: tuple[int, int], *, backend: str | None = None
              ) -> list[tuple[slice, slice, slice, slice]]:
    """Overlapping tiles of an ``h`` x ``w`` pair whose scores equal whole-image inference.

    Parameters
    ----------
    h, w : int
        Image size.
    tile : (int, int)
        Scores per tile (rows, columns), >= 1.
    backend : str, optional
        ``"winograd"``: starts on multiples of 8 and wider halos (see :func:`winograd_exact_scores`), so that
        the scores are bit-identical there too. Others: starts on the stride-2 grid, a 4-pixel halo each side.

    Returns
    -------
    list of (out_rows, out_cols, in_rows, in_cols) slices
        ``scores[out_rows, out_cols] = net(a[in_rows, in_cols], b[in_rows, in_cols])[k_rows, k_cols]`` where
        ``k`` is ``out`` shifted by ``-in.start // 2`` (see :func:`tiled_scores`). Input starts are even.
    """
    sh, sw = score_shape(h, w)
    th, tw = max(1, int(tile[0])), max(1, int(tile[1]))
    g = GRID.get(backend, STRIDE)
    return [(slice(r0, r1), slice(c0, c1), slice(rs, re), slice(cs, ce))
            for r0, r1, rs, re in _axis_tiles(h, sh, th, g) for c0, c1, cs, ce in _axis_tiles(w, sw, tw, g)]


def tiled_scores(a: np.ndarray, b: np.ndarray, run, tile: tuple[int, int], *, backend: str | None = None,
                 progress: bool = False) -> np.ndarray:
    """Score map of (``a``, ``b``) assembled from ``run(a_tile, b_tile)`` over :func:`tile_plan` tiles.

    ``progress``: a tqdm bar over the tiles (on stderr) when there is more than one.
    """
    h, w = a.shape
    out = np.empty(score_shape(h, w), np.float32)
    plan = tile_plan(h, w, tile, backend=backend)
    if progress and len(plan) > 1:
        from tqdm import tqdm

        plan = tqdm(plan, desc=f"score map ({backend or 'net'})", unit="tile")
    for rows, cols, rin, cin in plan:
        s = run(np.ascontiguousarray(a[rin, cin]), np.ascontiguousarray(b[rin, cin]))
        r0, c0 = rin.start // STRIDE, cin.start // STRIDE
        out[rows, cols] = s[rows.start - r0:rows.stop - r0, cols.start - c0:cols.stop - c0]
    return out


def input_extent(n_score_tile: int, n_img: int, *, backend: str | None = None) -> int:
    """Input pixels one tile of ``n_score_tile`` scores reads along an axis of ``n_img`` pixels (at most)."""
    if GRID.get(backend, STRIDE) == STRIDE:
        return min(n_img, STRIDE * (n_score_tile - 1) + PATCH + HALO_BEFORE + HALO_AFTER)
    before = (WINOGRAD_HALO_BEFORE + GRID["winograd"] - 1) // STRIDE  # at most 7 scores before the first kept one
    n = STRIDE * n_score_tile + PATCH
    while n < n_img and winograd_exact_scores(n) < n_score_tile + before:
        n += 1
    return min(n, n_img)


def choose_tile(h: int, w: int, *, backend: str, max_memory: int) -> tuple[int, int]:
    """Largest tile (scores per tile, rows x columns) whose estimated peak memory fits ``max_memory`` bytes.

    The whole image when it fits; else full-width strips if one strip row of 1+ scores fits; else square tiles.
    Never smaller than one score.
    """
    need = BYTES[backend]
    sh, sw = score_shape(h, w)

    def fits(th, tw):
        return need(input_extent(th, h, backend=backend), input_extent(tw, w, backend=backend)) <= max_memory

    if fits(sh, sw):
        return sh, sw
    lo, hi = 1, max(sh, sw)  # largest square (capped at the image) that fits
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(min(mid, sh), min(mid, sw)) else (lo, mid - 1)
    th, tw = min(lo, sh), min(lo, sw)
    if tw == sw:  # full-width strips: grow the rows
        lo, hi = th, sh
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if fits(mid, sw) else (lo, mid - 1)
        th = lo
    elif th == sh:
        lo, hi = tw, sw
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if fits(sh, mid) else (lo, mid - 1)
        tw = lo
    return th, tw


# ----------------------------------------------------------------------------------------------------- models
@lru_cache(maxsize=16)
def _sha256_cached(path: str, mtime_ns: int, size: int) -> str:
    from .data import sha256_file

    return sha256_file(path)


def _sha256(path: Path) -> str:
    st = os.stat(path)
    return _sha256_cached(str(Path(path).resolve()), st.st_mtime_ns, st.st_size)


def _is_default(path: Path) -> bool:
    p = Path(path).resolve()
    return p in (MODEL_DEFAULT.resolve(), MODEL_DEFAULT.with_suffix(".onnx").resolve())


def check_model(path) -> Path:
    """Return ``path`` if it exists and matches the sha256 in its side-car ``<path>.json``; else ModelError.

    The shipped models (``models/cnn_fusion.caffemodel`` and ``.onnx``) must have their side-car. The hash is
    cached per (path, mtime, size).
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model not found: {path}")
    side = Path(str(path) + ".json")
    if side.is_file():
        want = json.loads(side.read_text()).get("sha256")
        got = _sha256(path)
        if want and want != got:
            raise ModelError(f"model {path} has sha256 {got[:12]}…, its side-car says {want[:12]}…: corrupt or wrong")
    elif _is_default(path):
        raise ModelError(f"shipped model side-car missing: {side}")
    return path


def onnx_model_path(model) -> Path:
    """The ONNX model for ``model``: itself if it ends in ``.onnx``, else the ``.onnx`` beside the caffemodel."""
    model = Path(model)
    return model if model.suffix == ".onnx" else model.with_suffix(".onnx")


def caffe_model_path(model) -> Path:
    """The caffemodel for ``model``: itself, or for an ``.onnx`` the source named in its side-car."""
    model = Path(model)
    if model.suffix != ".onnx":
        return model
    side = Path(str(model) + ".json")
    name = json.loads(side.read_text()).get("source_caffemodel") if side.is_file() else None
    return model.with_name(name) if name else model.with_suffix(".caffemodel")


def _check_onnx(model) -> Path:
    """Check the ONNX model of ``model`` and that it was exported from the caffemodel beside it (if present)."""
    path = check_model(onnx_model_path(model))
    side = Path(str(path) + ".json")
    src_sha = json.loads(side.read_text()).get("source_sha256") if side.is_file() else None
    caffemodel = caffe_model_path(model)
    if src_sha and caffemodel.is_file():
        cside = Path(str(caffemodel) + ".json")
        have = json.loads(cside.read_text()).get("sha256") if cside.is_file() else None
        if src_sha != (have or _sha256(caffemodel)):
            raise ModelError(f"{path} was exported from another caffemodel than {caffemodel}: re-run "
                             f"`python tools/export.py --onnx --model {caffemodel} --out {path}`")
    return path


def onnx_available() -> bool:
    """Whether onnxruntime imports."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def winograd_available() -> bool:
    """Whether the winograd backend's C kernels are built and the ``onnx`` package (to read weights) imports."""
    from .backends import winograd

    try:
        import onnx  # noqa: F401
    except ImportError:
        return False
    return winograd.available()


def default_backend(model=None) -> str:
    """The fastest backend that can run ``model`` here.

    ``"winograd"`` when the ONNX model of ``model`` exists and the C kernels are built; else ``"onnx"`` when
    onnxruntime imports (or a CUDA execution provider exists: then ONNX Runtime runs on the GPU); else
    ``"caffe"``.
    """
    model = Path(model or MODEL_DEFAULT)
    if onnx_model_path(model).is_file():
        if onnx_available():
            import onnxruntime as ort

            if "CUDAExecutionProvider" in ort.get_available_providers():
                return "onnx"
        if winograd_available():
            return "winograd"
        if onnx_available():
            return "onnx"
    return "caffe"


# ---------------------------------------------------------------------------------------------------- backends
def _threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@lru_cache(maxsize=4)
def _onnx_session(path: str, mtime_ns: int, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # no arena: tiles of different sizes must not leave the arena at the largest size ever seen
    so.enable_cpu_mem_arena = False
    so.enable_mem_pattern = False
    so.log_severity_level = 3
    # no busy-waiting worker threads: they only burn a shared CPU (many small tiles, a busy machine)
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
    return ort.InferenceSession(path, so, providers=providers)


def _onnx_runner(path: Path):
    sess = _onnx_session(str(path), os.stat(path).st_mtime_ns, _threads())
    name = sess.get_inputs()[0].name

    def run(a, b):
        pair = np.empty((2, 1) + a.shape, np.float32)
        pair[0, 0], pair[1, 0] = a, b
        return sess.run(None, {name: pair})[0][0, 0]

    return run


@lru_cache(maxsize=4)
def _winograd_net(path: str, mtime_ns: int, threads: int):
    from .backends import winograd

    return winograd.Net(winograd.load_params(path), threads=threads)


def _winograd_runner(path: Path):
    return _winograd_net(str(path), os.stat(path).st_mtime_ns, _threads())


@lru_cache(maxsize=4)
def _caffe_net(model: str, mtime: float):
    import caffe

    caffe.set_mode_cpu()
    return caffe.Net(str(DEPLOY_PROTOTXT), model, caffe.TEST)


def _caffe_runner(model: Path):
    net = _caffe_net(str(model), os.path.getmtime(model))

    def run(a, b):
        h, w = a.shape
        net.blobs["a"].reshape(1, 1, h, w)
        net.blobs["b"].reshape(1, 1, h, w)
        net.blobs["a"].data[0, 0] = a
        net.blobs["b"].data[0, 0] = b
        return net.forward()["prob"][0, 1].copy()

    return run


def score_map(a, b, *, model=None, backend=None, max_memory=None, tile=None, progress=False) -> np.ndarray:
    """Score map of the pair (``a``, ``b``): P(source A in focus) for every 16x16 patch at stride 2.

    Parameters
    ----------
    a, b : ndarray (H, W)
        Grayscale sources, float in [0, 1], same shape, H, W >= 16.
    model : path, optional
        Deploy caffemodel, or its ONNX export (default: the shipped ``models/cnn_fusion.caffemodel`` and
        ``models/cnn_fusion.onnx``, checked by sha256). The winograd and ONNX backends use ``<model>.onnx``.
    backend : {"winograd", "onnx", "caffe"}, optional
        Inference backend (default :func:`default_backend`: the fastest that can run here).
    max_memory : int, optional
        Bytes the score-map stage may use (default :func:`default_max_memory`); picks the tile size.
    tile : (int, int), optional
        Scores per tile (rows, columns), overriding ``max_memory``.
    progress : bool, optional
        Show a progress bar over the tiles (stderr) when the pair is tiled.

    Returns
    -------
    ndarray (ceil(H/2) - 7, ceil(W/2) - 7), float32
        Entry (i, j) scores the patch with top-left corner (2i, 2j); identical for any tiling.
    """
    a = np.ascontiguousarray(a, dtype=np.float32)
    b = np.ascontiguousarray(b, dtype=np.float32)
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"score_map needs two grayscale images of one shape, got {a.shape} and {b.shape}")
    h, w = a.shape
    score_shape(h, w)
    model = Path(model or MODEL_DEFAULT)
    backend = backend or default_backend(model)
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if tile is None:
        budget = default_max_memory() if max_memory is None else int(max_memory)
        tile = choose_tile(h, w, backend=backend, max_memory=budget)
    opts = dict(backend=backend, progress=progress)
    if backend == "winograd":
        return tiled_scores(a, b, _winograd_runner(_check_onnx(model)), tile, **opts)
    if backend == "onnx":
        return tiled_scores(a, b, _onnx_runner(_check_onnx(model)), tile, **opts)
    try:
        return tiled_scores(a, b, _caffe_runner(check_model(caffe_model_path(model))), tile, **opts)
    finally:
        # a smaller reshape releases nothing in Caffe: drop the cached net to free its buffers
        _caffe_net.cache_clear()
