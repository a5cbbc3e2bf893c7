#!/usr/bin/env python
"""Reproduce the paper's CNN results on the survey's 30 pairs and compare them with the authors' own.

    python tools/reproduce.py --data ../shared/data/mfif --out runs/reproduce --doc docs/reproduction.md

For every pair: fuse with pyfusion (shipped model unless --model, default backend unless --backend), write
NAME_ours.tif under --out, and record PSNR(ours, authors') and the agreement of the per-pixel decision
(pyfusion.reproduce.compare) in --out/results.json. The survey's eight metrics are computed by tools/results.py
(python tools/results.py --methods cnn,dwt,wavelet-cnn --out docs/results_survey.md) or tools/evaluate.py.

--doc FILE writes the per-image table: into an existing FILE only between the marker lines
<!-- reproduce:table:start --> and <!-- reproduce:table:end --> (the rest of the file is kept; an existing FILE
without them is refused, exit status 2), or as a new FILE holding the markers and the table.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pyfusion import fuse
from pyfusion.io import read_image, write_atomic, write_image
from pyfusion.reproduce import compare, survey_pairs


TABLE_START = "<!-- reproduce:table:start -->"
TABLE_END = "<!-- reproduce:table:end -->"


def _marker_lines(text: str):
    """Line indices of the start and end marker lines of ``text``, or None unless there is one of each, in order."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() == TABLE_START]
    ends = [i for i, line in enumerate(lines) if line.strip() == TABLE_END]
    if len(starts) != 1 or len(ends) != 1 or ends[0] < starts[0]:
        return None
    return starts[0], ends[0]


def check_doc(path) -> str | None:
    """Why ``--doc path`` cannot be written (one line), or None: an existing file must have the marker lines."""
    p = Path(path)
    if not p.exists():
        return None
    if not p.is_file():
        return f"--doc {p}: not a file"
    if _marker_lines(p.read_text(encoding="utf-8")) is None:
        return (f"--doc {p}: exists without one '{TABLE_START}' line and one later '{TABLE_END}' line; "
                "refusing to overwrite it (add the markers around its table, or give a new file)")
    return None


def doc_text(path, table: str) -> str:
    """The new text of ``path``: ``table`` (a blank line either side) between the marker lines of the existing file,
    the rest kept as it is, or, for a new file, the markers around ``table``. ``check_doc`` must have passed."""
    p = Path(path)
    block = f"\n{table.rstrip()}\n\n"
    if not p.exists():
        return f"{TABLE_START}\n{block}{TABLE_END}\n"
    lines = p.read_text(encoding="utf-8").splitlines(keepends=True)
    start, end = _marker_lines("".join(lines))
    head = "".join(lines[: start + 1])
    return head + ("" if head.endswith("\n") else "\n") + block + "".join(lines[end:])


def to255(img):
    return img.astype(np.float64) * (255.0 / np.iinfo(img.dtype).max)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/mfif", help="survey data folder (sources/, results/)")
    ap.add_argument("--out", default="runs/reproduce", help="folder for our fused images and results.json")
    ap.add_argument("--doc", help="markdown file for the per-image table: replaced between its marker lines "
                    f"({TABLE_START} / {TABLE_END}), or created; an existing file without them is refused")
    ap.add_argument("--model", help="registered model name or deploy weights file (default: the shipped cnn model)")
    ap.add_argument("--backend", help="inference backend: winograd, onnx or caffe (default: "
                    "pyfusion.backends.default_backend)")
    ap.add_argument("--limit", type=int, default=0, help="only the first N pairs (0 = all)")
    args = ap.parse_args(argv)
    print(f"reproduce: {vars(args)}")
    if args.doc and (why := check_doc(args.doc)):
        print(f"reproduce: error: {why}", file=sys.stderr)
        return 2
    pairs = survey_pairs(args.data)
    if not pairs:
        print(f"reproduce: error: no survey pairs under {args.data}", file=sys.stderr)
        return 2
    if args.limit:
        pairs = pairs[: args.limit]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, pa, pb, pref in tqdm(pairs, desc="reproduce", unit="pair"):
        a, b, ref = read_image(pa), read_image(pb), read_image(pref)
        t0 = time.perf_counter()
        r = fuse([a, b], model=args.model, backend=args.backend)
        dt = time.perf_counter() - t0
        write_image(out / f"{name}_ours.tif", r.fused, force=True)
        row = {"image": name, **compare(to255(a), to255(b), to255(r.fused), to255(ref), r.decision_map),
               "seconds": round(dt, 2)}
        rows.append(row)
        tqdm.write(f"{name}: PSNR {row['psnr_db']:.2f} dB, decision agreement {row['decision_agreement']:.4f}")
    mean = {k: float(np.mean([r[k] for r in rows])) for k in ("psnr_db", "decision_agreement", "recoverable_share")}
    result = {"config": vars(args), "mean": mean, "per_image": rows}
    write_atomic(out / "results.json", json.dumps(result, indent=2) + "\n")
    print(f"reproduce: mean PSNR vs authors {mean['psnr_db']:.2f} dB, "
          f"mean decision agreement {mean['decision_agreement']:.4f} over {len(rows)} pairs")
    if args.doc:
        lines = ["| image | PSNR vs authors (dB) | decision agreement | recoverable pixels | seconds |",
                 "|---|---:|---:|---:|---:|"]
        lines += [f"| {r['image']} | {r['psnr_db']:.2f} | {r['decision_agreement']:.4f} | "
                  f"{r['recoverable_share']:.3f} | {r['seconds']:.1f} |" for r in rows]
        lines.append(f"| **mean** | **{mean['psnr_db']:.2f}** | **{mean['decision_agreement']:.4f}** | "
                     f"{mean['recoverable_share']:.3f} | |")
        if why := check_doc(args.doc):                 # changed during the run
            print(f"reproduce: error: {why}", file=sys.stderr)
            return 2
        Path(args.doc).parent.mkdir(parents=True, exist_ok=True)
        write_atomic(args.doc, doc_text(args.doc, "\n".join(lines) + "\n"))
        print(f"reproduce: table written to {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
