"""The "winograd" backend of :mod:`pyfusion.net`: the deploy twin on the CPU by Winograd convolutions.

The same net as the ONNX model (:mod:`pyfusion.onnx_export`: conv1 -> ReLU -> conv2 -> ReLU -> max pool ->
conv3 -> ReLU per source, then the folded 8x8 head and a sigmoid), computed by the C kernels of
``pyfusion/backends/_winograd.c``:

* conv2 and conv3 (3x3, pad 1) by Winograd's minimal filtering F(4x4, 3x3) [2]_: 36 multiplications per
  4x4 output tile and channel pair instead of 144, so ~4x fewer multiply-adds than a direct convolution.
  Input tiles are transformed, multiplied by the transformed filters ``U = G g G^T`` (computed here once, in
  float64) with a register-blocked 6x16 kernel, transformed back, biased, rectified and (after conv2) max-pooled
  in one pass over each block of tiles, so the transformed data stays in cache;
* conv1 (1 -> 64 channels) directly, inside conv2's blocks (its map is never stored), and conv3's output
  straight into the head's 256 -> 64 tap products (nor is its map): only the pooled conv2 map and the tap maps
  are kept, ~200 bytes per input pixel;
* the head as those tap products (source A's plus source B's) and a shifted sum of the 64 tap maps, as in the
  ONNX model, then a sigmoid.

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
from functools import lru_cache

import numpy as np

__all__ = ["available", "load_params", "transform_filter", "pack_panels", "Net", "BYTES_PER_PIXEL"]

#: Peak bytes per input pixel of a tile: the pooled conv2 map (128 B/px) and the head's tap maps (64 B/px), both
#: kept for the pair (measured: 99-192 B/px on 300^2..4000x3000 pairs); a fixed allowance for the per-thread buffers.
BYTES_PER_PIXEL = 200
BASE_BYTES = 4 << 20

# Winograd F(4x4, 3x3) filter transform (points 0, +-1, +-2, infinity) [2]_.
_G = np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
               [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]])
_F32P = ctypes.POINTER(ctypes.c_float)


@lru_cache(maxsize=1)
def _lib():
    spec = importlib.util.find_spec("pyfusion.backends._winograd")
    if spec is None or not spec.origin:
        return None
    lib = ctypes.CDLL(spec.origin)
    i, p = ctypes.c_int, _F32P
    lib.conv1_relu.argtypes = [p, i, i, p, p, i, p, i]
    lib.wino_conv_relu.argtypes = [p, i, i, i, i, p, p, i, p, i]
    lib.wino_conv_relu.restype = i
    lib.conv12_pool.argtypes = [p, i, i, p, p, i, i, p, p, p, i]
    lib.conv12_pool.restype = i
    lib.conv3_taps.argtypes = [p, i, i, i, i, p, p, p, i, i, p, i]
    lib.conv3_taps.restype = i
    lib.gemm_packed.argtypes = [i, i, i, p, p, p, i, i]
    lib.head_sum.argtypes = [p, i, i, i, p, i]
    return lib


def available() -> bool:
    """Whether the C kernels are built (``pip install -e .`` builds them)."""
    return _lib() is not None


def _ptr(a: np.ndarray):
    assert a.dtype == np.float32 and a.flags.c_contiguous
    return a.ctypes.data_as(_F32P)


def load_params(onnx_path) -> dict:
    """Weights of an ONNX model written by :func:`pyfusion.onnx_export.export_onnx`, by initializer name."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path))
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


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
        :func:`load_params` of the ONNX model (``conv1_w`` ... ``conv3_b``, ``head_taps_w``).
    threads : int
        Worker threads.
    """

    def __init__(self, params: dict, *, threads: int = 1):
        lib = _lib()
        if lib is None:
            raise RuntimeError("the winograd backend's C kernels are not built: run `pip install -e .`")
        self.lib, self.threads = lib, int(threads)
        w1 = np.asarray(params["conv1_w"], np.float32)                     # (64, 1, 3, 3)
        self.c1 = w1.shape[0]
        self.w1 = np.ascontiguousarray(w1.reshape(self.c1, 9).T)          # (9, 64): tap-major
        self.b1 = np.ascontiguousarray(params["conv1_b"], np.float32)
        self.convs = []
        for name in ("conv2", "conv3"):
            w = np.asarray(params[f"{name}_w"], np.float32)
            self.convs.append((w.shape[1], w.shape[0], pack_panels(transform_filter(w)),
                               np.ascontiguousarray(params[f"{name}_b"], np.float32)))
        taps = np.asarray(params["head_taps_w"], np.float32)              # (64 taps, 2*C3, 1, 1)
        self.kk = taps.shape[0]
        self.k = int(round(self.kk ** 0.5))
        c3 = self.convs[-1][1]
        t = taps.reshape(self.kk, 2 * c3).T                               # (2*C3, 64)
        self.head = [pack_panels(np.ascontiguousarray(t[:c3])), pack_panels(np.ascontiguousarray(t[c3:]))]
        if self.c1 % 8 or self.convs[0][0] != self.c1 or self.convs[1][0] != self.convs[0][1]:
            raise ValueError("unexpected layer sizes in the ONNX model")

    def features(self, img: np.ndarray) -> np.ndarray:
        """conv3 maps (ceil(H/2), ceil(W/2), C3) of one source ``img`` (H, W) float32."""
        h, w = img.shape
        lib, n = self.lib, self.threads
        img = np.ascontiguousarray(img, np.float32)
        x = np.empty((h, w, self.c1), np.float32)
        lib.conv1_relu(_ptr(img), h, w, _ptr(self.w1), _ptr(self.b1), self.c1, _ptr(x), n)
        for pool, (cin, cout, u, b) in zip((1, 0), self.convs):
            ho, wo = ((h + 1) // 2, (w + 1) // 2) if pool else (h, w)
            y = np.empty((ho, wo, cout), np.float32)
            if lib.wino_conv_relu(_ptr(x), h, w, cin, cout, _ptr(u), _ptr(b), pool, _ptr(y), n):
                raise MemoryError("winograd backend: could not allocate its tile buffers")
            x, (h, w) = y, (ho, wo)
        return x

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Score map ``(ceil(H/2) - 7, ceil(W/2) - 7)`` float32 of the pair (``a``, ``b``).

        Fused: conv1 is computed per block of tiles inside conv2 (:c:func:`conv12_pool`) and conv3's output goes
        straight into the head's tap products (:c:func:`conv3_taps`), so only the pooled conv2 map (reused for
        both sources) and the tap maps are stored. Bit-identical to :meth:`scores_unfused`.
        """
        lib, n = self.lib, self.threads
        h, w = a.shape
        hp, wp = (h + 1) // 2, (w + 1) // 2
        (c1, c2, u2, b2), (_, c3, u3, b3) = self.convs
        pooled = np.empty((hp, wp, c2), np.float32)
        taps = np.empty((hp, wp, self.kk), np.float32)
        for i, (img, head) in enumerate(zip((a, b), self.head)):
            img = np.ascontiguousarray(img, np.float32)
            if lib.conv12_pool(_ptr(img), h, w, _ptr(self.w1), _ptr(self.b1), c1, c2, _ptr(u2), _ptr(b2),
                               _ptr(pooled), n) or \
               lib.conv3_taps(_ptr(pooled), hp, wp, c2, c3, _ptr(u3), _ptr(b3), _ptr(head), self.kk, i,
                              _ptr(taps), n):
                raise MemoryError("winograd backend: could not allocate its tile buffers")
        out = np.empty((hp - self.k + 1, wp - self.k + 1), np.float32)
        lib.head_sum(_ptr(taps), hp, wp, self.k, _ptr(out), n)
        return out

    def scores_unfused(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """The score map layer by layer (:meth:`features`, then the head products): a check on the fused path."""
        taps = None
        for i, (img, head) in enumerate(zip((a, b), self.head)):
            f = self.features(img)
            hp, wp, c = f.shape
            if taps is None:
                taps = np.empty((hp * wp, self.kk), np.float32)
            self.lib.gemm_packed(hp * wp, self.kk, c, _ptr(f), _ptr(head), _ptr(taps), i, self.threads)
            del f
        out = np.empty((hp - self.k + 1, wp - self.k + 1), np.float32)
        self.lib.head_sum(_ptr(taps), hp, wp, self.k, _ptr(out), self.threads)
        return out
