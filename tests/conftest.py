"""Shared test fixtures: where ../shared/data is, and whether pycaffe is importable.

Outside CI a test that needs ../shared/data or pycaffe skips with the reason; under CI=true it fails instead,
so CI can never silently skip them.
"""
import os
from pathlib import Path

os.environ.setdefault("GLOG_minloglevel", "2")  # keep Caffe's glog quiet unless asked (must precede `import caffe`)

import pytest
from helpers import need as _need

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PYFUSION_SHARED", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data():
    """Path to ../shared/data; skips (fails under CI) when absent."""
    _need(SHARED.is_dir(), f"shared data not found at {SHARED}")
    return SHARED


@pytest.fixture(scope="session")
def caffe():
    """The pycaffe module in CPU mode; skips (fails under CI) when pycaffe is not built (`make caffe`)."""
    try:
        import caffe as _caffe
    except ImportError as e:  # pragma: no cover - depends on the machine
        _need(False, f"pycaffe not importable ({e}); run `make caffe`")
    _caffe.set_mode_cpu()
    return _caffe


@pytest.fixture(scope="session")
def winograd():
    """pyfusion.backends.winograd with its C kernels; skips (fails under CI) when they are not built (`pip install -e .`)."""
    from pyfusion.backends import winograd as _winograd

    _need(_winograd.available(), "pyfusion.backends._winograd C kernels not built; run `pip install -e .` (make venv)")
    return _winograd


@pytest.fixture(scope="session")
def onnxruntime():
    """The onnxruntime module; skips (fails under CI) when it is not installed."""
    try:
        import onnxruntime as _ort
    except ImportError as e:  # pragma: no cover - depends on the machine
        _need(False, f"onnxruntime not importable ({e}); pip install onnxruntime")
    return _ort
