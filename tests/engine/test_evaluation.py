"""Meta-test evaluation: held-out classes, same episodes for every method, CIs, meta-gain, stored results."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from engine import ExperimentConfig, MetaTrainer, RunStore, TrainingSession
from engine.cli import main
from engine.evaluation import evaluate_run, evaluate_trainer, mean_ci


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_mean_ci_is_1_96_sample_std_over_sqrt_n():
    v = [0.2, 0.4, 0.4, 0.6, 1.0]
    mean, ci = mean_ci(v)
    assert mean == pytest.approx(0.52)
    assert ci == pytest.approx(1.96 * np.std(v, ddof=1) / math.sqrt(5))
    assert mean_ci([0.3]) == (0.3, 0.0)
    assert math.isinf(mean_ci([1.0, float("inf")])[0])


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, clinc_subset):
    db = tmp_path_factory.mktemp("eval") / "runs.db"
    cfg = ExperimentConfig(algorithm="maml", dataset=str(clinc_subset), n_way=5, k_shot=5, q_query=5,
                           meta_iterations=40, val_interval=20, val_episodes=20, inner_steps=5, inner_lr=0.5,
                           outer_lr=5e-3, device="cpu", seed=0)
    session = TrainingSession(cfg, db)
    list(session.run())
    assert session.status == "completed"
    return db, session.run_id


def test_eval_cli_json_shape_and_values(trained_run, capsys):
    db, run_id = trained_run
    assert main(["eval", str(run_id), "--db", str(db), "--episodes", "60", "--json"]) == 0
    res = last_json(capsys.readouterr().out)
    assert res["run_id"] == run_id and res["episodes"] == 60
    assert set(res["methods"]) == {"meta", "nearest_centroid", "finetune_head"}
    for name, m in res["methods"].items():
        assert set(m) == {"accuracy", "ci95"}, name
        assert 0.0 <= m["accuracy"] <= 1.0 and 0.0 < m["ci95"] < 0.1, (name, m)
        assert m["accuracy"] - m["ci95"] > 0.2 + 0.2, (name, m)  # far above chance (1/5) on held-out classes
    gain = res["meta_gain"]
    assert set(gain) == {"value", "ci95"} and gain["ci95"] > 0
    # paired differences of per-episode accuracies: the gain is exactly the difference of the means
    assert gain["value"] == pytest.approx(res["methods"]["meta"]["accuracy"] - res["methods"]["finetune_head"]["accuracy"])

    stored = RunStore(db).list_evaluations(run_id)
    assert stored[-1]["episodes"] == 60 and stored[-1]["split"] == "test" and stored[-1]["result"] == res
    assert main(["show", str(run_id), "--db", str(db), "--json"]) == 0
    shown = last_json(capsys.readouterr().out)
    assert shown["evaluations"][-1]["result"] == res
    assert main(["show", str(run_id), "--db", str(db)]) == 0
    text = capsys.readouterr().out
    assert "nearest_centroid" in text and "meta-gain" in text


def test_evaluation_is_repeatable_and_changes_nothing(trained_run):
    db, run_id = trained_run
    store = RunStore(db)
    run = store.get_run(run_id)
    trainer = MetaTrainer(ExperimentConfig(**run["config"]))
    trainer.prepare()
    trainer.model.train()  # evaluation must switch to eval mode itself and restore the mode after
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    r1 = evaluate_trainer(trainer, episodes=30, seed=7)
    r2 = evaluate_trainer(trainer, episodes=30, seed=7)
    r3 = evaluate_trainer(trainer, episodes=30, seed=8)
    assert r1 == r2 and r1 != r3
    assert trainer.model.training
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(v, before[k]), k
    # the episodes come from the meta-test classes only, and are the same for a given seed
    split = trainer.tasks.split
    eps = trainer.test_sampler(7).sample_batch(30)
    assert all(set(ep.classes) <= set(split.test) for ep in eps)
    assert not set(split.test) & (set(split.train) | set(split.val))
    again = trainer.test_sampler(7).sample_batch(30)
    assert all(torch.equal(a.query_idx, b.query_idx) for a, b in zip(eps, again, strict=True))


def test_evaluate_run_loads_the_final_checkpoint(trained_run):
    db, run_id = trained_run
    store = RunStore(db)
    res = evaluate_run(store, run_id, episodes=20, seed=3, save=False)
    run = store.get_run(run_id)
    fresh = MetaTrainer(ExperimentConfig(**run["config"]))
    fresh.prepare()  # the untrained initialisation: a different (meta-untrained) model
    untrained = evaluate_trainer(fresh, episodes=20, seed=3, methods=["meta"])
    assert res["methods"]["meta"] != untrained["methods"]["meta"]
    assert res["methods"]["nearest_centroid"] == evaluate_trainer(fresh, episodes=20, seed=3,
                                                                  methods=["nearest_centroid"])["methods"][
        "nearest_centroid"]  # the baseline never depends on meta-training


def test_eval_refuses_runs_without_a_model(tmp_path, capsys):
    db = tmp_path / "r.db"
    store = RunStore(db)
    rid = store.create_run(ExperimentConfig().to_dict(), "never trained")
    assert main(["eval", str(rid), "--db", str(db)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no final checkpoint" in err[0]
    assert main(["eval", "999", "--db", str(db)]) == 2
    assert "no run with id 999" in capsys.readouterr().err


def test_eval_refuses_a_changed_data_set(tmp_path, clinc_subset, capsys):
    data = tmp_path / "data.jsonl"
    data.write_text(clinc_subset.read_text())
    db = tmp_path / "r.db"
    cfg = ExperimentConfig(algorithm="protonet", dataset=str(data), meta_iterations=2, val_episodes=2, device="cpu")
    session = TrainingSession(cfg, db)
    list(session.run())
    lines = data.read_text().splitlines()
    first_label = json.loads(lines[0])["label"]
    data.write_text("\n".join(ln for ln in lines if json.loads(ln)["label"] != first_label) + "\n")
    assert main(["eval", str(session.run_id), "--db", str(db), "--episodes", "5"]) == 2
    assert "changed since run" in capsys.readouterr().err


def test_sinusoid_evaluation_reports_mse_median_and_diverged_tasks(tmp_path):
    cfg = ExperimentConfig(dataset="sinusoid", algorithm="fomaml", meta_iterations=150, meta_batch_size=10,
                           inner_lr=0.01, inner_steps=1, outer_lr=0.005, device="cpu", val_episodes=5)
    t = MetaTrainer(cfg)
    list(t.run())
    res = evaluate_trainer(t, episodes=100, seed=0)
    assert set(res["methods"]) == {"meta", "finetune_head"}
    meta, base = res["methods"]["meta"], res["methods"]["finetune_head"]
    assert set(meta) == {"mse", "ci95", "median", "diverged"} and meta["diverged"] == 0
    assert meta["mse"] + meta["ci95"] < base["mse"]  # meta-training helps: lower MSE than a fresh MLP
    assert res["meta_gain"]["value"] > 0
    # a too large inner step makes adaptation blow up on some tasks: counted, and the median stays usable
    t.learner.inner_lr = 0.2
    for steps in (3, 10):  # 10 steps: some tasks reach NaN, which counts as infinitely bad
        wild = evaluate_trainer(t, episodes=100, seed=0, steps=steps, methods=["meta"])["methods"]["meta"]
        assert wild["mse"] > 1e3  # the mean is ruined (huge or inf) ...
        assert 0 < wild["diverged"] < 50 and math.isfinite(wild["median"]) and wild["median"] < 20  # ... not these
