"""End-to-end meta-training on real data with the bundled model, stored in SQLite."""

from __future__ import annotations

import numpy as np
import pytest

from engine import ExperimentConfig, RunControl, RunStore, TrainingSession


def run(config: ExperimentConfig, db_path, control=None) -> tuple[TrainingSession, list]:
    session = TrainingSession(config, db_path, control)
    records = list(session.run())
    return session, records


def test_maml_outer_loss_falls_on_demo_set(db_path):
    # One small inner step: how well the adapted head does depends on the meta-learned init and scale.
    cfg = ExperimentConfig(algorithm="maml", dataset="demo", meta_iterations=100, val_interval=50,
                           inner_steps=1, inner_lr=0.1, outer_lr=1e-2, meta_batch_size=4, seed=1, device="cpu")
    session, records = run(cfg, db_path)
    assert session.status == "completed" and session.stop_reason == "max_iterations"
    outer = np.array([r.metrics["outer_loss"] for r in records])
    assert outer[-20:].mean() < 0.7 * outer[:20].mean()
    val = [r.metrics["val_loss"] for r in records if "val_loss" in r.metrics]
    assert val[-1] < val[0]  # the same fixed meta-val episodes: a real improvement, not noise
    pre = np.mean([r.metrics["inner_loss_pre"] for r in records])
    post = np.mean([r.metrics["inner_loss_post"] for r in records])
    assert post < pre  # adaptation fits the support set


@pytest.mark.parametrize("algorithm", ["protonet", "maml"])
def test_meta_val_accuracy_far_above_chance_on_clinc(clinc_subset, db_path, algorithm):
    cfg = ExperimentConfig(algorithm=algorithm, dataset=str(clinc_subset), n_way=5, k_shot=5, q_query=5,
                           meta_iterations=30, val_interval=15, val_episodes=40, device="cpu")
    session, records = run(cfg, db_path)
    val = [r.metrics["val_accuracy"] for r in records if "val_accuracy" in r.metrics]
    assert val[-1] > 0.6, val  # chance is 1/5
    store = RunStore(db_path)
    row = store.get_run(session.run_id)
    assert row["status"] == "completed" and row["best_val_accuracy"] >= val[-1]


def test_store_round_trip_of_a_run(db_path):
    cfg = ExperimentConfig(algorithm="fomaml", meta_iterations=12, val_interval=4, device="cpu", name="rt")
    session, records = run(cfg, db_path)
    store = RunStore(db_path)
    row = store.get_run(session.run_id)
    assert row["config"] == cfg.to_dict() and row["name"] == "rt" and row["iterations"] == 12
    assert set(row["label_split"]) == {"train", "val", "test", "origin"}
    metrics = store.get_metrics(session.run_id)
    for name in ("outer_loss", "inner_loss_pre", "inner_loss_post", "query_accuracy", "val_accuracy"):
        stored = [v for _s, v, _t in metrics[name]]
        sent = [r.metrics[name] for r in records if name in r.metrics]
        assert stored == pytest.approx(sent, rel=0, abs=0)
    assert [s for s, _v, _t in metrics["val_accuracy"]] == [1, 4, 8, 12]
    ckpt = store.list_checkpoints(session.run_id)
    assert len(ckpt) == 1 and ckpt[0]["kind"] == "final" and ckpt[0]["step"] == 12

    from engine.training.checkpoint import load_tensors

    saved = load_tensors(ckpt[0]["path"])
    live = session.trainer.meta_state()
    assert set(saved) == set(live)
    for k, v in saved.items():
        assert np.array_equal(v.numpy(), live[k].detach().cpu().numpy())


def test_stop_request_ends_run_as_stopped(db_path):
    control = RunControl()
    cfg = ExperimentConfig(meta_iterations=10_000, val_interval=1000, device="cpu")
    session = TrainingSession(cfg, db_path, control)
    seen = 0
    for rec in session.run():
        seen = rec.step
        if rec.step == 5:
            control.request_stop()
    assert seen == 5 and session.status == "stopped" and session.stop_reason == "user"
    row = RunStore(db_path).get_run(session.run_id)
    assert row["status"] == "stopped" and row["iterations"] == 5


def test_plateau_stop_condition(db_path):
    cfg = ExperimentConfig(algorithm="protonet", meta_iterations=5000, val_interval=1000, outer_lr=1e-6,
                           plateau_threshold=1e-2, plateau_patience=10, device="cpu")
    session, records = run(cfg, db_path)
    assert session.stop_reason == "plateau" and session.status == "completed"
    assert len(records) < 200


def test_divergence_marks_run_failed(db_path, monkeypatch):
    from engine.algorithms.maml import MAML
    from engine.errors import DivergenceError

    orig = MAML.outer_step

    def bad_step(self, tasks):
        m = orig(self, tasks)
        if self._calls == 3:
            m.outer_loss = float("nan")
        self._calls += 1
        return m

    monkeypatch.setattr(MAML, "_calls", 0, raising=False)
    monkeypatch.setattr(MAML, "outer_step", bad_step)
    cfg = ExperimentConfig(meta_iterations=50, device="cpu")
    session = TrainingSession(cfg, db_path)
    steps = []
    with pytest.raises(DivergenceError, match="diverged at iteration 4"):
        for rec in session.run():
            steps.append(rec.step)
    row = RunStore(db_path).get_run(session.run_id)
    assert row["status"] == "failed" and "diverged at iteration 4" in row["error"]
    outer = RunStore(db_path).get_metrics(session.run_id, ["outer_loss"])["outer_loss"]
    assert [s for s, _v, _t in outer] == [1, 2, 3, 4] and np.isnan(outer[-1][1])
