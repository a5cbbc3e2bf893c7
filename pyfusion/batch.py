"""Fuse many focus stacks on a Dask cluster (``pyfusion batch`` is its command line).

Stacks
------
:func:`find_stacks`: every sub-folder of ``IN_DIR`` holding image files is one stack (its frames in file name
order, its name the folder's); or, with ``pattern``, the image files directly in ``IN_DIR`` whose name matches
the regular expression (:func:`re.search`), grouped by its first group (frames in file name order).

Running
-------
:func:`run_batch` submits one task per stack (:func:`fuse_stack`: :func:`pyfusion.fuse` on the frame paths,
the fused image written with :func:`pyfusion.io.write_image`, which is atomic) to a ``distributed.LocalCluster``
on this machine, listening on 127.0.0.1 only, with ``workers`` processes of one Dask thread each, and passes
``threads=`` to every fusion so that ``workers * threads`` does not exceed the cores (and, unless given,
``max_memory=`` of each fusion, in GB: its share of half the free memory); or, with ``scheduler``, to
an existing cluster (whose workers must see ``IN_DIR`` and ``OUT_DIR`` at the same paths). Each worker process
loads a net once: pyfusion's backends cache nets per process.

A stack that fails (an unreadable frame, mismatched sizes, a failed alignment, anything raised) is recorded with
its one-line error and the batch goes on. The summary (``OUT_DIR/summary.json`` and ``summary.csv``, both
written atomically after every finished stack) lists every stack: name, frames, size, seconds, status
(``ok``/``failed``), error, output, and ``resumed`` (finished by an earlier run). A stack whose output exists
and whose summary entry says ``ok`` is skipped by the next run, so an interrupted batch resumes where it stopped.
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
import time
from pathlib import Path

from pyfusion.io import RAW_EXTENSIONS
from pyfusion.util import cores

__all__ = ["find_stacks", "fuse_stack", "run_batch", "plan_workers", "IMAGE_EXTS", "SUMMARY_JSON", "SUMMARY_CSV",
           "BatchError"]

#: File extensions read as frames.
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".ppm", ".pgm", ".pnm") + RAW_EXTENSIONS
SUMMARY_JSON = "summary.json"
SUMMARY_CSV = "summary.csv"
FIELDS = ("name", "frames", "width", "height", "seconds", "status", "error", "output", "resumed")


class BatchError(ValueError):
    """A usage error of a batch (no input folder, no stacks, a bad pattern); one line for the user."""


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_EXTS and not p.name.startswith(".")


def find_stacks(in_dir, pattern: str | None = None) -> dict[str, list[Path]]:
    """Stacks under ``in_dir``: name -> frame paths (module docstring). Raises :class:`BatchError`."""
    root = Path(in_dir)
    if not root.exists():
        raise BatchError(f"{root}: no such directory")
    if not root.is_dir():
        raise BatchError(f"{root}: not a directory")
    stacks: dict[str, list[Path]] = {}
    if pattern is not None:
        try:
            rx = re.compile(pattern)
        except re.error as e:
            raise BatchError(f"--pattern {pattern!r}: not a regular expression ({e})") from None
        if rx.groups < 1:
            raise BatchError(f"--pattern {pattern!r}: needs a group, the stack name, e.g. '(.*)_\\d+\\.jpg'")
        for p in sorted(root.iterdir()):
            m = rx.search(p.name) if _is_image(p) else None
            if m and m.group(1):
                stacks.setdefault(m.group(1), []).append(p)
    else:
        for d in sorted(root.iterdir()):
            if d.is_dir() and not d.name.startswith("."):
                frames = sorted(p for p in d.iterdir() if _is_image(p))
                if frames:
                    stacks[d.name] = frames
    if not stacks:
        how = f"no image file name matches --pattern {pattern!r}" if pattern else "no sub-folder with image files"
        raise BatchError(f"{root}: no stacks found ({how})")
    return {name.replace(os.sep, "_"): frames for name, frames in stacks.items()}


def _one_line(e: BaseException) -> str:
    from pyfusion.io import FusionInputError

    msg = " ".join(str(e).split())
    if isinstance(e, FusionInputError):
        return msg or type(e).__name__
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


def fuse_stack(name: str, frames, output, method: str = "cnn", align=False, options: dict | None = None) -> dict:
    """Fuse one stack and write it (atomically, replacing an older file); never raises: returns its record."""
    import numpy as np

    import pyfusion
    from pyfusion.io import write_image

    t0 = time.perf_counter()
    rec = {"name": name, "frames": len(frames), "width": None, "height": None, "seconds": None, "status": "failed",
           "error": "", "output": str(output), "resumed": False}
    try:
        result = pyfusion.fuse([str(f) for f in frames], method=method, align=align, **(options or {}))
        fused = np.asarray(result.fused)
        rec["height"], rec["width"] = int(fused.shape[0]), int(fused.shape[1])
        write_image(output, fused, force=True)
        rec["status"] = "ok"
        if result.alignment is not None and result.alignment.skipped:
            rec["error"] = "alignment skipped " + "; ".join(f"{k}: {v}" for k, v in result.alignment.skipped.items())
            rec["frames"] = len(result.alignment.names)
    except Exception as e:  # noqa: BLE001 - one stack's failure is recorded, the batch goes on
        rec["error"] = _one_line(e)
    rec["seconds"] = round(time.perf_counter() - t0, 3)
    return rec


def plan_workers(cores: int, threads: int | None = None, workers: int | None = None) -> tuple[int, int]:
    """``(workers, threads)`` for a local cluster with ``workers * threads <= cores`` (at least 1 x 1).

    Default: one thread per fusion and one worker per core; ``threads`` alone: ``cores // threads`` workers.
    """
    cores = max(1, int(cores))
    if threads is None and workers is None:
        return cores, 1
    if threads is None:
        workers = max(1, min(int(workers), cores))
        return workers, max(1, cores // workers)
    threads = max(1, min(int(threads), cores))
    if workers is None:
        return max(1, cores // threads), threads
    workers = max(1, int(workers))
    if workers * threads > cores:
        raise BatchError(f"{workers} workers x {threads} threads exceeds the {cores} cores")
    return workers, threads


def _load_summary(out_dir: Path) -> dict[str, dict]:
    path = out_dir / SUMMARY_JSON
    try:
        data = json.loads(path.read_text())
        return {r["name"]: r for r in data.get("stacks", []) if isinstance(r, dict) and "name" in r}
    except (OSError, ValueError, AttributeError, TypeError):
        return {}


def _write_summary(out_dir: Path, records: dict[str, dict], meta: dict) -> None:
    from pyfusion.io import write_atomic

    rows = [records[k] for k in sorted(records)]
    write_atomic(out_dir / SUMMARY_JSON, json.dumps({**meta, "stacks": rows}, indent=1) + "\n")
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=FIELDS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in FIELDS})
    write_atomic(out_dir / SUMMARY_CSV, buf.getvalue())


def run_batch(in_dir, out_dir, *, method: str = "cnn", align=False, options: dict | None = None,
              pattern: str | None = None, scheduler: str | None = None, workers: int | None = None,
              threads: int | None = None, ext: str = ".png", force: bool = False, progress: bool = True) -> list:
    """Fuse every stack of ``in_dir`` into ``out_dir/<name><ext>``; returns the summary records (module docstring).

    ``options`` are the method's keyword options (``model``, ``backend``, ``max_memory``, ...; ``threads`` is
    set here). ``align`` as for :func:`pyfusion.fuse`. ``force`` re-fuses finished stacks. Raises
    :class:`BatchError` for usage errors; a stack's failure is only recorded.
    """
    from pyfusion.fusion import METHODS, method_takes

    if method not in METHODS:
        raise BatchError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    stacks = find_stacks(in_dir, pattern)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise BatchError(f"{out}: exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    ext = ext if ext.startswith(".") else f".{ext}"
    from pyfusion.io import _WRITE_DTYPES

    if ext.lower() not in _WRITE_DTYPES:
        raise BatchError(f"--ext {ext}: unsupported output format (use one of {', '.join(sorted(_WRITE_DTYPES))})")

    if scheduler is None:
        n_workers, n_threads = plan_workers(cores(), threads, workers)
    else:
        n_workers, n_threads = None, threads
    opts = dict(options or {})
    takes = method_takes(method)
    if n_threads is not None and "threads" in takes:
        opts["threads"] = n_threads
    if scheduler is None and "max_memory" in takes and opts.get("max_memory") is None:
        # the workers fuse at once: each gets its share of half the free memory (at most the usual budget)
        from pyfusion.tiling import default_max_bytes
        from pyfusion.util import available_bytes

        opts["max_memory"] = min(default_max_bytes(), 0.5 * available_bytes() / n_workers) / 2**30  # GB
    if align:
        align = dict(align) if isinstance(align, dict) else {}
        if n_threads is not None:
            align.setdefault("threads", n_threads)

    previous = {} if force else _load_summary(out)
    records: dict[str, dict] = {}
    todo = []
    for name, frames in stacks.items():
        target = out / f"{name}{ext}"
        old = previous.get(name)
        if old and old.get("status") == "ok" and target.is_file():
            records[name] = {**old, "resumed": True}
        else:
            todo.append((name, frames, target))
    meta = {"in_dir": str(in_dir), "method": method, "align": align or False,
            "options": {k: v for k, v in opts.items() if isinstance(v, (int, float, str, bool, type(None)))},
            "workers": n_workers, "threads": n_threads, "scheduler": scheduler or "local"}
    _write_summary(out, records, meta)
    if todo:
        _run_on_dask(todo, records, out, meta, method=method, align=align, opts=opts, scheduler=scheduler,
                     n_workers=n_workers, progress=progress)
    return [records[k] for k in sorted(records)]


def _run_on_dask(todo, records, out, meta, *, method, align, opts, scheduler, n_workers, progress):
    from distributed import Client, LocalCluster, as_completed
    from tqdm import tqdm

    cluster = None
    if scheduler is None:
        # host: scheduler, workers and nannies on the loopback only; the scheduler's HTTP server (health and
        # metrics routes, no dashboard) on a free loopback port instead of 8787 on every interface
        cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                               dashboard_address=None, scheduler_kwargs={"dashboard_address": "127.0.0.1:0"})
        client = Client(cluster)
    else:
        client = Client(scheduler, timeout="30s")
    try:
        futures = {}
        for name, frames, target in todo:
            f = client.submit(fuse_stack, name, [str(p) for p in frames], str(target), method, align, opts,
                              pure=False, key=f"fuse-{name}-{time.time_ns()}")
            futures[f] = (name, frames, target)
        with tqdm(total=len(futures), desc="stacks", unit="stack", disable=not progress) as bar:
            for f in as_completed(futures):
                name, frames, target = futures[f]
                try:
                    rec = f.result()
                except Exception as e:  # noqa: BLE001 - a lost worker, an unpicklable result, ...
                    rec = {"name": name, "frames": len(frames), "width": None, "height": None, "seconds": None,
                           "status": "failed", "error": _one_line(e), "output": str(target), "resumed": False}
                records[name] = rec
                _write_summary(out, records, meta)
                bar.set_postfix_str(f"{name}: {rec['status']}")
                bar.update(1)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
