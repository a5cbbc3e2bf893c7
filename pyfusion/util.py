"""Small helpers with one job each: the repository checkout (if any), file hashing, thread counts, available memory."""
from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

__all__ = ["checkout", "sha256_file", "cores", "threads", "available_bytes", "imap_ordered", "progress_frames",
           "THREADS_ENV", "Stopwatch"]


def checkout() -> Path | None:
    """The repository checkout this library runs from (the folder holding ``pyfusion/``, ``pyproject.toml`` and
    ``prototxt/``), or None for an installed copy (a wheel in site-packages)."""
    root = Path(__file__).resolve().parents[1]
    return root if (root / "pyproject.toml").is_file() and (root / "prototxt").is_dir() else None


#: Environment variable with the default number of threads of every backend and filter.
THREADS_ENV = "PYFUSION_THREADS"


def sha256_file(path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cores() -> int:
    """The cores this process may run on (its CPU affinity)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def threads(n: int | None = None) -> int:
    """Threads to use: ``n`` if given, else ``$PYFUSION_THREADS``, else the cores this process may run on."""
    if n is None:
        env = os.environ.get(THREADS_ENV, "").strip()
        n = int(env) if env else cores()
    if int(n) < 1:
        raise ValueError(f"threads must be >= 1, got {n}")
    return int(n)


_thread_count = threads  # for functions whose ``threads`` argument hides it


def imap_ordered(fn, items, *, threads: int | None = None):
    """``fn(item)`` for each item, in order, computed by ``threads`` worker threads (default :func:`threads`).

    The items are taken from ``items`` one at a time in the calling thread, at most ``threads`` ahead of the
    result being consumed, so at most ``threads + 1`` results are held; results come back in the items' order, so
    whatever the caller folds them into does not depend on the thread count. For work that releases the GIL
    (numpy, OpenCV); one thread: a plain generator. An exception is raised where its item's result is due.
    """
    n = _thread_count(threads)
    if n <= 1:
        yield from map(fn, items)
        return
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    it = iter(items)
    pending = deque()
    with ThreadPoolExecutor(max_workers=n) as pool:
        try:
            for item in it:
                pending.append(pool.submit(fn, item))
                if len(pending) > n:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for f in pending:
                f.cancel()


def progress_frames(images, stage: str, progress: bool):
    """``images``, with a progress bar on stderr naming the stage (``stack: STAGE``) and counting the frames when
    ``progress``."""
    if not progress:
        return images
    from tqdm import tqdm

    return tqdm(images, desc=f"stack: {stage}", unit="frame")


def available_bytes() -> int:
    """Memory the process may use: MemAvailable from /proc/meminfo (fallback 4 GiB)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 << 30


def gpu_query(gpu: int, fields: str, *, units: bool = False, timeout: float = 30) -> str | None:
    """``nvidia-smi --query-gpu=FIELDS`` of CUDA device ``gpu`` (CSV, no header; units only with ``units``),
    stripped; None where there is no ``nvidia-smi`` or it fails."""
    import shutil
    import subprocess

    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        fmt = "csv,noheader" if units else "csv,noheader,nounits"
        out = subprocess.run([exe, f"--query-gpu={fields}", f"--format={fmt}", "-i", str(int(gpu))],
                             capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def gpu_free_bytes(gpu: int) -> int | None:
    """Free memory of CUDA device ``gpu`` as ``nvidia-smi`` reports it (bytes); None where it cannot tell."""
    try:
        return int(gpu_query(gpu, "memory.free").split()[0]) << 20
    except (AttributeError, ValueError, IndexError):
        return None


class Stopwatch:
    """``tick(stage)`` adds the seconds since the previous tick (or the start) to ``timings[stage]``."""

    def __init__(self, timings: dict):
        self.timings = timings
        self.last = time.perf_counter()

    def __call__(self, stage: str) -> None:
        now = time.perf_counter()
        self.timings[stage] = self.timings.get(stage, 0.0) + (now - self.last)
        self.last = now
