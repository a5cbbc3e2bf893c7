"""The ``caffe`` backend (the reference): pycaffe running a model's deploy twin, on the CPU or a GPU.

``gpu=None`` runs ``caffe.set_mode_cpu()``; ``gpu=N`` runs ``set_device(N)`` and ``set_mode_gpu()`` (a Caffe
built with CUDA: ``make caffe CUDA=1``), with a clear error where pycaffe has no CUDA or the device is missing.
Inputs ``a``, ``b`` (1 x C x H x W), output ``prob`` channel 1 (source A in focus).

Per-frame scores (:func:`frame_runner`, :func:`pyfusion.net.frame_scores`) of a siamese net: the deploy twin run
from ``a`` to branch A's ``relu3`` only, then its ``conv3`` maps through the antisymmetric half of the folded
fc1/fc2 head (:func:`fusionlab.onnx_export.fold_head`) in numpy (:func:`pyfusion.backends.onnx.frame_head`).
"""
from __future__ import annotations

import math
import numbers
import os
import tempfile
from functools import lru_cache
from pathlib import Path

from .. import models
from ..models import FC1_OUTPUTS, TRUNK_CHANNELS

NAME = "caffe"
#: Environment variable choosing the head (:func:`resolve_head`): ``twin`` (default) or ``folded``.
HEAD_ENV = "PYFUSION_CAFFE_HEAD"
HEADS = ("twin", "folded")
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


def _cudart_libs() -> list[str] | None:
    """Paths of the CUDA runtime libraries mapped into this process (none for a CPU_ONLY pycaffe); None where
    ``/proc/self/maps`` cannot be read."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    return sorted({ln.split()[-1] for ln in maps.splitlines() if "libcudart" in ln and "/" in ln})


def has_cuda() -> bool:
    """Whether the importable pycaffe was built with CUDA: it then maps the CUDA runtime into the process.

    A CPU_ONLY build aborts the whole process (glog's fatal "Cannot use GPU in CPU-only Caffe") on
    ``set_device``, so this is checked first. Where ``/proc/self/maps`` cannot be read, pycaffe's own API decides.
    """
    import caffe

    libs = _cudart_libs()
    return hasattr(caffe, "set_device") if libs is None else bool(libs)


def device_count() -> int:
    """CUDA devices seen by the CUDA runtime that pycaffe loaded (0 for a CPU_ONLY build, or where it cannot tell).

    Asked through that runtime (``cudaGetDeviceCount``), because Caffe aborts the process on a device it lacks.
    """
    import ctypes

    libs = _cudart_libs()
    if not libs:
        return 0
    n = ctypes.c_int(0)
    try:
        ok = ctypes.CDLL(libs[0]).cudaGetDeviceCount(ctypes.byref(n)) == 0
    except (OSError, AttributeError):
        return 0
    return n.value if ok else 0


def use(gpu=None) -> None:
    """Put pycaffe in CPU mode (``gpu=None``) or on CUDA device ``gpu``; RuntimeError, not glog's abort of the
    process, where pycaffe was built without CUDA or the device does not exist."""
    import caffe

    if gpu is None:
        caffe.set_mode_cpu()
        return
    if isinstance(gpu, bool) or not isinstance(gpu, numbers.Integral) or gpu < 0:
        raise ValueError(f"gpu must be a device number >= 0, got {gpu!r}")
    gpu = int(gpu)
    if not hasattr(caffe, "set_device") or not has_cuda():
        raise RuntimeError(f"Caffe cannot use GPU {gpu}: this pycaffe was built without CUDA (CPU_ONLY); build "
                           "it with `make caffe CUDA=1`, or use backend='torch' with a CUDA build of torch")
    n = device_count()
    if gpu >= n:
        raise RuntimeError(f"Caffe cannot use GPU {gpu}: the CUDA runtime sees {n} device(s)")
    caffe.set_device(gpu)
    caffe.set_mode_gpu()


def resolve_head(head: str | None = None) -> str:
    """The head the caffe backend runs: ``head``, else ``$PYFUSION_CAFFE_HEAD``, else ``"twin"``.

    ``"twin"``: the deploy twin as trained (fc1 and fc2 as convolutions: the reference); ``"folded"``: fc2 . fc1
    folded into one convolution to the logit difference (:func:`fusionlab.netspec.deploy_folded`), 256x less head
    work, the same scores up to float rounding.
    """
    h = (head or os.environ.get(HEAD_ENV) or "twin").lower()
    if h not in HEADS:
        raise ValueError(f"Caffe head {h!r}: choose from {', '.join(HEADS)}")
    return h


@lru_cache(maxsize=4)
def _net(name: str, weights: str, mtime: float, gpu, head: str = "twin"):
    """The deploy twin of registered model ``name`` with ``weights``, or its folded-head variant."""
    import caffe

    m = models.get(name)
    use(gpu)
    twin = caffe.Net(str(m.deploy), weights, caffe.TEST)
    if head == "twin":
        return twin
    from .. import netspec
    from .head import fold_head

    fd, path = tempfile.mkstemp(prefix=f"{name}_deploy_folded.", suffix=".prototxt")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(netspec.deploy_folded(m))
        net = caffe.Net(path, caffe.TEST)
    finally:
        os.unlink(path)
    for layer, blobs in twin.params.items():
        for i, blob in enumerate(blobs if layer in net.params else ()):
            net.params[layer][i].data[...] = blob.data
    net.params["head"][0].data[...] = fold_head(twin.params["fc1-conv"][0].data, twin.params["fc2-conv"][0].data)
    return net


def runner(model: models.Model, caffemodel, onnx, *, threads: int, gpu=None, head: str | None = None):
    """``run(a, b)`` for (H, W, C) float32 tiles: the deploy twin's ``prob[0, 1]`` (P(source A in focus)), or
    the folded head's ``prob[0, 0]`` (``head``, :func:`resolve_head`).

    ``threads`` is not Caffe's to set (OpenBLAS reads ``OPENBLAS_NUM_THREADS`` when it loads).
    """
    head = resolve_head(head)
    path = models.check_file(caffemodel, required_side_car=models.is_registered_file(caffemodel))
    net = _net(model.name, str(path), os.path.getmtime(path), gpu, head)
    channel = 1 if head == "twin" else 0

    def run(a, b):
        h, w, c = a.shape
        for name, x in (("a", a), ("b", b)):
            net.blobs[name].reshape(1, c, h, w)
            net.blobs[name].data[0] = x.transpose(2, 0, 1)
        return net.forward()["prob"][0, channel].copy()

    return run


def frame_runner(model: models.Model, caffemodel, onnx, *, threads: int, gpu=None):
    """``run(img)`` for one (H, W, C) float32 tile: its per-frame score (pre-sigmoid, without the head's bias;
    :func:`pyfusion.net.frame_scores`), from branch A's conv3 maps of the deploy twin."""
    from .head import fold_head
    from .onnx import antisymmetric_head, frame_head

    models.require_siamese(model.branches, model.name)
    path = models.check_file(caffemodel, required_side_car=models.is_registered_file(caffemodel))
    net = _net(model.name, str(path), os.path.getmtime(path), gpu)
    # the folded head (2 C3, K, K) as the ONNX twin has it (float32), its halves subtracted in float64
    head = antisymmetric_head(fold_head(net.params["fc1-conv"][0].data, net.params["fc2-conv"][0].data)[0])

    def run(img):
        h, w, c = img.shape
        net.blobs["a"].reshape(1, c, h, w)
        net.blobs["a"].data[0] = img.transpose(2, 0, 1)
        # branch A's layers only (each layer reshapes itself as it runs): conv1 .. relu3 of source a
        return frame_head(net.forward(end="relu3")["conv3"][0], head)

    return run


def release() -> None:
    """Drop the cached nets: a smaller reshape releases nothing in Caffe."""
    _net.cache_clear()
