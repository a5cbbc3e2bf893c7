#!/usr/bin/env python
"""Tune ``method="cnn-plus"`` on the project's synthetic tuning set, never on the survey's pairs.

    python -m fusionlab tune-cnn-plus --count 24 --out runs/cnn_plus/tuning.md          # the grid of docs/cnn_plus.md
    python -m fusionlab tune-cnn-plus --count 12 --candidates "cnn;cnn-plus:band=4,focus_radius=2,gf_radius=4"

Pairs: fusionlab.synthetic.benchmark_pairs(start=50, seed=1) (BSDS500 val photos 50.., disk defocus of radius 2-6
px, hard and feathered focus edges; the test set is start 0, seed 0). Each candidate (``NAME:key=value,...`` as
in python -m fusionlab groundtruth) fuses every pair; the fused image is scored with the survey's 8 metrics
(pyfusion.metrics.METRICS) and against the sharp photo (PSNR, SSIM). The nets' score maps are cached under
--cache (a candidate changes only the steps after them), and so is every result in --json (an interrupted run
resumes; a candidate already there is not run again).

Two references that are not methods, for the analysis of docs/cnn_plus.md (never ranked, never chosen):
``truth`` scores the sharp photo itself as if it were a fused image, and ``mix:delta=D`` the shipped ``cnn-plus``
with a share ``D`` of the other source everywhere (weight ``D + (1 - 2 D) W``), a blend away from the truth.

    python -m fusionlab tune-cnn-plus --count 24 --candidates "$(python -m fusionlab tune-cnn-plus --print-analysis)"

The rule (docs/cnn_plus.md): among the ``cnn-plus`` candidates whose mean PSNR is not below ``cnn``'s, the lowest
mean rank over the 8 metric columns (means over the pairs rounded to 4 decimals; QCV: lower is better); ties: the
higher mean PSNR.
"""
import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

import pyfusion
from fusionlab import synthetic
from pyfusion.fusion import method_takes
from pyfusion.io import from_unit, to_unit, write_atomic
from pyfusion.methods.cnn import net_score_fn, weighted_average
from pyfusion.metrics import LOWER_IS_BETTER, METRICS
from pyfusion.metrics import phase as _phase
from fusionlab.tables import column_agreement, load_survey, survey_means
from fusionlab.reproduce import survey_sets

#: The tuning grid of docs/cnn_plus.md: the references, then the cnn-plus candidates, every option written out.
GRID = (
    "cnn",
    "wavelet-cnn",
    "dwt",
    "cnn-plus:band=0,gf_radius=0",
    "cnn-plus:band=0,gf_radius=2",
    "cnn-plus:band=0,gf_radius=4",
    "cnn-plus:band=2,focus_radius=1,gf_radius=2",
    "cnn-plus:band=2,focus_radius=2,gf_radius=2",
    "cnn-plus:band=4,focus_radius=1,gf_radius=0",
    "cnn-plus:band=4,focus_radius=1,gf_radius=2",
    "cnn-plus:band=4,focus_radius=2,gf_radius=0",
    "cnn-plus:band=4,focus_radius=2,gf_radius=2",
    "cnn-plus:band=4,focus_radius=2,gf_radius=4",
    "cnn-plus:band=4,focus_radius=4,gf_radius=2",
    "cnn-plus:band=8,focus_radius=2,gf_radius=2",
    "cnn-plus:band=4,focus_radius=2,power=1,gf_radius=0",
    "cnn-plus:band=8,focus_radius=1,power=2,gf_radius=0",
    "cnn-plus:band=8,focus_radius=2,power=1,gf_radius=0",
    "cnn-plus:band=8,focus_radius=2,power=1,gf_radius=2",
    "cnn-plus:band=8,focus_radius=2,power=2,gf_radius=0",
    "cnn-plus:band=8,focus_radius=2,power=2,gf_radius=2",
    "cnn-plus:band=8,focus_radius=4,power=2.5,gf_radius=0",
)

#: The analysis of docs/cnn_plus.md: does the truth lead every column, and what does a blend buy and cost?
ANALYSIS = ("truth", "cnn", "cnn-plus", "mix:delta=0.02", "mix:delta=0.05", "mix:delta=0.1", "mix:delta=0.2")

from fusionlab import ROOT
from fusionlab.commands.groundtruth import parse_method  # noqa: E402


def cached(model: str, folder: Path):
    """``score(a, b)`` of a registered net, cached on disk by the sha1 of the model name and both inputs."""
    fn = net_score_fn(model, None, threads=None, max_memory=None, progress=False)

    def score(a, b):
        h = hashlib.sha1(model.encode())
        for x in (a, b):
            h.update(str(x.shape).encode())
            h.update(np.ascontiguousarray(x).tobytes())
        path = folder / f"{h.hexdigest()}.npy"
        if path.is_file():
            return np.load(path)
        s = np.asarray(fn(a, b), np.float32)
        folder.mkdir(parents=True, exist_ok=True)
        np.save(path, s)
        return s

    return score


def memo_phase_congruency():
    """Q_P computes the phase congruency of both sources for every fused image: keep the last few."""
    orig, store = _phase.phase_congruency, {}

    def pc(im, *args, **kw):
        key = hashlib.sha1(np.ascontiguousarray(im).tobytes()).hexdigest() + repr((args, sorted(kw.items())))
        if key not in store:
            if len(store) > 4:
                store.pop(next(iter(store)))
            store[key] = orig(im, *args, **kw)
        return store[key]

    _phase.phase_congruency = pc


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", default=str(ROOT.parent / "shared/data/train/bsds500/val"))
    ap.add_argument("--candidates", default=";".join(GRID), help="semicolon-separated NAME[:key=value,...] "
                    "(default: GRID)")
    ap.add_argument("--count", type=int, default=24)
    ap.add_argument("--start", type=int, default=50)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--skip", type=int, default=0, help="leave out the first N of the pairs (split a run)")
    ap.add_argument("--metrics", default=",".join(METRICS), help="comma-separated subset of the 8 (default all)")
    ap.add_argument("--cache", default="runs/cnn_plus/scores")
    ap.add_argument("--json", default="runs/cnn_plus/tuning.json")
    ap.add_argument("--out", help="markdown table")
    ap.add_argument("--against", metavar="CANDIDATE", help="add a table: on how many pairs each candidate beats "
                    "this one, per column")
    ap.add_argument("--softness", type=float, help="tabulate only the pairs of this focus-edge softness "
                    f"(one of {synthetic.SOFTNESS}; 0: hard edges, where truth is the exact selection by the mask)")
    ap.add_argument("--print-analysis", action="store_true", help="print the ANALYSIS candidates and exit")
    ap.add_argument("--published", metavar="METRICS_JSON", help="print how the survey's published columns agree "
                    "(leaders, rank correlations over its 18 methods) and exit; runs nothing")
    args = ap.parse_args(argv)
    if args.print_analysis:
        print(";".join(ANALYSIS))
        return 0
    if args.published:
        print(published_agreement(args.published))
        return 0
    if (args.start, args.seed) == (0, 0):
        print("tune_cnn_plus: error: start 0 seed 0 is the test set", file=sys.stderr)
        return 2
    metrics = [m for m in args.metrics.split(",") if m]
    cands = [c for c in args.candidates.split(";") if c]
    store = json.loads(Path(args.json).read_text()) if Path(args.json).is_file() else {}
    key = f"start={args.start},seed={args.seed}"
    results = store.setdefault(key, {})
    memo_phase_congruency()
    cache = Path(args.cache)
    fns = {"cnn": cached("cnn", cache), "wavelet-cnn": (cached("wavelet_low", cache), cached("wavelet_high", cache))}
    photos = sorted(Path(args.photos).glob("*.jpg"))
    for k, p in enumerate(synthetic.benchmark_pairs(photos, count=args.count, seed=args.seed, start=args.start)):
        if k < args.skip:
            continue
        for c in cands:
            row = results.setdefault(c, {}).setdefault(p.name, {})
            todo = [m for m in metrics if m not in row]
            if not todo and "psnr" in row:
                continue
            t0 = time.perf_counter()
            fused = fuse_candidate(c, p, fns)
            row["seconds"] = time.perf_counter() - t0
            row.update(synthetic.scores(fused, p.sharp))
            for m in todo:
                row[m] = float(METRICS[m](p.a, p.b, fused))
            print(f"{p.name} {c}: " + " ".join(f"{m} {row[m]:.4f}" for m in metrics) + f" psnr {row['psnr']:.2f}",
                  flush=True)
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        write_atomic(args.json, json.dumps(store, indent=1) + "\n")
    text = table(results, cands, metrics, args)
    print(text)
    if args.out:
        write_atomic(args.out, text)
    return 0


def published_agreement(path) -> str:
    """Markdown: per survey set, each column's leader and its rank correlation with every other column."""
    survey, methods = load_survey(path)
    first = survey[methods[0]]
    sets = survey_sets(sorted(next(iter(first.values()))))
    lines = []
    for name in ("grayscale", "colour"):
        leaders, rho = column_agreement(survey_means(survey, methods, sets[name]))
        cols = list(leaders)
        lines += [f"{name}: Spearman rank correlation of the columns over the {len(methods)} published methods "
                  "(QCV negated: higher is better everywhere)", "",
                  "| column (leader) | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
        lines += [f"| {k} ({leaders[k]}) | " + " | ".join(f"{rho[k, j]:+.2f}" for j in cols) + " |" for k in cols]
        lines.append("")
    return "\n".join(lines)


def fuse_candidate(spec: str, pair, fns: dict) -> np.ndarray:
    """The fused image of one candidate on one pair: a method (``NAME:key=value,...``), ``truth`` (the sharp
    photo) or ``mix:delta=D`` (the shipped cnn-plus's weight map ``W`` turned into ``D + (1 - 2 D) W``)."""
    if spec == "truth":
        return pair.sharp
    opts = parse_method(spec)
    if opts["method"] == "mix":
        delta = float(opts.pop("delta"))
        res = pyfusion.fuse([pair.a, pair.b], method="cnn-plus", score_fn=fns["cnn"])
        weight = delta + (1.0 - 2.0 * delta) * res.decision_map
        fused = weighted_average(to_unit(pair.a), to_unit(pair.b), weight)
        return from_unit(fused, pair.a.dtype)
    takes = method_takes(opts["method"])
    score_fn = fns["wavelet-cnn" if opts["method"] == "wavelet-cnn" else "cnn"]
    return pyfusion.fuse([pair.a, pair.b], **opts, **({"score_fn": score_fn} if "score_fn" in takes else {})).fused


def _better(x: float, y: float, metric: str) -> bool:
    """Whether value ``x`` of ``metric`` is strictly better than ``y`` (lower for QCV, else higher)."""
    return x < y if metric in LOWER_IS_BETTER else x > y


def table(results, cands, metrics, args) -> str:
    """Means per candidate, the rank of each cnn-plus candidate per column and the rule's choice."""
    names = sorted(set.intersection(*(set(results[c]) for c in cands)))
    if args.softness is not None:   # pair k has the k-th softness of the cycle (synthetic.benchmark_pairs)
        soft = synthetic.SOFTNESS
        names = [n for n in names if soft[int(n.split("_")[0]) % len(soft)] == args.softness]
    mean = {c: {m: float(np.mean([results[c][n][m] for n in names])) for m in [*metrics, "psnr", "ssim"]}
            for c in cands}
    plus = [c for c in cands if c.startswith("cnn-plus")]
    rank = {c: {} for c in plus}
    for m in metrics:   # on the means rounded to 4 decimals, as the survey prints them; ties share the best rank
        sign = 1 if m in LOWER_IS_BETTER else -1
        for c in plus:
            rank[c][m] = 1 + sum(sign * round(mean[o][m], 4) < sign * round(mean[c][m], 4) for o in plus)
    mrank = {c: float(np.mean(list(rank[c].values()))) for c in plus}
    base = "cnn" if "cnn" in cands else None
    better = {c: sum(_better(mean[c][m], mean[base][m], m) for m in metrics) for c in plus} if base else {}
    which = "" if args.softness is None else f", focus-edge softness {args.softness:g} only"
    lines = [f"Means over {len(names)} tuning pairs{which} (`python -m fusionlab tune-cnn-plus --count {args.count} --start "
             f"{args.start} --seed {args.seed}`); rank: among the {len(plus)} cnn-plus candidates; "
             f"vs cnn: columns better than `cnn`.", "",
             "| candidate | " + " | ".join(metrics) + " | PSNR | SSIM | mean rank | vs cnn |",
             "|---|" + "---:|" * (len(metrics) + 4)]
    for c in cands:
        cells = [f"{mean[c][m]:.4f}" if m != "QCV" else f"{mean[c][m]:.3f}" for m in metrics]
        extra = [f"{mrank[c]:.2f}", str(better.get(c, ""))] if c in plus else ["", ""]
        lines.append(f"| {c} | " + " | ".join(cells) + f" | {mean[c]['psnr']:.2f} | {mean[c]['ssim']:.4f} | "
                     + " | ".join(extra) + " |")
    if args.against:
        ref = results[args.against]
        lines += ["", f"Pairs (of {len(names)}) on which each candidate is better than `{args.against}`:", "",
                  "| candidate | " + " | ".join([*metrics, "PSNR"]) + " |", "|---|" + "---:|" * (len(metrics) + 1)]
        for c in cands:
            wins = [sum(_better(results[c][n][m], ref[n][m], m) for n in names) for m in [*metrics, "psnr"]]
            lines.append(f"| {c} | " + " | ".join(map(str, wins)) + " |")
    ok = [c for c in plus if base is None or mean[c]["psnr"] >= mean[base]["psnr"]]
    if ok:
        best = min(ok, key=lambda c: (mrank[c], -mean[c]["psnr"]))
        lines += ["", f"Chosen by the rule (PSNR not below cnn's; lowest mean rank, then PSNR): `{best}`"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
