"""Bad input: each gets one specific line on stderr (exit status 2) before training starts, and changes nothing.

The CLI runs in-process here (the same ``main`` the console script calls); ``--json`` silences the
progress lines, so stderr holds exactly the error line.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from engine import ExperimentConfig, RunStore, TrainingSession
from engine.cli import main
from engine.data import load_labelled_data
from engine.models.backbone import load_encoder

LABELS = [f"intent_{i:02d}" for i in range(15)]


def good_rows(per_label: int = 6) -> list[dict]:
    return [{"text": f"{lab} example number {j}", "label": lab} for lab in LABELS for j in range(per_label)]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def run_cli(capsys, db: Path, *sets: str, extra: tuple[str, ...] = ()) -> tuple[int, list[str], str]:
    args = ["train", "--db", str(db), "--json", *extra]
    for s in sets:
        args += ["--set", s]
    rc = main(args)
    captured = capsys.readouterr()
    return rc, [ln for ln in captured.err.splitlines() if ln.strip()], captured.out


def assert_rejected(capsys, db: Path, needle: str, *sets: str, field: str | None = None) -> str:
    rc, err, out = run_cli(capsys, db, *sets)
    assert rc == 2, (sets, err)
    assert len(err) == 1, err  # one line, no traceback
    assert err[0].startswith("metastudio: error: ") and needle in err[0], err[0]
    if field:
        assert err[0].startswith(f"metastudio: error: {field}: "), err[0]
    assert "Traceback" not in out
    assert not db.exists() or RunStore(db).list_runs() == []  # nothing stored
    return err[0]


# ---- data files ------------------------------------------------------------------------------------
def test_bad_data_files(tmp_path, capsys, tiny_bert):
    db = tmp_path / "runs.db"
    m = f"model={tiny_bert}"
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    assert_rejected(capsys, db, "'empty.jsonl' holds no rows", f"dataset={empty}", m, field="dataset")
    blank = tmp_path / "blank.jsonl"
    blank.write_text("\n   \n\t\n", encoding="utf-8")
    assert_rejected(capsys, db, "holds no rows", f"dataset={blank}", m)
    header = tmp_path / "header.csv"
    header.write_text("text,label\n", encoding="utf-8")
    assert_rejected(capsys, db, "'header.csv' holds no rows", f"dataset={header}", m)

    latin = tmp_path / "latin1.jsonl"
    latin.write_bytes(b'{"text": "caf\xe9 au lait", "label": "drink"}\n')
    line = assert_rejected(capsys, db, "is not UTF-8 text (bad byte at offset 13)", f"dataset={latin}", m)
    assert "Re-save the file as UTF-8" in line

    cols = write_jsonl(tmp_path / "cols.jsonl", [{"utterance": "hi", "intent": "greet"}] * 3)
    line = assert_rejected(capsys, db, "column 'text' not found", f"dataset={cols}", m, field="text_column")
    assert "columns found: 'utterance', 'intent'" in line

    no_text = write_jsonl(tmp_path / "notext.jsonl", [{"text": "   ", "label": lab} for lab in LABELS])
    assert_rejected(capsys, db, "has no row with both a text and a label", f"dataset={no_text}", m)

    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "a", "label": "b"}\n{"text": "c", \n', encoding="utf-8")
    assert_rejected(capsys, db, "line 2 of 'broken.jsonl' is not valid JSON", f"dataset={broken}", m)

    missing = tmp_path / "nope.jsonl"
    assert_rejected(capsys, db, "does not exist", f"dataset={missing}", m, field="dataset")


def test_too_few_examples_and_labels(tmp_path, capsys, tiny_bert):
    db = tmp_path / "runs.db"
    rows = good_rows() + [{"text": f"rare {j}", "label": "rare_label"} for j in range(2)]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    base = (f"model={tiny_bert}", f"dataset={data}", "n_way=2", "k_shot=2", "q_query=2")
    line = assert_rejected(capsys, db, "'rare_label' (2)", *base, field="k_shot")
    assert "fewer than k_shot + q_query = 4" in line and "drop_small_labels=true" in line

    # with the option the label is dropped (and named in the warnings) and the run starts
    rc, err, out = run_cli(capsys, db, *base, "drop_small_labels=true", "meta_iterations=2", "val_episodes=2")
    assert rc == 0, err
    assert any(ln.startswith("warning: dropped 1 label with") and "rare_label" in ln for ln in err), err

    db2 = tmp_path / "runs2.db"  # 15 labels -> 3 meta-val labels, fewer than N = 4
    line = assert_rejected(capsys, db2, "the meta-val split has 3 labels but n_way = 4", f"model={tiny_bert}",
                           f"dataset={data}", "n_way=4", "k_shot=2", "q_query=2", "drop_small_labels=true",
                           field="n_way")


# ---- models and devices ------------------------------------------------------------------------------
def test_bad_models(tmp_path, capsys, tiny_bert, monkeypatch):
    db = tmp_path / "runs.db"
    assert_rejected(capsys, db, "model folder", "model=/nowhere/my-model", field="model")
    empty = tmp_path / "empty-model"
    empty.mkdir()
    assert_rejected(capsys, db, "holds no model (no config.json)", f"model={empty}", field="model")

    # pickled weights only: refused (never unpickled)
    bin_only = tmp_path / "bin-only"
    shutil.copytree(tiny_bert, bin_only)
    state = load_file(str(bin_only / "model.safetensors"))
    (bin_only / "model.safetensors").unlink()
    torch.save(state, bin_only / "pytorch_model.bin")
    line = assert_rejected(capsys, db, "has no safetensors weights", f"model={bin_only}", field="model")
    assert "does not load pickled (.bin) weights" in line

    # a hub id that is not in the local cache while offline
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    line = assert_rejected(capsys, db, "'someone/no-such-model-xyz' is not in the local Hugging Face cache",
                           "model=someone/no-such-model-xyz", field="model")
    assert "huggingface-cli download" in line

    # a model that needs its own code: refused without running it (trust_remote_code is off by default)
    custom = tmp_path / "custom-code"
    custom.mkdir()
    (custom / "config.json").write_text(json.dumps({
        "model_type": "evil-bert", "hidden_size": 32,
        "auto_map": {"AutoConfig": "configuration_evil.EvilConfig", "AutoModel": "modeling_evil.EvilModel"}}))
    payload = "import pathlib\npathlib.Path(__file__).with_name('CODE_RAN').write_text('x')\n"
    for name in ("configuration_evil.py", "modeling_evil.py"):
        (custom / name).write_text(payload)
    assert ExperimentConfig().trust_remote_code is False
    line = assert_rejected(capsys, db, "needs its own Python code to load (it was not run)", f"model={custom}")
    assert "trust_remote_code=true" in line
    assert not (custom / "CODE_RAN").exists()


def test_absent_devices(tmp_path, capsys, monkeypatch):
    db = tmp_path / "runs.db"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    line = assert_rejected(capsys, db, "CUDA was requested but no CUDA GPU", "device=cuda", field="device")
    assert "Use device 'auto' or 'cpu'" in line
    assert_rejected(capsys, db, "Apple MPS was requested but is not available", "device=mps", field="device")
    assert_rejected(capsys, db, "Input should be 'auto', 'cpu', 'cuda' or 'mps'", "device=tpu", field="device")


# ---- hyperparameters ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("setting", "needle"), [
    ("k_shot=0", "greater than or equal to 1 (got 0)"),
    ("k_shot=-3", "greater than or equal to 1 (got -3)"),
    ("q_query=0", "greater than or equal to 1"),
    ("n_way=1", "greater than or equal to 2"),
    ("inner_lr=0", "greater than 0 (got 0)"),
    ("inner_lr=-0.5", "greater than 0"),
    ("outer_lr=0", "greater than 0"),
    ("inner_steps=-1", "greater than or equal to 0"),
    ("meta_batch_size=0", "greater than or equal to 1"),
    ("meta_iterations=0", "greater than or equal to 1"),
    ("checkpoint_interval=-5", "greater than or equal to 0"),
    ("val_episodes=0", "greater than or equal to 1"),
    ("max_length=0", "greater than or equal to 8"),
    ("k_shot=five", "valid integer"),
    ("val_fraction=0.75", "val_fraction + test_fraction must leave"),
    ("algorithm=magic", "Input should be"),
    ("bogus_key=1", "unknown config key 'bogus_key'"),
])
def test_nonsensical_hyperparameters(tmp_path, capsys, setting, needle):
    field = setting.split("=")[0]
    line = assert_rejected(capsys, tmp_path / "runs.db", needle, setting)
    assert field in line


def test_n_way_larger_than_the_labels(tmp_path, capsys):
    # the demo set has enough labels for 5-way but not for 40-way in any split
    assert_rejected(capsys, tmp_path / "runs.db", "split has", "n_way=40", field="n_way")


def test_config_file_and_run_id_errors(tmp_path, capsys):
    bad = tmp_path / "exp.yaml"
    bad.write_text("- just\n- a list\n", encoding="utf-8")
    rc = main(["train", "--db", str(tmp_path / "r.db"), "--config", str(bad)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "must hold a mapping of config keys" in err[0]
    rc = main(["resume", "7", "--db", str(tmp_path / "r.db")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == [f"metastudio: error: RUN_ID: no run with id 7 in {tmp_path / 'r.db'}. "
                               "List runs with: metastudio runs"]


def test_unwritable_database_location(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    for db in (blocker / "runs.db", Path("/sys/metastudio-test.db")):  # /sys is read-only even for root
        rc = main(["runs", "--db", str(db)])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1, err
        assert err[0].startswith(f"metastudio: error: db: cannot open the run database '{db}'")
        assert "Pick a writable folder with --db PATH or METASTUDIO_DB" in err[0]


# ---- what is cleaned with a warning (the run still starts) --------------------------------------------
def test_labels_that_look_like_missing_values_stay_strings_in_jsonl(tmp_path):
    rows = []
    for lab in ("NA", "None", "null", "nan", "0", "1", "N/A"):
        rows += [{"text": f"row {lab} {i}", "label": lab} for i in range(3)]
    rows += [{"text": f"number zero {i}", "label": 0} for i in range(2)]  # a JSON number: the string "0"
    rows += [{"text": "no label at all", "label": None}]  # a JSON null is a missing label, not "None"
    data = load_labelled_data(str(write_jsonl(tmp_path / "d.jsonl", rows)))
    assert data.label_names == sorted(["NA", "None", "null", "nan", "0", "1", "N/A"])
    assert data.labels.count("0") == 5 and all(type(x) is str for x in data.labels)
    assert "1 row(s) without a label were skipped (first: row 24)." in data.warnings


def test_empty_whitespace_and_duplicate_texts_are_dropped_and_counted(tmp_path):
    rows = [{"text": t, "label": "a"} for t in ("hello", "  hello ", "HELLO", "", "   ", "\t\n", "bye")]
    rows += [{"text": "shared text", "label": "a"}, {"text": "Shared  Text", "label": "b"},
             {"text": "only b", "label": "b"}]
    data = load_labelled_data(str(write_jsonl(tmp_path / "d.jsonl", rows)))
    assert sorted(zip(data.labels, data.texts, strict=True)) == [("a", "bye"), ("a", "hello"), ("b", "only b")]
    assert "3 row(s) with an empty or whitespace-only text were skipped." in data.warnings
    assert "2 duplicate text(s) within the same label were dropped." in data.warnings
    assert ("1 text(s) appear under more than one label and were dropped (2 rows), e.g. 'shared text' "
            "(a / b).") in data.warnings


def test_very_long_texts_are_truncated_and_counted(tmp_path, tiny_bert, db_path):
    rows = good_rows()
    long_text = " ".join(["word"] * 40)  # 40 word tokens + [CLS] + [SEP]
    for i, lab in enumerate(LABELS[:7]):
        rows.append({"text": f"{long_text} {i}", "label": lab})
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    cfg = ExperimentConfig(model=str(tiny_bert), dataset=str(data), n_way=2, k_shot=2, q_query=2, max_length=16,
                           meta_iterations=1, val_episodes=1, device="cpu")
    enc = load_encoder(str(tiny_bert))
    texts = load_labelled_data(str(data)).texts
    expected = sum(len(ids) > 16 for ids in enc.tokenizer(texts)["input_ids"])
    assert expected == 7 + sum(len(t.split()) > 12 for t in texts if not t.startswith("word"))
    session = TrainingSession(cfg, db_path)
    list(session.run())
    note = f"{expected} text(s) are longer than max_length = 16 tokens and are truncated."
    assert note in session.warnings
    assert note in RunStore(db_path).get_run(session.run_id)["warnings"]
