"""The training loop: a thin owner of Caffe's SGD solver with logging, validation, plateau drop, snapshots, resume.

The paper ([1]_, Sec. 3.2.3) trains with softmax loss, SGD (momentum 0.9, weight decay 5e-4), learning rate 1e-4
"decreased by a factor of 10 once" when the loss stops falling, about 10 epochs. That manual drop is automated
here by :func:`plateau_reached`.

Caffe is imported only inside the functions that need it, so the rest of this module (and its tests) runs without.

References
----------
.. [1] Y. Liu, X. Chen, H. Peng, Z. Wang, "Multi-focus image fusion with a deep convolutional neural network",
   Information Fusion 36 (2017) 191-207.
"""
from __future__ import annotations

import csv
import json
import re
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from pyfusion import models

from pyfusion import netspec
from pyfusion.backends import caffe as caffe_backend
from fusionlab import ROOT


@dataclass
class TrainConfig:
    """Everything that defines a run; saved in ``run.json`` and in every exported model's side-car."""
    net: str = "cnn"                 # registered model (pyfusion.models): net files and data recipe
    train_list: str = ""             # default: data/<model's data>/train/list.txt
    val_list: str = ""               # default: data/<model's data>/val/list.txt
    base_lr: float = 1e-4            # paper
    momentum: float = 0.9            # paper
    weight_decay: float = 5e-4       # paper
    batch: int = 128
    max_iter: int = 10_000
    val_interval: int = 500          # iterations between validations
    val_batches: int = 100           # x 100 = the 10,000 validation pairs
    drop_factor: float = 0.1         # paper: one x0.1 drop
    drop_patience: int = 3           # validations without improvement before the drop
    drop_min_delta: float = 0.01     # relative improvement that counts as improvement
    drops: int = 1                   # paper: once
    seed: int = 1
    max_hours: float = 0.0           # 0 = no limit
    gpu: int = -1                    # -1 = CPU
    extra: dict = field(default_factory=dict)


def plateau_reached(val_losses, *, patience: int, min_delta: float) -> bool:
    """True when the last ``patience`` validation losses brought no relative improvement above ``min_delta``.

    The rule: let ``best`` be the lowest loss before the last ``patience`` validations; the plateau is reached when
    none of those last ``patience`` losses is below ``best * (1 - min_delta)``. Fewer than ``patience + 1``
    validations never count as a plateau.
    """
    v = list(val_losses)
    if patience < 1 or len(v) < patience + 1:
        return False
    best = min(v[:-patience])
    return min(v[-patience:]) >= best * (1.0 - min_delta)


def _text(path: Path, subs: dict) -> str:
    s = path.read_text()
    for pattern, repl in subs.items():
        s, n = re.subn(pattern, repl, s, flags=re.M)
        if n == 0:
            raise ValueError(f"{path.name}: no line matches {pattern!r}")
    return s


def data_lists(cfg: TrainConfig) -> tuple[str, str]:
    """The run's training and validation list files (the model's data folder unless given)."""
    m = models.get(cfg.net)
    return (cfg.train_list or f"data/{m.data}/train/list.txt", cfg.val_list or f"data/{m.data}/val/list.txt")


def write_run_files(run: Path, cfg: TrainConfig, lr: float) -> Path:
    """Write the run's own train_val.prototxt and solver.prototxt (absolute paths, current lr); return the solver."""
    run = run.resolve()
    train_list, val_list = data_lists(cfg)
    net = netspec.train_val(models.get(cfg.net), train_list=str(Path(train_list).resolve()),
                            val_list=str(Path(val_list).resolve()), batch=cfg.batch, val_batch=100)
    (run / "train_val.prototxt").write_text(net)
    solver = _text(ROOT / "prototxt" / "solver.prototxt", {
        r"^net: .*$": f'net: "{run / "train_val.prototxt"}"',
        r"^test_iter: .*$": f"test_iter: {cfg.val_batches}",
        r"^test_interval: .*$": "test_interval: 1000000000   # validation is run by fusionlab.train",
        r"^base_lr: .*$": f"base_lr: {lr!r}",
        r"^momentum: .*$": f"momentum: {cfg.momentum!r}",
        r"^weight_decay: .*$": f"weight_decay: {cfg.weight_decay!r}",
        r"^max_iter: .*$": f"max_iter: {cfg.max_iter}",
        r"^snapshot_prefix: .*$": f'snapshot_prefix: "{run / "snap"}"',
        r"^solver_mode: .*$": f"solver_mode: {'GPU' if cfg.gpu >= 0 else 'CPU'}",
        r"^random_seed: .*$": f"random_seed: {cfg.seed}",
    })
    path = run / "solver.prototxt"
    path.write_text(solver)
    return path


def snapshots(run, suffix: str = ".caffemodel") -> list[Path]:
    """The run's ``snap_iter_N<suffix>`` files, oldest (smallest N) first."""
    return sorted(Path(run).glob(f"snap_iter_*{suffix}"), key=lambda p: int(p.name[len("snap_iter_"):-len(suffix)]))


def _latest_state(run: Path):
    states = snapshots(run, ".solverstate")
    return states[-1] if states else None


def _atomic_json(path: Path, obj) -> None:
    from pyfusion.io import write_atomic

    write_atomic(path, json.dumps(obj, indent=2) + "\n")


def validate(net, batches: int):
    """Mean loss and accuracy of a TEST-phase net over ``batches`` forward passes."""
    loss = acc = 0.0
    for _ in range(batches):
        out = net.forward()
        loss += float(out["loss"])
        acc += float(out["accuracy"])
    return loss / batches, acc / batches


def plot_log(csv_path: Path, png_path: Path) -> None:
    """Draw train loss, validation loss and validation accuracy against examples seen."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = list(csv.DictReader(open(csv_path)))
    if not rows:
        return
    ex = np.array([float(r["examples"]) for r in rows])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(ex, [float(r["train_loss"]) for r in rows], label="train loss (mean over interval)")
    ax1.plot(ex, [float(r["val_loss"]) for r in rows], label="validation loss")
    ax1.set_yscale("log"), ax1.set_xlabel("examples seen"), ax1.legend()
    ax2.plot(ex, [float(r["val_acc"]) for r in rows], color="C2")
    ax2.set_xlabel("examples seen"), ax2.set_ylabel("validation accuracy"), ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)


def train(run, cfg: TrainConfig | None = None, *, resume: bool = False, progress: bool = True) -> dict:
    """Train (or resume) the siamese net in folder ``run``; returns the final run state.

    Files in ``run``: ``run.json`` (config + state), ``log.csv`` (one row per validation), ``curves.png``,
    ``snap_iter_N.caffemodel/.solverstate`` (the last two kept), ``solver.prototxt``, ``train_val.prototxt``.
    Stops at ``cfg.max_iter``, after ``cfg.max_hours``, or on SIGINT/SIGTERM, always with a final snapshot.
    """
    import caffe
    from tqdm import tqdm

    run = Path(run)
    state_path = run / "run.json"
    if resume:
        state = json.loads(state_path.read_text())
        cfg = TrainConfig(**state["config"])
    else:
        if run.exists() and any(run.iterdir()):
            raise FileExistsError(f"run folder {run} is not empty (use --resume)")
        run.mkdir(parents=True, exist_ok=True)
        cfg = cfg or TrainConfig()
        state = {"config": asdict(cfg), "lr": cfg.base_lr, "drops_done": 0, "drop_iters": [], "iter": 0,
                 "val_losses": [], "best_val_loss": None, "wall_s": 0.0, "caffe_version": caffe_version()}
    caffe_backend.use(cfg.gpu if cfg.gpu >= 0 else None)

    def make_solver():
        s = caffe.SGDSolver(str(write_run_files(run, cfg, state["lr"])))
        snap = _latest_state(run)
        if snap is not None and state["iter"] > 0:
            s.restore(str(snap))
        return s

    solver = make_solver()
    if solver.iter != state["iter"]:
        raise RuntimeError(f"restored iteration {solver.iter} != recorded {state['iter']}")
    stop = {"flag": False}

    def on_signal(signum, frame):
        stop["flag"] = True
    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    log_path = run / "log.csv"
    new_log = not log_path.exists()
    logf = open(log_path, "a", newline="")
    writer = csv.writer(logf)
    if new_log:
        writer.writerow(["iter", "examples", "lr", "train_loss", "val_loss", "val_acc", "wall_s"])
    t0, wall0 = time.time(), state["wall_s"]
    losses = []

    def snapshot():
        solver.snapshot()
        for old_state in snapshots(run, ".solverstate")[:-2]:
            old_state.unlink()
            old_state.with_suffix(".caffemodel").unlink(missing_ok=True)
        state["iter"] = solver.iter
        state["wall_s"] = wall0 + time.time() - t0
        _atomic_json(state_path, state)

    bar = tqdm(total=cfg.max_iter, initial=solver.iter, disable=not progress, unit="it", desc="train")
    try:
        while solver.iter < cfg.max_iter and not stop["flag"]:
            solver.step(1)
            losses.append(float(solver.net.blobs["loss"].data))
            bar.update(1)
            if solver.iter % cfg.val_interval == 0 or solver.iter == cfg.max_iter:
                solver.test_nets[0].share_with(solver.net)   # pycaffe's test net does not follow the train net
                vl, va = validate(solver.test_nets[0], cfg.val_batches)
                state["val_losses"].append(vl)
                state["best_val_loss"] = min(state["val_losses"])
                writer.writerow([solver.iter, solver.iter * cfg.batch, state["lr"], np.mean(losses), vl, va,
                                 round(wall0 + time.time() - t0, 1)])
                logf.flush()
                losses = []
                bar.set_postfix(val_loss=f"{vl:.4f}", val_acc=f"{va:.4f}", lr=state["lr"])
                snapshot()
                plot_log(log_path, run / "curves.png")
                if state["drops_done"] < cfg.drops and plateau_reached(
                        _since_last_drop(state), patience=cfg.drop_patience, min_delta=cfg.drop_min_delta):
                    state["lr"] *= cfg.drop_factor
                    state["drops_done"] += 1
                    state["drop_iters"].append(solver.iter)
                    state["drop_val_index"] = len(state["val_losses"])
                    _atomic_json(state_path, state)
                    bar.write(f"plateau at iter {solver.iter}: lr -> {state['lr']:g}")
                    solver = make_solver()
            if cfg.max_hours and wall0 + time.time() - t0 > cfg.max_hours * 3600:
                bar.write(f"--max-hours {cfg.max_hours} reached at iter {solver.iter}")
                break
        if state["iter"] != solver.iter:
            snapshot()
    finally:
        bar.close()
        logf.close()
        for s, h in old.items():
            signal.signal(s, h)
    state["finished"] = solver.iter >= cfg.max_iter
    _atomic_json(state_path, state)
    return state


def _since_last_drop(state) -> list:
    """Validation losses since the last learning-rate drop (all of them before the first)."""
    return state["val_losses"][state.get("drop_val_index", 0):]


def caffe_version() -> str:
    """The Caffe source the project builds (scripts/build_caffe.sh stamp), and pycaffe's own version string."""
    stamp = ROOT / "build" / "caffe" / "stamp"
    try:
        import caffe
        v = getattr(caffe, "__version__", "?")
        stamp = Path(caffe.__file__).resolve().parents[3] / "stamp"  # build/caffe*/src/python/caffe/__init__.py
    except ImportError:
        v = "not importable"
    s = stamp.read_text().split()[0] if stamp.exists() else "unknown"
    return f"brocolli-caffe 9.0.2 (BVLC master 9b89154), sdist sha256 {s}; pycaffe {v}"


def evaluate(model, val_list, *, net: str | None = None, batch: int = 500, progress: bool = True) -> dict:
    """Accuracy and mean softmax loss of a deploy caffemodel on the pairs listed in ``val_list`` (HDF5 shards).

    ``net``: the registered model whose deploy twin and data the weights belong to (default: the side-car's
    ``"net"``, else ``"cnn"``). A pair is correct when ``prob[:, 1] > 0.5`` agrees with ``label == 1``.
    """
    import caffe
    import h5py
    from tqdm import tqdm

    m = models.get(net) if net else models.resolve(model)[0]
    caffe.set_mode_cpu()
    dnet = caffe.Net(str(m.deploy), str(model), caffe.TEST)
    files = [ln.strip() for ln in Path(val_list).read_text().splitlines() if ln.strip()]
    c, p = m.in_channels, m.patch
    correct = n = 0
    nll = 0.0
    for f in files:
        with h5py.File(f, "r") as h:
            pair, label = h[m.data_top][...], h["label"][...]
        for i in tqdm(range(0, len(label), batch), disable=not progress, desc=Path(f).name):
            x = pair[i:i + batch]
            for name, part in (("a", x[:, :c]), ("b", x[:, c:])):
                dnet.blobs[name].reshape(len(x), c, p, p)
                dnet.blobs[name].data[...] = part
            prob = dnet.forward()["prob"][:, :, 0, 0]
            lab = label[i:i + batch].astype(int)
            correct += int(((prob[:, 1] > 0.5).astype(int) == lab).sum())
            nll -= float(np.log(np.maximum(prob[np.arange(len(lab)), lab], 1e-30)).sum())
            n += len(lab)
    return {"accuracy": correct / n, "loss": nll / n, "pairs": n, "model": str(model), "net": m.name,
            "val_list": str(val_list)}
