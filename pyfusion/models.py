"""The model registry: every deploy net pyfusion can train, export and run, by name.

A registered model is its geometry (input channels, patch, stride, head), its branch layout, the training-data
recipe it learns from, and its files: ``NAME_train_val.prototxt`` / ``NAME_deploy.prototxt`` (written by
:mod:`pyfusion.netspec` from this entry; ``tools/make_prototxt.py``), ``FILES.caffemodel`` (Caffe weights),
``FILES.onnx`` (the folded twin: the onnx, winograd and torch backends) and a side-car ``<file>.json`` beside each,
whose sha256 is checked before a file is used (:func:`check_file`).

Where the files are found, in this order:

* ``model="/path/x.onnx"`` (or ``.caffemodel``): that file; its net is the one its side-car names, its twin the
  file beside it (:func:`resolve`).
* The ONNX file of a registered name: ``pyfusion/weights/FILES.onnx`` (package data: the wheel ships ``cnn``,
  ``wavelet_low`` and ``wavelet_high``), then ``$PYFUSION_MODELS/FILES.onnx``, then the checkout's
  ``models/FILES.onnx`` when the library runs from a repository checkout (:func:`pyfusion.util.checkout`).
  The shipped files come first, so no environment variable changes what a shipped name computes; other weights
  for a shipped net are passed by path.
* The Caffe files of a registered name (``FILES.caffemodel``, the prototxt): ``$PYFUSION_MODELS/``, then the
  checkout's ``models/`` and ``prototxt/``. A wheel ships none of them: they live in the repository.

``$PYFUSION_MODELS`` is a folder laid out like the repository's ``models/`` (``FILES.onnx``, ``FILES.caffemodel``
and their side-cars, e.g. ``ablation/cnn_blur3.onnx``), optionally with the ``NAME_*.prototxt`` files. A
:class:`Model` with ``root`` set keeps all of its files in ``root/models`` and ``root/prototxt``.
:func:`available` lists every registered model with its ONNX file and whether that file matches its side-car.

Registering a new net is one :class:`Model` entry in :data:`MODELS` plus ``python tools/make_prototxt.py``;
backends, tiling, the memory model, ``tools/make_dataset.py``, ``tools/train.py`` and ``tools/export.py`` read
everything from the entry.

References
----------
.. [1] Y. Liu, X. Chen, H. Peng, Z. Wang, "Multi-focus image fusion with a deep convolutional neural network",
   Information Fusion 36 (2017) 191-207.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

from . import util
from .constants import BLUR_LEVELS, PATCH, STRIDE
from .util import sha256_file

__all__ = ["Model", "MODELS", "ModelError", "ModelInfo", "get", "available", "check_file", "require_siamese",
           "DEFAULT", "WEIGHTS", "MODELS_ENV"]

DEFAULT = "cnn"
#: Package data: the shipped ONNX files and their side-cars.
WEIGHTS = Path(__file__).resolve().parent / "weights"
#: Environment variable naming a folder of model files laid out like the repository's ``models/``.
MODELS_ENV = "PYFUSION_MODELS"
#: The checkout's ``prototxt/`` folder (the solver), None in an installed copy.

#: Trunk of every net ([1]_ Fig. 2): conv 3x3/1 pad 1 -> ReLU -> conv 3x3/1 pad 1 -> ReLU -> max pool 2x2/2 ->
#: conv 3x3/1 pad 1 -> ReLU, with these output channels.
TRUNK_CHANNELS = (64, 128, 256)
FC1_OUTPUTS = 256


class ModelError(ValueError):
    """A model that is not registered, or a model file that is missing, corrupt or unlike its side-car."""


@dataclass(frozen=True)
class Model:
    """One registered net.

    Attributes
    ----------
    name : str
        Registry key (``score_map(model=NAME)``, ``tools/train.py --net NAME``).
    files : str
        Stem of the weights, relative to a models folder (``FILES.caffemodel``, ``FILES.onnx``).
    in_channels : int
        Channels of each source (1: grayscale; 3: the wavelet LH, HL, HH bands).
    patch : int
        Training patch size (the paper: 16).
    stride : int
        Score-map stride of the deploy twin (one 2x2/2 max pool: 2).
    branches : str
        ``"siamese"`` (two branches, shared weights: the paper), ``"pseudo"`` (two branches, own weights) or
        ``"2ch"`` (the pair stacked as one 2*in_channels input, one trunk).
    recipe : dict
        Training-data recipe (:func:`fusionlab.data.make_dataset` options): ``levels`` of blur, ``band``
        (``None``: spatial patch pairs; ``"low"``/``"high"``: Haar sub-band pairs of 2*patch pixel patches).
    data : str
        Folder under ``data/`` of its training and validation sets (models with one recipe share it).
    examples : int
        Training examples ``make dataset`` writes for it (the paper: about 2,000,000).
    about : str
        One line for model cards and ``--help``.
    root : Path, optional
        Folder holding its ``prototxt/`` and ``models/`` (default: looked up as the module docstring says; tests
        register toy models elsewhere).
    """

    name: str
    files: str
    about: str
    in_channels: int = 1
    patch: int = PATCH
    stride: int = STRIDE
    branches: str = "siamese"
    recipe: dict = field(default_factory=lambda: {"levels": BLUR_LEVELS, "band": None})
    data: str = "patches"
    examples: int = 2_000_000
    root: Path | None = None

    @property
    def head(self) -> int:
        """Size of fc1 seen as a convolution over the pooled conv3 map: ``patch // stride``."""
        return self.patch // self.stride

    #: Input pixels a score reaches beyond its patch on each side: conv1 and conv2 (3x3, pad 1) one pixel each,
    #: conv3 (3x3, pad 1, after the 2x2/2 pool) one pooled pixel = two input pixels.
    halo_before: int = 4
    halo_after: int = 4

    @property
    def train_val(self) -> Path:
        return self._file("prototxt", f"{self.name}_train_val.prototxt")

    @property
    def deploy(self) -> Path:
        return self._file("prototxt", f"{self.name}_deploy.prototxt")

    @property
    def caffemodel(self) -> Path:
        return self._file("models", f"{self.files}.caffemodel")

    @property
    def onnx(self) -> Path:
        return self._file("models", f"{self.files}.onnx", (WEIGHTS,))

    def _file(self, kind: str, name: str, first: tuple[Path, ...] = ()) -> Path:
        """``name`` in the first of ``first``, ``$PYFUSION_MODELS`` and the checkout's ``kind`` folder that holds
        it; none holding it: in the last of them (where a new file goes), or in :data:`WEIGHTS` when there are none
        (an installed copy without ``$PYFUSION_MODELS``: :func:`check_file` then says where the file lives)."""
        if self.root is not None:
            return self.root / kind / name
        env = os.environ.get(MODELS_ENV, "").strip()
        root = util.checkout()
        folders = [*first, *([Path(env).expanduser()] if env else []), *([root / kind] if root else [])]
        return next((d / name for d in folders if (d / name).is_file()), (folders[-1] if folders else WEIGHTS) / name)

    @property
    def data_top(self) -> str:
        """Name of the HDF5 dataset (and Caffe top) holding this model's pairs."""
        return self.recipe.get("band") or "pair"

    def score_shape(self, h: int, w: int) -> tuple[int, int]:
        """Score map of an ``h`` x ``w`` input: ``(ceil(h/stride) - head + 1, ceil(w/stride) - head + 1)``."""
        if h < self.patch or w < self.patch:
            raise ValueError(f"image {h}x{w} is smaller than one {self.patch}x{self.patch} patch")
        return -(-h // self.stride) - self.head + 1, -(-w // self.stride) - self.head + 1


def require_siamese(branches: str, what: str) -> None:
    """NotImplementedError unless ``branches`` is ``"siamese"``: a per-frame score needs one trunk for both sources
    and a head linear in each (every backend's ``frame_scores`` / ``frame_runner``). ``what`` names the net."""
    if branches != "siamese":
        raise NotImplementedError(f"per-frame scores need a siamese net (one trunk for both sources, a head "
                                  f"linear in each); {what} is {branches}: fuse in series")


_WAVELET = {"levels": BLUR_LEVELS, "wavelet": "haar"}

#: Every registered net.
MODELS: dict[str, Model] = {m.name: m for m in (
    Model("cnn", "cnn_fusion", "the siamese CNN of Liu et al. 2017 on grayscale 16x16 patches (the shipped model)"),
    Model("wavelet_low", "wavelet_low", "siamese CNN on the Haar low band (LL) of 32x32 patches: 16x16, 1 channel",
          recipe={**_WAVELET, "band": "low"}, data="wavelet", examples=500_000),
    Model("wavelet_high", "wavelet_high", "siamese CNN on the Haar high bands (LH, HL, HH) of 32x32 patches: "
          "16x16, 3 channels", in_channels=3, recipe={**_WAVELET, "band": "high"}, data="wavelet", examples=500_000),
    # The paper's design experiments ([1]_ Sec. 3.2; docs/ablations.md): the cnn model with one thing changed.
    Model("cnn_blur3", "ablation/cnn_blur3", "ablation: the cnn net trained on 3 blur levels instead of 5",
          recipe={"levels": 3, "band": None}, data="patches_blur3"),
    Model("cnn_patch8", "ablation/cnn_patch8", "ablation: the cnn net on 8x8 patches (fc1 on 512x4x4)", patch=8,
          data="patches8"),
    Model("cnn_pseudo", "ablation/cnn_pseudo", "ablation: pseudo-siamese, two branches with weights of their own",
          branches="pseudo"),
    Model("cnn_2ch", "ablation/cnn_2ch", "ablation: 2-channel, the pair stacked as one input to one trunk",
          branches="2ch"),
)}


def get(model=None) -> Model:
    """The registered :class:`Model` named ``model`` (default ``"cnn"``); a Model passes through."""
    if isinstance(model, Model):
        return model
    name = DEFAULT if model is None else str(model)
    if name not in MODELS:
        raise ModelError(f"unknown model {name!r}; registered: {', '.join(MODELS)}")
    return MODELS[name]


def side_car(path) -> dict:
    """The side-car ``<path>.json`` of a model file, or ``{}`` when there is none."""
    side = Path(str(path) + ".json")
    return json.loads(side.read_text()) if side.is_file() else {}


@lru_cache(maxsize=32)
def _sha256_cached(path: str, mtime_ns: int, size: int) -> str:
    return sha256_file(path)


def file_sha256(path) -> str:
    """sha256 of a file, cached per (path, mtime, size)."""
    st = os.stat(path)
    return _sha256_cached(str(Path(path).resolve()), st.st_mtime_ns, st.st_size)


def check_file(path, *, required_side_car: bool = False) -> Path:
    """Return ``path`` if it exists and matches the sha256 in its side-car; else :class:`ModelError`.

    ``required_side_car``: a missing side-car is an error too (every file of a registered model has one).
    """
    path = Path(path)
    if not path.is_file():
        where = "" if util.checkout() or not is_registered_file(path) else (
            f" (an installed pyfusion ships the ONNX files in {WEIGHTS}; the Caffe files and the other nets live in "
            f"the repository's models/ and prototxt/: run from a checkout or set {MODELS_ENV} to a folder of them)")
        raise ModelError(f"model file not found: {path}{where}")
    meta = side_car(path)
    if not meta and required_side_car:
        raise ModelError(f"model side-car missing: {path}.json")
    want = meta.get("sha256")
    if want:
        got = file_sha256(path)
        if want != got:
            raise ModelError(f"model {path} has sha256 {got[:12]}…, its side-car says {want[:12]}…: corrupt or wrong")
    return path


def check_onnx(path, caffemodel=None) -> Path:
    """Check an ONNX twin and, when its caffemodel is present, that it was exported from that caffemodel."""
    path = check_file(path)
    src = side_car(path).get("source_sha256")
    if src and caffemodel is not None and Path(caffemodel).is_file():
        have = side_car(caffemodel).get("sha256") or file_sha256(caffemodel)
        if src != have:
            raise ModelError(f"{path} was exported from another caffemodel than {caffemodel}: re-run "
                             f"`python tools/export.py --onnx --model {caffemodel} --out {path}`")
    return path


def resolve(model=None) -> tuple[Model, Path, Path]:
    """``(Model, caffemodel, onnx)`` for a registered name (or Model), or for a weights file of one.

    A path (``.caffemodel`` or ``.onnx``) takes its net from its side-car's ``"net"`` entry (default ``"cnn"``);
    the twin file is the one beside it (for an ``.onnx``, the ``source_caffemodel`` its side-car names), else, for
    the file of a registered model, that model's twin (the shipped ONNX files are package data, their caffemodels
    are in the repository).
    """
    if model is None or isinstance(model, Model) or (isinstance(model, str) and model in MODELS):
        m = get(model)
        return m, m.caffemodel, m.onnx
    path = Path(model)
    if path.suffix not in (".caffemodel", ".onnx") and not path.exists():
        raise ModelError(f"unknown model {str(model)!r}: neither registered ({', '.join(MODELS)}) nor a "
                         ".caffemodel/.onnx file")
    meta = side_car(path)
    m = get(meta.get("net", DEFAULT))
    if path.suffix == ".onnx":
        name = meta.get("source_caffemodel")
        beside = path.with_name(name) if name else path.with_suffix(".caffemodel")
        return m, _twin(path, beside, m.onnx, m.caffemodel), path
    return m, path, _twin(path, path.with_suffix(".onnx"), m.caffemodel, m.onnx)


def _twin(path: Path, beside: Path, registered: Path, registered_twin: Path) -> Path:
    """The twin of ``path``: ``beside`` if it exists; else ``registered_twin`` when ``path`` is ``registered``."""
    return beside if beside.is_file() or path.resolve() != registered.resolve() else registered_twin


def is_registered_file(path) -> bool:
    """Whether ``path`` is the caffemodel or ONNX file of a registered model (those must have a side-car)."""
    p = Path(path).resolve()
    return any(p in (m.caffemodel.resolve(), m.onnx.resolve()) for m in MODELS.values())


class ModelInfo(NamedTuple):
    """One registered model as :func:`available` reports it."""

    name: str
    about: str
    #: Its ONNX file (package data, ``$PYFUSION_MODELS`` or the checkout's ``models/``); None where there is none.
    onnx: Path | None
    #: Hex sha256 of that file; None without a file.
    sha256: str | None
    #: Whether the file is present and its sha256 is the one its side-car records.
    ok: bool


def available() -> list[ModelInfo]:
    """Every registered model with its ONNX file (for ``pyfusion info``).

    Returns
    -------
    list of ModelInfo
        In registry order, one ``ModelInfo(name, about, onnx, sha256, ok)`` per model: ``onnx`` the path the
        registry resolves (None where no such file exists), ``sha256`` its hex digest (None without a file),
        ``ok`` True when the file exists and matches the sha256 of its side-car ``<file>.json``.
    """
    out = []
    for m in MODELS.values():
        path = m.onnx if m.onnx.is_file() else None
        digest = file_sha256(path) if path else None
        out.append(ModelInfo(m.name, m.about, path, digest, bool(digest) and side_car(path).get("sha256") == digest))
    return out
