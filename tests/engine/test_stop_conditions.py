"""Stop conditions: early stopping on meta-val (restoring the best meta-parameters) and the time budget."""

from __future__ import annotations

import pytest
import torch

from engine import ExperimentConfig, MetaTrainer, RunStore, TrainingSession
from engine.training.checkpoint import load_tensors


def scripted_validation(trainer: MetaTrainer, values: list[tuple[float, float | None]]) -> None:
    it = iter(values)
    trainer.validate = lambda: next(it)  # type: ignore[method-assign]


def test_early_stopping_restores_the_best_meta_parameters(db_path, monkeypatch):
    cfg = ExperimentConfig(algorithm="fomaml", meta_iterations=50, val_interval=1, early_stopping_patience=2,
                           outer_lr=0.05, inner_steps=1, device="cpu", seed=0)
    script = iter([(0.9, 0.6), (0.8, 0.7), (0.85, 0.65), (0.7, 0.69), (0.6, 0.99)])
    monkeypatch.setattr(MetaTrainer, "validate", lambda self: next(script))
    session = TrainingSession(cfg, db_path)
    states = {}
    records = []
    for rec in session.run():
        records.append(rec)
        states[rec.step] = {k: v.detach().clone() for k, v in session.trainer.meta_state().items()}
    # meta-val accuracy 0.6, 0.7 (best, step 2), 0.65, 0.69: two validations without a gain -> stop at step 4
    assert session.stop_reason == "early_stopping" and session.status == "completed"
    assert [r.step for r in records] == [1, 2, 3, 4]
    assert session.trainer.best_step == 2 and session.trainer.best_val == (0.7, 2)
    final = load_tensors(RunStore(db_path).list_checkpoints(session.run_id)[-1]["path"])
    for k, v in final.items():
        assert torch.equal(v, states[2][k]), k  # the stored model is the best one (a kept copy), not the last
    assert any(not torch.equal(states[4][k], states[2][k]) for k in final)  # training had moved on since
    row = RunStore(db_path).get_run(session.run_id)
    assert row["stop_reason"] == "early_stopping" and row["best_val_step"] == 2


def test_early_stopping_on_regression_uses_the_val_mse():
    cfg = ExperimentConfig(dataset="sinusoid", meta_iterations=100, val_interval=1, early_stopping_patience=3,
                           inner_lr=0.01, inner_steps=1, device="cpu", val_episodes=2)
    t = MetaTrainer(cfg)
    t.prepare()
    scripted_validation(t, [(3.0, None), (2.0, None), (2.5, None), (2.1, None), (2.0, None), (9.0, None)])
    steps = [r.step for r in t.run()]
    assert steps == [1, 2, 3, 4, 5] and t.stop_reason == "early_stopping" and t.best_step == 2


def test_time_budget_stops_the_run(db_path):
    cfg = ExperimentConfig(algorithm="protonet", meta_iterations=100_000, val_interval=10_000, val_episodes=5,
                           max_minutes=0.01, device="cpu")  # 0.6 s of training
    session = TrainingSession(cfg, db_path)
    records = list(session.run())
    assert session.stop_reason == "time_budget" and session.status == "completed"
    # it ends at the first iteration that reaches the budget
    assert len(records) < 100_000 and records[-1].elapsed_s >= 0.6
    assert len(records) == 1 or records[-2].elapsed_s < 0.6
    assert RunStore(db_path).get_run(session.run_id)["stop_reason"] == "time_budget"


@pytest.mark.parametrize("key,value", [("early_stopping_patience", -1), ("max_minutes", -0.5)])
def test_stop_condition_keys_are_validated(key, value):
    from engine import ConfigError, validate_config

    with pytest.raises(ConfigError, match=key):
        validate_config({key: value})
