"""The public entry point :func:`fuse`: read and check the sources, run one fusion method, time it.

Each method is a module of :mod:`pyfusion.methods` with ``fuse(images, **options) -> (fused, maps, timings)``
(validated sources of one shape and dtype in, the fused image in that dtype out); :data:`METHODS` names them.
"""
from __future__ import annotations

import importlib
import inspect
import os
import time
from dataclasses import dataclass, field

import numpy as np

from pyfusion.io import FusionInputError, read_image, validate_images

__all__ = ["FusionResult", "fuse", "METHODS"]

#: Fusion methods: name -> module under pyfusion.methods.
METHODS = {"cnn": "cnn", "dwt": "dwt", "wavelet-cnn": "wavelet_cnn", "cnn-plus": "cnn_plus"}


@dataclass(frozen=True)
class FusionResult:
    """Output of :func:`fuse`.

    Attributes
    ----------
    fused : numpy.ndarray
        Fused image, same shape and dtype as the sources.
    maps : dict of str to numpy.ndarray
        The method's intermediate maps by name (each method's docstring lists them); each is also an attribute.
        ``cnn``: ``score_map`` (CNN scores, ``(ceil(H/2) - 7, ceil(W/2) - 7)``, P(source A in focus) per 16x16
        patch at stride 2), ``focus_map`` (per-pixel average of the overlapping patch scores), ``binary_map``
        (``focus_map > threshold``), ``cleaned_map`` (after small-region removal) and ``decision_map`` (the
        guided filter's output: the weight of source A; like the authors' code not clipped), of the first pair.
    timings : dict of str to float
        Seconds per stage of the method, plus ``"total"``.
    method : str
        The method that made it.
    alignment : pyfusion.align.AlignReport or None
        With ``fuse(..., align=...)``: the transforms, correlations, crop box and skipped frames.

    References
    ----------
    .. [1] Y. Liu, X. Chen, H. Peng, Z. Wang, "Multi-focus image fusion with a deep convolutional neural
       network", Information Fusion 36 (2017) 191-207.
    """

    fused: np.ndarray
    maps: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    method: str = "cnn"
    alignment: object = None

    def __getattr__(self, name):
        maps = self.__dict__.get("maps", {})
        if name in maps:
            return maps[name]
        raise AttributeError(f"{type(self).__name__} of method {self.__dict__.get('method')!r} has no {name!r}")


def method_takes(method: str) -> set:
    """The keyword options of the method's ``fuse``."""
    return set(inspect.signature(_method(method).fuse).parameters)


def method_options(method: str, given) -> dict:
    """The options the method's ``fuse`` takes, from ``given``: ``(label, keyword, value)`` triples (``value``
    None: not given). ValueError ``"LABEL does not apply to method NAME"`` for one it does not take."""
    takes = method_takes(method)
    out = {}
    for label, key, value in given:
        if value is None:
            continue
        if key not in takes:
            raise ValueError(f"{label} does not apply to --method {method}")
        out[key] = value
    return out


def _method(name: str):
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    return importlib.import_module(f"pyfusion.methods.{METHODS[name]}")


def fuse(images, *, method: str = "cnn", align=False, **options) -> FusionResult:
    """Fuse two or more multi-focus images.

    Parameters
    ----------
    images : sequence of numpy.ndarray or path
        Two or more registered sources of one shape (``(H, W)``, ``(H, W, 1)`` or RGB ``(H, W, 3)``) and one
        dtype (uint8, uint16, or float in [0, 1]), ``H, W >= 16``. Paths are read with
        :func:`pyfusion.io.read_image`. The arrays are never modified.
    method : str, optional
        ``"cnn"`` (default): the siamese CNN of Liu et al. 2017 (:mod:`pyfusion.methods.cnn`);
        ``"wavelet-cnn"``: wavelet-domain CNN fusion (:mod:`pyfusion.methods.wavelet_cnn`);
        ``"dwt"``: the survey's DWT baseline (:mod:`pyfusion.methods.dwt`); ``"cnn-plus"``: the cnn decision with
        a refined focus boundary and a narrow transition (:mod:`pyfusion.methods.cnn_plus`, docs/cnn_plus.md).
    align : bool or dict, optional
        Register the sources to the middle one first (:func:`pyfusion.align.align`: ECC on a pyramid, affine,
        cropped to the region every source covers); a dict gives :func:`~pyfusion.align.align`'s options (e.g.
        ``{"motion": "homography", "on_failure": "skip", "fill": True}``; ``names`` labels the sources in its
        messages, default the paths or ``image 1``, ...). The report is
        ``FusionResult.alignment``; the fused image then has the crop's size. Default ``False``: the sources must
        already be registered.
    **options
        The method's keyword options. ``cnn``: ``model`` (registered name or weights file), ``backend``
        (:data:`pyfusion.backends.BACKENDS`), ``threads`` (default ``$PYFUSION_THREADS`` or every core),
        ``max_memory`` (bytes for the score-map stage), ``progress`` (tile progress bar), ``score_fn``
        (``score_fn(a, b) -> scores`` replacing the CNN), ``region_ratio`` (0.01; one pass over N frames: 0.003), ``gf_radius`` (8), ``gf_eps``
        (0.1), ``threshold`` (0.5), ``series`` (None: two sources pairwise, three or more in one pass,
        :mod:`pyfusion.methods.stack`; True: the paper's series; False: one pass for two too), ``frame_fn``
        (per-frame scores replacing the net in one pass). ``wavelet-cnn``: the same, with ``model_low``/``model_high`` for ``model``,
        plus ``levels``, ``deep`` and ``score_fns``. ``dwt``: ``wavelet``, ``levels``, ``mode``, ``high_rule``,
        ``low_rule``, ``window``, ``colour``, ``scale``. ``cnn-plus``: ``cnn``'s ``model``, ``backend``, ``threads``,
        ``max_memory``, ``progress``, ``score_fn``, ``region_ratio``, ``threshold``, plus ``band`` (4),
        ``focus_radius`` (2), ``power`` (None), ``gf_radius`` (2), ``gf_eps`` (0.1); more than two sources in series.

    Returns
    -------
    FusionResult
        Fused image (same dtype and shape as the inputs), the method's maps and timings.

    Raises
    ------
    pyfusion.io.FusionInputError
        Fewer than two sources, mismatched sizes or channel counts, unsupported dtype, images smaller than
        16x16, non-finite or out-of-range float values, unreadable files.

    Notes
    -----
    Deterministic: the same inputs and options give the same output, whatever the thread count.

    References
    ----------
    .. [1] Y. Liu, X. Chen, H. Peng, Z. Wang, "Multi-focus image fusion with a deep convolutional neural
       network", Information Fusion 36 (2017) 191-207.
    """
    t_start = time.perf_counter()
    impl = _method(method)
    if isinstance(images, (str, os.PathLike, np.ndarray)):
        raise FusionInputError("images must be a sequence of two or more images or paths")
    items = list(images)
    names = [str(x) if isinstance(x, (str, os.PathLike)) else f"image {k + 1}" for k, x in enumerate(items)]
    arrays = [read_image(x) if isinstance(x, (str, os.PathLike)) else x for x in items]
    arrays = validate_images(arrays, names=names, min_size=impl.MIN_SIZE, min_reason=impl.MIN_REASON)
    report, t_align = None, {}
    if align:
        from pyfusion.align import align as _align

        t0 = time.perf_counter()
        align_opts = dict(align) if isinstance(align, dict) else {}
        align_opts.setdefault("threads", options.get("threads"))
        align_opts.setdefault("names", names)
        arrays, report = _align(arrays, **align_opts)
        arrays = validate_images(arrays, names=report.names, min_size=impl.MIN_SIZE, min_reason=impl.MIN_REASON)
        t_align = {"align": time.perf_counter() - t0}
    fused, maps, timings = impl.fuse(arrays, **options)
    timings = {**t_align, **timings, "total": time.perf_counter() - t_start}
    return FusionResult(fused=fused, maps=dict(maps or {}), timings=timings, method=method, alignment=report)
