"""Faults during a run: divergence, out of memory, disk full, an unwritable database, any exception,
closing mid-run, two runs at once, and a GUI-style reader while another process writes.

Each test feeds the fault and checks the message the user gets and that no committed row was lost.
"""

from __future__ import annotations

import errno
import gc
import math
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import weakref
from pathlib import Path

import pytest
import torch

from engine import ExperimentConfig, RunStore, TrainingSession
from engine.algorithms.maml import MAML
from engine.cli import main
from engine.errors import DivergenceError, MemoryExhaustedError, StoreError
from engine.training import checkpoint as checkpoint_mod
from engine.training.checkpoint import atomic_folder, save_tensors_atomic
from engine.training.resume import load_resume_checkpoint

ROOT = Path(__file__).resolve().parents[2]


def small(tiny_bert, **kw) -> ExperimentConfig:
    base = dict(model=str(tiny_bert), dataset="demo", algorithm="maml", inner_steps=1, meta_batch_size=2,
                meta_iterations=12, val_interval=6, val_episodes=3, checkpoint_interval=5, device="cpu")
    base.update(kw)
    return ExperimentConfig(**base)


def patch_step(monkeypatch, call: int, action):
    """Run ``action(metrics)`` on the metrics of MAML.outer_step's ``call``-th call (1-based), or raise
    ``action()`` when it is an exception class or factory (a fresh exception, as a real fault would be)."""
    orig = MAML.outer_step
    count = {"n": 0}

    def step(self, tasks):
        count["n"] += 1
        if count["n"] == call and getattr(action, "raises", False):
            raise action()
        m = orig(self, tasks)
        if count["n"] == call:
            action(m)
        return m

    monkeypatch.setattr(MAML, "outer_step", step)


def steps(db, run_id, name="outer_loss") -> list[int]:
    return [s for s, _v, _t in RunStore(db).get_metrics(run_id, [name]).get(name, [])]


def test_divergence_stops_as_failed_and_keeps_the_bad_point(tiny_bert, db_path, monkeypatch):
    patch_step(monkeypatch, 3, lambda m: setattr(m, "outer_loss", math.inf))
    session = TrainingSession(small(tiny_bert, checkpoint_interval=3), db_path)
    with pytest.raises(DivergenceError) as e:
        list(session.run())
    assert str(e.value).startswith("inner_lr: diverged at iteration 3 (inner lr too high?): outer_loss = inf.")
    row = RunStore(db_path).get_run(session.run_id)
    assert row["status"] == "failed" and row["stop_reason"] == "diverged"
    assert "diverged at iteration 3 (inner lr too high?)" in row["error"]
    points = RunStore(db_path).get_metrics(session.run_id, ["outer_loss"])["outer_loss"]
    assert [s for s, _v, _t in points] == [1, 2, 3]  # the last finite point and the bad one stay for the plot
    assert math.isfinite(points[1][1]) and points[2][1] == math.inf
    assert RunStore(db_path).list_checkpoints(session.run_id) == []  # no checkpoint of a diverged state


def test_out_of_memory_fails_with_advice_frees_memory_and_the_next_run_works(tiny_bert, db_path, monkeypatch):
    def oom():
        return torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    oom.raises = True
    patch_step(monkeypatch, 3, oom)
    session = TrainingSession(small(tiny_bert), db_path)
    records = []
    with pytest.raises(MemoryExhaustedError) as e:
        for rec in session.run():
            records.append(rec)
            model_ref = weakref.ref(session.trainer.model)
    del rec
    text = str(e.value)
    assert text.startswith("out of memory at iteration 3: CUDA out of memory. Tried to allocate 20.00 GiB.")
    for advice in ("fewer inner_steps", "first-order algorithm", "smaller meta_batch_size", "lora_maml"):
        assert advice in text
    assert e.value.__context__ is None  # the failed frames (holding the tensors) are not kept alive
    row = RunStore(db_path).get_run(session.run_id)
    assert row["status"] == "failed" and "out of memory at iteration 3" in row["error"]
    assert "smaller meta_batch_size" in row["error"] and "OutOfMemoryError" in row["traceback"]
    assert steps(db_path, session.run_id) == [1, 2]
    gc.collect()
    assert session.trainer is None and model_ref() is None  # the model's memory was released

    monkeypatch.undo()
    again = TrainingSession(small(tiny_bert, meta_iterations=4), db_path)  # same process, no restart
    assert [r.step for r in again.run()] == [1, 2, 3, 4] and again.status == "completed"


def test_out_of_memory_while_preparing_creates_no_run(tiny_bert, db_path, monkeypatch, capsys):
    from engine.training import trainer as trainer_mod

    def no_memory(*_a, **_k):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: not enough memory: "
                           "you tried to allocate 91268055040 bytes.")

    monkeypatch.setattr(trainer_mod, "FeatureSource", no_memory)
    rc = main(["train", "--db", str(db_path), "--json", "--set", f"model={tiny_bert}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith("metastudio: error: out of memory while preparing the run: [enforce fail")
    assert "smaller meta_batch_size" in err[0]
    assert RunStore(db_path).list_runs() == []


@pytest.mark.parametrize("where", ["write", "rename"])
def test_disk_full_while_checkpointing_leaves_no_partial_file(tiny_bert, db_path, monkeypatch, where):
    calls = {"n": 0}
    full = OSError(errno.ENOSPC, "No space left on device")
    if where == "write":
        orig = checkpoint_mod.save_file

        def save_file(data, path, metadata=None):
            calls["n"] += 1
            if calls["n"] == 2:
                Path(path).write_bytes(b"\0" * 100)  # a partly written temp file, then the disk is full
                raise full
            return orig(data, path, metadata=metadata)

        monkeypatch.setattr(checkpoint_mod, "save_file", save_file)
    else:
        orig_replace = os.replace

        def replace(src, dst):
            calls["n"] += 1
            if calls["n"] == 2:
                raise full
            return orig_replace(src, dst)

        monkeypatch.setattr(checkpoint_mod.os, "replace", replace)
    session = TrainingSession(small(tiny_bert), db_path)
    with pytest.raises(StoreError) as e:
        list(session.run())
    monkeypatch.undo()
    folder = db_path.parent / "runs-checkpoints" / f"run-{session.run_id}"
    assert str(e.value) == (f"checkpoint: cannot write the checkpoint '{folder / 'resume-00000010.safetensors'}': "
                            "No space left on device. Free disk space or make the database folder writable; the "
                            "last complete checkpoint is kept.")
    assert sorted(p.name for p in folder.iterdir()) == ["resume-00000005.safetensors"]  # no temp, no torn file
    assert load_resume_checkpoint(folder / "resume-00000005.safetensors")[1]["step"] == 5
    store = RunStore(db_path)
    row = store.get_run(session.run_id)
    assert row["status"] == "failed" and "No space left on device" in row["error"]
    assert steps(db_path, session.run_id) == list(range(1, 11))  # committed before the checkpoint write
    assert [c["step"] for c in store.list_checkpoints(session.run_id)] == [5]

    resumed = TrainingSession.resume(session.run_id, db_path)  # space is back: go on from iteration 5
    assert [r.step for r in resumed.run()] == list(range(6, 13)) and resumed.status == "completed"


def test_database_full_mid_run_keeps_committed_rows(tiny_bert, db_path, monkeypatch):
    orig = RunStore.add_metrics
    calls = {"n": 0}

    def add_metrics(self, rows):
        calls["n"] += 1
        if calls["n"] >= 3:  # from the third batch on, the disk is full
            with self._write():
                raise sqlite3.OperationalError("database or disk is full")
        return orig(self, rows)

    monkeypatch.setattr(RunStore, "add_metrics", add_metrics)
    session = TrainingSession(small(tiny_bert, meta_iterations=40, checkpoint_interval=4), db_path,
                              flush_interval_s=0.0)
    with pytest.raises(StoreError) as e:
        list(session.run())
    monkeypatch.undo()
    assert str(e.value) == (f"db: cannot write to '{db_path}': database or disk is full. Free disk space or pick "
                            "a writable database location.")
    assert steps(db_path, session.run_id) == [1, 2]  # the two committed batches
    row = RunStore(db_path).get_run(session.run_id)  # (the run row itself could still be written here)
    assert row["status"] == "failed" and "database or disk is full" in row["error"]
    conn = sqlite3.connect(db_path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()


def test_read_only_database_refuses_before_training(tiny_bert, tmp_path, capsys, monkeypatch):
    db = tmp_path / "ro.db"
    RunStore(db).close()  # an existing database ...
    from engine.store import runstore

    real_connect = sqlite3.connect
    monkeypatch.setattr(runstore.sqlite3, "connect",  # ... that this process may only read
                        lambda path, timeout=5.0: real_connect(f"file:{path}?mode=ro", uri=True, timeout=timeout))
    rc = main(["train", "--db", str(db), "--json", "--set", f"model={tiny_bert}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert err[0] == (f"metastudio: error: db: cannot write to '{db}': attempt to write a readonly database. "
                      "Free disk space or pick a writable database location.")
    monkeypatch.undo()
    assert RunStore(db).list_runs() == []


def test_closing_mid_run_stores_stopped_and_resume_goes_on(tiny_bert, db_path):
    session = TrainingSession(small(tiny_bert, checkpoint_interval=2), db_path)
    gen = session.run()
    for _ in range(5):
        next(gen)
    gen.close()  # the window closed while the loop was between two records
    row = RunStore(db_path).get_run(session.run_id)
    assert row["status"] == "stopped" and row["iterations"] == 5 and steps(db_path, session.run_id) == [1, 2, 3, 4, 5]
    resumed = TrainingSession.resume(session.run_id, db_path)
    assert [r.step for r in resumed.run()][0] == 5 and resumed.resumed_from == 4
    assert steps(db_path, session.run_id) == list(range(1, 13))


def test_two_runs_at_once_share_the_database(tiny_bert, db_path):
    results: dict[int, TrainingSession] = {}

    def train(seed: int) -> None:
        s = TrainingSession(small(tiny_bert, algorithm="protonet", inner_steps=0, seed=seed, meta_iterations=15),
                            db_path, flush_interval_s=0.0)
        list(s.run())
        results[seed] = s

    threads = [threading.Thread(target=train, args=(seed,)) for seed in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [1, 2]
    for s in results.values():
        assert s.status == "completed" and steps(db_path, s.run_id) == list(range(1, 16))
    assert results[1].run_id != results[2].run_id


WRITER = textwrap.dedent("""
    import sys, time
    from engine.store import RunStore
    store = RunStore(sys.argv[1])
    rid = store.create_run({"algorithm": "maml"}, "writer")
    store.update_run(rid, status="running")
    print(rid, flush=True)
    step, t0 = 0, time.monotonic()
    while time.monotonic() - t0 < float(sys.argv[2]):
        rows = [(rid, step + i, name, 0.5, 0.0) for i in range(1, 21) for name in ("outer_loss", "query_accuracy")]
        store.add_metrics(rows)
        step += 20
        store.update_run(rid, iterations=step)
        if step % 2000 == 0:
            store.db.execute("PRAGMA wal_checkpoint(PASSIVE)")
    store.update_run(rid, status="completed")
    print(step, flush=True)
""")


def test_reader_never_sees_database_is_locked_while_another_process_writes(db_path):
    RunStore(db_path).close()
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(db_path), "4"], cwd=ROOT, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env=dict(os.environ, PYTHONPATH=str(ROOT)))
    run_id = int(writer.stdout.readline())
    errors: list[str] = []
    reads = {"n": 0}
    seen: list[int] = []

    def reader(reopen: bool) -> None:  # one connection per thread, as the window's model and worker do
        store = RunStore(db_path)
        while writer.poll() is None:
            try:
                if reopen:
                    store.close()
                    store = RunStore(db_path)  # opening runs the (no-op) migration check too
                runs = store.list_runs()
                n = len(store.get_metrics(run_id, ["outer_loss"]).get("outer_loss", []))
                seen.append(n)
                assert runs[0]["status"] in ("running", "completed")
                reads["n"] += 1
            except Exception as err:  # noqa: BLE001 - any error is a failure of this test
                errors.append(f"{type(err).__name__}: {err}")
        store.close()

    threads = [threading.Thread(target=reader, args=(flag,)) for flag in (False, True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out, err = writer.communicate(timeout=60)
    assert writer.returncode == 0, err
    total = int(out.strip().splitlines()[-1])
    assert errors == [], errors[:3]
    assert reads["n"] > 20 and total > 200
    assert RunStore(db_path).last_step(run_id) == total


# ---- atomic writes and safe loading ----------------------------------------------------------------
def test_atomic_folder_replaces_whole_or_not_at_all(tmp_path):
    target = tmp_path / "exports" / "model"
    with atomic_folder(tmp_path / "exports" / "sub" / ".." / "model") as tmp:  # resolved: lands in exports/
        (tmp / "a.txt").write_text("v1")
    assert (target / "a.txt").read_text() == "v1"
    with pytest.raises(OSError, match="disk full"), atomic_folder(target) as tmp:
        (tmp / "a.txt").write_text("v2-partial")
        raise OSError(errno.ENOSPC, "disk full")
    assert (target / "a.txt").read_text() == "v1"  # the old export is untouched
    with atomic_folder(target) as tmp:
        (tmp / "b.txt").write_text("v2")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in target.parent.iterdir()) == ["model"]  # no temp or old folder left


def test_checkpoint_files_are_never_unpickled(tmp_path):
    marker = tmp_path / "PICKLE_RAN"

    class Payload:
        def __reduce__(self):
            return (Path.write_text, (marker, "x"))

    evil = tmp_path / "resume-00000005.safetensors"
    torch.save({"x": Payload()}, evil)  # a pickle disguised as a checkpoint
    with pytest.raises(StoreError) as e:
        load_resume_checkpoint(evil)
    assert e.value.field == "checkpoint" and "damaged" in str(e.value)
    assert not marker.exists()
    plain = save_tensors_atomic({"w": torch.ones(2)}, tmp_path / "plain.safetensors")
    with pytest.raises(StoreError, match="is not a MetaStudio resume checkpoint"):
        load_resume_checkpoint(plain)


def test_concurrent_opening_of_new_and_old_databases(tmp_path):
    # The window and a CLI process starting at once on a new file, or on a file of the first schema that
    # both want to upgrade: every opener succeeds, the schema is migrated once, and no row is lost.
    import shutil

    from engine.store.runstore import SCHEMA_VERSION

    fixture = ROOT / "tests" / "fixtures" / "schema_v1.db"
    for rep in range(6):
        for kind in ("new", "v1"):
            db = tmp_path / f"{kind}-{rep}.db"
            if kind == "v1":
                shutil.copy(fixture, db)
            errors: list[str] = []

            def open_and_write(db=db, errors=errors) -> None:
                try:
                    store = RunStore(db)
                    store.create_run({"algorithm": "maml"}, "racer")
                    store.close()
                except Exception as err:  # noqa: BLE001 - any error fails the test
                    errors.append(f"{type(err).__name__}: {err}")

            threads = [threading.Thread(target=open_and_write) for _ in range(5)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert errors == []
            store = RunStore(db)
            assert store.schema_version == SCHEMA_VERSION
            names = [r["name"] for r in store.list_runs()]
            assert names.count("racer") == 5 and (kind == "new" or "v1 run" in names)
            store.close()
