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
        window.show()  # closed by this fixture (not qtbot.addWidget: that closes before the run is stopped)
        windows.append(window)
        return window

    yield make
    for window in windows:
        stopped = window.shutdown(60_000)
        if not stopped:
            window._close_after_run = True  # never block the suite on the "stop the run?" question
        if window.error_box is not None:
            window.error_box.close()
        window.close()
        window.deleteLater()
        assert stopped, "the training thread did not end"


class FakeSession:
    """A stand-in for :class:`engine.TrainingSession` that honours its public contract cheaply.

    It creates the run row, yields one :class:`~engine.StepRecord` per iteration (``delay`` seconds
    apart), writes metrics through :class:`~engine.RunStore`, obeys the :class:`~engine.RunControl` and
    ends ``completed`` / ``stopped``: enough to drive the window without loading a model.
    """

    delay = 0.0

    def __init__(self, config, db_path=None, control=None, on_status=None, **_kwargs):
        from engine import RunControl

        self.config, self.db_path = config, db_path
        self.control = control or RunControl()
        self.on_status = on_status or (lambda _m: None)
        self.run_id = None
        self.status, self.stop_reason, self.error = "created", None, None

    def run(self):
        from engine import RunStore, StepRecord

        store = RunStore(self.db_path)
        try:
            c = self.config
            self.on_status("preparing (fake)")
            self.run_id = store.create_run(c.to_dict(), c.display_name)
            store.update_run(self.run_id, status="running")
            self.status = "running"
            self.on_status(f"run {self.run_id}: training")
            rows, step = [], 0
            self.stop_reason = "max_iterations"
            for step in range(1, c.meta_iterations + 1):
                if self.control.checkpoint():
                    self.stop_reason, step = "user", step - 1
                    break
                if self.delay:
                    time.sleep(self.delay)
                metrics = {"outer_loss": 1.0 / step, "inner_loss_pre": 1.6, "inner_loss_post": 0.4,
                           "query_accuracy": 0.5}
                if step % c.val_interval == 0:
                    metrics.update(val_loss=0.9, val_accuracy=0.6)
                rows += [(self.run_id, step, k, v, step * 1e-3) for k, v in metrics.items()]
                yield StepRecord(step, c.meta_iterations, step * 1e-3, metrics)
            store.add_metrics(rows)
            self.status = "stopped" if self.stop_reason == "user" else "completed"
            store.update_run(self.run_id, status=self.status, stop_reason=self.stop_reason, iterations=step)
        finally:
            store.close()


@pytest.fixture
def fake_session(monkeypatch):
    """Make the window's worker drive :class:`FakeSession` (returned, to set ``delay``)."""
    import engine

    # the worker imports engine.TrainingSession when its run starts (not at window start-up)
    monkeypatch.setattr(engine, "TrainingSession", FakeSession)
    monkeypatch.setattr(FakeSession, "delay", 0.0)
    return FakeSession


@pytest.fixture
def fail_outer_step(monkeypatch):
    """Make the real algorithm raise ``RuntimeError("boom ...")`` in its ``at``-th outer step."""
    from engine.algorithms import REGISTRY

    def install(algorithm="maml", at=3):
        cls = REGISTRY[algorithm]
        original = cls.outer_step
        calls = {"n": 0}

        def outer_step(self, tasks):
            calls["n"] += 1
            if calls["n"] >= at:
                raise RuntimeError(f"boom in outer step {calls['n']}")
            return original(self, tasks)

        monkeypatch.setattr(cls, "outer_step", outer_step)

    return install
