"""GPU inference and training through Caffe (a CUDA build: ``make caffe CUDA=1``), on a CUDA device.

The ``gpu``-marked tests need a CUDA build of pycaffe and a device; they skip with the reason elsewhere, in CI too
(CI has no GPU), and fail instead under ``PYFUSION_REQUIRE_GPU=1`` (scripts/gpu_check.sh runs ``pytest -m gpu`` so,
where a broken CUDA build must not pass as skipped tests). The unmarked tests check, on any machine, the
parts of the GPU path that need no device: the device checks and the GPU memory budget (Caffe's INT_MAX limit:
test_net.py).
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from helpers import need_gpu

from pyfusion import models, net, tiling
from pyfusion.backends import caffe as caffe_backend

GPU = int(os.environ.get("PYFUSION_TEST_GPU", "0"))
SHIPPED = [m.name for m in models.MODELS.values() if m.caffemodel.is_file() and m.onnx.is_file()]


@pytest.fixture(scope="module")
def cuda_caffe(caffe):
    """pycaffe built with CUDA, on a machine with GPU ``$PYFUSION_TEST_GPU`` (default 0); skips without CUDA or the
    device (also in CI, which has no GPU), fails instead under ``PYFUSION_REQUIRE_GPU=1``; without pycaffe it fails
    under CI, as the ``caffe`` fixture does."""
    need_gpu(caffe_backend.has_cuda(), "this pycaffe was built without CUDA (make caffe CUDA=1)")
    need_gpu(caffe_backend.device_count() > GPU, f"no CUDA device {GPU} here")
    return caffe


def _pair(h, w, c, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.random((h, w, c), dtype=np.float32)
    k = np.ones(5, np.float32) / 5
    blur = np.apply_along_axis(lambda v: np.convolve(v, k, "same"), 1, base).astype(np.float32)
    a, b = base.copy(), blur.copy()
    a[:, w // 2:], b[:, w // 2:] = blur[:, w // 2:], base[:, w // 2:]
    return a, b


@pytest.mark.gpu
@pytest.mark.parametrize("name", SHIPPED)
def test_caffe_gpu_scores_equal_the_cpu(cuda_caffe, name):
    """Every shipped model: the deploy twin on the GPU gives the CPU's scores (|Δ| <= 1e-4), whole and tiled."""
    m = models.get(name)
    a, b = _pair(150, 130, m.in_channels, seed=1)
    cpu = net.score_map(a, b, model=name, backend="winograd" if m.branches == "siamese" else "onnx")
    gpu = net.score_map(a, b, model=name, backend="caffe", gpu=GPU)
    tiled = net.score_map(a, b, model=name, backend="caffe", gpu=GPU, tile=(17, 23))
    assert gpu.shape == cpu.shape
    assert np.abs(gpu - cpu).max() <= 1e-4
    assert np.abs(tiled - gpu).max() <= 1e-5
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(caffe_backend.HEAD_ENV, "folded")
        folded = net.score_map(a, b, model=name, backend="caffe", gpu=GPU)
    assert np.abs(folded - cpu).max() <= 1e-4


@pytest.mark.gpu
def test_caffe_gpu_pair_past_int_max_is_tiled(cuda_caffe):
    """1100 x 1100: the untiled twin would pass Caffe's INT_MAX elements in one blob; the tiles keep under it."""
    a, b = _pair(1100, 1100, 1, seed=2)
    got = net.score_map(a, b, backend="caffe", gpu=GPU)
    ref = net.score_map(a, b, backend="winograd")
    assert np.abs(got - ref).max() <= 1e-4


@pytest.mark.gpu
def test_missing_device_is_an_error_not_an_abort(cuda_caffe):
    """A device number past the last one: a RuntimeError that says so (Caffe itself would abort the process)."""
    code = ("import numpy as np; from pyfusion import net\n"
            "try:\n    net.score_map(np.zeros((40, 40)), np.zeros((40, 40)), backend='caffe', gpu=999)\n"
            "except RuntimeError as e:\n    print('ERR', e)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "ERR Caffe cannot use GPU 999" in r.stdout, r.stderr[-500:]


@pytest.mark.gpu
def test_training_on_the_gpu_matches_the_cpu(cuda_caffe, tmp_path):
    """The solver on the GPU: the same first losses as on the CPU (same data, seed and weights), within 1e-3."""
    from helpers import tiny_datasets

    from fusionlab.train import TrainConfig, train

    tiny_datasets(tmp_path, train=1000)
    losses = {}
    for dev in (-1, GPU):
        cfg = TrainConfig(train_list=str(tmp_path / "train" / "list.txt"), val_list=str(tmp_path / "val" / "list.txt"),
                          batch=32, max_iter=10, val_interval=10, val_batches=2, base_lr=1e-3, seed=5, gpu=dev)
        state = train(tmp_path / f"run{dev}", cfg, progress=False)
        losses[dev] = state["val_losses"][0]
    assert abs(losses[-1] - losses[GPU]) <= 1e-3


def test_gpu_budget_is_half_the_free_memory(monkeypatch):
    """On a GPU the tile budget is half its free memory; where that is unknown, the CPU's rule."""
    monkeypatch.setattr(tiling, "gpu_free_bytes", lambda gpu: 80 << 30)
    assert tiling.default_max_bytes(0) == 40 << 30
    monkeypatch.setattr(tiling, "gpu_free_bytes", lambda gpu: None)
    assert tiling.default_max_bytes(0) == tiling.default_max_bytes()


def test_gpu_queries_read_nvidia_smi(tmp_path, monkeypatch):
    """util.gpu_query / gpu_free_bytes through a stand-in nvidia-smi: MiB to bytes, units only when asked, None
    without the program or when it fails."""
    from pyfusion import util

    fake = tmp_path / "nvidia-smi"
    fake.write_text('#!/bin/sh\n[ "$4" = 7 ] && exit 6\n'
                    'case "$2" in *nounits) echo "81000";; *) echo "81000 MiB";; esac\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert util.gpu_free_bytes(0) == 81000 << 20
    assert util.gpu_query(0, "memory.free", units=True) == "81000 MiB"
    assert util.gpu_query(7, "memory.free") is None and util.gpu_free_bytes(7) is None
    monkeypatch.setenv("PATH", str(tmp_path / "none"))
    assert util.gpu_query(0, "name") is None and util.gpu_free_bytes(0) is None


def test_gpu_device_checks(caffe):
    """use(gpu) raises instead of letting Caffe abort the process: on a CPU-only pycaffe (no devices) for any GPU,
    on a CUDA build for the first device number the runtime lacks; bad device numbers refused on both."""
    if caffe_backend.has_cuda():
        missing = caffe_backend.device_count()
        with pytest.raises(RuntimeError, match=f"sees {missing} device"):
            caffe_backend.use(missing)
    else:
        assert caffe_backend.device_count() == 0
        with pytest.raises(RuntimeError, match="built without CUDA"):
            caffe_backend.use(0)
    for bad in (-1, 1.5, True, "0"):
        with pytest.raises(ValueError, match="gpu must be"):
            caffe_backend.use(bad)
    caffe_backend.use(None)


def _gpu_check_tool():
    from fusionlab.commands import gpu_check

    return gpu_check


def test_gpu_check_figures_on_the_cpu(caffe, tmp_path, monkeypatch):
    """tools/gpu_check.py without a GPU: the CPU's training row (pycaffe's solver on random pairs), the table
    written into the doc block; a GPU asked for but absent gives no GPU rows (and no error)."""
    tool = _gpu_check_tool()
    a, b = tool.test_pair(40, 60)
    assert a.shape == (40, 60) and np.array_equal(a[:, :30], tool.test_pair(40, 60)[0][:, :30])
    rows = tool.train_rows(None, None, iters=8)
    assert [r["device"] for r in rows] == ["cpu"] and rows[0]["examples_per_s"] > 0
    monkeypatch.setattr(tool, "score_rows", lambda gpu, sizes: [
        {"what": "score map, winograd", "size": "520x520", "device": "cpu", "seconds": 0.5, "max_abs_diff": None},
        {"what": "score map, caffe folded", "size": "520x520", "device": "cpu", "seconds": 4.0,
         "max_abs_diff": 2e-5}])
    monkeypatch.setattr(tool, "train_rows", lambda gpu, tool_path: rows)
    doc = tmp_path / "doc.md"
    doc.write_text("# GPU\n<!-- gpu-check-cpu:start -->\nold\n<!-- gpu-check-cpu:end -->\nafter\n")
    assert tool.main(["--out", str(tmp_path / "out"), "--doc", str(doc), "--block", "cpu", "--sizes", "520x520"]) == 0
    text = doc.read_text()
    assert "\nold\n" not in text and text.endswith("after\n") and "| score map, caffe folded | 520x520 | cpu | 4 |  | 2.0e-05 |" in text
    fig = json.loads((tmp_path / "out" / "figures.json").read_text())
    assert fig["rows"][-1]["examples_per_s"] == rows[0]["examples_per_s"] and "cores" in fig["machine"]
