"""The SQLite run store: WAL, round trips, NaN/inf values, migrations from the first schema."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

from engine.store import RunStore
from engine.store.runstore import SCHEMA_VERSION

FIXTURE_V1 = Path(__file__).resolve().parents[1] / "fixtures" / "schema_v1.db"


def test_wal_and_round_trip(db_path):
    store = RunStore(db_path)
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    cfg = {"algorithm": "maml", "model": "bundled", "dataset": "demo", "n_way": 5, "k_shot": 1}
    rid = store.create_run(cfg, "r")
    store.add_metrics([(rid, 1, "outer_loss", 1.5, 0.1), (rid, 2, "outer_loss", float("nan"), 0.2),
                       (rid, 3, "outer_loss", float("inf"), 0.3)])
    store.update_run(rid, status="completed", tags=["a", "b"])
    other = RunStore(db_path)  # a second connection sees the committed rows
    row = other.get_run(rid)
    assert row["config"] == cfg and row["tags"] == ["a", "b"] and row["status"] == "completed"
    vals = [v for _s, v, _t in other.get_metrics(rid)["outer_loss"]]
    assert vals[0] == 1.5 and math.isnan(vals[1]) and vals[2] == math.inf


def test_upgrade_from_first_schema_keeps_every_row(tmp_path):
    db = tmp_path / "old.db"
    shutil.copy(FIXTURE_V1, db)
    store = RunStore(db)
    assert store.schema_version == SCHEMA_VERSION
    run = store.get_run(1)
    assert run["name"] == "v1 run" and run["status"] == "completed" and run["best_val_accuracy"] == 0.9
    m = store.get_metrics(1)
    assert [v for _s, v, _t in m["outer_loss"]] == [1.0, 0.5, 1 / 3]
    assert "evaluations" in store.db.table_names()
    assert store.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_interrupted_runs_are_marked(db_path):
    store = RunStore(db_path)
    rid = store.create_run({"algorithm": "maml"}, "dead")
    store.update_run(rid, status="running", pid=2**22 + 12345)  # no such process
    alive = store.create_run({"algorithm": "maml"}, "alive")
    store.update_run(alive, status="running")  # this process
    assert store.mark_interrupted() == [rid]
    assert store.get_run(rid)["status"] == "interrupted" and store.get_run(alive)["status"] == "running"
