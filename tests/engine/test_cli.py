"""The CLI surface: train / runs / show with --json, and bad input as one line with exit status 2."""

from __future__ import annotations

import json
import subprocess
import sys

import yaml

from engine.cli import main


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_train_runs_show_json(tmp_path, capsys):
    db = tmp_path / "cli.db"
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(yaml.safe_dump({"algorithm": "protonet", "meta_iterations": 8, "val_interval": 4}))
    assert main(["train", "--db", str(db), "--config", str(cfg), "--set", "seed=3", "--json"]) == 0
    res = last_json(capsys.readouterr().out)
    assert res["status"] == "completed" and res["iterations"] == 8
    assert 0.0 <= res["final"]["val_accuracy"] <= 1.0 and res["final"]["outer_loss"] > 0
    run_id = res["run_id"]

    assert main(["runs", "--db", str(db), "--json"]) == 0
    runs = last_json(capsys.readouterr().out)["runs"]
    assert [(r["id"], r["status"], r["algorithm"]) for r in runs] == [(run_id, "completed", "protonet")]
    assert {"id", "name", "status", "algorithm", "created_at"} <= set(runs[0])

    assert main(["show", str(run_id), "--db", str(db), "--json"]) == 0
    shown = last_json(capsys.readouterr().out)
    assert shown["config"]["seed"] == 3 and shown["status"] == "completed"
    assert [s for s, _ in shown["metrics"]["outer_loss"]] == list(range(1, 9))
    assert shown["metrics"]["val_accuracy"][-1][1] == res["final"]["val_accuracy"]


def test_bad_input_is_one_line_exit_2(tmp_path):
    db = tmp_path / "cli.db"
    for args, needle in (
        (["--set", "k_shot=0"], "k_shot"),
        (["--set", "inner_lr=-1"], "inner_lr"),
        (["--set", "dataset=/nope/missing.jsonl"], "does not exist"),
        (["--set", "model=/nope/model"], "does not exist"),
        (["--set", "n_way=40"], "n_way"),
        (["--set", "algorithm=magic"], "algorithm"),
        (["--set", "bogus=1"], "unknown config key"),
    ):
        p = subprocess.run([sys.executable, "-m", "engine.cli", "train", "--db", str(db), *args],
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 2, (args, p.stderr)
        lines = [ln for ln in p.stderr.splitlines() if ln.strip() and "status:" not in ln
                 and not ln.startswith(("reading", "loading"))]
        assert len(lines) == 1 and needle in lines[0] and "Traceback" not in p.stderr, (args, p.stderr)
    # nothing was stored for bad input
    from engine import RunStore

    assert RunStore(db).list_runs() == []


def test_show_unknown_run(tmp_path, capsys):
    assert main(["show", "99", "--db", str(tmp_path / "x.db")]) == 2
    assert "no run with id 99" in capsys.readouterr().err


def test_db_and_debug_work_before_and_after_the_subcommand(tmp_path, capsys):
    from engine.cli import build_parser

    parser = build_parser()
    for argv in (["--db", "x.db", "runs"], ["runs", "--db", "x.db"]):
        args = parser.parse_args(argv)
        assert args.db == "x.db", argv
    assert parser.parse_args(["--debug", "runs"]).debug and parser.parse_args(["runs", "--debug"]).debug
    args = parser.parse_args(["runs"])
    assert args.db is None and args.debug is False
    assert parser.parse_args(["--db", "a.db", "runs", "--db", "b.db"]).db == "b.db"  # the later one wins
    db = tmp_path / "top.db"
    assert main(["--db", str(db), "runs"]) == 0
    assert db.exists() and str(db) in capsys.readouterr().out  # "no runs yet in <db>"


def test_eval_and_export_say_which_run_of_which_database(tmp_path, capsys):
    db = tmp_path / "named.db"
    assert main(["train", "--db", str(db), "--set", "algorithm=protonet", "--set", "meta_iterations=2",
                 "--set", "val_interval=2", "--set", "val_episodes=2", "--set", "name=my run", "--set", "device=cpu"]) == 0
    capsys.readouterr()
    assert main(["eval", "1", "--db", str(db), "--episodes", "3"]) == 0
    assert f"run 1 'my run' (protonet, completed) in {db}" in capsys.readouterr().err
    assert main(["export", "1", str(tmp_path / "out"), "--db", str(db)]) == 0
    assert f"run 1 'my run' (protonet, completed) in {db}" in capsys.readouterr().err
