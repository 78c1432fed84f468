"""Export folders: HF-loadable encoder, classifier round trip, atomic writes."""

from __future__ import annotations

import pytest
import torch
from few_shot_examples import QUERY, SUPPORT

from engine import ExperimentConfig, RunStore, TrainingSession, load_checkpoint
from engine.errors import MetaStudioError, StoreError
from engine.export import classifier_from_trainer, export_run, restore_run


def train(db_path, **over) -> int:
    base = dict(algorithm="maml", meta_iterations=6, val_interval=3, val_episodes=5, device="cpu")
    session = TrainingSession(ExperimentConfig(**{**base, **over}), db_path)
    for _ in session.run():
        pass
    return session.run_id


def labels(clf) -> list[str]:
    clf.adapt([t for t, _ in SUPPORT], [lab for _, lab in SUPPORT])
    return [p.label for p in clf.predict(QUERY)]


def test_export_loads_with_automodel_and_load_checkpoint(db_path, tmp_path):
    from transformers import AutoModel

    run_id = train(db_path)
    store = RunStore(db_path)
    out = export_run(store, run_id, tmp_path / "export")
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "metastudio.json", "metastudio_head.safetensors",
            "README.md", "tokenizer.json"} <= names
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".export")]  # no temp folder left
    enc = AutoModel.from_pretrained(out)
    assert enc.config.hidden_size == 384

    _, trainer = restore_run(store, run_id, device="cpu")
    in_app = classifier_from_trainer(trainer)
    loaded = load_checkpoint(out, device="cpu")
    expected = labels(in_app)
    assert labels(loaded) == expected == ["alarm", "weather", "music", "weather"]
    probs = loaded.predict(QUERY[:1])[0].probabilities
    assert set(probs) == {"alarm", "weather", "music"} and abs(sum(probs.values()) - 1) < 1e-5
    card = (out / "README.md").read_text()
    assert "maml" in card and "load_checkpoint" in card


def test_trained_layers_are_merged_into_the_exported_encoder(db_path, tmp_path, tiny_bert):
    from transformers import AutoModel

    run_id = train(db_path, model=str(tiny_bert), train_layers=1, adapt_layers=1, outer_lr=0.05,
                   inner_lr=0.05, n_way=3, k_shot=2, q_query=2)
    store = RunStore(db_path)
    out = export_run(store, run_id, tmp_path / "e")
    exported = AutoModel.from_pretrained(out).state_dict()
    base = AutoModel.from_pretrained(tiny_bert).state_dict()
    top = [k for k in base if k.startswith("encoder.layer.1.") and k.endswith("weight")]
    bottom = [k for k in base if k.startswith("encoder.layer.0.") and k.endswith("weight")]
    assert any(not torch.equal(exported[k], base[k]) for k in top)  # meta-trained top layer
    assert all(torch.equal(exported[k], base[k]) for k in bottom)  # frozen bottom layer
    _, trainer = restore_run(store, run_id, device="cpu")
    assert labels(load_checkpoint(out, device="cpu")) == labels(classifier_from_trainer(trainer))


def test_export_refuses_non_empty_folder_and_leaves_nothing_on_crash(db_path, tmp_path, monkeypatch):
    run_id = train(db_path, algorithm="protonet")
    store = RunStore(db_path)
    exports = tmp_path / "exports"
    target = exports / "busy"
    target.mkdir(parents=True)
    (target / "keep.txt").write_text("mine")
    with pytest.raises(MetaStudioError, match="not empty"):
        export_run(store, run_id, target)
    assert (target / "keep.txt").read_text() == "mine"

    import engine.export.folder as folder

    def disk_full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(folder, "render_model_card", disk_full)
    with pytest.raises(StoreError, match="No space left"):
        export_run(store, run_id, exports / "new")
    assert sorted(p.name for p in exports.iterdir()) == ["busy"]
    monkeypatch.undo()
    with pytest.raises(MetaStudioError, match="not a MetaStudio export"):  # --overwrite keeps unrelated files
        export_run(store, run_id, target, overwrite=True)
    assert (target / "keep.txt").read_text() == "mine"
    out = export_run(store, run_id, exports / "new")
    (out / "stale.txt").write_text("old")
    out = export_run(store, run_id, out, overwrite=True)  # a previous export is replaced as a whole
    assert not (out / "stale.txt").exists() and (out / "metastudio.json").exists()
    clf = load_checkpoint(out, device="cpu")
    assert labels(clf)[:3] == ["alarm", "weather", "music"]


def test_cli_export(db_path, tmp_path, capsys):
    import json

    from engine.cli import main

    run_id = train(db_path, algorithm="protonet")
    assert main(["export", str(run_id), str(tmp_path / "x"), "--db", str(db_path), "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["run_id"] == run_id and (tmp_path / "x" / "model.safetensors").exists()
    assert main(["export", str(run_id), str(tmp_path / "x"), "--db", str(db_path)]) == 2
    assert "not empty" in capsys.readouterr().err


@pytest.mark.parametrize("over", [dict(algorithm="maml", adapt_layers=1), dict(algorithm="protonet", train_layers=1)])
def test_classifier_adapts_once_per_support_set(db_path, tiny_bert, over, monkeypatch):
    from engine.algorithms.base import Task

    run_id = train(db_path, model=str(tiny_bert), n_way=3, k_shot=2, q_query=2, **over)
    _, trainer = restore_run(RunStore(db_path), run_id, device="cpu")
    clf = classifier_from_trainer(trainer)
    clf.adapt([t for t, _ in SUPPORT], [lab for _, lab in SUPPORT])
    calls = {"encoder": 0}
    forward = type(clf.model.encoder).forward

    def counting(self, *args, **kwargs):
        calls["encoder"] += 1
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(type(clf.model.encoder), "forward", counting)
    first = clf.predict(QUERY)
    after_first = calls["encoder"]
    second = clf.predict(QUERY)
    assert calls["encoder"] - after_first == 1  # only the queries: the adaptation is reused
    assert [p.probabilities for p in first] == [p.probabilities for p in second]
    # the same numbers as adapting from scratch for this query batch
    sx, sy = clf.support
    logits = clf.learner.predict_query(Task(sx, sy, clf._inputs(QUERY), torch.zeros(len(QUERY), dtype=torch.long)))
    expected = torch.softmax(logits.float(), -1)
    got = torch.tensor([[p.probabilities[c] for c in clf.classes] for p in first])
    assert torch.allclose(got, expected, atol=1e-5)
    clf.adapt([t for t, _ in SUPPORT[:6]], [lab for _, lab in SUPPORT[:6]])  # a new support set: adapts anew
    assert set(clf.predict(QUERY[:1])[0].probabilities) == {"alarm", "weather"}
