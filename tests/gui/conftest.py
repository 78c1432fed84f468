"""Fixtures of the GUI tests: offscreen Qt, a window on a temporary database, a fake trainer."""

from __future__ import annotations

import os

os.environ["QT_QPA_PLATFORM"] = "offscreen"  # before anything imports Qt

import time  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture
def db_path(tmp_path):
    """A fresh run database for one test."""
    return tmp_path / "runs.db"


@pytest.fixture
def make_window(qtbot, db_path):
    """Build a shown :class:`~gui.main_window.MainWindow` on the test database (stopped at teardown)."""
    from gui.main_window import MainWindow

    windows = []

    def make(config=None, **kwargs):
        window = MainWindow(db_path=db_path, config=config, **kwargs)
        qtbot.addWidget(window)
        window.show()
        windows.append(window)
        return window

    yield make
    for window in windows:
        assert window.shutdown(60_000), "the training thread did not end"
        if window.error_box is not None:
            window.error_box.close()


@pytest.fixture
def fake_training(monkeypatch):
    """Replace the expensive part of the trainer (model, encoding, algorithm) with a fast stub.

    Data loading and the split stay real, as does the whole :class:`~engine.TrainingSession`
    (run row, metrics, status, checkpoint). Tune the stub through the returned dict:
    ``delay`` (seconds per iteration) and ``fail_at`` (the step that raises ``RuntimeError``).
    """
    import torch

    from engine import StepRecord
    from engine.training.trainer import MetaTrainer

    state = {"delay": 0.0, "fail_at": None}

    def prepare(self):
        self.device = torch.device("cpu")
        self.prepare_data()
        self.prepared = True

    def run(self, start_step=1):
        c = self.config
        for step in range(start_step, c.meta_iterations + 1):
            if self.control.checkpoint():
                self.stop_reason = "user"
                return
            if state["delay"]:
                time.sleep(state["delay"])
            if state["fail_at"] == step:
                raise RuntimeError(f"boom at step {step}")
            metrics = {"outer_loss": 1.0 / step, "inner_loss_pre": 1.6, "inner_loss_post": 0.4,
                       "query_accuracy": 0.5}
            if step % c.val_interval == 0:
                metrics.update(val_loss=0.9, val_accuracy=0.6)
                if self.best_val is None or 0.6 > self.best_val[0]:
                    self.best_val = (0.6, step)
            yield StepRecord(step, c.meta_iterations, step * 1e-3, metrics)
        self.stop_reason = "max_iterations"

    monkeypatch.setattr(MetaTrainer, "prepare", prepare)
    monkeypatch.setattr(MetaTrainer, "run", run)
    monkeypatch.setattr(MetaTrainer, "meta_state", lambda self: {"w": torch.zeros(1)})
    return state
