"""The occlusion benchmark: focus stacks of occluding planes with ground truth, scored in a band around the edges.

Stacks from BSDS500 val photos (fusionlab.occlusion.occlusion_stacks: 2-4 planes, the nearer ones shapes cut
from other photos, the layered defocus model; photos start.. and seed as given), fused by our one-pass default,
series, wavelet-cnn, dwt, enfuse and focus-stack (each with its defaults), scored by PSNR and SSIM in a band of
half-width ceil(R) + 1 around the occlusion edges (R the stack's largest blur radius), in the rest and on the whole
image (fusionlab.occlusion.halo_scores); --diagnose adds one-pass variants and bounds (fusionlab.occlusion.DIAGNOSES);
--candidates adds halo-fix candidates on the one-pass depth map (fusionlab.occlusion.HALO_CANDIDATES; "all": the
grid, with the selection rule's choice, fusionlab.occlusion.choose_candidate), and --layered N scores them also on
the first N layered stacks of the stack benchmark (fusionlab.synthetic.benchmark_stacks, same photos and seed;
registered frames; whole-image PSNR and SSIM).

    python -m fusionlab occlusion-bench --count 20 --seed 0 --diagnose --doc docs/stacks.md
    python -m fusionlab occlusion-bench --count 20 --seed 1 --start 50 --fusers one-pass --candidates all \
        --layered 12 --json runs/halo_tuning.json

Every stack's numbers go to --json after each stack; a rerun with the same configuration keeps the stacks
already there (resumes), --fresh starts over. The summary (markdown) is printed and, with --doc, written between
the lines <!-- occlusion_bench:start --> and <!-- occlusion_bench:end --> of that file. --scale K runs the same
stacks (and layered stacks) at K times the pixels per side (fusionlab.occlusion.make_occlusion_stack); its results
go to runs/occlusion_bench_scaleK.json and to the block occlusion_bench_scaleK by default.
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from fusionlab import ROOT, occlusion, synthetic
from fusionlab.commands.stack_bench import done_rows, scaled_name
from fusionlab.docblocks import replace_block
from pyfusion.io import write_atomic

PROG = "occlusion-bench"
SCORES = ("band_psnr", "band_ssim", "halo_psnr", "near_psnr", "rest_psnr", "rest_ssim", "psnr", "ssim")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", default=str(ROOT.parent / "shared/data/train/bsds500/val"), help="sharp photos (*.jpg)")
    ap.add_argument("--count", type=int, default=20, help="stacks (default 20)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the shapes and the camera motion (default 0)")
    ap.add_argument("--start", type=int, default=0, help="first photo in sorted order (default 0)")
    ap.add_argument("--crop", type=int, help="cut the middle CROP x CROP of each photo (default: whole photos)")
    ap.add_argument("--scale", type=int, default=1, metavar="K",
                    help="the same stacks at K times the pixels per side (default 1)")
    ap.add_argument("--fusers", default=";".join(occlusion.OCC_FUSERS),
                    help=f"semicolon-separated, from {', '.join(occlusion.OCC_FUSERS)} (default all that can run)")
    ap.add_argument("--diagnose", action="store_true", help="also the one-pass variants and bounds")
    ap.add_argument("--candidates", default="",
                    help='semicolon-separated halo-fix candidates (fusionlab.occlusion.HALO_CANDIDATES), or "all"; '
                         "the guided one pass's (edge_fix=False) is always added")
    ap.add_argument("--layered", type=int, default=0, metavar="N",
                    help="also score the candidates on the stack benchmark's first N layered stacks (default 0)")
    ap.add_argument("--threads", type=int, default=1, help="threads per fusion (default 1)")
    ap.add_argument("--json", type=Path, help="per-stack results (default runs/occlusion_bench.json; with --scale K "
                    "runs/occlusion_bench_scaleK.json)")
    ap.add_argument("--doc", type=Path, help="markdown file for the summary (between its occlusion_bench markers; "
                    "with --scale K its occlusion_bench_scaleK markers)")
    ap.add_argument("--fresh", action="store_true", help="ignore the stacks already in --json")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    args.fusers = [f for f in args.fusers.split(";") if f]
    unknown = [f for f in args.fusers if f not in occlusion.OCC_FUSERS]
    if unknown:
        ap.error(f"unknown fuser(s) {', '.join(unknown)}; choose from {', '.join(occlusion.OCC_FUSERS)}")
    names = occlusion.HALO_CANDIDATES if args.candidates == "all" else [c for c in args.candidates.split(";") if c]
    unknown = [c for c in names if c not in occlusion.HALO_CANDIDATES]
    if unknown:
        ap.error(f"unknown candidate(s) {'; '.join(unknown)}; choose from {'; '.join(occlusion.HALO_CANDIDATES)}")
    default = occlusion.BASE_CANDIDATE
    args.candidates = [default] * bool(names) + [c for c in names if c != default]
    if args.layered and not args.candidates:
        ap.error("--layered needs --candidates")
    if (args.count < 1 or args.threads < 1 or args.scale < 1 or args.layered < 0
            or (args.crop is not None and args.crop < 16)):
        ap.error("--count, --threads and --scale must be >= 1, --layered >= 0, --crop >= 16")
    args.json = args.json or ROOT / f"runs/{scaled_name('occlusion_bench', args.scale)}.json"
    return args


def _depth(frames, threads: int) -> np.ndarray:
    """The one-pass method's cleaned depth map: its argmax label map after the small-region removal (steps 4-5 of
    :mod:`pyfusion.methods.stack`), whatever the steps after them."""
    import pyfusion
    from pyfusion.constants import REGION_RATIO_STACK
    from pyfusion.methods.stack import remove_small_label_regions
    from pyfusion.refine import area_threshold

    labels = pyfusion.fuse(list(frames), method="cnn", threads=threads).maps["label_map"]
    return remove_small_label_regions(labels, area=area_threshold(labels.shape, ratio=REGION_RATIO_STACK),
                                      n_labels=len(frames))


def score_stack(stack, fusers, *, diagnose: bool, threads: int, candidates=()) -> dict:
    """One stack: every fuser's :func:`fusionlab.occlusion.halo_scores` and wall ``seconds``; the one-pass depth
    map's :func:`~fusionlab.occlusion.label_agreement`; with ``diagnose`` the :func:`~fusionlab.occlusion.diagnose`
    scores; the ``candidates``' :func:`~fusionlab.occlusion.halo_scores` (:func:`~fusionlab.occlusion.candidates_fused`
    on the one-pass depth map)."""
    t0 = time.perf_counter()
    band = occlusion.band_mask(stack.planes, stack.width)
    row = {"stack": stack.name, "planes": int(stack.radii.shape[0]), "frames": len(stack.frames),
           "radius": stack.radius, "width": stack.width, "shape": list(stack.sharp.shape[:2]),
           "band_share": float(band.mean()), "results": {}, "skipped": {}}
    for fuser in fusers:
        try:
            f = occlusion.fuse(stack.frames, fuser, threads=threads)
        except (ValueError, RuntimeError) as e:
            row["skipped"][fuser] = " ".join(str(e).split())
            continue
        row["results"][fuser] = {**occlusion.halo_scores(f["fused"], stack.sharp, stack.planes, stack.width),
                                 "seconds": f["seconds"]}
        if fuser == "one-pass guided":   # the diagnosis is of the guided-filter path's depth map
            row["labels"] = occlusion.label_agreement(f["depth"], stack)
            row["_depth"] = f["depth"]
    depth = row.pop("_depth", None)
    if diagnose:
        row["diagnosis"] = occlusion.diagnose(stack, depth=depth, threads=threads)
    if candidates:
        fused = occlusion.candidates_fused(stack.frames, _depth(stack.frames, threads), candidates, threads=threads)
        row["candidates"] = {c: occlusion.halo_scores(f, stack.sharp, stack.planes, stack.width)
                             for c, f in fused.items()}
    row["seconds"] = time.perf_counter() - t0
    return row


def complete(row, stack, fusers, args) -> dict:
    """``row`` (an earlier run's, or None) with the results of every fuser in ``fusers``: only the missing ones run
    (:func:`score_stack`; a row keeps its diagnosis and candidates)."""
    if row is None:
        return score_stack(stack, fusers, diagnose=args.diagnose, threads=args.threads, candidates=args.candidates)
    missing = [f for f in fusers if f not in row["results"] and f not in row["skipped"]]
    if not missing:
        return row
    new = score_stack(stack, missing, diagnose=False, threads=args.threads)
    return {**row, **{k: new[k] for k in ("labels",) if k in new}, "results": {**row["results"], **new["results"]},
            "skipped": {**row["skipped"], **new["skipped"]}, "seconds": row["seconds"] + new["seconds"]}


def score_layered(stack, candidates, *, threads: int) -> dict:
    """One layered stack of the stack benchmark (registered frames): the ``candidates``' PSNR and SSIM against the
    sharp photo."""
    from fusionlab import synthetic

    fused = occlusion.candidates_fused(stack.frames, _depth(stack.frames, threads), candidates, threads=threads)
    return {"stack": stack.name, "frames": len(stack.frames),
            "candidates": {c: synthetic.scores(f, stack.sharp) for c, f in fused.items()}}


def _done_layered(path: Path, config: dict, fresh: bool) -> dict:
    """Layered stack name -> row of an earlier run with the same configuration (as ``done_rows`` for the stacks)."""
    old = {} if fresh or not path.is_file() else json.loads(path.read_text(encoding="utf-8"))
    same = "config" in old and {"scale": 1, **old["config"]} == config
    return {r["stack"]: r for r in old.get("layered", [])} if same else {}


def _mean(rows, key, part, score) -> float:
    return float(np.mean([r[part][key][score] for r in rows]))


def candidate_lines(rows, layered=()) -> list:
    """The candidates' table (means over the stacks; the layered stacks' whole PSNR where given) and, when the whole
    grid ran, the selection rule's choice (:func:`fusionlab.occlusion.choose_candidate`)."""
    names = list(rows[0]["candidates"])
    cols = ("band_psnr", "halo_psnr", "near_psnr", "rest_psnr", "psnr")
    means = {c: {s: _mean(rows, c, "candidates", s) for s in cols} for c in names}
    lay = {c: _mean(layered, c, "candidates", "psnr") for c in names} if layered else None
    base = means[occlusion.BASE_CANDIDATE]
    head = ("| candidate (decision + blend) | band PSNR | halo side | near side | rest PSNR | whole PSNR "
            "| band vs guided")
    head += f" | whole vs guided | layered whole PSNR ({len(layered)} stacks) | vs guided |" if layered else " |"
    lines = ["", f"Halo-fix candidates on the one-pass depth map ({len(rows)} stacks; `{occlusion.BASE_CANDIDATE}` "
             "is the one pass with the paper's guided filter, `edge_fix=False`):", "", head,
             "|---" + "|---:" * (head.count("|") - 2) + "|"]
    for c in names:
        m = means[c]
        cells = [f"{m[s]:.2f}" for s in cols] + [f"{m['band_psnr'] - base['band_psnr']:+.2f}",
                                                 f"{m['psnr'] - base['psnr']:+.2f}"]
        if lay:
            cells += [f"{lay[c]:.2f}", f"{lay[c] - lay[occlusion.BASE_CANDIDATE]:+.2f}"]
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    if set(names) == set(occlusion.HALO_CANDIDATES):
        pick = occlusion.choose_candidate({c: means[c]["band_psnr"] for c in names},
                                          {c: means[c]["psnr"] for c in names}, lay)
        lines += ["", f"- the selection rule (`occlusion.choose_candidate`: the best band PSNR among the candidates "
                  f"whose whole-image PSNR is within 0.1 dB of the guided one pass's or above"
                  f"{', on both sets' if lay else ''}) picks: `{pick}`"]
    return lines


def summary(rows, *, command: str, notes=(), layered=()) -> str:
    """The markdown: the fusers' table (best band PSNR in bold), who wins the band, the one-pass decision's
    agreement with the true labels in the band, band PSNR by largest radius and by planes, the diagnosis table,
    then ``notes``."""
    n = len(rows)
    fusers = [f for f in occlusion.OCC_FUSERS if all(f in r["results"] for r in rows)]
    if not fusers:
        return "\n".join(candidate_lines(rows, layered) + [""] + [f"- {x}" for x in notes]) + "\n"
    best = max(fusers, key=lambda f: _mean(rows, f, "results", "band_psnr"))
    lines = [f"Means over {n} stacks (`{command}`): PSNR (dB) and SSIM against the all-sharp truth in the band "
             "around the occlusion edges (half-width ceil(R) + 1, R the stack's largest blur radius; "
             f"{np.mean([r['band_share'] for r in rows]):.1%} of the pixels on average), on its halo side (the "
             "farther plane's part, where a near object's blur falls) and near side (the rest of the band), in the "
             "rest of the image, and on the whole image; "
             "wall seconds per stack (one thread).", "",
             "| fuser | band PSNR | band SSIM | halo side | near side | rest PSNR | rest SSIM | whole PSNR "
             "| whole SSIM | s |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for f in fusers:
        m = {s: _mean(rows, f, "results", s) for s in SCORES + ("seconds",)}
        band = f"**{m['band_psnr']:.2f}**" if f == best else f"{m['band_psnr']:.2f}"
        lines.append(f"| {f} | {band} | {m['band_ssim']:.4f} | {m['halo_psnr']:.2f} | {m['near_psnr']:.2f} | "
                     f"{m['rest_psnr']:.2f} | "
                     f"{m['rest_ssim']:.4f} | {m['psnr']:.2f} | {m['ssim']:.4f} | {m['seconds']:.2f} |")
    lines.append("")
    lines.append(f"- band PSNR: {best} is best on average")
    if "one-pass" in fusers:
        lines += [_difference_line(rows, f, "band_psnr", "band PSNR") for f in fusers if f != "one-pass"]
    if {"one-pass", "one-pass exact"} <= set(fusers):
        lines += [_difference_line(rows, "one-pass exact", s, label) for s, label in
                  (("halo_psnr", "halo side PSNR"), ("psnr", "whole-image PSNR"))]
    if all("labels" in r for r in rows):
        a = {k: float(np.mean([r["labels"][k] for r in rows])) for k in rows[0]["labels"]}
        lines.append(f"- one-pass depth map: the true label on {a['band_true']:.1%} of the band and on "
                     f"{a['halo_true']:.1%} of its halo side; the occluder's frame (`edge_labels`) on "
                     f"{a['halo_edge']:.1%} of the halo side")
    for key, label in (("radius", "R (px)"), ("planes", "planes")):
        lines += ["", f"Band PSNR by {label}:", "", f"| {label} | stacks | " + " | ".join(fusers) + " |",
                  "|---:|---:|" + "---:|" * len(fusers)]
        for value in sorted({r[key] for r in rows}):
            sel = [r for r in rows if r[key] == value]
            cells = {f: _mean(sel, f, "results", "band_psnr") for f in fusers}
            top = max(cells, key=cells.get)
            lines.append(f"| {value:g} | {len(sel)} | " + " | ".join(
                f"**{v:.2f}**" if f == top else f"{v:.2f}" for f, v in cells.items()) + " |")
    if rows and all("diagnosis" in r for r in rows) and "one-pass guided" in fusers:
        lines += ["", "Where the band error of the one-pass path with the paper's guided filter (`edge_fix=False`) "
                  "comes from (`--diagnose`; the same stacks):", "",
                  "| decision, blend | band PSNR | halo side | near side | rest PSNR | whole PSNR |",
                  "|---|---:|---:|---:|---:|---:|"]
        variants = [("one-pass guided", "results", "one-pass guided")]
        variants += [("enfuse", "results", "enfuse")] if "enfuse" in fusers else []
        variants += [(k, "diagnosis", k) for k in rows[0]["diagnosis"]]
        for label, part, key in variants:
            lines.append(f"| {label} | " + " | ".join(f"{_mean(rows, key, part, s):.2f}" for s in
                                                       ("band_psnr", "halo_psnr", "near_psnr", "rest_psnr",
                                                        "psnr")) + " |")
    if rows and all("candidates" in r for r in rows):
        lines += candidate_lines(rows, layered)
    lines += [""] + [f"- {x}" for x in notes]
    return "\n".join(lines) + "\n"


def _difference_line(rows, other: str, score: str, label: str) -> str:
    """One-pass minus ``other`` on ``score``: mean, range over the stacks and the stacks where one-pass is not
    worse."""
    d = np.array([r["results"]["one-pass"][score] - r["results"][other][score] for r in rows])
    return (f"- one-pass vs {other}, {label}: {d.mean():+.2f} dB on average (from {d.min():+.2f} to {d.max():+.2f}); "
            f"one-pass at least as good on {int((d >= 0).sum())} of {len(rows)} stacks")


def command_line(args) -> str:
    parts = [f"python -m fusionlab occlusion-bench --count {args.count} --seed {args.seed}"]
    parts += [f"--start {args.start}"] if args.start else []
    parts += [f"--crop {args.crop}"] if args.crop else []
    parts += [f"--scale {args.scale}"] if args.scale != 1 else []
    parts += [f"--fusers '{';'.join(args.fusers)}'"] if args.fusers != list(occlusion.OCC_FUSERS) else []
    parts += ["--diagnose"] if args.diagnose else []
    if args.candidates:
        given = "all" if len(args.candidates) == len(occlusion.HALO_CANDIDATES) else ";".join(args.candidates[1:])
        parts += [f"--candidates '{given}'"] if given else ["--candidates '" + occlusion.BASE_CANDIDATE + "'"]
    parts += [f"--layered {args.layered}"] if args.layered else []
    return " ".join(parts)


def main(argv=None) -> int:
    args = parse_args(argv)
    photos = sorted(Path(args.photos).glob("*.jpg"))
    if not photos:
        print(f"{PROG}: error: no photos in {args.photos}", file=sys.stderr)
        return 2
    fusers, why = occlusion.available(args.fusers)
    config = {"photos": str(args.photos), "count": args.count, "seed": args.seed, "start": args.start,
              "crop": args.crop, "scale": args.scale, "fusers": fusers, "threads": args.threads,
              "diagnoses": list(occlusion.DIAGNOSES) if args.diagnose else [],
              "planes": list(occlusion.OCC_PLANES), "radii": list(occlusion.OCC_RADII),
              "cover": list(occlusion.OCC_COVER), "candidates": args.candidates, "layered": args.layered}
    done, done_layered = done_rows(args.json, config, args.fresh), _done_layered(args.json, config, args.fresh)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    stacks = occlusion.occlusion_stacks(photos, count=args.count, seed=args.seed, start=args.start, crop=args.crop,
                                        scale=args.scale)
    for stack in tqdm(stacks, total=args.count, desc="stacks", unit="stack", disable=args.no_progress):
        rows.append(complete(done.get(stack.name), stack, fusers, args))
        write_atomic(args.json, json.dumps({"config": config, "stacks": rows}, indent=1) + "\n")
    layered = []
    for stack in tqdm(synthetic.benchmark_stacks(photos, count=args.layered, seed=args.seed, start=args.start,
                                                 crop=args.crop, scale=args.scale),
                      total=args.layered, desc="layered stacks", unit="stack", disable=args.no_progress):
        t0 = time.perf_counter()
        layered.append(done_layered.get(stack.name) or {**score_layered(stack, args.candidates, threads=args.threads),
                                                        "seconds": time.perf_counter() - t0})
        write_atomic(args.json, json.dumps({"config": config, "stacks": rows, "layered": layered}, indent=1) + "\n")
    skipped = {f: w for r in rows for f, w in r["skipped"].items()}
    shape = sorted({f"{w}x{h}" for h, w in (r["shape"] for r in rows)})
    notes = [f"{f}: not run, {w}" for f, w in why.items()] + [f"{f}: skipped, {w}" for f, w in skipped.items()]
    notes += [f"stacks of {', '.join(shape)} px (photos {args.start}-{args.start + args.count - 1} as backgrounds), "
              f"2-4 planes, 3-4 frames, R cycled over "
              f"{', '.join(f'{r * args.scale:g}' for r in occlusion.OCC_RADII)} px"
              + (f" (scale {args.scale}: the photos enlarged {args.scale} times per side, the shapes, radii and camera "
                 "shifts with them)" if args.scale != 1 else ""),
              f"the whole run: {sum(r['seconds'] for r in rows + layered) / 60:.1f} min wall on {occlusion.machine()}, "
              f"{datetime.date.today().isoformat()}"]
    if layered:
        notes.insert(-1, f"layered stacks: the stack benchmark's first {len(layered)} (photos {args.start}-"
                         f"{args.start + len(layered) - 1}, seed {args.seed}, "
                         f"{min(r['frames'] for r in layered)}-{max(r['frames'] for r in layered)} frames)")
    text = summary(rows, command=command_line(args), notes=notes, layered=layered)
    print(text)
    if args.doc:
        replace_block(args.doc, scaled_name("occlusion_bench", args.scale), text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
