#!/usr/bin/env python
"""The project's focus-stack benchmark: synthetic stacks with ground truth from BSDS500 val photos
(fusionlab.synthetic.benchmark_stacks: a random smooth depth map cut into 3-8 layers, frame k sharp on layer k and
disk-defocused elsewhere by its depth distance; a hand-held copy of every stack), fused by every N-frame fuser
registered, hand-held with alignment and hand-held without, scored against the sharp photo (fusionlab.stackbench).

    python -m fusionlab stack-bench --count 20 --seed 0 --doc docs/stacks.md

Every stack's numbers go to --json after each stack; a rerun with the same configuration keeps the stacks
already there (resumes), --fresh starts over. The summary (markdown) is printed and, with --doc, written between
the lines <!-- stack_bench:start --> and <!-- stack_bench:end --> of that file (appended when it has none).
--scale K runs the same stacks at K times the pixels per side (fusionlab.synthetic.make_stack); its results go to
runs/stack_bench_scaleK.json and to the block stack_bench_scaleK by default, never to the scale-1 ones.

    python -m fusionlab stack-bench --count 20 --seed 0 --scale 2 --fusers "one-pass;one-pass exact"
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path


from tqdm import tqdm  # noqa: E402

from fusionlab import stackbench, synthetic  # noqa: E402
from pyfusion.align import INTERPOLATION, INTERPOLATIONS  # noqa: E402
from fusionlab.docblocks import replace_block  # noqa: E402
from pyfusion.io import write_atomic  # noqa: E402

from fusionlab import ROOT
PROG = "stack_bench"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", default=str(ROOT.parent / "shared/data/train/bsds500/val"), help="sharp photos (*.jpg)")
    ap.add_argument("--count", type=int, default=20, help="stacks (default 20)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the depth maps and the camera motion (default 0)")
    ap.add_argument("--start", type=int, default=0, help="first photo in sorted order (default 0)")
    ap.add_argument("--crop", type=int, help="cut the middle CROP x CROP of each photo (default: whole photos)")
    ap.add_argument("--scale", type=int, default=1, metavar="K",
                    help="the same stacks at K times the pixels per side (default 1)")
    ap.add_argument("--fusers", default=";".join(stackbench.FUSERS),
                    help=f"semicolon-separated, from {', '.join(stackbench.FUSERS)} (default all; enfuse only where "
                    "installed)")
    ap.add_argument("--align-interp", choices=tuple(INTERPOLATIONS), default=INTERPOLATION,
                    help=f"resampling of the moved + align condition (pyfusion.align; default {INTERPOLATION})")
    ap.add_argument("--threads", type=int, default=1, help="threads per fusion (default 1)")
    ap.add_argument("--json", type=Path, help="per-stack results (default runs/stack_bench.json; with --scale K "
                    "runs/stack_bench_scaleK.json)")
    ap.add_argument("--doc", type=Path, help="markdown file for the summary (between its stack_bench markers; with "
                    "--scale K its stack_bench_scaleK markers)")
    ap.add_argument("--fresh", action="store_true", help="ignore the stacks already in --json")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    fusers = [f for f in args.fusers.split(";") if f]
    unknown = [f for f in fusers if f not in stackbench.FUSERS]
    if unknown:
        ap.error(f"unknown fuser(s) {', '.join(unknown)}; choose from {', '.join(stackbench.FUSERS)}")
    if args.count < 1 or args.threads < 1 or args.scale < 1:
        ap.error("--count, --threads and --scale must be >= 1")
    args.fusers = fusers
    args.json = args.json or ROOT / f"runs/{scaled_name('stack_bench', args.scale)}.json"
    return args


def scaled_name(name: str, scale: int) -> str:
    """``name`` for scale 1, else ``name_scaleK``: the default results file and document block of a scale."""
    return name if scale == 1 else f"{name}_scale{scale}"


def config_of(args, fusers) -> dict:
    """What the results depend on (a rerun resumes only under the same configuration)."""
    return {"photos": str(args.photos), "count": args.count, "seed": args.seed, "start": args.start, "crop": args.crop,
            "scale": args.scale, "fusers": fusers, "threads": args.threads, "align_interpolation": args.align_interp,
            "stack_frames": list(synthetic.STACK_FRAMES), "stack_steps": list(synthetic.STACK_STEPS),
            "shake": {"shift": synthetic.SHAKE_SHIFT, "rotation": synthetic.SHAKE_ROTATION,
                      "breathing": list(synthetic.SHAKE_BREATHING)}}


def done_rows(path: Path, config: dict, fresh: bool) -> dict:
    """Stack name -> row of an earlier run with the same configuration but for the fusers (a row keeps the
    fusers it has; the missing ones are run by :func:`complete`). A configuration without ``scale`` is of
    scale 1."""
    if fresh or not path.is_file():
        return {}
    old = json.loads(path.read_text(encoding="utf-8"))
    same = {k: v for k, v in {"scale": 1, **old.get("config", {})}.items() if k != "fusers"} == \
        {k: v for k, v in config.items() if k != "fusers"}
    return {r["stack"]: r for r in old.get("stacks", [])} if same else {}


def complete(row, stack, fusers, args) -> dict:
    """``row`` (an earlier run's, or None) with the results of every fuser in ``fusers``: only the missing run."""
    have = row["results"] if row else {}
    missing = [f for f in fusers if f not in have and f not in (row or {}).get("skipped", {})]
    if row and not missing:
        return row
    new = stackbench.score_stack(stack, missing, interpolation=args.align_interp, threads=args.threads)
    if not row:
        return new
    out = {**row, "results": {**have, **new["results"]}, "skipped": {**row.get("skipped", {}), **new["skipped"]}}
    if "true_warp" not in out and "true_warp" in new:
        out["true_warp"] = new["true_warp"]
    return out


def command_line(args) -> str:
    parts = [f"python -m fusionlab stack-bench --count {args.count} --seed {args.seed}"]
    parts += [f"--start {args.start}"] if args.start else []
    parts += [f"--crop {args.crop}"] if args.crop else []
    parts += [f"--scale {args.scale}"] if args.scale != 1 else []
    parts += [f"--fusers '{';'.join(args.fusers)}'"] if args.fusers != list(stackbench.FUSERS) else []
    parts += [f"--align-interp {args.align_interp}"] if args.align_interp != INTERPOLATION else []
    return " ".join(parts)


def main(argv=None) -> int:
    args = parse_args(argv)
    photos = sorted(Path(args.photos).glob("*.jpg"))
    if not photos:
        print(f"{PROG}: error: no photos in {args.photos}", file=sys.stderr)
        return 2
    notes = []
    fusers = list(args.fusers)
    if "enfuse" in fusers and shutil.which("enfuse") is None:
        fusers.remove("enfuse")
        notes.append("enfuse: not run, the `enfuse` program (Enblend-Enfuse) is not installed on this machine")
    config = config_of(args, fusers)
    done = done_rows(args.json, config, args.fresh)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    stacks = synthetic.benchmark_stacks(photos, count=args.count, seed=args.seed, start=args.start, crop=args.crop,
                                        scale=args.scale)
    for stack in tqdm(stacks, total=args.count, desc="stacks", unit="stack", disable=args.no_progress):
        rows.append(complete(done.get(stack.name), stack, fusers, args))
        write_atomic(args.json, json.dumps({"config": config, "stacks": rows}, indent=1) + "\n")
    skipped = {f: why for r in rows for f, why in r["skipped"].items()}
    notes += [f"{f}: skipped, {why}" for f, why in skipped.items()]
    notes.append(f"`align=True` resamples {'bicubically' if args.align_interp == 'cubic' else 'bilinearly'} "
                 f"(`interpolation=\"{args.align_interp}\"`, pyfusion.align)")
    if args.scale != 1:
        shape = sorted({f"{w}x{h}" for h, w in (r["shape"][:2] for r in rows)})
        notes.append(f"scale {args.scale}: the photos enlarged {args.scale} times per side (frames of "
                     f"{', '.join(shape)} px), the depth maps, radius steps and camera shifts with them")
    text = stackbench.summary(rows, command=command_line(args), notes=notes)
    print(text)
    if args.doc:
        replace_block(args.doc, scaled_name("stack_bench", args.scale), text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
