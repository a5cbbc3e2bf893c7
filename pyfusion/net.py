"""Score maps of a registered net: :func:`score_map`, the one entry point to the backends.

The convolutional twin of a siamese CNN ([1]_, Sec. 3.3.1) turns an H x W pair into a
``(ceil(H/2) - K + 1) x (ceil(W/2) - K + 1)`` map of P(source A in focus), one score per P x P patch at stride 2
(the shipped ``cnn``: P = 16, K = 8). The net is a name in :mod:`pyfusion.models` (or a weights file of one);
the backend one of :mod:`pyfusion.backends`; large pairs run in exact overlapping tiles sized to a memory budget
(:mod:`pyfusion.tiling`).

References
----------
.. [1] Y. Liu, X. Chen, H. Peng, Z. Wang, "Multi-focus image fusion with a deep convolutional neural network",
   Information Fusion 36 (2017) 191-207.
"""
from __future__ import annotations

import numpy as np

from . import backends, models, tiling
from .util import threads as resolve_threads

__all__ = ["score_map", "frame_scores", "frame_backends"]


def _as_hwc(x, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 2:
        x = x[:, :, None]
    if x.ndim != 3:
        raise ValueError(f"score_map: {name} must be (H, W) or (H, W, C), got shape {x.shape}")
    return np.ascontiguousarray(x)


def _source(m: models.Model, x, name: str) -> np.ndarray:
    """``x`` as (H, W, C) float32, checked against the model: its input channels, at least one patch."""
    x = _as_hwc(x, name)
    if x.shape[2] != m.in_channels:
        raise ValueError(f"model {m.name} takes {m.in_channels} channel(s) per source, got {x.shape[2]}")
    m.score_shape(*x.shape[:2])
    return x


def _tiled(m: models.Model, be, a, b, run, *, tile, max_bytes, progress, gpu=None) -> np.ndarray:
    """``run`` over the exact tiles of (``a``, ``b``) sized to ``max_bytes`` (unless ``tile``; default: the
    budget of the CPU, or of GPU ``gpu``); the backend's cached nets released after."""
    if tile is None:
        budget = tiling.default_max_bytes(gpu) if max_bytes is None else int(max_bytes)
        tile = tiling.choose_tile(*a.shape[:2], model=m, backend=be, max_bytes=budget)
    try:
        return tiling.tiled_scores(a, b, run, tile, model=m, backend=be, progress=progress)
    finally:
        if hasattr(be, "release"):
            be.release()


def score_map(a, b, *, model=None, backend=None, threads=None, gpu=None, max_bytes=None, tile=None,
              progress=False) -> np.ndarray:
    """Score map of the pair (``a``, ``b``): P(source A in focus) for every patch at the net's stride.

    Parameters
    ----------
    a, b : ndarray (H, W) or (H, W, C)
        The sources as the net sees them (C = the model's input channels), float in [0, 1] for the spatial nets,
        one shape, H, W >= the model's patch.
    model : str or path, optional
        A registered model (default ``"cnn"``, the shipped net) or a weights file of one (``.caffemodel`` or
        ``.onnx``; its side-car names the net). Every file is checked against its side-car's sha256.
    backend : {"winograd", "onnx", "caffe", "torch"}, optional
        Inference backend (default :func:`pyfusion.backends.default_backend`: the fastest that can run here).
    threads : int, optional
        Threads of the winograd, onnx and torch (CPU) backends (default ``$PYFUSION_THREADS``, else every core).
    gpu : int, optional
        Run the caffe backend (a CUDA build of Caffe) or the torch backend (a CUDA build of torch) on this GPU.
    max_bytes : int, optional
        Bytes the score-map stage may use (default :func:`pyfusion.tiling.default_max_bytes`: of the CPU, or
        half the free memory of GPU ``gpu``); picks the tile size. Caffe's tiles also stay under its INT_MAX
        elements per blob.
    tile : (int, int), optional
        Scores per tile (rows, columns), overriding ``max_bytes``.
    progress : bool, optional
        Show a progress bar over the tiles (stderr) when the pair is tiled.

    Returns
    -------
    ndarray, float32
        Entry (i, j) scores the patch with top-left corner (2i, 2j); the same for any tiling (bit-identical with
        the winograd backend, within float rounding with the others).
    """
    m, caffemodel, onnx = models.resolve(model)
    a, b = _source(m, a, "a"), _source(m, b, "b")
    if a.shape != b.shape:
        raise ValueError(f"score_map needs two images of one shape, got {a.shape} and {b.shape}")
    name = backend or backends.default_backend(model, gpu=gpu)
    be = backends.get(name)
    if gpu is not None and name not in ("caffe", "torch"):
        raise ValueError(f"gpu= runs the caffe or torch backend, not {name!r}")
    run = be.runner(m, caffemodel, onnx, threads=resolve_threads(threads), gpu=gpu)
    return _tiled(m, be, a, b, run, tile=tile, max_bytes=max_bytes, progress=progress, gpu=gpu)


def frame_backends() -> tuple[str, ...]:
    """The backends that compute per-frame scores (:func:`frame_scores`): those with a ``frame_runner``."""
    return tuple(name for name in backends.BACKENDS if hasattr(backends.get(name), "frame_runner"))


def frame_scores(img, *, model=None, backend=None, threads=None, gpu=None, max_bytes=None, tile=None,
                 progress=False) -> np.ndarray:
    """Per-frame focus score of one source: the folded head's antisymmetric part, one trunk pass.

    The shipped nets' head is linear (fc1 and fc2 without a nonlinearity between them, folded into one K x K
    convolution over the concatenated conv3 maps of both sources, :mod:`fusionlab.onnx_export`), so the pair's
    pre-sigmoid score is ``logit(a, b) = u(a) + v(b) + bias`` where ``u`` and ``v`` are the head's source-A and
    source-B halves applied to each source's conv3 map. ``s = (u - v) / 2`` of a frame then satisfies
    ``logit(a, b) - logit(b, a) = 2 (s(a) - s(b))`` at every patch: a per-frame focus score (higher: sharper) that
    ranks any number of frames with one trunk pass each.

    Parameters
    ----------
    img : ndarray (H, W) or (H, W, C)
        One source as the net sees it (as ``a`` of :func:`score_map`).
    model, threads, gpu, max_bytes, tile, progress
        As :func:`score_map` (tiles are exact: bit-identical to the whole image with the winograd backend).
    backend : str, optional
        A backend of :func:`frame_backends` (today all four; ``onnx`` and ``caffe`` run the trunk and apply the
        head in numpy, :func:`pyfusion.backends.onnx.frame_head`). Default: the default backend
        (:func:`pyfusion.backends.default_backend`) when it computes frame scores, else the first usable one.

    Returns
    -------
    ndarray, float32
        The score map's shape (:func:`score_map` of ``(img, img)``), pre-sigmoid, without the head's bias (it
        cancels in every difference).

    Raises
    ------
    NotImplementedError
        The backend has no per-frame path, or none of :func:`frame_backends` can run here; the net is not
        siamese (a pseudo-siamese or 2-channel net has no per-frame score).
    """
    m, caffemodel, onnx = models.resolve(model)
    x = _source(m, img, "img")
    supported = frame_backends()
    if backend is None:
        name = backends.default_backend(model, gpu=gpu)
        if name not in supported:
            usable = [b for b in supported if backends.get(b).available()]
            if not usable:
                raise NotImplementedError(f"per-frame scores need one of the backends {', '.join(supported)}, and "
                                          f"none can run here (the default backend {name!r} has no per-frame path)")
            name = usable[0]
    else:
        name = backend
    be = backends.get(name)
    if name not in supported:
        raise NotImplementedError(f"backend {name!r} has no per-frame score path (frame_scores); use "
                                  f"{' or '.join(repr(b) for b in supported)}, or fuse in series (series=True)")
    run = be.frame_runner(m, caffemodel, onnx, threads=resolve_threads(threads), gpu=gpu)
    # the tiling of a pair with the same image twice: the same exact tiles, one image per tile to the runner
    return _tiled(m, be, x, x, lambda a_tile, _b_tile: run(a_tile), tile=tile, max_bytes=max_bytes,
                  progress=progress, gpu=gpu)
