"""Shared test fixtures: where ../shared/data is, and whether pycaffe is importable.

Outside CI a test that needs ../shared/data or pycaffe skips with the reason; under CI=true it fails instead,
so CI can never silently skip them. A test that uses the ``caffe`` fixture (directly or through another fixture)
or is parametrized with ``backend="caffe"`` is marked ``caffe``; one that imports pycaffe without that mark fails,
so ``-m "not caffe"`` (``make test-fast``) runs no Caffe.
"""
import os
import sys
from pathlib import Path

os.environ.setdefault("GLOG_minloglevel", "2")  # keep Caffe's glog quiet unless asked (must precede `import caffe`)

import pytest
from helpers import need as _need

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PYFUSION_SHARED", ROOT.parent / "shared" / "data"))


_CAFFE_BEFORE = pytest.StashKey[bool]()


def _caffe_loaded() -> bool:
    return sys.modules.get("caffe") is not None


def pytest_collection_modifyitems(items):
    """Mark ``caffe`` every test that uses the ``caffe`` fixture or is parametrized with ``backend="caffe"``."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        if "caffe" in getattr(item, "fixturenames", ()) or (callspec and callspec.params.get("backend") == "caffe"):
            item.add_marker(pytest.mark.caffe)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    item.stash[_CAFFE_BEFORE] = _caffe_loaded()
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """Fail a test not marked ``caffe`` that imported pycaffe (in its fixtures or its body)."""
    result = yield
    if not item.stash.get(_CAFFE_BEFORE, True) and _caffe_loaded() and not item.get_closest_marker("caffe"):
        pytest.fail("imports pycaffe but is not marked caffe (use the caffe fixture or @pytest.mark.caffe)")
    return result


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
