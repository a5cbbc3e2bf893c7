"""The paper's design experiments, measured: blur levels, patch size and branch layout of the net.

Liu et al. [1]_ (Sec. 3.2) chose five blur levels, 16x16 patches and a siamese net (two branches with shared
weights) and say why: three blur levels gave a lower validation accuracy (96.7% vs 99.49%), 8x8 patches are too
small for a reliable classification, and the siamese net converges more easily than a pseudo-siamese net (own
weights per branch) or a 2-channel net (the pair stacked as one input). Each variant here is a registered net
(:mod:`pyfusion.models`: ``cnn_blur3``, ``cnn_patch8``, ``cnn_pseudo``, ``cnn_2ch``) trained by the same tools
with the same schedule and seeds as the baseline ``cnn`` retrained beside them (``make ablations``), and judged
three ways: validation accuracy, the survey's 8 metrics on its 30 pairs, and PSNR/SSIM on the project's synthetic
ground-truth pairs (:mod:`fusionlab.synthetic`).

References
----------
.. [1] Y. Liu, X. Chen, H. Peng, Z. Wang, "Multi-focus image fusion with a deep convolutional neural network",
   Information Fusion 36 (2017) 191-207.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from pyfusion import models
from fusionlab import ROOT

#: variant (registered net) -> (what differs from the baseline, the paper's statement about it)
VARIANTS = {
    "cnn": ("baseline: 5 blur levels, 16x16 patches, siamese (the shipped design)", "the paper's choice"),
    "cnn_blur3": ("3 blur levels instead of 5", "99.49% validation accuracy with 5 levels, 96.7% with 3"),
    "cnn_patch8": ("8x8 patches instead of 16x16 (fc1 on 512x4x4; its deploy twin has stride 2 and a 4x4 head)",
                   "8x8 is too small for a reliable classification"),
    "cnn_pseudo": ("pseudo-siamese: the same branches with weights of their own",
                   "the siamese net converges more easily"),
    "cnn_2ch": ("2-channel: the pair stacked as one 2-channel input to one trunk",
                "the siamese net converges more easily"),
}
RUNS = ROOT / "runs" / "ablation"
WEIGHTS = ROOT / "models" / "ablation"


def weights(name: str) -> Path:
    """The exported deploy caffemodel of a variant (``make ablation-NAME``); its ONNX twin is beside it."""
    return WEIGHTS / f"{name}.caffemodel"


def read_log(run) -> list[dict]:
    """Rows of a run's ``log.csv`` (one per validation) as floats."""
    with open(Path(run) / "log.csv", newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def center_crop_set(val_list, out_dir, *, patch: int, top: str = "pair") -> Path:
    """The pairs of ``val_list`` cropped to their central ``patch`` x ``patch`` pixels, as a new list file.

    So a net on smaller patches is validated on the same places (and labels) as the baseline. Written once into
    ``out_dir`` (``list.txt`` and one HDF5 file per source shard); an existing complete set is reused.
    """
    import h5py

    from pyfusion.io import write_atomic

    out_dir = Path(out_dir)
    listing = out_dir / "list.txt"
    if listing.is_file():
        return listing
    out_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for src in [ln.strip() for ln in Path(val_list).read_text().splitlines() if ln.strip()]:
        with h5py.File(src, "r") as h:
            pair, label = h[top][...], h["label"][...]
        o = (pair.shape[-1] - patch) // 2
        dst = out_dir / Path(src).name
        with h5py.File(dst, "w") as h:
            h.create_dataset(top, data=np.ascontiguousarray(pair[..., o:o + patch, o:o + patch]))
            h.create_dataset("label", data=label)
        files.append(str(dst.resolve()))
    write_atomic(listing, "".join(f + "\n" for f in files))
    return listing


def validation(name: str, *, progress: bool = True) -> dict:
    """Validation accuracy and loss of a variant's exported model on its own validation set (made by its recipe)
    and on the baseline's 10,000 validation pairs (centre crops of them for smaller patches)."""
    from fusionlab.train import TrainConfig, data_lists, evaluate

    m = models.get(name)
    own = data_lists(TrainConfig(net=name))[1]
    common = data_lists(TrainConfig(net="cnn"))[1]
    if m.patch != models.get("cnn").patch:
        common = center_crop_set(common, RUNS / f"val_crop{m.patch}", patch=m.patch)
    out = {"own": evaluate(weights(name), own, net=name, progress=progress)}
    out["common"] = out["own"] if Path(own).resolve() == Path(common).resolve() else \
        evaluate(weights(name), common, net=name, progress=progress)
    return out


def survey_metrics(name: str, data, *, progress: bool = True) -> dict:
    """The survey's 8 metrics of a variant's fused images of the 30 survey pairs: ``{image: {metric: value}}``.

    Fused by the ``cnn`` method with the variant's model into ``runs/ablation/survey/NAME`` (kept: a rerun only
    fuses what is missing).
    """
    from fusionlab.tables import evaluate, find_cases
    from fusionlab.reproduce import fuse_survey

    out_dir = RUNS / "survey" / name
    fuse_survey(data, "cnn", out_dir, progress=progress, model=str(weights(name).with_suffix(".onnx")))
    data = Path(data)
    cases, _ = find_cases([data / "sources" / "color", data / "sources" / "grayscale"], [out_dir])
    return next(iter(evaluate(cases, progress=progress).values()))


def groundtruth(name: str, photos, *, count: int = 40, seed: int = 0, progress: bool = True) -> list[dict]:
    """PSNR and SSIM against the sharp photo of a variant's fusions of the synthetic ground-truth pairs
    (:func:`fusionlab.synthetic.benchmark_pairs`, the test set of ``tools/groundtruth.py``)."""
    from tqdm import tqdm

    from pyfusion import fuse

    from fusionlab import synthetic

    model = str(weights(name).with_suffix(".onnx"))
    rows = []
    pairs = synthetic.benchmark_pairs(photos, count=count, seed=seed)
    for p in tqdm(pairs, total=count, desc=f"ground truth {name}", unit="pair", disable=not progress):
        rows.append({"pair": p.name, **synthetic.scores(fuse([p.a, p.b], method="cnn", model=model).fused, p.sharp)})
    return rows


def curves_figure(logs: dict, out) -> None:
    """Validation loss and accuracy against examples seen, every variant in one pair of panels (PNG)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for name, rows in logs.items():
        ex = [r["examples"] for r in rows]
        style = "-" if name in ("cnn", "cnn_pseudo", "cnn_2ch") else "--"
        ax1.plot(ex, [r["val_loss"] for r in rows], style, marker="o", label=name)
        ax2.plot(ex, [r["val_acc"] for r in rows], style, marker="o", label=name)
    ax1.set_yscale("log")
    ax1.set_ylabel("validation loss (own validation set)")
    ax2.set_ylabel("validation accuracy (own validation set)")
    for ax in (ax1, ax2):
        ax.set_xlabel("examples seen")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


def measure(names, *, data, photos, cache, count: int = 40, progress: bool = True) -> dict:
    """Every measurement of every variant in ``names``, kept in the JSON file ``cache`` (a variant whose weights
    are unchanged is not measured again; an interrupted run resumes)."""
    from pyfusion.io import write_atomic
    from pyfusion.models import file_sha256

    cache = Path(cache)
    results = json.loads(cache.read_text()) if cache.is_file() else {}
    for name in names:
        sha = file_sha256(weights(name))
        if results.get(name, {}).get("sha256") != sha:
            results[name] = {"sha256": sha}
        r = results[name]
        for key, fn in (("validation", lambda: validation(name, progress=progress)),
                        ("survey", lambda: survey_metrics(name, data, progress=progress)),
                        ("groundtruth", lambda: groundtruth(name, photos, count=count, progress=progress))):
            if key not in r:
                r[key] = fn()
                cache.parent.mkdir(parents=True, exist_ok=True)
                write_atomic(cache, json.dumps(results, indent=1) + "\n")
    return {n: results[n] for n in names}
