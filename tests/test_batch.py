"""Batches of stacks on Dask (pyfusion.batch, ``pyfusion batch``): failures recorded, resume, an external scheduler."""
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from pyfusion.batch import BatchError, find_stacks, plan_workers
from pyfusion.cli import main

ROOT = Path(__file__).resolve().parents[1]


def batch(args) -> int:
    return main(["batch", *args])

N_STACKS = 10
BROKEN = "stack_07"


def make_stacks(root: Path, n=N_STACKS, frames=3, size=64):
    """``n`` stacks of ``frames`` 64x64 PNGs (a textured image, each frame sharp in one vertical band);
    BROKEN's last frame truncated."""
    rng = np.random.default_rng(0)
    for k in range(n):
        sharp = cv2.GaussianBlur(rng.integers(0, 256, (size, size, 3)).astype(np.float64), (0, 0), 1.0)
        blur = cv2.GaussianBlur(sharp, (0, 0), 3.0)
        d = root / f"stack_{k:02d}"
        d.mkdir(parents=True)
        for j in range(frames):
            img = blur.copy()
            band = slice(j * size // frames, (j + 1) * size // frames)
            img[:, band] = sharp[:, band]
            cv2.imwrite(str(d / f"frame_{j}.png"), np.clip(img, 0, 255).astype(np.uint8))
    bad = root / BROKEN / f"frame_{frames - 1}.png"
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    return root


def read_summary(out: Path):
    data = json.loads((out / "summary.json").read_text())
    rows = {r["name"]: r for r in data["stacks"]}
    with open(out / "summary.csv", newline="") as f:
        csv_rows = {r["name"]: r for r in csv.DictReader(f)}
    assert set(csv_rows) == set(rows)
    return rows, csv_rows


def check_first_run(out: Path):
    rows, csv_rows = read_summary(out)
    assert len(rows) == N_STACKS
    ok = [n for n, r in rows.items() if r["status"] == "ok"]
    assert len(ok) == N_STACKS - 1 and BROKEN not in ok
    bad = rows[BROKEN]
    assert bad["status"] == "failed" and "truncated" in bad["error"] and "\n" not in bad["error"]
    for n in ok:
        r = rows[n]
        assert (r["frames"], r["width"], r["height"]) == (3, 64, 64) and r["seconds"] >= 0 and not r["resumed"]
        assert (out / f"{n}.png").is_file()
        assert csv_rows[n]["status"] == "ok" and csv_rows[n]["width"] == "64"
    assert not (out / f"{BROKEN}.png").exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]   # no temporary files left


def test_batch_records_the_broken_stack_and_resumes(tmp_path, capsys):
    src = make_stacks(tmp_path / "in")
    out = tmp_path / "out"
    args = [str(src), str(out), "--method", "dwt", "--workers", "2", "--no-progress"]
    assert batch(args) == 1
    check_first_run(out)
    assert f"failed {BROKEN}" in capsys.readouterr().err
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}
    # second run: the 9 finished stacks are skipped, the broken one is tried (and fails) again
    assert batch(args) == 1
    rows, _ = read_summary(out)
    assert sorted(n for n, r in rows.items() if r["resumed"]) == sorted(n for n in rows if n != BROKEN)
    assert rows[BROKEN]["status"] == "failed" and not rows[BROKEN]["resumed"]
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")} == mtimes
    assert "0 fused, 9 already done, 1 failed" in capsys.readouterr().err
    # a stack whose output went missing (an interrupted run) is fused again; the others stay done
    (out / "stack_03.png").unlink()
    assert batch(args) == 1
    rows, _ = read_summary(out)
    assert rows["stack_03"]["status"] == "ok" and not rows["stack_03"]["resumed"]
    assert (out / "stack_03.png").is_file()
    assert "1 fused, 8 already done, 1 failed" in capsys.readouterr().err


def test_pattern_groups_files(tmp_path):
    for name in ("a_1.png", "a_2.png", "b_1.png", "b_2.png", "notes.txt", "c.png"):
        (tmp_path / name).write_bytes(b"x")
    stacks = find_stacks(tmp_path, r"^(.+)_\d+\.png$")
    assert {k: [p.name for p in v] for k, v in stacks.items()} == {"a": ["a_1.png", "a_2.png"],
                                                                   "b": ["b_1.png", "b_2.png"]}
    with pytest.raises(BatchError, match="needs a group"):
        find_stacks(tmp_path, r"\.png$")


@pytest.mark.parametrize("make, what", [(None, "no such directory"), ("empty", "no stacks found")])
def test_usage_errors_exit_2(tmp_path, capsys, make, what):
    src = tmp_path / "in"
    if make == "empty":
        src.mkdir()
    assert batch([str(src), str(tmp_path / "out"), "--method", "dwt", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pyfusion batch: error: ") and what in err and err.count("\n") == 1


def test_an_option_the_method_does_not_take_exits_2(tmp_path, capsys):
    args = [str(tmp_path / "in"), str(tmp_path / "out"), "--method", "dwt", "--no-progress"]
    assert batch(args + ["--model", "cnn"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pyfusion batch: error: method 'dwt' takes no option 'model'; its options: ") and \
        err.count("\n") == 1
    assert batch(args + ["--levels", "x"]) == 2
    assert "--levels 'x': expected int" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_workers_times_threads_never_exceed_cores():
    assert plan_workers(2) == (2, 1)
    assert plan_workers(8, threads=3) == (2, 3)
    assert plan_workers(8, workers=3) == (3, 2)
    assert plan_workers(2, threads=4) == (1, 2)
    with pytest.raises(BatchError, match="exceeds"):
        plan_workers(2, threads=2, workers=2)


def _listening(pids):
    """Listening TCP addresses of these processes and their children (psutil, a dependency of distributed)."""
    import psutil

    procs = [psutil.Process(pid) for pid in pids]
    procs += [c for p in list(procs) for c in p.children(recursive=True)]
    return sorted({f"{c.laddr.ip}:{c.laddr.port}" for p in procs for c in p.net_connections("tcp")
                   if c.status == psutil.CONN_LISTEN})


def _start(cmd, log):
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.mark.slow
def test_batch_through_an_external_scheduler(tmp_path):
    """`dask scheduler` and `dask worker` started here, on 127.0.0.1 only, and stopped at the end."""
    from distributed import Client

    dask = str(Path(sys.executable).with_name("dask"))
    src = make_stacks(tmp_path / "in")
    out = tmp_path / "out"
    sched_file = tmp_path / "scheduler.json"
    procs = []
    with open(tmp_path / "dask.log", "wb") as log:
        try:
            procs.append(_start([dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                 "--dashboard-address", "127.0.0.1:0", "--scheduler-file", str(sched_file)], log))
            deadline = time.monotonic() + 60
            while not sched_file.is_file() and time.monotonic() < deadline:
                assert procs[0].poll() is None, (tmp_path / "dask.log").read_text()
                time.sleep(0.2)
            address = json.loads(sched_file.read_text())["address"]
            assert address.startswith("tcp://127.0.0.1:")
            procs.append(_start([dask, "worker", "--scheduler-file", str(sched_file), "--host", "127.0.0.1",
                                 "--nworkers", "1", "--nthreads", "1", "--no-dashboard",
                                 "--dashboard-address", "127.0.0.1:0"], log))
            with Client(address, timeout="30s") as client:
                client.wait_for_workers(1, timeout=90)
            # everything the cluster listens on is on the loopback
            listening = _listening([p.pid for p in procs])
            assert len(listening) >= 3 and all(a.startswith("127.0.0.1:") for a in listening), listening
            print("listening:", listening)
            args = [str(src), str(out), "--method", "dwt", "--scheduler", address, "--no-progress"]
            assert batch(args) == 1
            check_first_run(out)
            assert json.loads((out / "summary.json").read_text())["scheduler"] == address
            assert batch(args) == 1
            rows, _ = read_summary(out)
            assert sum(r["resumed"] for r in rows.values()) == N_STACKS - 1
        finally:
            for p in reversed(procs):
                _stop(p)
