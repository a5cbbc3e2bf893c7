"""The ablation variants: each is a registry entry whose recipe the data tools follow; the common validation
set of the 8x8 net is the baseline's pairs, centre-cropped."""
import h5py
import numpy as np
from pyfusion import ablations, models


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
