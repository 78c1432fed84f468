"""Periodic checkpoints and resume: a resumed run continues the same id and reproduces the uninterrupted one."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from engine import ExperimentConfig, RunControl, RunStore, TrainingSession
from engine.algorithms.maml import MAML
from engine.errors import ConfigError, DataError
from engine.training.resume import FORMAT, load_resume_checkpoint


def small(tiny_bert, **kw) -> ExperimentConfig:
    base = dict(model=str(tiny_bert), dataset="demo", algorithm="maml", inner_steps=1, meta_batch_size=2,
                meta_iterations=24, val_interval=6, val_episodes=4, checkpoint_interval=5, device="cpu")
    base.update(kw)
    return ExperimentConfig(**base)


def curves(db, run_id) -> dict[str, list[tuple[int, float]]]:
    return {k: [(s, v) for s, v, _t in rows] for k, rows in RunStore(db).get_metrics(run_id).items()}


def crash_at(monkeypatch, call: int, exc: BaseException):
    """Make MAML.outer_step raise ``exc`` on its ``call``-th call (1-based)."""
    orig = MAML.outer_step
    count = {"n": 0}

    def step(self, tasks):
        count["n"] += 1
        if count["n"] == call:
            raise exc
        return orig(self, tasks)

    monkeypatch.setattr(MAML, "outer_step", step)


@pytest.mark.parametrize("train_layers", [0, 1])
def test_crash_then_resume_reproduces_the_uninterrupted_run(tiny_bert, db_path, monkeypatch, train_layers):
    # train_layers=1 trains a transformer layer with dropout on: the torch RNG state must be restored too.
    cfg = small(tiny_bert, train_layers=train_layers, meta_iterations=18, checkpoint_interval=4)
    ref = TrainingSession(cfg, db_path)
    list(ref.run())
    assert ref.status == "completed"

    crash_at(monkeypatch, 15, RuntimeError("boom in the loop"))
    crashed = TrainingSession(cfg, db_path)
    with pytest.raises(RuntimeError, match="boom in the loop"):
        for _ in crashed.run():
            pass
    monkeypatch.undo()
    store = RunStore(db_path)
    row = store.get_run(crashed.run_id)
    # any exception in the loop: failed, with the traceback stored; the rows written so far are kept
    assert row["status"] == "failed" and row["error"] == "RuntimeError: boom in the loop"
    assert "Traceback" in row["traceback"] and "boom in the loop" in row["traceback"]
    assert [s for s, _ in curves(db_path, crashed.run_id)["outer_loss"]] == list(range(1, 15))
    assert [(c["step"], c["kind"]) for c in store.list_checkpoints(crashed.run_id)] == \
        [(8, "periodic"), (12, "periodic")]  # every 4 iterations, the newest two kept

    resumed = TrainingSession.resume(crashed.run_id, db_path)
    records = list(resumed.run())
    assert resumed.run_id == crashed.run_id and resumed.resumed_from == 12
    assert [r.step for r in records] == list(range(13, 19))
    t12 = [t for s, _v, t in RunStore(db_path).get_metrics(crashed.run_id, ["outer_loss"])["outer_loss"] if s == 12]
    assert records[0].elapsed_s > t12[0] > 0  # training time (and a max_minutes budget) goes on, not from 0
    assert resumed.status == "completed" and resumed.stop_reason == "max_iterations"
    # the same values at every step as the run that was never interrupted, each step exactly once
    assert curves(db_path, crashed.run_id) == curves(db_path, ref.run_id)
    row = RunStore(db_path).get_run(crashed.run_id)
    assert row["status"] == "completed" and row["iterations"] == 18 and row["error"] is None
    assert row["best_val_accuracy"] == RunStore(db_path).get_run(ref.run_id)["best_val_accuracy"]
    assert any("from the checkpoint of iteration 12" in w for w in row["warnings"])
    final = [c for c in RunStore(db_path).list_checkpoints(crashed.run_id) if c["kind"] == "final"]
    assert len(final) == 1 and final[0]["step"] == 18


@pytest.mark.parametrize("variant", [
    {"algorithm": "fomaml"},
    {"algorithm": "metasgd"},  # learned per-parameter inner learning rates: algorithm-owned state
    {"algorithm": "maml", "dataset": "sinusoid"},  # regression: another sampler and model
])
def test_stop_then_resume_continues_exactly(tiny_bert, db_path, variant):
    cfg = small(tiny_bert, checkpoint_interval=0, **variant)  # 0: no periodic checkpoints
    ref = TrainingSession(cfg, db_path)
    list(ref.run())

    control = RunControl()
    stopped = TrainingSession(cfg, db_path, control)
    for rec in stopped.run():
        if rec.step == 7:
            control.request_stop()
    assert stopped.status == "stopped" and stopped.iterations == 7
    kinds = [(c["step"], c["kind"]) for c in RunStore(db_path).list_checkpoints(stopped.run_id)]
    assert kinds == [(7, "periodic"), (7, "final")]  # a stop leaves a resume checkpoint of its last step

    resumed = TrainingSession.resume(stopped.run_id, db_path)
    assert [r.step for r in resumed.run()][0] == 8
    assert resumed.resumed_from == 7 and resumed.status == "completed"
    assert curves(db_path, stopped.run_id) == curves(db_path, ref.run_id)
    kinds = [(c["step"], c["kind"]) for c in RunStore(db_path).list_checkpoints(stopped.run_id)]
    assert kinds == [(7, "periodic"), (24, "final")]  # the old final checkpoint was replaced


def test_pause_writes_a_resume_checkpoint(tiny_bert, db_path):
    control = RunControl()
    session = TrainingSession(small(tiny_bert, checkpoint_interval=0, meta_iterations=8), db_path, control)
    seen: dict = {}

    def watch():  # another thread, with its own connection, as the window would
        store = RunStore(db_path)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            run = store.list_runs()[0] if store.list_runs() else None
            if run and run["status"] == "paused":
                seen["status"] = run["status"]
                seen["ckpt"] = [(c["step"], c["kind"]) for c in store.list_checkpoints(run["id"])]
                break
            time.sleep(0.02)
        store.close()
        control.resume()

    thread = threading.Thread(target=watch)
    for rec in session.run():
        if rec.step == 3:
            thread.start()
            control.pause()
    thread.join()
    assert seen == {"status": "paused", "ckpt": [(3, "periodic")]}
    assert session.status == "completed" and session.iterations == 8


def test_resume_refuses_with_a_clear_error_and_changes_nothing(tiny_bert, db_path, tmp_path):
    store = RunStore(db_path)
    with pytest.raises(ConfigError, match="no run with id 99") as e:
        list(TrainingSession.resume(99, db_path).run())
    assert e.value.field == "RUN_ID"

    live = store.create_run(small(tiny_bert).to_dict(), "live")
    store.update_run(live, status="running")  # this very process: alive
    with pytest.raises(ConfigError, match=f"run {live} is still running"):
        list(TrainingSession.resume(live, db_path).run())
    assert store.get_run(live)["status"] == "running"

    # a run on a file that changes afterwards cannot be resumed: its episodes would differ
    data = tmp_path / "d.jsonl"
    data.write_text("".join(f'{{"text": "{lab} example {i}", "label": "{lab}"}}\n'
                            for lab in "abcdefghijklmno" for i in range(6)), encoding="utf-8")
    control = RunControl()
    s = TrainingSession(small(tiny_bert, dataset=str(data), n_way=2, k_shot=1, q_query=1), db_path, control)
    for rec in s.run():
        if rec.step == 3:
            control.request_stop()
    done = TrainingSession(small(tiny_bert, meta_iterations=2), db_path)
    list(done.run())
    with pytest.raises(ConfigError, match=f"run {done.run_id} already completed"):
        list(TrainingSession.resume(done.run_id, db_path).run())

    with data.open("a", encoding="utf-8") as f:
        f.write('{"text": "one more", "label": "a"}\n')
    before = store.get_run(s.run_id)
    with pytest.raises(DataError, match="changed since run") as e:
        list(TrainingSession.resume(s.run_id, db_path).run())
    assert e.value.field == "dataset"
    assert store.get_run(s.run_id) == before  # nothing changed


def test_damaged_newest_checkpoint_falls_back_to_the_previous_one(tiny_bert, db_path, monkeypatch):
    cfg = small(tiny_bert, algorithm="protonet", inner_steps=0, checkpoint_interval=4, meta_iterations=14)
    crash_at_proto = {"n": 0}
    from engine.algorithms.protonet import ProtoNet

    orig = ProtoNet.outer_step

    def step(self, tasks):
        crash_at_proto["n"] += 1
        if crash_at_proto["n"] == 11:
            raise KeyboardInterrupt  # a hard Ctrl-C: the run is interrupted, not failed
        return orig(self, tasks)

    monkeypatch.setattr(ProtoNet, "outer_step", step)
    session = TrainingSession(cfg, db_path)
    with pytest.raises(KeyboardInterrupt):
        list(session.run())
    monkeypatch.undo()
    store = RunStore(db_path)
    assert store.get_run(session.run_id)["status"] == "interrupted"
    ckpts = store.list_checkpoints(session.run_id)
    assert [c["step"] for c in ckpts] == [4, 8]
    tensors, state = load_resume_checkpoint(ckpts[0]["path"])
    assert state["format"] == FORMAT and state["step"] == 4 and "rng/torch" in tensors
    assert isinstance(tensors["rng/torch"], torch.Tensor)
    with open(ckpts[1]["path"], "r+b") as f:  # the newest file is truncated (a torn write on another OS)
        f.truncate(40)

    resumed = TrainingSession.resume(session.run_id, db_path)
    steps = [r.step for r in resumed.run()]
    assert steps == list(range(5, 15)) and resumed.resumed_from == 4
    row = store.get_run(session.run_id)
    assert row["status"] == "completed"
    assert any("iteration 8 could not be used" in w and "damaged" in w for w in row["warnings"])
    assert [s for s, _v, _t in store.get_metrics(session.run_id)["outer_loss"]] == list(range(1, 15))


def test_early_stopping_state_survives_a_resume(tiny_bert, db_path):
    # Early stopping keeps a copy of the best meta-state in memory and puts it back when its patience
    # runs out. The run is stopped after its best validation and resumed: the resumed run must still
    # know that score and state, end at the same step and export the same (best) meta-parameters.
    from engine.training.checkpoint import load_tensors

    cfg = small(tiny_bert, algorithm="fomaml", meta_iterations=60, val_interval=2, checkpoint_interval=0,
                early_stopping_patience=3)
    ref = TrainingSession(cfg, db_path)
    list(ref.run())
    best = ref.trainer.best_step
    assert ref.stop_reason == "early_stopping" and best + 2 < ref.iterations  # (tiny_bert's weights are random)

    control = RunControl()
    stopped = TrainingSession(cfg, db_path, control)
    for rec in stopped.run():
        if rec.step == best + 1:  # after the best validation, before early stopping ends the run
            control.request_stop()
    assert stopped.iterations == best + 1
    resumed = TrainingSession.resume(stopped.run_id, db_path)
    list(resumed.run())
    assert resumed.stop_reason == "early_stopping" and resumed.iterations == ref.iterations
    assert resumed.trainer.best_step == best
    assert curves(db_path, stopped.run_id) == curves(db_path, ref.run_id)
    finals = [[c["path"] for c in RunStore(db_path).list_checkpoints(r) if c["kind"] == "final"][0]
              for r in (ref.run_id, stopped.run_id)]
    a, b = (load_tensors(p) for p in finals)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # the best state, put back
