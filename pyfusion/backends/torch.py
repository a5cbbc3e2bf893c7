"""The ``torch`` backend: the folded twin in PyTorch, on the CPU or a CUDA GPU (PyTorch is optional).

For machines where Caffe is not built: the same net as the ONNX model (:mod:`fusionlab.onnx_export`), with its
weights read from the model's ONNX file (:func:`pyfusion.backends.winograd.load_params`; the file is checked by
:func:`pyfusion.models.check_onnx`), run with ``torch.nn.functional``::

    per source: conv1 3x3 pad 1 -> ReLU -> conv2 3x3 pad 1 -> ReLU -> max pool 2x2/2 (ceil mode, as Caffe)
                -> conv3 3x3 pad 1 -> ReLU -> 1x1 convolution with its half of the head (C3 -> K*K tap maps)
    pair:       tap maps of A + tap maps of B -> shifted sum over the K x K tap offsets [+ head_bias] -> sigmoid

Every branch layout the export writes: siamese (``conv1`` .. ``conv3`` for both sources), pseudo-siamese
(branch B through ``conv1_p`` .. ``conv3_p``), 2-channel (one trunk on the ``2 C0``-channel stack of A's and B's
channels, ``head_taps_w`` with C3 rows); any head K (``head_taps_w`` holds K*K taps). The sources go through the
trunk one after the other (not as a batch of two), so only one source's activations are alive at a time.
:meth:`Net.frame_scores` (:func:`frame_runner`) is the per-frame score of a siamese net, as the winograd
backend's: the antisymmetric head ``(A - B) / 2`` on one source, the shifted sum, no sigmoid, no bias.

Device: ``gpu=None`` runs on the CPU (``torch.set_num_threads(threads)`` during each call); ``gpu=N`` on
``cuda:N``, with a clear error where this torch has no CUDA or the device does not exist.

Precision (``runner(precision=)``, else ``$PYFUSION_TORCH_PRECISION``, else ``"fp32"``; ``pyfusion.fuse`` and
``pyfusion fuse`` reach the backend through the environment variable only):

* ``"fp32"`` (default): float32 everywhere, TF32 off during each call and restored after
  (``torch.backends.cudnn.allow_tf32`` and ``torch.backends.cuda.matmul.allow_tf32`` False; on torch >= 2.9 their
  successors ``torch.backends.cudnn.conv.fp32_precision`` and ``torch.backends.cuda.matmul.fp32_precision``
  "ieee"), so the scores are Caffe's and ONNX Runtime's up to float32 rounding (tested <= 1e-5 on the CPU);
* ``"tf32"`` (CUDA only): TF32 convolutions (Ampere and later: 10-bit mantissa products, float32 sums);
* ``"fp16"`` (CUDA only): the trunk (conv1 .. conv3) in float16, the head (its K*K-tap sums of 2 * 256 * K * K
  products) and the sigmoid in float32.

``"tf32"`` and ``"fp16"`` on the CPU are refused (ValueError): they are GPU modes, torch's CPU convolutions have
no TF32, and float16/bfloat16 convolutions on a CPU without native support are slower than float32, not faster.
cuDNN runs deterministic (``cudnn.deterministic = True``, ``benchmark = False``), so the same inputs give the same
scores; on the CPU the scores do not depend on the thread count (tested). Memory: :func:`peak_bytes`.
"""
from __future__ import annotations

import contextlib
import os
import sys
from functools import lru_cache

import numpy as np

from .. import models

__all__ = ["NAME", "PRECISIONS", "PRECISION_ENV", "BYTES_PER_PIXEL", "BASE_BYTES", "available", "why_unavailable",
           "has_cuda", "resolve_precision", "device", "Net", "peak_bytes", "runner", "frame_runner", "release"]

NAME = "torch"
#: The precisions of :class:`Net`; the CPU runs ``"fp32"`` only.
PRECISIONS = ("fp32", "tf32", "fp16")
#: Environment variable read when ``runner(precision=None)``: how ``pyfusion.fuse`` and ``pyfusion fuse`` reach it.
PRECISION_ENV = "PYFUSION_TORCH_PRECISION"
#: Peak bytes per input pixel of a tile of a grayscale pair on the CPU (fp32), and a fixed allowance: VmHWM above
#: the loaded process measured 1338 B/px + 4 MB on 400^2..1000^2 tiles (1744 B/px at 200^2: the fixed part),
#: docs/benchmarks_torch.md. One source's conv1 and conv2 maps (64 + 128 float32 channels, 768 B/px) are alive
#: while conv2 runs (the sources go through the trunk one at a time); the rest is oneDNN's buffers.
BYTES_PER_PIXEL = 1400
BASE_BYTES = 32 << 20
#: Further bytes per input pixel and source channel beyond the first (the float32 sources and their copies).
_SOURCE_BYTES_PER_CHANNEL = 16


def available() -> bool:
    """Whether torch imports (``pip install .[torch]``)."""
    return why_unavailable() is None


@lru_cache(maxsize=1)
def why_unavailable() -> str | None:
    """Why :func:`available` is False, or None."""
    try:
        import torch  # noqa: F401
    except ImportError as e:
        return f"PyTorch is not installed ({e}): `pip install .[torch]` (optional)"
    return None


def has_cuda() -> bool:
    """Whether torch imports and sees a CUDA device."""
    if not available():
        return False
    import torch

    return torch.cuda.is_available()


def resolve_precision(precision: str | None = None) -> str:
    """``precision`` if given, else ``$PYFUSION_TORCH_PRECISION``, else ``"fp32"``; ValueError for another name."""
    if precision is None:
        precision = os.environ.get(PRECISION_ENV, "").strip() or "fp32"
    p = str(precision).strip().lower()
    if p not in PRECISIONS:
        raise ValueError(f"torch precision {precision!r}: choose from {', '.join(PRECISIONS)}")
    return p


def _need_torch():
    why = why_unavailable()
    if why is not None:
        raise RuntimeError(f"the torch backend cannot run here: {why}")
    import torch

    return torch


def device(gpu=None):
    """The ``torch.device`` of ``gpu``: None -> the CPU, N -> ``cuda:N``; RuntimeError where this torch has no CUDA
    or no device N."""
    torch = _need_torch()
    if gpu is None:
        return torch.device("cpu")
    if isinstance(gpu, bool) or not isinstance(gpu, (int, np.integer)) or gpu < 0:
        raise ValueError(f"gpu must be a CUDA device index >= 0 or None, got {gpu!r}")
    if not torch.cuda.is_available():
        why = ("has no CUDA (a CPU-only build)" if torch.version.cuda is None else
               f"(CUDA {torch.version.cuda}) sees no CUDA device or driver")
        raise RuntimeError(f"the torch backend cannot use GPU {gpu}: this torch {torch.__version__} {why}; run on "
                           f"the CPU (gpu=None) or install a CUDA build of torch on a machine with an NVIDIA GPU")
    n = torch.cuda.device_count()
    if gpu >= n:
        raise RuntimeError(f"the torch backend cannot use GPU {gpu}: torch sees {n} CUDA device(s) "
                           f"(0..{n - 1})")
    return torch.device("cuda", int(gpu))


def _set(obj, values: dict) -> dict:
    """Set attributes of ``obj``; the old values."""
    old = {k: getattr(obj, k) for k in values}
    for k, v in values.items():
        setattr(obj, k, v)
    return old


@contextlib.contextmanager
def _cuda_flags(torch, *, tf32: bool):
    """cuDNN deterministic, no benchmark mode, and TF32 off (or on) for convolutions and matmuls; restored after.

    torch >= 2.9 has ``fp32_precision`` ("ieee" / "tf32") beside the legacy ``allow_tf32`` flags, and reading a
    legacy flag after the new API was used raises: the new API where it exists, else
    ``torch.backends.cudnn.allow_tf32`` / ``torch.backends.cuda.matmul.allow_tf32``.
    """
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    changes = [(cudnn, {"deterministic": True, "benchmark": False})]
    if hasattr(cudnn, "conv") and hasattr(cudnn.conv, "fp32_precision") and hasattr(matmul, "fp32_precision"):
        mode = "tf32" if tf32 else "ieee"
        changes += [(cudnn.conv, {"fp32_precision": mode}), (matmul, {"fp32_precision": mode})]
    else:
        changes += [(cudnn, {"allow_tf32": tf32}), (matmul, {"allow_tf32": tf32})]
    done = []
    try:
        for obj, values in changes:
            done.append((obj, _set(obj, values)))
        yield
    finally:
        for obj, old in reversed(done):
            _set(obj, old)


class Net:
    """The folded deploy twin in PyTorch; ``net(a, b)`` is the score map of one pair (a float32 ndarray).

    Parameters
    ----------
    params : dict
        :func:`pyfusion.backends.winograd.load_params` of the ONNX model (``conv1_w`` (C1, C0, 3, 3) ...
        ``conv3_b``, pseudo-siamese ``conv1_p_w`` ..., ``head_taps_w`` (K*K, maps*C3, 1, 1), optional scalar
        ``head_bias``).
    device : str or torch.device
        ``"cpu"`` or ``"cuda:N"`` (:func:`device`).
    precision : str
        ``"fp32"``, ``"tf32"`` or ``"fp16"`` (module docstring; :func:`runner` allows only fp32 on the CPU).
    threads : int, optional
        CPU threads during each call (``torch.set_num_threads``, restored after); default: torch's setting.

    Attributes
    ----------
    branches : str
        ``"siamese"``, ``"pseudo"`` or ``"2ch"`` (from the initializers, as the winograd backend reads them).
    in_channels : int
        Channels of each source.
    k : int
        The head's kernel size K (the score map is ``(ceil(H/2) - K + 1, ceil(W/2) - K + 1)``).
    """

    def __init__(self, params: dict, *, device="cpu", precision: str = "fp32", threads: int | None = None):
        import torch

        self.device = torch.device(device)
        self.precision = resolve_precision(precision)
        self.threads = None if threads is None else int(threads)
        self.dtype = torch.float16 if self.precision == "fp16" else torch.float32
        self.branches = "pseudo" if "conv1_p_w" in params else "siamese"
        self.trunks = [self._trunk(params, "")]
        if self.branches == "pseudo":
            self.trunks.append(self._trunk(params, "_p"))
        c0 = self.trunks[0][0][0].shape[1]
        c3 = self.trunks[0][2][0].shape[0]
        taps = np.asarray(params["head_taps_w"], np.float32)
        if taps.ndim != 4 or taps.shape[2:] != (1, 1):
            raise ValueError(f"head_taps_w {taps.shape}: expected (K*K, maps*C3, 1, 1)")
        self.kk = taps.shape[0]
        self.k = int(round(self.kk ** 0.5))
        if self.k < 1 or self.k * self.k != self.kk:
            raise ValueError(f"head_taps_w has {self.kk} taps: need K*K")
        if taps.shape[1] == c3 and self.branches == "siamese":
            self.branches = "2ch"
        elif taps.shape[1] != 2 * c3:
            raise ValueError(f"head_taps_w {taps.shape} does not fit conv3's {c3} channels")
        self.in_channels = c0 // 2 if self.branches == "2ch" else c0
        if self.branches == "2ch" and c0 % 2:
            raise ValueError(f"conv1_w takes {c0} channels: a 2-channel net's conv1 takes 2 C0")
        t = taps[:, :, 0, 0]                                             # (K*K, maps*C3)
        halves = [t] if self.branches == "2ch" else [t[:, :c3], t[:, c3:]]
        # the head's 1x1 tap convolutions (always float32: the head sums 2 * C3 * K * K products)
        self.head = [self._tensor(h[:, :, None, None], torch.float32) for h in halves]
        if self.branches != "2ch":
            frame = (halves[0].astype(np.float64) - halves[1].astype(np.float64)) / 2   # (A - B) / 2
            self.head_frame = self._tensor(frame.astype(np.float32)[:, :, None, None], torch.float32)
        bias = np.asarray(params.get("head_bias", 0.0), np.float32)
        if bias.size != 1:
            raise ValueError(f"head_bias {bias.shape}: expected a scalar")
        self.head_bias = float(bias.reshape(()))

    def _tensor(self, x, dtype):
        import torch

        return torch.from_numpy(np.array(x, np.float32)).to(device=self.device, dtype=dtype)   # a writable copy

    def _trunk(self, params: dict, suffix: str) -> list:
        """``[(w, b)]`` of conv1..conv3 of one branch, on the device in the trunk's dtype."""
        out = []
        for name in ("conv1", "conv2", "conv3"):
            w = np.asarray(params[f"{name}{suffix}_w"], np.float32)
            b = np.asarray(params[f"{name}{suffix}_b"], np.float32).reshape(-1)
            if w.ndim != 4 or w.shape[2:] != (3, 3) or b.shape != (w.shape[0],) or \
                    (out and w.shape[1] != out[-1][0].shape[0]):
                raise ValueError(f"unexpected layer sizes in the ONNX model: {name}{suffix}_w {w.shape}")
            out.append((self._tensor(w, self.dtype), self._tensor(b, self.dtype)))
        return out

    # ------------------------------------------------------------------------------------------- running
    @contextlib.contextmanager
    def _settings(self):
        """Inference mode, and during the call: the CPU thread count, or cuDNN deterministic without TF32 (fp32,
        fp16) / with TF32 (tf32), and matmul TF32 alike; every setting restored after."""
        import torch

        with contextlib.ExitStack() as stack:
            stack.enter_context(torch.inference_mode())
            if self.device.type == "cpu":
                if self.threads is not None:
                    old = torch.get_num_threads()
                    torch.set_num_threads(self.threads)
                    stack.callback(torch.set_num_threads, old)
            else:
                stack.enter_context(_cuda_flags(torch, tf32=self.precision == "tf32"))
                stack.enter_context(torch.cuda.device(self.device))
            yield

    def _source(self, img, name: str) -> np.ndarray:
        """``img`` as a C-contiguous float32 (H, W, C0) array; ValueError when C0 does not fit conv1."""
        img = np.asarray(img, np.float32)
        if img.ndim == 2:
            img = img[:, :, None]
        if img.ndim != 3:
            raise ValueError(f"{name}: expected an (H, W) or (H, W, C) image, got shape {img.shape}")
        if img.shape[2] != self.in_channels:
            c = img.shape[2]
            raise ValueError(f"{name} has {c} channel{'s' * (c != 1)} (shape {img.shape}); the model's conv1 "
                             f"takes {self.in_channels}")
        img = np.ascontiguousarray(img)
        return img if img.flags.writeable else img.copy()      # torch.from_numpy wants a writable array

    def _score_shape(self, a, b) -> tuple[int, int]:
        from . import pair_shape

        _, _, hp, wp = pair_shape(a, b, self.k)
        return hp - self.k + 1, wp - self.k + 1

    def _input(self, img: np.ndarray):
        """(H, W, C) ndarray -> (1, C, H, W) tensor on the device, in the trunk's dtype, NCHW (contiguous: torch's
        channels-last CPU convolutions change their sums with the thread count, measured; NCHW ones do not)."""
        import torch

        x = torch.from_numpy(img).to(self.device)
        return x.permute(2, 0, 1).unsqueeze(0).to(self.dtype).contiguous()

    def features(self, x, branch: int = 0):
        """conv3 maps (1, C3, ceil(H/2), ceil(W/2)) (float32 tensor) of a (1, C, H, W) trunk input tensor."""
        import torch.nn.functional as F

        (w1, b1), (w2, b2), (w3, b3) = self.trunks[branch]
        x = F.relu(F.conv2d(x, w1, b1, padding=1), inplace=True)
        x = F.relu(F.conv2d(x, w2, b2, padding=1), inplace=True)
        x = F.max_pool2d(x, 2, 2, ceil_mode=True)
        x = F.relu(F.conv2d(x, w3, b3, padding=1), inplace=True)
        return x.float()

    def _taps(self, x, branch: int, head):
        """The K*K tap maps (1, K*K, h', w') float32 of one trunk input through ``branch`` and ``head``."""
        import torch.nn.functional as F

        return F.conv2d(self.features(x, branch), head)

    def _shift_sum(self, taps):
        """``sum over (dy, dx) of taps[0, dy*K + dx, dy:dy+sh, dx:dx+sw]``: the K x K head from its tap maps."""
        k = self.k
        taps = taps.contiguous()                                         # each tap map one plane
        sh, sw = taps.shape[2] - k + 1, taps.shape[3] - k + 1
        out = taps[0, 0, :sh, :sw].clone()
        for c in range(1, self.kk):
            dy, dx = divmod(c, k)
            out += taps[0, c, dy:dy + sh, dx:dx + sw]
        return out

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Score map ``(ceil(H/2) - K + 1, ceil(W/2) - K + 1)`` float32 of the pair (``a``, ``b``): (H, W) or
        (H, W, C0) arrays."""
        import torch

        a, b = self._source(a, "a"), self._source(b, "b")
        self._score_shape(a, b)
        with self._settings():
            if self.branches == "2ch":
                taps = self._taps(self._input(np.concatenate([a, b], axis=2)), 0, self.head[0])
            else:
                taps = self._taps(self._input(a), 0, self.head[0])
                taps += self._taps(self._input(b), len(self.trunks) - 1, self.head[1])
            logit = self._shift_sum(taps)
            del taps
            if self.head_bias:
                logit += self.head_bias
            out = torch.sigmoid(logit).cpu().numpy()
        return np.ascontiguousarray(out, np.float32)

    def frame_scores(self, img: np.ndarray) -> np.ndarray:
        """Per-frame focus score ``s = (u - v) / 2`` of one source (pre-sigmoid, no bias): the antisymmetric head
        on one trunk pass, as :meth:`pyfusion.backends.winograd.Net.frame_scores`."""
        models.require_siamese(self.branches, "this one")
        img = self._source(img, "img")
        self._score_shape(img, img)
        with self._settings():
            out = self._shift_sum(self._taps(self._input(img), 0, self.head_frame)).cpu().numpy()
        return np.ascontiguousarray(out, np.float32)


# ------------------------------------------------------------------------------ backend interface (pyfusion.net)
def peak_bytes(model, h: int, w: int) -> int:
    """Estimated peak memory (bytes) on an ``h`` x ``w`` pair of ``model``: ``BASE_BYTES + BYTES_PER_PIXEL * h * w``
    for grayscale sources, 16 B/px more per further source channel (measured on the CPU in fp32; on a GPU the
    same tensors live in GPU memory, and fp16 halves the trunk's share)."""
    per_px = BYTES_PER_PIXEL + _SOURCE_BYTES_PER_CHANNEL * (int(model.in_channels) - 1)
    return BASE_BYTES + per_px * int(h) * int(w)


@lru_cache(maxsize=4)
def _cached_net(path: str, mtime_ns: int, dev: str, precision: str, threads: int):
    from .winograd import load_params

    return Net(load_params(path), device=dev, precision=precision, threads=threads)


def runner(model, caffemodel, onnx, *, threads: int, gpu=None, precision: str | None = None):
    """``run(a, b)`` for (H, W, C) float32 tiles: the model's folded twin in PyTorch (weights from its ONNX file).

    ``gpu``: None (the CPU) or a CUDA device index. ``precision``: ``"fp32"`` (default), ``"tf32"`` or ``"fp16"``
    (CUDA only); None reads ``$PYFUSION_TORCH_PRECISION``.
    """
    torch_device = device(gpu)
    p = resolve_precision(precision)
    if torch_device.type == "cpu" and p != "fp32":
        raise ValueError(f"torch precision {p!r} is for CUDA GPUs (gpu=N); on the CPU the torch backend runs fp32 "
                         f"(unset ${PRECISION_ENV})")
    path = models.check_onnx(onnx, caffemodel)
    net = _cached_net(str(path), os.stat(path).st_mtime_ns, str(torch_device), p, int(threads))
    if net.in_channels != model.in_channels or net.k != model.head or net.branches != model.branches:
        raise models.ModelError(f"{path}: conv1 takes {net.in_channels} channel(s) per source, the head is "
                                f"{net.k}x{net.k}, the branches {net.branches}; model {model.name} has "
                                f"{model.in_channels}, {model.head}x{model.head}, {model.branches}")
    return net


def frame_runner(model, caffemodel, onnx, *, threads: int, gpu=None, precision: str | None = None):
    """``run(img)`` for one (H, W, C) float32 tile: its per-frame score (:meth:`Net.frame_scores`, pre-sigmoid)."""
    return runner(model, caffemodel, onnx, threads=threads, gpu=gpu, precision=precision).frame_scores


def release() -> None:
    """Return the CUDA caching allocator's free blocks to the driver after a tiled run (nothing on the CPU)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
