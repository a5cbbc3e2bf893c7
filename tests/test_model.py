"""The shipped model: its side-car, its sha256 check, and its validation accuracy re-measured from scratch."""
import json
import shutil

import pytest

from pyfusion.net import MODEL_DEFAULT, ModelError, check_model

SIDE = MODEL_DEFAULT.with_name(MODEL_DEFAULT.name + ".json")


@pytest.fixture(scope="module")
def shipped():
    if not MODEL_DEFAULT.exists():
        pytest.fail(f"shipped model missing: {MODEL_DEFAULT}")
    return MODEL_DEFAULT


def test_shipped_model_matches_its_sidecar(shipped):
    assert check_model(shipped) == shipped
    meta = json.loads(SIDE.read_text())
    assert meta["inputs"] == ["a", "b"] and meta["iteration"] > 0
    cfg = meta["training"]["config"]
    assert (cfg["momentum"], cfg["weight_decay"], cfg["batch"]) == (0.9, 5e-4, 128)   # the paper's solver
    assert cfg["base_lr"] > 0 and meta["training"]["iter"] == meta["iteration"]


def test_corrupt_or_wrong_model_is_refused(shipped, tmp_path):
    bad = tmp_path / "m.caffemodel"
    shutil.copy(shipped, bad)
    shutil.copy(SIDE, tmp_path / "m.caffemodel.json")
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="sha256"):
        check_model(bad)
    with pytest.raises(ModelError, match="not found"):
        check_model(tmp_path / "nope.caffemodel")


@pytest.mark.slow
def test_shipped_model_validation_accuracy(shipped, caffe, shared_data, tmp_path):
    """Rebuild the 10,000-pair validation set from bsds500/val (seed 2, as `make dataset`) and re-measure."""
    from pyfusion.data import make_dataset
    from pyfusion.train import evaluate

    make_dataset([shared_data / "train/bsds500/val"], tmp_path / "val", examples=10_000, seed=2, progress=False)
    r = evaluate(shipped, tmp_path / "val" / "list.txt", progress=False)
    assert r["pairs"] == 10_000
    assert r["accuracy"] >= 0.99
    recorded = json.loads(SIDE.read_text())["validation"]["accuracy"]
    assert r["accuracy"] == pytest.approx(recorded, abs=1e-9)   # the card's number is what anyone re-measures
