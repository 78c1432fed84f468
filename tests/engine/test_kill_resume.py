"""Crash safety: SIGKILL a headless training process at random moments, then resume it to the end.

After every kill: the database passes ``PRAGMA integrity_check``, every metric row committed before the
kill (read from a separate connection just before it) is still there with its value, and
``metastudio runs`` shows the run as ``interrupted``. ``metastudio resume`` then continues the same
run id and the final curve holds every step 1..N exactly once.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.cli import main

ROOT = Path(__file__).resolve().parents[2]
N_ITER = 1200  # large enough that no process can finish between its kill trigger and the kill
CKPT = 25


def _env() -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _start(db: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "engine.cli", *args, "--db", str(db), "--json"], cwd=ROOT,
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _rows(db: Path) -> dict[tuple[int, str, int], float | None]:
    """Every committed metric row, read through a fresh read-only connection."""
    if not db.exists():
        return {}
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return {(r, n, s): v for r, n, s, v in conn.execute("select run_id, name, step, value from metrics")}
    except sqlite3.OperationalError:  # the schema is not created yet
        return {}
    finally:
        conn.close()


def _max_step(db: Path) -> int:
    steps = [s for (_r, _n, s) in _rows(db)]
    return max(steps) if steps else 0


def _listening_sockets(pid: int) -> list[str]:
    """Inodes of sockets held by ``pid`` that are in the LISTEN state (TCP) or bound (UDP)."""
    try:
        fds = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
    except OSError:  # the process ended meanwhile
        return []
    inodes = {f[8:-1] for f in fds if f.startswith("socket:[")}
    listening = []
    for table in ("tcp", "tcp6", "udp", "udp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            state, inode = parts[3], parts[9]
            if inode in inodes and (table.startswith("udp") or state == "0A"):
                listening.append(f"{table}:{inode}")
    return listening


def _kill_when(proc: subprocess.Popen, db: Path, min_step: int, rng: random.Random, deadline_s: float = 60.0):
    """SIGKILL ``proc`` a random moment after its stored metrics reach ``min_step``; return the rows
    committed just before the kill."""
    t0 = time.monotonic()
    sockets: list[str] = []
    while time.monotonic() - t0 < deadline_s:
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the training process ended before the kill (rc {proc.returncode}): {err[-2000:]}")
        sockets += _listening_sockets(proc.pid)
        if _max_step(db) >= min_step:
            break
        time.sleep(0.02)
    else:
        proc.kill()
        pytest.fail(f"no metrics up to step {min_step} within {deadline_s} s")
    time.sleep(rng.uniform(0.0, 0.25))  # a random moment: mid-iteration, mid-flush or mid-checkpoint
    before = _rows(db)
    if proc.poll() is not None:
        pytest.fail("the training process finished before it could be killed; raise N_ITER")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)  # reap it: a zombie still answers kill(pid, 0)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert sockets == [], f"the training process listened on {sockets}"
    return before


def _check_after_kill(db: Path, before: dict) -> int:
    conn = sqlite3.connect(db, timeout=30)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()
    after = _rows(db)
    missing = [k for k in before if k not in after]
    assert not missing, f"{len(missing)} committed metric rows lost, e.g. {missing[:3]}"
    changed = [k for k, v in before.items() if after[k] != v]
    assert not changed, f"committed values changed: {changed[:3]}"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["runs", "--db", str(db), "--json"]) == 0  # marks runs of dead processes interrupted
    runs = json.loads(out.getvalue().strip().splitlines()[-1])["runs"]
    assert len(runs) == 1 and runs[0]["status"] == "interrupted", runs
    return runs[0]["id"]


def test_sigkill_at_random_moments_then_resume_completes(tmp_path, tiny_bert):
    seed = int(os.environ.get("METASTUDIO_KILL_SEED") or random.randrange(1 << 30))
    print(f"kill moments seed: METASTUDIO_KILL_SEED={seed}")  # shown by pytest when the test fails
    rng = random.Random(seed)
    db = tmp_path / "kill.db"
    train_args = ["train", "--set", f"model={tiny_bert}", "--set", "dataset=demo", "--set", "algorithm=maml",
                  "--set", "inner_steps=1", "--set", "meta_batch_size=2", "--set", f"meta_iterations={N_ITER}",
                  "--set", "val_interval=100", "--set", "val_episodes=5", "--set", f"checkpoint_interval={CKPT}",
                  "--set", "device=cpu"]

    # 1) kill the first process after it stored some metrics
    before = _kill_when(_start(db, *train_args), db, rng.randint(20, 100), rng)
    run_id = _check_after_kill(db, before)

    # 2) kill a resumed process after it went on a little further
    reached = _max_step(db)
    before = _kill_when(_start(db, "resume", str(run_id)), db, reached + rng.randint(5, 60), rng)
    _check_after_kill(db, before)

    # 3) kill a resumed process while it is still starting up (before or while it claims the run)
    proc = _start(db, "resume", str(run_id))
    time.sleep(rng.uniform(0.5, 3.0))
    before = _rows(db)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    proc.communicate()
    _check_after_kill(db, before)

    # 4) resume to the end
    proc = _start(db, "resume", str(run_id))
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-3000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["run_id"] == run_id and summary["status"] == "completed"
    assert summary["iterations"] == N_ITER and summary["stop_reason"] == "max_iterations"
    assert summary["resumed_from"] >= 0 and summary["resumed_from"] % CKPT == 0

    conn = sqlite3.connect(db, timeout=30)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        for name in ("outer_loss", "query_accuracy", "inner_loss_pre"):
            steps = [s for (s,) in conn.execute("select step from metrics where run_id = ? and name = ? "
                                                "order by step", [run_id, name])]
            assert steps == list(range(1, N_ITER + 1)), name  # no gap, no duplicate
        val_steps = [s for (s,) in conn.execute("select step from metrics where run_id = ? and name = "
                                                "'val_accuracy' order by step", [run_id])]
        assert val_steps == [1, *range(100, N_ITER + 1, 100)]
        status, iterations, pid = conn.execute("select status, iterations, pid from runs where id = ?",
                                               [run_id]).fetchone()
        assert (status, iterations, pid) == ("completed", N_ITER, proc.pid)
        kinds = [k for (k,) in conn.execute("select kind from checkpoints where run_id = ? order by step, id",
                                            [run_id])]
        assert kinds[-1] == "final" and kinds.count("final") == 1 and kinds.count("periodic") <= 2
        paths = [Path(p) for (p,) in conn.execute("select path from checkpoints where run_id = ?", [run_id])]
        assert all(p.is_file() for p in paths)
    finally:
        conn.close()
    leftovers = list((tmp_path / "kill-checkpoints").rglob(".tmp-*"))
    assert leftovers == [], leftovers
