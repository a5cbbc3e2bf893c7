"""The training loop (fusionlab.train): plateau rule, a short real training run, snapshot and resume."""
import csv
import json

import pytest
from helpers import tiny_datasets

from fusionlab.train import TrainConfig, plateau_reached, train


def test_plateau_rule_on_synthetic_curves():
    falling = [1.0 / (1 + i) for i in range(10)]
    assert not plateau_reached(falling, patience=3, min_delta=0.01)
    flat = [1.0, 0.5, 0.3, 0.3, 0.3, 0.3]
    assert plateau_reached(flat, patience=3, min_delta=0.01)
    assert not plateau_reached(flat[:4], patience=3, min_delta=0.01)       # too few values after the best
    noisy = [1.0, 0.5, 0.3, 0.31, 0.299, 0.305]                             # 0.3% better is not 1%
    assert plateau_reached(noisy, patience=3, min_delta=0.01)
    assert not plateau_reached(noisy, patience=3, min_delta=0.001)
    assert not plateau_reached([0.5, 0.4], patience=3, min_delta=0.0)


@pytest.fixture(scope="module")
def tiny_sets(tmp_path_factory):
    return tiny_datasets(tmp_path_factory.mktemp("tiny"))


def _cfg(root, **kw):
    base = dict(train_list=str(root / "train" / "list.txt"), val_list=str(root / "val" / "list.txt"),
                batch=32, max_iter=50, val_interval=25, val_batches=2, base_lr=1e-3, seed=5)
    base.update(kw)
    return TrainConfig(**base)


def test_training_lowers_loss_snapshots_and_resumes(caffe, tiny_sets, tmp_path):
    run = tmp_path / "run"
    s1 = train(run, _cfg(tiny_sets, max_iter=50), progress=False)
    assert s1["iter"] == 50 and s1["finished"]
    rows = list(csv.DictReader(open(run / "log.csv")))
    assert [int(r["iter"]) for r in rows] == [25, 50]
    assert float(rows[-1]["val_loss"]) < 0.69         # below chance level log(2) = 0.693 after 50 iterations
    assert (run / "snap_iter_50.caffemodel").exists() and (run / "snap_iter_50.solverstate").exists()
    assert (run / "curves.png").exists()
    # resume with a longer budget: continues from iteration 50
    st = json.loads((run / "run.json").read_text())
    st["config"]["max_iter"] = 75
    (run / "run.json").write_text(json.dumps(st))
    s2 = train(run, resume=True, progress=False)
    assert s2["iter"] == 75
    rows = list(csv.DictReader(open(run / "log.csv")))
    assert [int(r["iter"]) for r in rows] == [25, 50, 75]


def test_training_refuses_nonempty_run(caffe, tiny_sets, tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "x").write_text("")
    with pytest.raises(FileExistsError):
        train(tmp_path / "r", _cfg(tiny_sets), progress=False)


def test_plateau_drop_happens_once(caffe, tiny_sets, tmp_path):
    # min_delta 1.0 makes every validation a non-improvement: the drop comes after patience + 1 validations
    s = train(tmp_path / "p", _cfg(tiny_sets, max_iter=40, val_interval=10, drop_patience=1, drop_min_delta=1.0),
              progress=False)
    assert s["drops_done"] == 1 and s["drop_iters"] == [20]
    assert s["lr"] == pytest.approx(1e-4)
