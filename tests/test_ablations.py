"""The ablation variants: each is a registry entry whose recipe the data tools follow; the common validation
set of the 8x8 net is the baseline's pairs, centre-cropped."""
import json

import h5py
import numpy as np
import pytest
from pyfusion import models
from fusionlab import ablations


def test_every_variant_is_registered_and_differs_from_the_baseline_in_one_thing():
    base = models.get("cnn")
    assert set(ablations.VARIANTS) - {"cnn"} <= set(models.MODELS)
    for name in set(ablations.VARIANTS) - {"cnn"}:
        m = models.get(name)
        changed = [f for f in ("patch", "branches", "in_channels", "stride") if getattr(m, f) != getattr(base, f)]
        changed += ["levels"] if m.recipe["levels"] != base.recipe["levels"] else []
        assert len(changed) == 1, (name, changed)
        assert ablations.weights(name).name == f"{name}.caffemodel"


def test_center_crop_set_keeps_places_and_labels(tmp_path):
    rng = np.random.default_rng(0)
    pair = rng.random((7, 2, 16, 16)).astype(np.float32)
    label = (np.arange(7) % 2).astype(np.float32)
    src = tmp_path / "shard_0000.h5"
    with h5py.File(src, "w") as h:
        h["pair"], h["label"] = pair, label
    (tmp_path / "list.txt").write_text(f"{src}\n")
    listing = ablations.center_crop_set(tmp_path / "list.txt", tmp_path / "crop", patch=8)
    files = listing.read_text().split()
    assert len(files) == 1
    with h5py.File(files[0], "r") as h:
        assert np.array_equal(h["pair"][...], pair[..., 4:12, 4:12])
        assert np.array_equal(h["label"][...], label)
    assert ablations.center_crop_set(tmp_path / "list.txt", tmp_path / "crop", patch=8) == listing   # reused


def test_read_log(tmp_path):
    (tmp_path / "log.csv").write_text("iter,examples,lr,train_loss,val_loss,val_acc,wall_s\n250,32000,0.001,0.3,0.1,"
                                      "0.99,10.5\n")
    assert ablations.read_log(tmp_path) == [{"iter": 250.0, "examples": 32000.0, "lr": 0.001, "train_loss": 0.3,
                                             "val_loss": 0.1, "val_acc": 0.99, "wall_s": 10.5}]


@pytest.mark.parametrize("branches,head", [("siamese", 4), ("pseudo", 8), ("2ch", 8)])
def test_the_cnn_method_runs_any_registered_geometry(winograd, tmp_path, monkeypatch, branches, head):
    """fuse(method="cnn", model=...) takes the net's patch, stride and score-map shape from its registry entry
    (an 8x8-patch net has a larger score map than the 16x16 one), and fuses three sources in series when the
    net is not siamese (per-frame scores need a siamese net)."""
    from helpers import pair, random_params

    from pyfusion import fuse
    from fusionlab.onnx_export import build_onnx
    from pyfusion.util import sha256_file

    m = models.Model("toy", "toy", "a test net", patch=2 * head, branches=branches, root=tmp_path)
    monkeypatch.setitem(models.MODELS, "toy", m)
    m.onnx.parent.mkdir()
    m.onnx.write_bytes(build_onnx(random_params(seed=2, head=head, branches=branches)).SerializeToString())
    (tmp_path / "models" / "toy.onnx.json").write_text(json.dumps({"net": "toy", "sha256": sha256_file(m.onnx)}))
    a, b = pair(48, 52, seed=1)
    r = fuse([a, b], model="toy")
    assert r.score_map.shape == m.score_shape(48, 52) and r.fused.shape == a.shape
    three = fuse([a, b, a], model="toy")
    assert three.fused.shape == a.shape
    if branches != "siamese":
        with pytest.raises(NotImplementedError, match="siamese"):
            fuse([a, b, a], model="toy", series=False)
