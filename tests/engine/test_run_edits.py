"""Editing stored runs: rename, tags, notes, and delete with checkpoint files (store and CLI)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine import ConfigError, RunStore, StoreError
from engine.cli import main

CFG = {"algorithm": "protonet", "model": "bundled", "dataset": "demo", "n_way": 5, "k_shot": 1}


def _run_with_files(store: RunStore, name: str, status: str = "completed") -> int:
    """A run with metrics, an evaluation and two checkpoint files in its folder."""
    rid = store.create_run(CFG, name)
    store.update_run(rid, status=status)
    store.add_metrics([(rid, s, "outer_loss", 1.0 / s, 0.1 * s) for s in range(1, 4)])
    store.add_evaluation(rid, episodes=10, seed=0, split="test", result={"methods": {}})
    folder = store.checkpoint_dir / f"run-{rid}"
    folder.mkdir(parents=True)
    for step in (2, 3):
        path = folder / f"step-{step}.safetensors"
        path.write_bytes(b"x" * 64)
        store.add_checkpoint(rid, step, "resume", path)
    return rid


def test_rename_tags_notes_read_back(db_path):
    store = RunStore(db_path)
    rid = store.create_run(CFG, "first")
    assert store.rename_run(rid, "  better name \n") == "better name"
    assert store.set_tags(rid, [" baseline", "maml", "", "Baseline", "  ", "lr-sweep", "maml"]) == \
        ["baseline", "maml", "lr-sweep"]
    store.set_notes(rid, "inner lr too high?\nsecond line")
    row = RunStore(db_path).get_run(rid)  # a fresh connection
    assert row["name"] == "better name"
    assert row["tags"] == ["baseline", "maml", "lr-sweep"]
    assert row["notes"] == "inner lr too high?\nsecond line"
    assert json.loads(store.db.execute("select tags from runs where id = ?", [rid]).fetchone()[0]) == \
        ["baseline", "maml", "lr-sweep"]
    store.set_tags(rid, [])
    store.set_notes(rid, "")
    row = RunStore(db_path).get_run(rid)
    assert row["tags"] == [] and row["notes"] == ""


def test_bad_edits_are_refused(db_path):
    store = RunStore(db_path)
    rid = store.create_run(CFG, "keep")
    with pytest.raises(ConfigError, match="cannot be empty"):
        store.rename_run(rid, "   ")
    with pytest.raises(ConfigError, match="list of strings"):
        store.set_tags(rid, "a,b")
    with pytest.raises(ConfigError, match="must be a string"):
        store.set_tags(rid, ["a", 3])
    for call in (lambda: store.rename_run(999, "x"), lambda: store.set_tags(999, ["a"]),
                 lambda: store.set_notes(999, "x"), lambda: store.delete_run(999)):
        with pytest.raises(KeyError, match="no run with id 999"):
            call()
    assert store.get_run(rid)["name"] == "keep" and store.get_run(rid)["tags"] == []


def test_delete_removes_rows_and_checkpoint_files(db_path, tmp_path):
    store = RunStore(db_path)
    gone, kept = _run_with_files(store, "gone"), _run_with_files(store, "kept")
    export = tmp_path / "exported"  # an export folder is not the store's: never removed
    export.mkdir()
    (export / "model.safetensors").write_bytes(b"w")
    folder = store.checkpoint_dir / f"run-{gone}"
    ck_paths = [ck["path"] for ck in store.list_checkpoints(gone)]
    assert folder.is_dir() and len(ck_paths) == 2

    removed = store.delete_run(gone)

    assert folder in removed and not folder.exists()
    assert all(not Path(p).exists() for p in ck_paths)
    fresh = RunStore(db_path)
    with pytest.raises(KeyError):
        fresh.get_run(gone)
    for table in ("metrics", "checkpoints", "evaluations"):
        assert fresh.db.execute(f"select count(*) from {table} where run_id = ?", [gone]).fetchone()[0] == 0
        assert fresh.db.execute(f"select count(*) from {table} where run_id = ?", [kept]).fetchone()[0] > 0
    assert [r["id"] for r in fresh.list_runs()] == [kept]
    assert (store.checkpoint_dir / f"run-{kept}").is_dir() and len(fresh.list_checkpoints(kept)) == 2
    assert (export / "model.safetensors").read_bytes() == b"w"


def test_delete_keep_files(db_path):
    store = RunStore(db_path)
    rid = _run_with_files(store, "rows only")
    assert store.delete_run(rid, remove_files=False) == []
    assert len(list((store.checkpoint_dir / f"run-{rid}").iterdir())) == 2
    assert store.list_runs() == []


def test_active_run_cannot_be_deleted(db_path):
    store = RunStore(db_path)
    rid = _run_with_files(store, "live", status="running")  # pid = this (live) process
    with pytest.raises(StoreError, match=f"run {rid} is running .*cannot be deleted while active"):
        store.delete_run(rid)
    assert store.get_run(rid)["status"] == "running" and len(store.list_checkpoints(rid)) == 2
    assert (store.checkpoint_dir / f"run-{rid}").is_dir()
    # the same status left by a process that is gone is not active
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    store.update_run(rid, pid=int(dead.stdout))
    assert store.delete_run(rid)
    assert store.list_runs() == []


def test_cli_rename_tag_delete(db_path, capsys, monkeypatch):
    store = RunStore(db_path)
    a, b = _run_with_files(store, "a"), _run_with_files(store, "b")
    db = ["--db", str(db_path)]
    assert main(["rename", str(a), "renamed", *db]) == 0
    assert main(["tag", str(a), "x", " y", "x", *db]) == 0
    assert "tags: x, y" in capsys.readouterr().out
    assert main(["runs", "--json", *db]) == 0
    runs = {r["id"]: r for r in json.loads(capsys.readouterr().out.strip().splitlines()[-1])["runs"]}
    assert runs[a]["name"] == "renamed" and runs[a]["tags"] == ["x", "y"] and runs[b]["tags"] == []
    assert main(["runs", *db]) == 0
    assert "renamed  [x, y]" in capsys.readouterr().out

    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    assert main(["delete", str(a), *db]) == 2  # no terminal to ask on, no --yes: nothing deleted
    assert "--yes" in capsys.readouterr().err and len(RunStore(db_path).list_runs()) == 2
    assert main(["delete", "999", "--yes", *db]) == 2
    assert main(["delete", str(a), str(b), "--yes", *db]) == 0
    assert RunStore(db_path).list_runs() == []
    assert not (store.checkpoint_dir / f"run-{a}").exists() and not (store.checkpoint_dir / f"run-{b}").exists()
