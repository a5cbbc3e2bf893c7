#!/usr/bin/env python
"""Time the deploy twin and training on this machine's CPU and, where there is one, its CUDA GPU.

    python -m fusionlab gpu-check --out runs/gpu_check [--gpu 0] [--caffe-tool build/caffe-cuda/src/build/tools/caffe]
    python -m fusionlab gpu-check --out runs/gpu_check --doc docs/benchmarks_gpu.md --block cpu   # a CPU machine

Rows (one fresh measurement each, seconds of wall clock; the first call of each backend and size is a warm-up):
score maps of a 520x520 and a 4000x3000 pair through Caffe (the deploy twin and its folded head, tiled to the memory
budget and under Caffe's INT_MAX per blob), winograd (CPU) and torch (fp32, tf32, fp16; GPU), with max |Δscore| against winograd;
training examples/s of the paper's solver (batch 128, the train_val net on random patch pairs) through pycaffe,
else the `caffe time` tool (forward + backward, no update). Writes OUT/figures.json and the markdown table
OUT/table.md; with --doc, the table goes between the markers ``<!-- gpu-check-BLOCK:start/end -->`` of that file.
"""
import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from pyfusion import models, net
from fusionlab.docblocks import replace_block
from pyfusion.io import write_atomic
from pyfusion.util import gpu_query

SIZES = {"520x520": (520, 520), "4000x3000": (3000, 4000)}


def test_pair(h: int, w: int, seed: int = 0):
    """A deterministic pair: smooth random texture, sharp in A on the left half and in B on the right."""
    import cv2

    rng = np.random.default_rng(seed)
    img = cv2.resize(rng.random((h // 4 + 1, w // 4 + 1), dtype=np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    img += 0.2 * rng.random((h, w), dtype=np.float32)
    blur = cv2.GaussianBlur(img, (0, 0), 2.0)
    a, b = img.copy(), blur.copy()
    a[:, w // 2:], b[:, w // 2:] = blur[:, w // 2:], img[:, w // 2:]
    return a, b


def _time_scores(a, b, **kw):
    t = time.perf_counter()
    s = net.score_map(a, b, **kw)
    return time.perf_counter() - t, s


def score_rows(gpu, sizes) -> list[dict]:
    """Score-map rows: winograd (CPU) as the reference; Caffe's twin and folded head (CPU at 520 only; GPU);
    torch fp32 (CPU at 520 only) or fp32/tf32/fp16 (GPU)."""
    from pyfusion.backends import caffe as caffe_backend, get

    torch_be = get("torch")
    runs = [("winograd", None, {})]  # (backend, gpu, environment)
    if caffe_backend.available():
        devices = [None] + ([gpu] if gpu is not None and caffe_backend.has_cuda()
                            and caffe_backend.device_count() > gpu else [])
        runs += [("caffe", d, {caffe_backend.HEAD_ENV: h}) for d in devices for h in caffe_backend.HEADS]
    if torch_be.available():
        precisions = ("fp32", "tf32", "fp16") if gpu is not None and torch_be.has_cuda() else ("fp32",)
        runs += [("torch", gpu if len(precisions) > 1 else None, {torch_be.PRECISION_ENV: p}) for p in precisions]
    rows, warm = [], test_pair(64, 64)
    for label in sizes:
        a, b = test_pair(*SIZES[label])
        ref = None
        for backend, dev, env in runs:
            if backend != "winograd" and dev is None and label != "520x520":
                continue  # Caffe's twin on a CPU at 4000x3000: ~15 min on 2 cores (it scales with the area)
            os.environ.update(env)
            net.score_map(*warm, backend=backend, gpu=dev)
            sec, s = _time_scores(a, b, backend=backend, gpu=dev)
            for k in env:
                os.environ.pop(k)
            ref = s if backend == "winograd" else ref
            variant = "".join(f" {v}" for v in env.values())
            rows.append({"what": f"score map, {backend}{variant}", "size": label,
                         "device": "cpu" if dev is None else f"gpu{dev}", "seconds": round(sec, 4),
                         "max_abs_diff": None if s is ref else float(np.abs(s - ref).max())})
            print(f"gpu_check: {rows[-1]}", flush=True)
    return rows


def _random_lists(root: Path, m: models.Model, n: int = 1024):
    """train/val HDF5 lists of ``n`` random patch pairs of model ``m`` (timing only needs the shapes)."""
    import h5py

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        d = root / split
        d.mkdir(parents=True, exist_ok=True)
        with h5py.File(d / "0.h5", "w") as h:
            h[m.data_top] = rng.random((n, 2 * m.in_channels, m.patch, m.patch), dtype=np.float32)
            h["label"] = rng.integers(0, 2, n).astype(np.float32)
        (d / "list.txt").write_text(str(d / "0.h5") + "\n")
    return str(root / "train" / "list.txt"), str(root / "val" / "list.txt")


def train_rows(gpu, caffe_tool, *, iters: int = 40) -> list[dict]:
    """Training examples/s at batch 128 on the CPU and (given ``gpu``) the GPU: pycaffe's solver.step where
    pycaffe imports (forward, backward and update), else ``caffe time`` (forward and backward)."""
    from pyfusion.backends import caffe as caffe_backend
    from fusionlab.train import TrainConfig, write_run_files

    rows = []
    devices = [None] + ([gpu] if gpu is not None else [])
    with tempfile.TemporaryDirectory(prefix="gpu_check.") as tmp:
        tmp = Path(tmp)
        train_list, val_list = _random_lists(tmp / "data", models.get("cnn"))
        for dev in devices:
            if caffe_backend.available() and dev is not None and not caffe_backend.has_cuda():
                continue  # a CPU-only pycaffe: no GPU to time
            cfg = TrainConfig(train_list=train_list, val_list=val_list, gpu=-1 if dev is None else dev)
            run = tmp / f"run{dev}"
            run.mkdir()
            solver_file = write_run_files(run, cfg, cfg.base_lr)
            n = iters if dev is not None else max(4, iters // 8)
            if caffe_backend.available():
                import caffe

                caffe_backend.use(dev)
                solver = caffe.SGDSolver(str(solver_file))
                solver.step(2)
                t = time.perf_counter()
                solver.step(n)
                sec, how = (time.perf_counter() - t) / n, "pycaffe SGDSolver.step"
            elif caffe_tool:
                cmd = [caffe_tool, "time", "-model", str(run / "train_val.prototxt"), "-iterations", str(n)]
                out = subprocess.run(cmd + (["-gpu", str(dev)] if dev is not None else []), capture_output=True,
                                     text=True, env={**os.environ, "GLOG_minloglevel": "0"})
                found = re.search(r"Average Forward-Backward: ([\d.]+) ms", out.stderr)
                if not found:
                    print(f"gpu_check: caffe time failed: {out.stderr[-800:]}", file=sys.stderr)
                    continue
                sec, how = float(found.group(1)) / 1000, "caffe time (forward+backward)"
            else:
                continue
            rows.append({"what": f"training, batch {cfg.batch} ({how})", "size": f"{cfg.batch} pairs of 16x16",
                         "device": "cpu" if dev is None else f"gpu{dev}", "seconds": round(sec, 4),
                         "examples_per_s": round(cfg.batch / sec, 1)})
            print(f"gpu_check: {rows[-1]}", flush=True)
    return rows


def machine(gpu) -> dict:
    info = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpu": platform.processor() or
            platform.machine(), "cores": os.cpu_count(), "python": platform.python_version()}
    try:
        info["cpu"] = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    if gpu is not None:
        q = gpu_query(gpu, "name,memory.total,driver_version", units=True, timeout=60)
        info["gpu"] = q or ("none found" if shutil.which("nvidia-smi") else "none found (no nvidia-smi)")
    return info


def table(fig: dict) -> str:
    m = fig["machine"]
    lines = [f"* Machine: {m['cpu']}, {m['cores']} cores" + (f"; GPU {m['gpu']}" if m.get("gpu") else "")
             + f"; Python {m['python']}; {m['date']}",
             "* Command: `" + fig["command"] + "`", "",
             "| what | size | device | seconds | examples/s | max \\|Δscore\\| vs winograd |", "|---|---|---|---:|---:|---:|"]
    for r in fig["rows"]:
        d = r.get("max_abs_diff")
        lines.append(f"| {r['what']} | {r['size']} | {r['device']} | {r['seconds']:.4g} | "
                     f"{r.get('examples_per_s', '')} | {'' if d is None else f'{d:.1e}'} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="folder for figures.json and table.md")
    ap.add_argument("--gpu", type=int, help="CUDA device to time besides the CPU")
    ap.add_argument("--sizes", default=",".join(SIZES), help=f"comma-separated, from {', '.join(SIZES)}")
    ap.add_argument("--caffe-tool", help="the `caffe` binary, for training times where pycaffe is missing")
    ap.add_argument("--no-train", action="store_true", help="skip the training rows")
    ap.add_argument("--doc", help="markdown file to put the table in (between gpu-check-BLOCK markers)")
    ap.add_argument("--block", default="gpu", help="marker name suffix in --doc (default gpu)")
    args = ap.parse_args(argv)
    sizes = [s for s in args.sizes.split(",") if s]
    bad = [s for s in sizes if s not in SIZES]
    if bad:
        ap.error(f"unknown size(s) {bad}; choose from {', '.join(SIZES)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = score_rows(args.gpu, sizes)
    if not args.no_train:
        rows += train_rows(args.gpu, args.caffe_tool)
    fig = {"machine": machine(args.gpu), "rows": rows,
           "command": "python -m fusionlab gpu-check " + " ".join(argv if argv is not None else sys.argv[1:])}
    write_atomic(out / "figures.json", json.dumps(fig, indent=2) + "\n")
    text = table(fig)
    write_atomic(out / "table.md", text + "\n")
    if args.doc:
        replace_block(args.doc, f"gpu-check-{args.block}", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
