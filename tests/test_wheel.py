"""The wheel works anywhere: built from the checkout, installed with its dependencies into a fresh virtual
environment, and used from a folder outside the checkout through the Python API and the ``pyfusion`` command.

Needs a package index (the dependencies: numpy, scipy, opencv, onnx, ...): skips without one, fails under CI=true.
"""
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import need

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ("cnn", "wavelet_low", "wavelet_high")

pytestmark = pytest.mark.slow

#: Run in the new environment: fuse the pair through the API, report where pyfusion was imported from, check the
#: shipped models and what asking for the Caffe files says.
API = """
import sys, cv2, pyfusion
from pyfusion import models
r = pyfusion.fuse(["a.png", "b.png"])
cv2.imwrite("api.png", r.fused)
print(pyfusion.__file__)
print(" ".join(i.name for i in models.available() if i.ok))
try:
    models.check_file(models.get("cnn").caffemodel)
except models.ModelError as e:
    print(e)
"""


def _run(cmd, *, cwd=None, timeout=900):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYFUSION_MODELS", "VIRTUAL_ENV")}
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)


def _check(r, what):
    assert r.returncode == 0, f"{what} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """``(venv folder, names in the wheel, work folder outside the checkout holding a.png, b.png, sharp.png)``."""
    probe = _run([sys.executable, "-m", "pip", "index", "versions", "setuptools"], timeout=300)
    need(probe.returncode == 0, f"no package index reachable: {probe.stderr.strip()[-300:]}")
    tmp = tmp_path_factory.mktemp("wheel")
    # a copy of the library's files, so the build's build/ and *.egg-info stay out of the checkout
    src = tmp / "src"
    shutil.copytree(ROOT / "pyfusion", src / "pyfusion", ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.pyc"))
    for name in ("pyproject.toml", "setup.py"):
        shutil.copy(ROOT / name, src)
    _check(_run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", tmp / "dist", src]), "pip wheel")
    wheel, = (tmp / "dist").glob("pyfusion_mfif-*.whl")
    venv = tmp / "venv"
    _check(_run([sys.executable, "-m", "venv", venv]), "python -m venv")
    _check(_run([venv / "bin" / "python", "-m", "pip", "install", "-q", wheel]), "pip install the wheel")

    work = tmp / "work"
    work.mkdir()
    rng = np.random.default_rng(0)
    sharp = cv2.GaussianBlur(rng.uniform(0, 255, (160, 160)), (0, 0), 1.2)
    sharp = np.clip((sharp - sharp.mean()) * 4 + 128, 0, 255).astype(np.uint8)
    blurred = cv2.GaussianBlur(sharp, (0, 0), 3)
    left = np.arange(160) < 80
    for name, img in (("sharp", sharp), ("a", np.where(left, sharp, blurred)), ("b", np.where(left, blurred, sharp))):
        cv2.imwrite(str(work / f"{name}.png"), img)
    with zipfile.ZipFile(wheel) as z:
        return venv, set(z.namelist()), work


def _better_than_sources(work, fused):
    """The fused image is closer (MSE) to the sharp original than either source."""
    read = lambda name: cv2.imread(str(work / name), cv2.IMREAD_UNCHANGED).astype(float)   # noqa: E731
    sharp = read("sharp.png")
    err = {name: np.mean((read(name) - sharp) ** 2) for name in ("a.png", "b.png", fused)}
    assert err[fused] < min(err["a.png"], err["b.png"]), err


def test_wheel_fuses_through_the_api(installed):
    venv, names, work = installed
    assert {f"pyfusion/weights/{f}.onnx{s}" for f in ("cnn_fusion", "wavelet_low", "wavelet_high")
            for s in ("", ".json")} <= names
    module, ok, caffe_error = _check(_run([venv / "bin" / "python", "-c", API], cwd=work), "fuse").splitlines()[-3:]
    assert Path(module).resolve().is_relative_to(venv.resolve()), module   # not the checkout's
    assert ok.split() == list(SHIPPED)
    assert "cnn_fusion.caffemodel" in caffe_error and "live in the repository" in caffe_error
    _better_than_sources(work, "api.png")


def _assert_cli(names):
    assert "pyfusion/cli.py" in names, "the wheel has no pyfusion/cli.py (the pyfusion command)"


def test_wheel_command_fuses(installed):
    venv, names, work = installed
    _assert_cli(names)
    _check(_run([venv / "bin" / "pyfusion", "fuse", "a.png", "b.png", "-o", "cli.png"], cwd=work), "pyfusion fuse")
    _better_than_sources(work, "cli.png")


def test_wheel_command_info(installed):
    venv, names, work = installed
    _assert_cli(names)
    out = _check(_run([venv / "bin" / "pyfusion", "info"], cwd=work), "pyfusion info")
    assert all(name in out for name in SHIPPED), out
