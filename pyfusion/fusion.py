"""The public entry points :func:`fuse` (read and check the sources, run one fusion method, time it) and
:func:`evaluate` (the survey's metrics of a fused image).

Each method is a module of :mod:`pyfusion.methods` with ``DESCRIPTION`` (one line), ``OPTIONS`` (its declared
options, :class:`pyfusion.options.Option`) and ``fuse(images, **options) -> (fused, maps, timings)`` (validated
sources of one shape and dtype in, the fused image in that dtype out); :data:`METHODS` names them.
"""
from __future__ import annotations

import importlib
import os
import time
from dataclasses import dataclass, field

import numpy as np

from pyfusion.io import FrameSequence, FusionInputError, read_image, to_unit, validate_images
from pyfusion.options import check, gb_to_bytes
from pyfusion.util import imap_ordered

__all__ = ["FusionResult", "fuse", "evaluate", "streams", "METHODS", "method_options", "STACK_MEMORY"]

#: Fusion methods: name -> module under pyfusion.methods.
_MODULES = {"cnn": "cnn", "dwt": "dwt", "dtcwt": "dtcwt", "wavelet-cnn": "wavelet_cnn", "cnn-plus": "cnn_plus"}
#: The methods that go over the sources one frame at a time (``cnn``: the one-pass stack, the series of pairs):
#: :func:`fuse` reads a stack of their files as the frames are needed (:func:`streams`).
_STREAMING = ("cnn",)
#: Default cap (GB, 2**30 bytes) on the memory of a fusion that reads its frames as needed (:func:`streams`): the
#: process's resident memory it plans for, at most this and at most what it holds plus 3/4 of MemAvailable.
STACK_MEMORY = 3.5
#: The one-pass stack's own maps at their peak, bytes per pixel: ``_STACK_PIXEL + _STACK_CHANNEL`` x channels, an
#: upper bound of the peaks measured at 4000x3000 besides the score maps (random labels, the worst case of the
#: small-region removal): 143 grey and 155 RGB with the guided-filter blend, 125 RGB with the edge fix.
_STACK_PIXEL, _STACK_CHANNEL = 140, 8
#: The smallest budget left to the score-map stage under a cap (bytes): below it the cap is refused.
_MIN_SCORE_BYTES = 128 << 20


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


def _method(name: str):
    """The module of method ``name``; one-line ValueError for an unknown name."""
    if name not in _MODULES:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(_MODULES)}")
    return importlib.import_module(f"pyfusion.methods.{_MODULES[name]}")


def method_options(method: str) -> tuple:
    """The options ``method`` declares (:class:`pyfusion.options.Option`), in its order."""
    return _method(method).OPTIONS


def method_takes(method: str) -> set:
    """The names of the options ``method`` takes."""
    return {o.name for o in method_options(method)}


#: The fusion methods: name -> one-line description.
METHODS = {name: importlib.import_module(f"pyfusion.methods.{mod}").DESCRIPTION for name, mod in _MODULES.items()}


def evaluate(sources, fused, reference=None) -> dict:
    """The survey's eight objective metrics of a fused image against its two sources, and PSNR / SSIM against a
    reference where one is given.

    Parameters
    ----------
    sources : sequence of two numpy.ndarray or paths
        The two source images (grey ``(H, W)`` or RGB ``(H, W, 3)``, 8- or 16-bit, or float in [0, 1]).
    fused : numpy.ndarray or path
        The fused image, same shape.
    reference : numpy.ndarray or path, optional
        An all-in-focus reference (ground truth) of the same shape.

    Returns
    -------
    dict of str to float
        ``QMI, QNCIE, QG, QP, QE, QY, QCB, QCV`` (:data:`pyfusion.metrics.METRICS`; all higher-is-better except
        QCV) and, with ``reference``, ``PSNR`` (dB) and ``SSIM``. Images are put on the 8-bit scale first.

    Raises
    ------
    pyfusion.io.FusionInputError
        Not two sources, unreadable files, mismatched shapes.

    References
    ----------
    .. [1] Y. Liu, L. Wang, J. Cheng, C. Li, X. Chen, "Multi-focus image fusion: a survey of the state of the
       art", Information Fusion 64 (2020) 71-91.
    """
    from pyfusion.metrics import METRICS, psnr, ssim

    items = list(sources) if not isinstance(sources, (str, os.PathLike, np.ndarray)) else [sources]
    if len(items) != 2:
        raise FusionInputError(f"the survey's metrics take two sources, got {len(items)}")
    names = [str(x) if isinstance(x, (str, os.PathLike)) else f"source {k + 1}" for k, x in enumerate(items)]
    names.append(str(fused) if isinstance(fused, (str, os.PathLike)) else "fused image")
    images = [read_image(x) if isinstance(x, (str, os.PathLike)) else x for x in (*items, fused)]
    if reference is not None:
        names.append(str(reference) if isinstance(reference, (str, os.PathLike)) else "reference")
        images.append(read_image(reference) if isinstance(reference, (str, os.PathLike)) else reference)
    images = validate_images(images, names=names)
    a, b, f, *ref = [to_unit(x) * 255.0 for x in images]
    out = {name: float(fn(a, b, f)) for name, fn in METRICS.items()}
    if ref:
        out["PSNR"] = float(psnr(ref[0], f))
        out["SSIM"] = float(ssim(ref[0], f))
    return out


def streams(images, *, method: str = "cnn", align=False) -> bool:
    """Whether :func:`fuse` reads these sources from their files as they are needed instead of holding them all.

    True for three or more paths (or a :class:`pyfusion.io.FrameSequence`) fused without alignment by a method
    that goes over its sources one frame at a time (``cnn``: the one-pass stack and the series of pairs). The
    fused image is the same either way; the frames' memory is a frame's per thread instead of all of them, and
    ``max_memory`` caps the whole fusion (:func:`fuse`).
    """
    if method not in _STREAMING or align:
        return False
    if isinstance(images, FrameSequence):
        return True
    if isinstance(images, (str, os.PathLike, np.ndarray)):
        return False
    items = list(images)
    return len(items) >= 3 and all(isinstance(x, (str, os.PathLike)) for x in items)


def _resident_bytes() -> int:
    """The process's resident memory now (Linux /proc; 0 where unknown)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _plan_memory(frames: FrameSequence, options: dict) -> dict:
    """``options`` with ``max_memory``, the cap (GB) on the process's memory while it fuses ``frames`` (default
    :data:`STACK_MEMORY`), turned into the score-map stage's budget: the cap less what the process holds and the
    one-pass maps of this frame size. Unchanged with a ``gpu`` (the budget is the GPU's) or a score function."""
    if any(options.get(k) is not None for k in ("gpu", "frame_fn", "score_fn")):
        return options
    from pyfusion.tiling import default_max_bytes
    from pyfusion.util import available_bytes

    h, w = frames.shape[:2]
    held = _resident_bytes()
    maps = (_STACK_PIXEL + _STACK_CHANNEL * (frames.shape[2] if len(frames.shape) == 3 else 1)) * h * w
    if options.get("max_memory") is None:  # the default cap: today's score-map budget wherever it fits under it
        cap = min(STACK_MEMORY * 2**30, held + 0.75 * available_bytes())
        default = default_max_bytes()
        budget = min(default, max(int(cap - held - maps), _MIN_SCORE_BYTES))
        return options if budget == default else {**options, "max_memory": budget / 2**30}
    cap = gb_to_bytes(options["max_memory"])
    budget = cap - held - maps
    if budget < _MIN_SCORE_BYTES:
        need = (held + maps + _MIN_SCORE_BYTES) / 2**30
        raise ValueError(f"max_memory {options['max_memory']:g} GB is too little for {len(frames)} frames of "
                         f"{w}x{h}: the process holds {held / 2**30:.2f} GB and the stack's maps take about "
                         f"{maps / 2**30:.2f} GB; give at least {need:.1f}")
    return {**options, "max_memory": budget / 2**30}


def fuse(images, *, method: str = "cnn", align=False, **options) -> FusionResult:
    """Fuse two or more multi-focus images.

    Parameters
    ----------
    images : sequence of numpy.ndarray or path, or pyfusion.io.FrameSequence
        Two or more registered sources of one shape (``(H, W)``, ``(H, W, 1)`` or RGB ``(H, W, 3)``) and one
        dtype (uint8, uint16, or float in [0, 1]), ``H, W >= 16``. Paths are read with
        :func:`pyfusion.io.read_image`. The arrays are never modified. Three or more paths fused by ``cnn``
        without ``align`` are read as the method needs them (:func:`streams`, a
        :class:`pyfusion.io.FrameSequence`: every file's header checked first, a decoded frame per thread held at a
        time); the result is the same as of the frames held in memory.
    method : str, optional
        A name of :data:`METHODS`: ``"cnn"`` (default; the siamese CNN of Liu et al. 2017,
        :mod:`pyfusion.methods.cnn`), ``"wavelet-cnn"`` (:mod:`pyfusion.methods.wavelet_cnn`), ``"dwt"`` (the
        survey's DWT baseline, :mod:`pyfusion.methods.dwt`), ``"cnn-plus"`` (:mod:`pyfusion.methods.cnn_plus`).
    align : bool or dict, optional
        Register the sources to the middle one first (:func:`pyfusion.align.align`: ECC on a pyramid, affine,
        cropped to the region every source covers); a dict gives :func:`~pyfusion.align.align`'s options (e.g.
        ``{"motion": "homography", "on_failure": "skip", "fill": True}``; ``names`` labels the sources in its
        messages, default the paths or ``image 1``, ...). The report is
        ``FusionResult.alignment``; the fused image then has the crop's size. Default ``False``: the sources must
        already be registered. With ``exact=True`` (``cnn``) ECC stops at half size whatever the frames' size
        (``finest_level=1``) unless the dict says otherwise.
    **options
        The method's options, as it declares them (``OPTIONS`` of its module; :func:`method_options`; the table
        in docs/options.md). Every method takes ``threads`` and ``progress``; the net-based ones ``model``,
        ``backend``, ``gpu`` and ``max_memory`` (GB). An option the method does not take is a ValueError naming
        the options it takes. ``max_memory`` is the score-map stage's budget, except where the frames are read
        as needed (:func:`streams`; on the CPU, with the net): there it caps the process's resident memory while
        it fuses (default :data:`STACK_MEMORY` GB, or less where less is free), planned as what the process holds,
        the one-pass maps (about ``140 + 8 C`` bytes per pixel, C channels) and the score-map tiles in what is
        left; a cap below what the maps need is a ValueError saying how much they need.

    Returns
    -------
    FusionResult
        Fused image (same dtype and shape as the inputs), the method's maps and timings.

    Raises
    ------
    pyfusion.io.FusionInputError
        Fewer than two sources, mismatched sizes or channel counts, unsupported dtype, images smaller than
        16x16, non-finite or out-of-range float values, unreadable files.
    ValueError
        An unknown method, an option the method does not take, an invalid option value.

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
    options = check(method, impl.OPTIONS, options)
    if isinstance(images, (str, os.PathLike, np.ndarray)):
        raise FusionInputError("images must be a sequence of two or more images or paths")
    images = images if isinstance(images, FrameSequence) else list(images)  # an iterator read once
    if streams(images, method=method, align=align):
        if not isinstance(images, FrameSequence):
            images = FrameSequence(images, min_size=impl.MIN_SIZE, min_reason=impl.MIN_REASON)
        validate_images([images[0]] * 2, names=images.names[:1] * 2, min_size=impl.MIN_SIZE,
                        min_reason=impl.MIN_REASON)
        fused, maps, timings = impl.fuse(images, **_plan_memory(images, options))
        return FusionResult(fused=fused, maps=dict(maps or {}), method=method,
                            timings={**timings, "total": time.perf_counter() - t_start})
    items = list(images)
    names = list(images.names) if isinstance(images, FrameSequence) else [
        str(x) if isinstance(x, (str, os.PathLike)) else f"image {k + 1}" for k, x in enumerate(items)]
    arrays = list(imap_ordered(lambda x: read_image(x) if isinstance(x, (str, os.PathLike)) else x, items,
                               threads=options.get("threads")))   # files decoded on every core
    arrays = validate_images(arrays, names=names, min_size=impl.MIN_SIZE, min_reason=impl.MIN_REASON)
    report, t_align = None, {}
    if align:
        from pyfusion.align import align as _align

        t0 = time.perf_counter()
        align_opts = dict(align) if isinstance(align, dict) else {}
        align_opts.setdefault("threads", options.get("threads"))
        align_opts.setdefault("names", names)
        align_opts.setdefault("progress", bool(options.get("progress")))
        if options.get("exact"):   # the exact path: the half-size ECC whatever the frames' size
            from pyfusion.align import FINEST_LEVEL

            align_opts.setdefault("finest_level", FINEST_LEVEL)
        arrays, report = _align(arrays, **align_opts)
        arrays = validate_images(arrays, names=report.names, min_size=impl.MIN_SIZE, min_reason=impl.MIN_REASON)
        t_align = {"align": time.perf_counter() - t0}
    fused, maps, timings = impl.fuse(arrays, **options)
    timings = {**t_align, **timings, "total": time.perf_counter() - t_start}
    return FusionResult(fused=fused, maps=dict(maps or {}), timings=timings, method=method, alignment=report)
