"""Problems a new user hit in a first trial: relative paths, file modes, wording, malformed input."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from engine import ExperimentConfig, RunStore, TrainingSession
from engine.cli import main
from engine.config import (
    REPO_ROOT,
    absolute_paths,
    load_config,
    recommended_overrides,
    validate_config,
)
from engine.data import load_labelled_data
from engine.data.episodes import prepare_tasks
from engine.data.loading import LabelledData
from engine.data.splits import LabelSplit
from engine.errors import ConfigError, DataError, MetaStudioError, ModelLoadError
from engine.evaluation import evaluate_run
from engine.export import export_run, load_checkpoint
from engine.export.model_card import render_model_card
from engine.store import write_metrics_csv

LABELS = [f"intent_{i:02d}" for i in range(15)]


def write_data(path: Path, per_label: int = 6) -> Path:
    rows = [{"text": f"{lab} example number {j}", "label": lab} for lab in LABELS for j in range(per_label)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def train(db: Path, **over) -> TrainingSession:
    base = dict(algorithm="protonet", n_way=3, k_shot=2, q_query=2, meta_iterations=2, val_interval=2,
                val_episodes=2, device="cpu")
    session = TrainingSession(ExperimentConfig(**{**base, **over}), db)
    for _ in session.run():
        pass
    assert session.status == "completed", session.error
    return session


# ---- 1. relative paths ------------------------------------------------------------------------------
def test_relative_paths_are_stored_absolute_and_work_from_another_folder(tmp_path, monkeypatch, tiny_bert):
    work = tmp_path / "project"
    (work / "data").mkdir(parents=True)
    write_data(work / "data" / "d.jsonl")
    shutil.copytree(tiny_bert, work / "tiny")
    db = tmp_path / "runs.db"
    monkeypatch.chdir(work)
    session = train(db, dataset="data/d.jsonl", model="./tiny")
    stored = RunStore(db).get_run(session.run_id)["config"]
    assert stored["dataset"] == str(work / "data" / "d.jsonl")
    assert stored["model"] == str(work / "tiny")

    monkeypatch.chdir("/")  # later commands from another folder
    out = tmp_path / "exp"
    assert main(["export", str(session.run_id), str(out), "--db", str(db), "--json"]) == 0
    assert (out / "metastudio.json").is_file()
    # the export reads no data: it works after the data file moved away
    (work / "data" / "d.jsonl").rename(work / "moved.jsonl")
    out2 = export_run(RunStore(db), session.run_id, tmp_path / "exp2")
    assert json.loads((out2 / "metastudio.json").read_text())["label_split"] == \
        RunStore(db).get_run(session.run_id)["label_split"]


def test_keywords_and_hub_ids_are_not_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for value in ("demo", "sinusoid", "hf:clinc_oos:plus"):
        assert absolute_paths(ExperimentConfig(dataset=value)).dataset == value
    for value in ("bundled", "sentence-transformers/all-MiniLM-L6-v2"):
        assert absolute_paths(ExperimentConfig(model=value)).model == value
    assert absolute_paths(ExperimentConfig(dataset="~/x.csv")).dataset == str(Path.home() / "x.csv")
    assert absolute_paths(ExperimentConfig(model="../m")).model == str(tmp_path.parent / "m")


def test_config_file_paths_are_relative_to_the_file(tmp_path, monkeypatch):
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "exp.yaml").write_text("dataset: ../data/d.jsonl\nmodel: ./m\n", encoding="utf-8")
    monkeypatch.chdir("/")
    c = load_config(tmp_path / "cfg" / "exp.yaml")
    assert c.dataset == str(tmp_path / "data" / "d.jsonl") and c.model == str(tmp_path / "cfg" / "m")
    # the CLINC150 preset points at the shared data set from the repository root and from anywhere else
    for cwd in (REPO_ROOT, Path("/")):
        monkeypatch.chdir(cwd)
        preset = load_config(os.path.relpath(REPO_ROOT / "resources/presets/maml_clinc150.yaml"))
        assert preset.dataset == str(REPO_ROOT.parent / "shared/data/clinc150/data.jsonl")
        assert Path(preset.dataset).is_file()


def test_old_run_with_a_relative_path_gets_a_hint(tmp_path, monkeypatch):
    data = write_data(tmp_path / "d.jsonl")
    db = tmp_path / "runs.db"
    session = train(db, dataset=str(data), model="bundled")
    store = RunStore(db)
    config = dict(store.get_run(session.run_id)["config"], dataset="d.jsonl")  # as stored before the fix
    store.update_run(session.run_id, config=config)
    monkeypatch.chdir("/")
    with pytest.raises(DataError) as err:
        evaluate_run(store, session.run_id, episodes=2, device="cpu")
    assert "relative data file path 'd.jsonl'" in str(err.value) and "from '/'" in str(err.value)
    assert err.value.hint.startswith(f"It exists relative to '{tmp_path}': run the command from there")
    rc = main(["resume", str(session.run_id), "--db", str(db)])
    assert rc == 2
    # the export needs no data: it still works
    assert export_run(store, session.run_id, tmp_path / "e").is_dir()
    monkeypatch.chdir(tmp_path)  # from the folder named in the hint it works
    assert evaluate_run(store, session.run_id, episodes=2, device="cpu", save=False)["episodes"] == 2


# ---- 2. file modes ---------------------------------------------------------------------------------
@pytest.fixture()
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_exports_and_csvs_follow_the_umask(tmp_path, umask_022):
    db = tmp_path / "runs.db"
    session = train(db, dataset=str(write_data(tmp_path / "d.jsonl")))
    out = export_run(RunStore(db), session.run_id, tmp_path / "export")
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()}
    assert modes and set(modes.values()) == {0o644}, modes
    assert "metastudio_head.safetensors" in modes
    csv_path = tmp_path / "m.csv"
    write_metrics_csv(RunStore(db), [session.run_id], csv_path)
    assert stat.S_IMODE(csv_path.stat().st_mode) == 0o644


# ---- 3. model card -----------------------------------------------------------------------------------
def test_model_card_shows_percentages_and_points():
    meta = {"config": ExperimentConfig().to_dict(), "name": "x", "data_fingerprint": "ab" * 32,
            "evaluations": [{"episodes": 600, "methods": {"maml": {"accuracy": 0.98766, "ci95": 0.0022},
                                                          "finetune_head": {"accuracy": 0.9893, "ci95": 0.002}},
                             "meta_gain": {"value": -0.0016000002, "ci95": 0.00247}}]}
    card = render_model_card(meta)
    assert "| maml | 98.77% | ± 0.22 |" in card
    assert "Meta-gain (meta − fine-tuned head, paired): -0.16 ± 0.25 points." in card
    assert "0.0016000002" not in card


# ---- 4, 5, 11. CLI -------------------------------------------------------------------------------------
def test_runs_into_a_closed_pipe_is_quiet(tmp_path):
    db = tmp_path / "runs.db"
    store = RunStore(db)
    for i in range(1500):  # well over a pipe buffer of output
        store.create_run(ExperimentConfig().to_dict(), f"run number {i} with a long enough name")
    store.close()
    proc = subprocess.Popen([sys.executable, "-c", "from engine.cli import main; raise SystemExit(main())",
                             "runs", "--db", str(db)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=REPO_ROOT)
    first = proc.stdout.readline()
    proc.stdout.close()  # like `| head -1`
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141
    assert first.split() == [b"id", b"status", b"algorithm", b"iters", b"best", b"val", b"created", b"name"]
    assert err == ""


def test_metrics_csv_to_stdout_and_unknown_metric(tmp_path, capsys):
    db = tmp_path / "runs.db"
    session = train(db, dataset=str(write_data(tmp_path / "d.jsonl")))
    rid = str(session.run_id)
    assert main(["metrics", rid, "--db", str(db), "--csv", "-", "--metric", "outer_loss"]) == 0
    out, err = capsys.readouterr()
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0] == ["run", "step", "metric", "value", "time"]
    assert [(r[0], r[1], r[2]) for r in rows[1:]] == [(rid, "1", "outer_loss"), (rid, "2", "outer_loss")]
    assert err.strip() == f"wrote 2 rows of run {rid} to standard output"
    assert not (tmp_path / "-").exists() and not Path("-").exists()

    assert main(["metrics", rid, "--db", str(db), "--csv", str(tmp_path / "x.csv"), "--metric", "bogus"]) == 2
    err = capsys.readouterr().err
    assert "no metric 'bogus' in run(s)" in err and "Metrics stored:" in err and "outer_loss" in err
    assert not (tmp_path / "x.csv").exists()


def test_cli_counts_are_worded_in_the_right_number(tmp_path, capsys, monkeypatch):
    db = tmp_path / "runs.db"
    # sinusoid with the text defaults (inner_lr 0.5) diverges at iteration 1
    rc = main(["train", "--db", str(db), "--set", "dataset=sinusoid", "--set", "meta_iterations=5",
               "--set", "device=cpu"])
    out, err = capsys.readouterr()
    assert rc == 1
    assert "failed after 1 iteration (" in out
    assert "use inner_lr 0.01 (see resources/presets/maml_sinusoid.yaml)" in err
    rid = RunStore(db).list_runs()[0]["id"]
    assert main(["metrics", str(rid), "--db", str(db), "--csv", str(tmp_path / "m.csv"),
                 "--metric", "outer_loss"]) == 0
    assert capsys.readouterr().out.strip() == f"wrote 1 row of run {rid} to {tmp_path / 'm.csv'}"

    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda _prompt: print(_prompt) or "y")
    n_files = len(RunStore(db).list_checkpoints(rid))
    assert main(["delete", str(rid), "--db", str(db)]) == 0
    out = capsys.readouterr().out
    noun = "checkpoint" if n_files == 1 else "checkpoints"
    assert f"[failed], {n_files} {noun}" in out and "Delete this run with" in out
    assert f"deleted run {rid} (" in out and f"with {n_files} {noun}" in out


def test_cache_line_once_and_no_encoding_announced_on_a_cache_hit(tmp_path, capsys, tiny_bert):
    db = tmp_path / "runs.db"
    data = write_data(tmp_path / "fresh.jsonl", per_label=5)
    # texts no other test uses, so neither the disk cache nor the in-process table has them yet
    data.write_text(data.read_text(encoding="utf-8").replace("example number", f"sample {tmp_path.name}"),
                    encoding="utf-8")
    args = ["train", "--db", str(db), "--set", f"dataset={data}", "--set", f"model={tiny_bert}",
            "--set", "algorithm=protonet", "--set", "n_way=3", "--set", "k_shot=2", "--set", "q_query=2",
            "--set", "meta_iterations=1", "--set", "val_episodes=2", "--set", "device=cpu"]
    assert main(args) == 0
    first = capsys.readouterr().err
    assert "encoding 75 texts once (frozen encoder)" in first
    assert main(args) == 0
    second = capsys.readouterr().err
    assert "encoding" not in second, second
    cache_lines = [ln for ln in second.splitlines() if "embedding cache: reused 75 of 75" in ln]
    assert len(cache_lines) == 1 and not cache_lines[0].startswith("warning:"), second


# ---- 6. malformed CSV ----------------------------------------------------------------------------------
def test_malformed_csv_names_the_problem_and_the_line(tmp_path):
    unclosed = tmp_path / "a.csv"
    unclosed.write_text('text,label\nhi there,greet\n"hello world,greet\nbye,farewell\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"the quote opened on line 3 is never closed"):
        load_labelled_data(str(unclosed))
    extra = tmp_path / "b.csv"
    extra.write_text("text,label\nbye,farewell\nhi,greet,extra\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"line 3 of 'b.csv' has more fields than the header's 2"):
        load_labelled_data(str(extra))
    ok = tmp_path / "c.csv"  # a trailing delimiter and a quoted multi-line text are fine
    ok.write_text('text,label\nhi,greet,\n"two\nlines",x\n', encoding="utf-8")
    d = load_labelled_data(str(ok))
    assert d.texts == ["hi", "two\nlines"] and d.labels == ["greet", "x"]


# ---- 7, 8. export folders --------------------------------------------------------------------------------
def test_load_checkpoint_on_a_missing_folder(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_checkpoint(tmp_path / "nope")


def test_overwrite_replaces_only_a_previous_export(tmp_path):
    db = tmp_path / "runs.db"
    session = train(db, dataset=str(write_data(tmp_path / "d.jsonl")))
    store = RunStore(db)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("keep me")
    with pytest.raises(MetaStudioError, match="not a MetaStudio export") as err:
        export_run(store, session.run_id, mine, overwrite=True)
    assert "nothing was changed" in err.value.hint
    assert (mine / "thesis.tex").read_text() == "keep me"
    out = export_run(store, session.run_id, tmp_path / "exp")
    (out / "stale.txt").write_text("old")
    assert export_run(store, session.run_id, out, overwrite=True) == out
    assert (out / "metastudio.json").is_file() and not (out / "stale.txt").exists()


# ---- 9, 10. messages -------------------------------------------------------------------------------------
def _tasks(k_shot: int, drop: bool, n_way: int = 5):
    labels = [f"l{i:02d}" for i in range(30)]
    texts, labs = [], []
    for i, lab in enumerate(labels):
        for j in range(150 if i % 3 else 20):
            texts.append(f"{lab} {j}")
            labs.append(lab)
    data = LabelledData(texts, labs, None, "x", "fp")
    split = LabelSplit(tuple(labels[:18]), tuple(labels[18:24]), tuple(labels[24:]), "random")
    return prepare_tasks(data, split, n_way, k_shot, 5, drop)


def test_k_shot_too_large_states_the_largest_k_and_stays_short():
    with pytest.raises(DataError) as err:
        _tasks(200, False)
    msg = str(err.value)
    assert "30 labels have fewer than k_shot + q_query = 205 examples" in msg
    assert "'l00' (20), 'l03' (20), 'l06' (20) and 27 more." in msg and "l29" not in msg
    assert err.value.hint == "Use k_shot ≤ 15 (with q_query = 5, every label has enough examples)."
    # 10 small labels: dropping them leaves 4 < 5 meta-val labels, so it is not suggested
    with pytest.raises(DataError) as err:
        _tasks(50, False)
    assert "drop_small_labels" not in err.value.hint
    # with n_way 3 dropping them leaves enough labels: suggested
    with pytest.raises(DataError) as err:
        _tasks(50, False, n_way=3)
    assert err.value.hint.endswith("or set drop_small_labels=true to drop these 10 labels.")
    with pytest.raises(DataError, match="the largest k_shot that keeps 5 labels in every split is 15"):
        _tasks(100, True)


def test_unknown_key_suggests_the_closest():
    with pytest.raises(ConfigError, match="unknown config key 'kshot'; did you mean k_shot?"):
        validate_config({"kshot": 5})
    with pytest.raises(ConfigError, match="Known keys:"):
        validate_config({"zzzzzz": 5})


# ---- 12. sinusoid settings ---------------------------------------------------------------------------------
def test_sinusoid_preset_trains_without_diverging(tmp_path):
    preset = load_config(REPO_ROOT / "resources/presets/maml_sinusoid.yaml")
    assert {k: getattr(preset, k) for k in recommended_overrides("sinusoid")} == recommended_overrides("sinusoid")
    assert recommended_overrides("demo") == {}
    assert ExperimentConfig().inner_lr == 0.5  # the global default is unchanged
    session = TrainingSession(preset.model_copy(update={"meta_iterations": 20, "val_interval": 10,
                                                        "val_episodes": 5, "device": "cpu"}), tmp_path / "r.db")
    for _ in session.run():
        pass
    assert session.status == "completed" and session.iterations == 20
