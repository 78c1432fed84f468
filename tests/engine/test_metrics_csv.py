"""The metrics CSV writer: long format, exact values (NaN and inf included), atomic, and on the CLI."""

from __future__ import annotations

import csv
import math

import pytest

from engine import MetaStudioError, RunStore, StoreError, write_metrics_csv
from engine.cli import main


def _store_with_two_runs(db_path):
    store = RunStore(db_path)
    a = store.create_run({"algorithm": "maml", "inner_lr": 0.01}, "a")
    b = store.create_run({"algorithm": "anil", "inner_lr": 0.1}, "b")
    store.add_metrics([(a, 1, "outer_loss", 1.25, 0.5), (a, 2, "outer_loss", float("nan"), 1.0),
                       (a, 1, "val_accuracy", 0.6, 0.5), (a, 3, "outer_loss", float("inf"), 1.5),
                       (b, 1, "outer_loss", 0.1 + 0.2, 0.25)])
    return store, a, b


def _read(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh))


def test_rows_read_back_equal(db_path, tmp_path):
    store, a, b = _store_with_two_runs(db_path)
    out = tmp_path / "metrics.csv"
    assert write_metrics_csv(store, [b, a], out) == 5
    rows = _read(out)
    assert rows[0] == ["run", "step", "metric", "value", "time"]
    # runs in the order given, then step, then metric name
    assert [r[:3] for r in rows[1:]] == [[str(b), "1", "outer_loss"], [str(a), "1", "outer_loss"],
                                         [str(a), "1", "val_accuracy"], [str(a), "2", "outer_loss"],
                                         [str(a), "3", "outer_loss"]]
    values = [float(r[3]) for r in rows[1:]]
    assert values[0] == 0.1 + 0.2  # exact round trip
    assert values[1:3] == [1.25, 0.6]
    assert math.isnan(values[3]) and rows[4][3] == "nan"
    assert values[4] == math.inf and rows[5][3] == "inf"
    assert [float(r[4]) for r in rows[1:]] == [0.25, 0.5, 0.5, 1.0, 1.5]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".metrics")) == []  # no temp file left


def test_metric_filter_and_replace(db_path, tmp_path):
    store, a, _b = _store_with_two_runs(db_path)
    out = tmp_path / "m.csv"
    out.write_text("old content\n")
    assert write_metrics_csv(store, [a], out, names=["val_accuracy"]) == 1
    assert _read(out) == [["run", "step", "metric", "value", "time"], [str(a), "1", "val_accuracy", "0.6", "0.5"]]


def test_unknown_run_and_bad_folder_write_nothing(db_path, tmp_path):
    store, a, _b = _store_with_two_runs(db_path)
    out = tmp_path / "m.csv"
    with pytest.raises(MetaStudioError, match="no run with id 999"):
        write_metrics_csv(store, [a, 999], out)
    assert not out.exists()
    with pytest.raises(StoreError, match="cannot write the metrics CSV"):
        write_metrics_csv(store, [a], tmp_path / "missing" / "m.csv")


def test_cli_metrics_csv(db_path, tmp_path, capsys):
    store, a, b = _store_with_two_runs(db_path)
    store.close()
    out = tmp_path / "cli.csv"
    assert main(["metrics", str(a), str(b), "--db", str(db_path), "--csv", str(out)]) == 0
    assert "wrote 5 rows" in capsys.readouterr().out
    assert len(_read(out)) == 6
    assert main(["metrics", "42", "--db", str(db_path), "--csv", str(out)]) == 2
    assert "no run with id 42" in capsys.readouterr().err
