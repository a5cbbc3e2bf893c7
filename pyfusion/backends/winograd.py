"""The "winograd" backend of :mod:`pyfusion.net`: the deploy twin on the CPU by Winograd convolutions.

The same net as the ONNX model (:mod:`fusionlab.onnx_export`: conv1 -> ReLU -> conv2 -> ReLU -> max pool ->
conv3 -> ReLU per source, then the folded KxK head and a sigmoid), computed by the C kernels of
``pyfusion/backends/_winograd.c``:

* conv2 and conv3 (3x3, pad 1) by Winograd's minimal filtering F(4x4, 3x3) [2]_: 36 multiplications per
  4x4 output tile and channel pair instead of 144, so ~4x fewer multiply-adds than a direct convolution.
  Input tiles are transformed, multiplied by the transformed filters ``U = G g G^T`` (computed here once, in
  float64) with a register-blocked 6x16 kernel, transformed back, biased, rectified and (after conv2) max-pooled
  in one pass over each block of tiles, so the transformed data stays in cache;
* conv1 (C0 -> 64 channels: C0 = 1 for grayscale sources, 3 for the wavelet high bands LH/HL/HH as channels, any
  C0 >= 1) directly, inside conv2's blocks (its map is never stored), and conv3's output straight into the head's
  256 -> K*K tap products (nor is its map): only the pooled conv2 map and the tap maps are kept, ~200 bytes per
  input pixel (:func:`bytes_needed`);
* the head as those tap products (source A's plus source B's) and a shifted sum of the K*K tap maps (K = 8 for
  16x16 patches, 4 for 8x8 patches; K*K a multiple of 16), plus the folded head's bias when the model has one
  (``head_bias``), as in the ONNX model, then a sigmoid;
* per-frame scores (:meth:`Net.frame_scores`, :func:`frame_runner`; :func:`pyfusion.net.frame_scores`): the same
  trunk on one source, its conv3 output into the antisymmetric head ``(A - B) / 2`` (the halves of the folded
  head), and the shifted sum without the sigmoid (``head_sum_linear``): the pre-sigmoid score
  ``s = (u - v) / 2`` with ``logit(a, b) - logit(b, a) = 2 (s(a) - s(b))``, one trunk pass per frame.

Images are float32 ``(H, W)`` (C0 = 1) or ``(H, W, C0)`` (channels last). The kernels are compiled for x86-64-v3
(AVX2 + FMA) and for plain x86-64 and the variant this CPU runs is chosen when the library is loaded (:func:`isa`;
``PYFUSION_WINOGRAD_ISA=x86-64`` or ``x86-64-v3`` forces one); a ``PYFUSION_MARCH=native`` build is compiled once
for its build machine (see ``setup.py`` and ``docs/winograd_build.md``).

As a backend of :mod:`pyfusion.backends` (``NAME``, :func:`available`, :func:`peak_bytes`, :func:`runner`) it
declares its tile grid (``GRID``, ``HALO_BEFORE``, :func:`exact_scores`): :mod:`pyfusion.tiling` then cuts tiles
whose scores are bit-identical to whole-image inference.

Winograd's transforms change float32 rounding, not the function: tests check the scores against the Caffe twin
and ONNX Runtime (within 1e-4). Each output is computed by one thread in a fixed order, so the scores do not
depend on the number of threads. The weights are read from the ONNX model's initializers (no Caffe, no
onnxruntime needed; the ``onnx`` package parses the file).

References
----------
.. [1] Y. Liu, X. Chen, H. Peng, Z. Wang, "Multi-focus image fusion with a deep convolutional neural network",
   Information Fusion 36 (2017) 191-207.
.. [2] A. Lavin, S. Gray, "Fast algorithms for convolutional neural networks", CVPR 2016, 4013-4021.
"""
from __future__ import annotations

import ctypes
import importlib.util
import os
from functools import lru_cache

import numpy as np

from .. import models

__all__ = ["available", "why_unavailable", "isa", "load_params", "transform_filter", "pack_panels", "Net",
           "bytes_needed", "BYTES_PER_PIXEL", "BASE_BYTES", "NAME", "GRID", "HALO_BEFORE", "exact_scores",
           "peak_bytes", "runner", "frame_runner"]

#: Peak bytes per input pixel of a tile of a grayscale (C0 = 1) pair: the pooled conv2 map (128 B/px) and the
#: head's tap maps (64 B/px), both kept for the pair, and the two float32 sources (8 B/px) (measured: 99-192 B/px
#: on 300^2..4000x3000 pairs); a fixed allowance for the per-thread buffers. :func:`bytes_needed` for C0 > 1.
BYTES_PER_PIXEL = 200
BASE_BYTES = 4 << 20
#: Bytes per input pixel and source channel: the two float32 sources, C0 channels each.
_SOURCE_BYTES_PER_CHANNEL = 8

#: ``PYFUSION_WINOGRAD_ISA`` values: which kernel variant of a dispatching build to use (default: the best).
_ISA_LEVELS = {"": -1, "auto": -1, "x86-64": 0, "x86-64-v3": 1}

# Winograd F(4x4, 3x3) filter transform (points 0, +-1, +-2, infinity) [2]_.
_G = np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
               [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]])
_F32P = ctypes.POINTER(ctypes.c_float)


def bytes_needed(h: int, w: int, *, in_channels: int = 1) -> int:
    """Estimated peak memory (bytes) of :class:`Net` on an ``h`` x ``w`` pair of ``in_channels``-channel sources.

    ``BASE_BYTES + BYTES_PER_PIXEL * h * w`` for grayscale sources; each further channel adds 8 bytes per pixel
    (the two float32 sources). The rest (pooled conv2 map, tap maps) does not depend on the channels.
    """
    per_px = BYTES_PER_PIXEL + _SOURCE_BYTES_PER_CHANNEL * (int(in_channels) - 1)
    return BASE_BYTES + per_px * int(h) * int(w)


@lru_cache(maxsize=1)
def _load():
    """``(lib, None)`` with the kernels' ctypes library, or ``(None, reason)``."""
    spec = importlib.util.find_spec("pyfusion.backends._winograd")
    if spec is None or not spec.origin:
        return None, "the winograd backend's C kernels are not built: run `pip install -e .`"
    lib = ctypes.CDLL(spec.origin)
    i, p, f, s = ctypes.c_int, _F32P, ctypes.c_float, ctypes.c_char_p
    for name, res in (("wino_cpu_ok", i), ("wino_select", i), ("wino_build", s), ("wino_isa", s)):
        getattr(lib, name).restype = res
    lib.wino_select.argtypes = [i]
    build = lib.wino_build().decode()
    if not lib.wino_cpu_ok():
        return None, (f"the winograd backend's C kernels were built with -march={build} (PYFUSION_MARCH) and this "
                      f"CPU lacks instructions they use: rebuild without PYFUSION_MARCH (`pip install -e .`)")
    want = os.environ.get("PYFUSION_WINOGRAD_ISA", "").strip()
    if want not in _ISA_LEVELS:
        return None, f"PYFUSION_WINOGRAD_ISA={want!r}: choose one of x86-64, x86-64-v3, auto"
    if lib.wino_select(_ISA_LEVELS[want]) < 0:
        why = "this CPU lacks AVX2/FMA" if build == "dispatch" else f"a -march={build} build has one variant only"
        return None, f"PYFUSION_WINOGRAD_ISA={want}: {why}"
    lib.conv1_relu.argtypes = [p, i, i, i, p, p, i, p, i]
    lib.wino_conv_relu.argtypes = [p, i, i, i, i, p, p, i, p, i]
    lib.wino_conv_relu.restype = i
    lib.conv12_pool.argtypes = [p, i, i, i, p, p, i, i, p, p, p, i]
    lib.conv12_pool.restype = i
    lib.conv3_taps.argtypes = [p, i, i, i, i, p, p, p, i, i, p, i]
    lib.conv3_taps.restype = i
    lib.gemm_packed.argtypes = [i, i, i, p, p, p, i, i]
    lib.gemm_packed.restype = i
    lib.head_sum.argtypes = [p, i, i, i, f, p, i]
    lib.head_sum_linear.argtypes = [p, i, i, i, f, p, i]
    return lib, None


def _lib():
    return _load()[0]


def available() -> bool:
    """Whether the C kernels are built (``pip install -e .`` builds them) and run on this CPU (:func:`why_unavailable`)."""
    return _lib() is not None


def why_unavailable() -> str | None:
    """Why :func:`available` is False (kernels not built; a ``PYFUSION_MARCH`` build on a CPU without its
    extensions; a bad ``PYFUSION_WINOGRAD_ISA``), or None when it is True."""
    return _load()[1]


def isa() -> str | None:
    """The kernel variant in use: ``"x86-64-v3"`` or ``"x86-64"`` (portable build), the ``-march`` of a
    ``PYFUSION_MARCH`` build (e.g. ``"native"``), or None when the kernels are not available."""
    lib = _lib()
    return lib.wino_isa().decode() if lib is not None else None


def _ptr(a: np.ndarray):
    assert a.dtype == np.float32 and a.flags.c_contiguous
    return a.ctypes.data_as(_F32P)


#: ONNX TensorProto data types read from ``raw_data`` by :func:`load_params` -> numpy dtypes (little-endian).
_ONNX_TYPES = {1: "<f4", 6: "<i4", 7: "<i8", 11: "<f8"}


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    out = shift = 0
    while True:
        b = buf[i]
        i += 1
        out |= (b & 0x7F) << shift
        if b < 0x80:
            return out, i
        shift += 7


def _fields(buf: bytes):
    """The fields of one protobuf message: ``(number, wire type, value)``, value an int (varint) or bytes."""
    i, n = 0, len(buf)
    while i < n:
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 2:
            size, i = _varint(buf, i)
            value, i = buf[i:i + size], i + size
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, i = buf[i:i + size], i + size
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, wire, value


def _tensor(buf: bytes):
    """One TensorProto with its data in ``raw_data`` -> (name, array), or None for any other layout."""
    dims, dtype, name, raw = [], None, "", None
    for number, wire, value in _fields(buf):
        if number == 1 and wire == 0:
            dims.append(value)
        elif number == 1:                    # packed dims
            j = 0
            while j < len(value):
                d, j = _varint(value, j)
                dims.append(d)
        elif number == 2:
            dtype = _ONNX_TYPES.get(value)
        elif number == 8:
            name = value.decode()
        elif number == 9:
            raw = value
        elif number == 14 and value == 1:    # external data
            return None
    if dtype is None or raw is None:
        return None
    return name, np.frombuffer(raw, dtype=dtype).reshape(dims).copy()   # a writable array of its own


def load_params(onnx_path) -> dict:
    """Weights of an ONNX model written by :func:`fusionlab.onnx_export.export_onnx`, by initializer name.

    The model's protobuf is read directly (ModelProto.graph = field 7, GraphProto.initializer = field 5,
    TensorProto dims / data_type / name / raw_data = fields 1 / 2 / 8 / 9): importing the ``onnx`` package costs
    more than the whole fast stack path's score maps. A model with initializers in another layout (typed data
    fields, external data) is read by ``onnx`` instead.
    """
    with open(onnx_path, "rb") as f:
        model = f.read()
    params = {}
    for number, wire, graph in _fields(model):
        if number != 7 or wire != 2:
            continue
        for field, kind, value in _fields(graph):
            if field != 5 or kind != 2:
                continue
            t = _tensor(value)
            if t is None:
                import onnx
                from onnx import numpy_helper

                return {x.name: numpy_helper.to_array(x) for x in onnx.load(str(onnx_path)).graph.initializer}
            params[t[0]] = t[1]
    return params


def transform_filter(w: np.ndarray) -> np.ndarray:
    """Winograd-domain filters ``U[k] (Cin, Cout)`` for the 36 points ``k`` of F(4x4, 3x3).

    Parameters
    ----------
    w : ndarray (Cout, Cin, 3, 3)
        Convolution weights (cross-correlation, as in Caffe).

    Returns
    -------
    ndarray (36, Cin, Cout), float32
        ``U[6 a + b, ci, co] = (G w[co, ci] G^T)[a, b]``, computed in float64.
    """
    u = np.einsum("ai,oeij,bj->abeo", _G, np.asarray(w, np.float64), _G)
    return u.reshape(36, w.shape[1], w.shape[0]).astype(np.float32)


def pack_panels(b: np.ndarray) -> np.ndarray:
    """``(..., K, N)`` -> ``(..., N/16, K, 16)``: the right-hand matrices in the 6x16 kernel's panel order."""
    *lead, k, n = b.shape
    if n % 16:
        raise ValueError(f"{n} columns: the kernel needs a multiple of 16")
    return np.ascontiguousarray(b.reshape(*lead, k, n // 16, 16).swapaxes(-3, -2), dtype=np.float32)


class Net:
    """The folded deploy twin with the C kernels; ``net(a, b)`` is the score map of one pair.

    Parameters
    ----------
    params : dict
        :func:`load_params` of the ONNX model (``conv1_w`` (64, C0, 3, 3) ... ``conv3_b``, ``head_taps_w``
        (K*K, 2*C3, 1, 1), optional scalar ``head_bias``).
    threads : int
        Worker threads.

    Attributes
    ----------
    in_channels : int
        C0, the channels of each source (conv1's input channels).
    k : int
        The head's kernel size K (the score map is ``(ceil(H/2) - K + 1, ceil(W/2) - K + 1)``).
    """

    def __init__(self, params: dict, *, threads: int = 1):
        lib, why = _load()
        if lib is None:
            raise RuntimeError(why)
        self.lib, self.threads = lib, int(threads)
        # branch layout (fusionlab.onnx_export): pseudo-siamese nets carry branch B's own conv*_p weights; a
        # 2-channel net's head reads one trunk (C3 rows of head taps instead of 2 C3) fed both sources' channels
        self.branches = "pseudo" if "conv1_p_w" in params else "siamese"
        self.trunks = [self._trunk(params, "")]
        if self.branches == "pseudo":
            self.trunks.append(self._trunk(params, "_p"))
        self.c1, c0 = self.trunks[0][0].shape[1], self.trunks[0][2]
        taps = np.asarray(params["head_taps_w"], np.float32)              # (K*K taps, maps*C3, 1, 1)
        self.kk = taps.shape[0]
        self.k = int(round(self.kk ** 0.5))
        if self.k * self.k != self.kk or self.kk % 16:
            raise ValueError(f"head_taps_w has {self.kk} taps: need K*K taps, a multiple of 16 (K = 4, 8, ...)")
        c3 = self.trunks[0][3][1][1]
        if taps.size == self.kk * c3 and self.branches == "siamese":
            self.branches = "2ch"
        elif taps.size != self.kk * 2 * c3:
            raise ValueError(f"head_taps_w {taps.shape} does not fit conv3's {c3} channels")
        #: channels of each source (a 2-channel net's conv1 takes both sources' channels)
        self.in_channels = c0 // 2 if self.branches == "2ch" else c0
        t = taps.reshape(self.kk, -1).T                                   # (maps*C3, K*K)
        if self.branches == "2ch":
            self.head = [pack_panels(np.ascontiguousarray(t))]
        else:
            self.head = [pack_panels(np.ascontiguousarray(t[:c3])), pack_panels(np.ascontiguousarray(t[c3:]))]
            # the antisymmetric head (A - B)/2 of one frame (:meth:`frame_scores`), from the float32 halves in float64
            self.head_frame = pack_panels((t[:c3].astype(np.float64) - t[c3:].astype(np.float64)) / 2)
        bias = np.asarray(params.get("head_bias", 0.0), np.float32)
        if bias.size != 1:
            raise ValueError(f"head_bias {bias.shape}: expected a scalar")
        self.head_bias = float(bias.reshape(()))                          # a float32 value

    def _trunk(self, params: dict, suffix: str) -> tuple:
        """One branch's trunk: ``(w1 (9 C0, C1), b1, C0, convs)`` with ``convs`` = ``(cin, cout, U, b)`` of conv2
        and conv3 in Winograd form."""
        w1 = np.asarray(params[f"conv1{suffix}_w"], np.float32)           # (64, C0, 3, 3)
        if w1.ndim != 4 or w1.shape[2:] != (3, 3):
            raise ValueError(f"conv1{suffix}_w {w1.shape}: expected (C1, C0, 3, 3)")
        c1, c0 = w1.shape[:2]
        # (9 C0, C1): tap-major, then input channel (for C0 = 1 the (9, 64) matrix of the grayscale kernels)
        w = np.ascontiguousarray(w1.transpose(2, 3, 1, 0).reshape(9 * c0, c1))
        b1 = np.ascontiguousarray(params[f"conv1{suffix}_b"], np.float32)
        convs = []
        for name in ("conv2", "conv3"):
            wc = np.asarray(params[f"{name}{suffix}_w"], np.float32)
            convs.append((wc.shape[1], wc.shape[0], pack_panels(transform_filter(wc)),
                          np.ascontiguousarray(params[f"{name}{suffix}_b"], np.float32)))
        if c1 % 8 or convs[0][0] != c1 or convs[1][0] != convs[0][1] or b1.shape != (c1,) or convs[0][1] % 16 \
                or convs[1][1] % 16:
            raise ValueError("unexpected layer sizes in the ONNX model")
        return w, b1, c0, convs

    def _source(self, img, name: str) -> np.ndarray:
        """``img`` as a C-contiguous float32 (H, W) or (H, W, C0) array; ValueError when C0 does not fit conv1."""
        img = np.asarray(img)
        if img.ndim not in (2, 3):
            raise ValueError(f"{name}: expected an (H, W) or (H, W, C) image, got shape {img.shape}")
        c = 1 if img.ndim == 2 else img.shape[2]
        if c != self.in_channels:
            raise ValueError(f"{name} has {c} channel{'s' * (c != 1)} (shape {img.shape}); the model's conv1 takes "
                             f"{self.in_channels}")
        return np.ascontiguousarray(img, np.float32)

    def features(self, img: np.ndarray, *, branch: int = 0) -> np.ndarray:
        """conv3 maps (ceil(H/2), ceil(W/2), C3) of one trunk input ``img`` (H, W) or (H, W, C0) float32: a source
        through branch ``branch``'s trunk (a 2-channel net: the (H, W, 2 C0) stack of both sources)."""
        w1, b1, c0, convs = self.trunks[branch]
        img = np.ascontiguousarray(img, np.float32)
        if (1 if img.ndim == 2 else img.shape[2]) != c0:
            raise ValueError(f"img has shape {img.shape}; the trunk's conv1 takes {c0} channel(s)")
        h, w = img.shape[:2]
        lib, n = self.lib, self.threads
        x = np.empty((h, w, self.c1), np.float32)
        lib.conv1_relu(_ptr(img), h, w, c0, _ptr(w1), _ptr(b1), self.c1, _ptr(x), n)
        for pool, (cin, cout, u, b) in zip((1, 0), convs):
            ho, wo = ((h + 1) // 2, (w + 1) // 2) if pool else (h, w)
            y = np.empty((ho, wo, cout), np.float32)
            if lib.wino_conv_relu(_ptr(x), h, w, cin, cout, _ptr(u), _ptr(b), pool, _ptr(y), n):
                raise MemoryError("winograd backend: could not allocate its tile buffers")
            x, (h, w) = y, (ho, wo)
        return x

    def _inputs(self, a, b) -> list:
        """``[(trunk input, trunk index, head index)]`` of a pair: each source through its branch, or the
        channel stack of both through a 2-channel net's one trunk."""
        if self.branches == "2ch":
            stack = np.concatenate([x.reshape(*x.shape[:2], -1) for x in (a, b)], axis=2)
            return [(np.ascontiguousarray(stack), 0, 0)]
        return [(a, 0, 0), (b, len(self.trunks) - 1, 1)]

    def _score_shape(self, a, b) -> tuple[int, int, int, int]:
        from . import pair_shape

        return pair_shape(a, b, self.k)

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Score map ``(ceil(H/2) - K + 1, ceil(W/2) - K + 1)`` float32 of the pair (``a``, ``b``): (H, W) or
        (H, W, C0) arrays.

        Fused: conv1 is computed per block of tiles inside conv2 (:c:func:`conv12_pool`) and conv3's output goes
        straight into the head's tap products (:c:func:`conv3_taps`), so only the pooled conv2 map (reused for
        both sources) and the tap maps are stored. Bit-identical to :meth:`scores_unfused`.
        """
        a, b = self._source(a, "a"), self._source(b, "b")
        h, w, hp, wp = self._score_shape(a, b)
        taps = np.empty((hp, wp, self.kk), np.float32)
        for i, (img, trunk, head) in enumerate(self._inputs(a, b)):
            self._trunk_taps(img, self.trunks[trunk], self.head[head], taps, accumulate=i)
        out = np.empty((hp - self.k + 1, wp - self.k + 1), np.float32)
        self.lib.head_sum(_ptr(taps), hp, wp, self.k, self.head_bias, _ptr(out), self.threads)
        return out

    def _trunk_taps(self, img, trunk, head, taps, *, accumulate: int) -> None:
        """conv1..conv3 of ``img`` through ``trunk`` and its head products into ``taps`` (added when
        ``accumulate``), by the fused kernels."""
        w1, b1, c0, ((c1, c2, u2, b2), (_, c3, u3, b3)) = trunk
        h, w = img.shape[:2]
        hp, wp = (h + 1) // 2, (w + 1) // 2
        lib, n = self.lib, self.threads
        pooled = np.empty((hp, wp, c2), np.float32)
        if lib.conv12_pool(_ptr(img), h, w, c0, _ptr(w1), _ptr(b1), c1, c2, _ptr(u2), _ptr(b2), _ptr(pooled), n) or \
           lib.conv3_taps(_ptr(pooled), hp, wp, c2, c3, _ptr(u3), _ptr(b3), _ptr(head), self.kk, int(accumulate),
                          _ptr(taps), n):
            raise MemoryError("winograd backend: could not allocate its tile buffers")

    def frame_scores(self, img: np.ndarray) -> np.ndarray:
        """Per-frame focus score ``s = (u - v) / 2`` of one source ``img`` (H, W) or (H, W, C0): float32
        ``(ceil(H/2) - K + 1, ceil(W/2) - K + 1)``, pre-sigmoid, without the head's bias.

        The folded head is linear over the concatenated conv3 maps, so the pair's logit is ``u(a) + v(b) + bias``
        with ``u``, ``v`` the head's A and B halves applied to each source's conv3 map; the head ``(A - B)/2`` on
        one source gives ``s`` with ``logit(a, b) - logit(b, a) = 2 (s(a) - s(b))``. One trunk pass (the same
        fused kernels as :meth:`__call__`, one source), then the head's sum without the sigmoid.
        """
        models.require_siamese(self.branches, "this one")
        img = self._source(img, "img")
        h, w, hp, wp = self._score_shape(img, img)
        taps = np.empty((hp, wp, self.kk), np.float32)
        self._trunk_taps(img, self.trunks[0], self.head_frame, taps, accumulate=0)
        out = np.empty((hp - self.k + 1, wp - self.k + 1), np.float32)
        self.lib.head_sum_linear(_ptr(taps), hp, wp, self.k, 0.0, _ptr(out), self.threads)
        return out

    def scores_unfused(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """The score map layer by layer (:meth:`features`, then the head products): a check on the fused path."""
        a, b = self._source(a, "a"), self._source(b, "b")
        _, _, hp, wp = self._score_shape(a, b)
        taps = np.empty((hp * wp, self.kk), np.float32)
        for i, (img, trunk, head) in enumerate(self._inputs(a, b)):
            f = self.features(img, branch=trunk)
            if self.lib.gemm_packed(hp * wp, self.kk, f.shape[2], _ptr(f), _ptr(self.head[head]), _ptr(taps), i,
                                    self.threads):
                raise MemoryError("winograd backend: could not allocate the head's row buffer")
            del f
        out = np.empty((hp - self.k + 1, wp - self.k + 1), np.float32)
        self.lib.head_sum(_ptr(taps), hp, wp, self.k, self.head_bias, _ptr(out), self.threads)
        return out


# ------------------------------------------------------------------------------ backend interface (pyfusion.net)
NAME = "winograd"
#: Tiles start on multiples of 8 input pixels: the 4x4 Winograd tile grid of conv2 (full resolution) and of conv3
#: (half resolution), so that every Winograd tile of a tile is the whole image's.
GRID = 8
#: Input pixels before a tile's first kept score: its first 4 scores see the tile's zero padding.
HALO_BEFORE = 8


def exact_scores(n: int, head: int) -> int:
    """Leading scores of a tile of ``n`` input rows (ending inside the image) that are bit-identical to whole-image
    inference (rows; columns alike), for a net with a ``head`` x ``head`` head.

    A Winograd tile mixes all of its 6x6 input window in floating point, so an output is bit-identical only when
    the whole window is: conv1 rows ``< n - 1`` (the last row sees the tile's zero padding); conv2 tiles
    ``4t .. 4t+3`` that read conv1 rows ``4t - 1 .. 4t + 4 < n - 1``; the pooled rows of those; conv3 tiles read
    pooled rows ``4t - 1 .. 4t + 4`` alike; a score ``i`` reads conv3 rows ``i .. i + head - 1``.
    """
    r2 = 4 * ((n - 6) // 4 + 1) if n >= 6 else 0          # exact conv2 rows
    p2 = r2 // 2                                          # exact pooled rows
    r3 = 4 * ((p2 - 5) // 4 + 1) if p2 >= 5 else 0        # exact conv3 rows
    return max(0, r3 - head + 1)


def peak_bytes(model, h: int, w: int) -> int:
    """Estimated peak memory (bytes) on an ``h`` x ``w`` pair of ``model`` (:func:`bytes_needed`)."""
    return bytes_needed(h, w, in_channels=model.in_channels)


@lru_cache(maxsize=4)
def _cached_net(path: str, mtime_ns: int, threads: int):
    return Net(load_params(path), threads=threads)


def runner(model, caffemodel, onnx, *, threads: int, gpu=None):
    """``run(a, b)`` for (H, W, C) float32 tiles: the model's folded twin (weights from its ONNX file)."""
    if gpu is not None:
        raise ValueError("the winograd backend runs on the CPU; use backend='caffe' for gpu=")
    if not available():
        raise RuntimeError(f"the winograd backend cannot run here: {why_unavailable()}")
    path = models.check_onnx(onnx, caffemodel)
    net = _cached_net(str(path), os.stat(path).st_mtime_ns, int(threads))
    if net.in_channels != model.in_channels or net.k != model.head or net.branches != model.branches:
        raise models.ModelError(f"{path}: conv1 takes {net.in_channels} channel(s) per source, the head is "
                                f"{net.k}x{net.k}, the branches {net.branches}; model {model.name} has "
                                f"{model.in_channels}, {model.head}x{model.head}, {model.branches}")
    return net


def frame_runner(model, caffemodel, onnx, *, threads: int, gpu=None):
    """``run(img)`` for one (H, W, C) float32 tile: its per-frame score (:meth:`Net.frame_scores`, pre-sigmoid)."""
    return runner(model, caffemodel, onnx, threads=threads, gpu=gpu).frame_scores
