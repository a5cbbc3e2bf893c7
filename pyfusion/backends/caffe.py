"""The ``caffe`` backend (the reference): pycaffe running a model's deploy twin, on the CPU or a GPU.

``gpu=None`` runs ``caffe.set_mode_cpu()``; ``gpu=N`` runs ``set_device(N)`` and ``set_mode_gpu()`` (a Caffe
built with CUDA: ``make caffe CUDA=1``), with a clear error where pycaffe has no CUDA or the device is missing.
Inputs ``a``, ``b`` (1 x C x H x W), output ``prob`` channel 1 (source A in focus).
"""
from __future__ import annotations

import math
import os
from functools import lru_cache
from pathlib import Path

from .. import models
from ..models import FC1_OUTPUTS, TRUNK_CHANNELS

NAME = "caffe"
#: Caffe keeps a blob's count in an int: a layer above this many elements is refused ("blob size exceeds INT_MAX").
INT_MAX = 2**31 - 1


def available() -> bool:
    """Whether pycaffe imports."""
    try:
        import caffe  # noqa: F401
    except ImportError:
        return False
    return True


def _blob_elements(model: models.Model, h: int, w: int) -> tuple[int, int]:
    """(blob elements, im2col elements) of the deploy twin on an ``h`` x ``w`` pair."""
    c0, (c1, c2, c3), k = model.in_channels, TRUNK_CHANNELS, model.head
    sh, sw = model.score_shape(h, w)
    hp, wp = math.ceil(h / 2), math.ceil(w / 2)
    blobs = (2 * (c0 + 2 * c1 + 2 * c2) * h * w + 2 * 2 * c3 * hp * wp + 2 * c3 * hp * wp
             + (FC1_OUTPUTS + 2 + 2) * sh * sw)
    im2col = 2 * c3 * k * k * sh * sw + 2 * (c2 * 9 * hp * wp + c1 * 9 * h * w + c0 * 9 * h * w)
    return blobs, im2col


def peak_bytes(model: models.Model, h: int, w: int) -> int:
    """Estimated peak memory (bytes) of the deploy twin on an ``h`` x ``w`` pair (CPU or GPU).

    Dominated by the im2col buffer of the fc1 convolution: 2*256*K*K floats per output position. Every convolution
    layer keeps its own im2col buffer, so they add up (measured: within 3% on a 250 x 250 tile). A tile whose fc1
    im2col buffer would pass INT_MAX elements counts as not fitting, so tiling also keeps Caffe under that limit.
    """
    blobs, im2col = _blob_elements(model, h, w)
    sh, sw = model.score_shape(h, w)
    if 2 * TRUNK_CHANNELS[-1] * model.head ** 2 * sh * sw > INT_MAX:
        return 1 << 62
    return 4 * (blobs + im2col)


def has_cuda() -> bool:
    """Whether the importable pycaffe was built with CUDA: it then maps the CUDA runtime into the process.

    A CPU_ONLY build aborts the whole process (glog's fatal "Cannot use GPU in CPU-only Caffe") on
    ``set_device``, so this is checked first. Where ``/proc/self/maps`` cannot be read, pycaffe's own API decides.
    """
    import caffe

    try:
        return "libcudart" in Path("/proc/self/maps").read_text()
    except OSError:
        return hasattr(caffe, "set_device")


@lru_cache(maxsize=4)
def _net(deploy: str, weights: str, mtime: float, gpu):
    import caffe

    if gpu is None:
        caffe.set_mode_cpu()
    else:
        if not hasattr(caffe, "set_device") or not has_cuda():
            raise RuntimeError(f"Caffe cannot use GPU {gpu}: this pycaffe was built without CUDA (CPU_ONLY); build "
                               "it with `make caffe CUDA=1`, or use backend='torch' with a CUDA build of torch")
        try:
            caffe.set_device(int(gpu))
            caffe.set_mode_gpu()
        except Exception as e:  # pycaffe raises its own errors for CPU_ONLY builds and missing devices
            raise RuntimeError(f"Caffe cannot use GPU {gpu}: {e} (build it with `make caffe CUDA=1`)") from e
    return caffe.Net(deploy, weights, caffe.TEST)


def runner(model: models.Model, caffemodel, onnx, *, threads: int, gpu=None):
    """``run(a, b)`` for (H, W, C) float32 tiles: the deploy twin's ``prob[0, 1]``.

    ``threads`` is not Caffe's to set (OpenBLAS reads ``OPENBLAS_NUM_THREADS`` when it loads).
    """
    path = models.check_file(caffemodel, required_side_car=models.is_registered_file(caffemodel))
    net = _net(str(model.deploy), str(path), os.path.getmtime(path), gpu)

    def run(a, b):
        h, w, c = a.shape
        for name, x in (("a", a), ("b", b)):
            net.blobs[name].reshape(1, c, h, w)
            net.blobs[name].data[0] = x.transpose(2, 0, 1)
        return net.forward()["prob"][0, 1].copy()

    return run


def release() -> None:
    """Drop the cached nets: a smaller reshape releases nothing in Caffe."""
    _net.cache_clear()
