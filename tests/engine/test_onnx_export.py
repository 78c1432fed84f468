"""ONNX export of an adapted few-shot classifier: onnxruntime reproduces predict() and its labels."""

from __future__ import annotations

import json
import sys

import numpy as np
import onnxruntime as ort
import pytest
from few_shot_examples import QUERY as _QUERY
from few_shot_examples import SUPPORT

from engine import ConfigError, ExperimentConfig, MetaStudioError, RunStore, TrainingSession, load_checkpoint
from engine.export import classifier_from_trainer, export_run, restore_run

QUERY = [*_QUERY[:3], "do I need an umbrella when I walk to the station later this evening"]  # one long text


def train(db_path, **over) -> int:
    base = dict(meta_iterations=4, val_interval=4, val_episodes=3, device="cpu")
    session = TrainingSession(ExperimentConfig(**{**base, **over}), db_path)
    for _ in session.run():
        pass
    assert session.status == "completed"
    return session.run_id


def adapt(clf):
    return clf.adapt([t for t, _ in SUPPORT], [lab for _, lab in SUPPORT])


def run_onnx(path, texts: list[str]) -> tuple[np.ndarray, dict[str, str]]:
    """Tokenise with the files written beside the model and run it with onnxruntime alone."""
    from transformers import AutoTokenizer

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    tok = AutoTokenizer.from_pretrained(path.parent)
    batch = tok(texts, padding=True, truncation=True, max_length=int(meta["metastudio.max_length"]),
                return_tensors="np")
    feeds = {"input_ids": batch["input_ids"].astype(np.int64),
             "attention_mask": batch["attention_mask"].astype(np.int64)}
    return session.run(["probabilities"], feeds)[0], meta


def torch_probs(clf, texts: list[str]) -> np.ndarray:
    return np.array([[p.probabilities[c] for c in clf.classes] for p in clf.predict(texts)])


@pytest.fixture(scope="module")
def protonet_run(tmp_path_factory) -> tuple:
    """A completed short protonet run of the bundled model on the demo data: ``(db_path, run_id)``."""
    db = tmp_path_factory.mktemp("onnx") / "runs.db"
    return db, train(db, algorithm="protonet")


def test_protonet_export_folder_to_onnx_matches_predict(protonet_run, tmp_path):
    db_path, run_id = protonet_run
    store = RunStore(db_path)
    try:
        folder = export_run(store, run_id, tmp_path / "export")
    finally:
        store.close()
    clf = adapt(load_checkpoint(folder, device="cpu"))
    out = clf.export_onnx(tmp_path / "onnx" / "model.onnx")
    assert out == (tmp_path / "onnx" / "model.onnx").resolve() and out.stat().st_size > 10_000_000
    assert {"tokenizer.json", "tokenizer_config.json"} <= {p.name for p in out.parent.iterdir()}
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary files left

    probs, meta = run_onnx(out, QUERY)
    expected = torch_probs(clf, QUERY)
    assert probs.shape == (4, 3) and np.allclose(probs.sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(probs, expected, atol=1e-4)
    assert json.loads(meta["metastudio.labels"]) == clf.classes == ["alarm", "weather", "music"]
    assert [clf.classes[i] for i in probs.argmax(1)] == ["alarm", "weather", "music", "weather"]
    assert meta["metastudio.algorithm"] == "protonet" and meta["metastudio.max_length"] == "64"
    assert meta["metastudio.base_model"] == "bundled"  # the run's base model, not the export folder
    assert meta["metastudio.version"] and meta["metastudio.tokenizer"]
    # dynamic axes: one short text, no padding
    one, _ = run_onnx(out, ["wake me up"])
    np.testing.assert_allclose(one, torch_probs(clf, ["wake me up"]), atol=1e-4)


@pytest.mark.parametrize("algorithm, over", [
    ("maml", {"train_layers": 1, "adapt_layers": 1}),  # the inner loop adapts an encoder layer
    ("lora_maml", {"lora_r": 2}),  # adapters in every layer, adapted per task
])
def test_encoder_adapting_runs_export_their_adapted_weights(db_path, tmp_path, tiny_bert, algorithm, over):
    run_id = train(db_path, algorithm=algorithm, model=str(tiny_bert), n_way=3, k_shot=2, q_query=2,
                   inner_lr=0.5, **over)
    store = RunStore(db_path)
    try:
        _run, trainer = restore_run(store, run_id, device="cpu")
    finally:
        store.close()
    clf = adapt(classifier_from_trainer(trainer))
    before = {k: v.clone() for k, v in clf.model.state_dict().items()}
    out = clf.export_onnx(tmp_path / "m.onnx")
    assert all(v.equal(before[k]) for k, v in clf.model.state_dict().items())  # the classifier is untouched
    probs, meta = run_onnx(out, QUERY)
    np.testing.assert_allclose(probs, torch_probs(clf, QUERY), atol=1e-4)
    assert json.loads(meta["metastudio.labels"]) == ["alarm", "weather", "music"]
    assert meta["metastudio.algorithm"] == algorithm


def test_not_adapted_or_missing_onnx_gives_a_clear_error(db_path, tmp_path, tiny_bert, monkeypatch):
    run_id = train(db_path, algorithm="protonet", model=str(tiny_bert), n_way=3, k_shot=2, q_query=2)
    store = RunStore(db_path)
    try:
        _run, trainer = restore_run(store, run_id, device="cpu")
    finally:
        store.close()
    clf = classifier_from_trainer(trainer)
    with pytest.raises(ConfigError, match=r"not adapted.*adapt\(texts, labels\)"):
        clf.export_onnx(tmp_path / "out" / "m.onnx")
    assert not (tmp_path / "out").exists()

    adapt(clf)
    with pytest.raises(MetaStudioError, match="is a folder"):
        clf.export_onnx(tmp_path)
    monkeypatch.setitem(sys.modules, "onnx", None)  # as if the extra were not installed
    with pytest.raises(ConfigError, match=r"pip install 'metastudio\[onnx\]'"):
        clf.export_onnx(tmp_path / "out" / "m.onnx")
    assert not (tmp_path / "out").exists()


def test_cli_export_with_onnx(protonet_run, tmp_path, capsys):
    import csv

    from engine.cli import main

    db_path, run_id = protonet_run
    support = tmp_path / "support.csv"
    with support.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([("text", "label"), *SUPPORT])
    out = tmp_path / "x"
    assert main(["export", str(run_id), str(out), "--db", str(db_path), "--onnx", str(support), "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["onnx"] == str(out / "model.onnx") and res["labels"] == ["alarm", "weather", "music"]
    assert (out / "model.safetensors").is_file()  # the folder export as without --onnx
    probs, meta = run_onnx(out / "model.onnx", QUERY)
    clf = adapt(load_checkpoint(out, device="cpu"))
    np.testing.assert_allclose(probs, torch_probs(clf, QUERY), atol=1e-4)
    assert json.loads(meta["metastudio.labels"]) == res["labels"]

    # a support file with one label is refused before anything is written
    one = tmp_path / "one.jsonl"
    one.write_text('{"text": "wake me up", "label": "alarm"}\n{"text": "set an alarm", "label": "alarm"}\n')
    assert main(["export", str(run_id), str(tmp_path / "y"), "--db", str(db_path), "--onnx", str(one)]) == 2
    assert "only one label" in capsys.readouterr().err and not (tmp_path / "y").exists()
