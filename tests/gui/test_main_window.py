"""The window driving runs: a live run on the demo set, errors before and during a run, closing."""

from __future__ import annotations

import time

import pytest
import torch
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox

from engine import ExperimentConfig, RunStore

FAST = {"val_episodes": 5, "meta_batch_size": 2, "inner_steps": 1}


def _click(qtbot, button):
    assert button.isEnabled()
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)


def test_live_run_on_demo_then_stop(make_window, qtbot, db_path):
    """The real engine end to end: curves fill, progress moves, pause/resume, stop -> 'stopped'."""
    w = make_window(config=ExperimentConfig(meta_iterations=20_000, val_interval=5, **FAST))
    _click(qtbot, w.start_button)
    assert w.running and not w.start_button.isEnabled() and not w.form.isEnabled()

    qtbot.waitUntil(lambda: w.curves.point_count("outer_loss") > 0, timeout=60_000)
    qtbot.waitUntil(lambda: w.progress.value() >= 3, timeout=30_000)
    assert w.curves.point_count("inner_loss_pre") > 0 and w.curves.point_count("inner_loss_post") > 0
    assert w.curves.point_count("val_accuracy") >= 1  # the first step validates
    assert "iteration" in w.progress.format() and "left" in w.progress.format()
    run_id = w.live_run_id
    assert run_id is not None and w.runs.selected_run_id() == run_id
    # batched: far fewer signals than records once the loop is fast
    assert w._worker.emit_count <= w._worker.record_count

    _click(qtbot, w.pause_button)
    assert w.pause_button.text() == "Resume"
    qtbot.waitUntil(lambda: w.store.get_run(run_id)["status"] == "paused", timeout=20_000)
    qtbot.wait(200)  # the last record before the pause may still be on its way (<= 50 ms)
    paused_at = w.progress.value()
    qtbot.wait(500)
    assert w.progress.value() == paused_at
    _click(qtbot, w.pause_button)
    assert w.pause_button.text() == "Pause"
    qtbot.waitUntil(lambda: w.progress.value() > paused_at, timeout=20_000)

    t0 = time.monotonic()
    _click(qtbot, w.stop_button)
    qtbot.waitUntil(lambda: not w.running, timeout=20_000)
    assert time.monotonic() - t0 < 10

    store = RunStore(db_path)
    try:
        run = store.get_run(run_id)
        assert run["status"] == "stopped" and run["stop_reason"] == "user"
        metrics = store.get_metrics(run_id)
        assert len(metrics["outer_loss"]) == run["iterations"] > 0
    finally:
        store.close()
    assert w.runs.status_of(run_id) == "stopped"
    assert w.runs.selected_run_id() == run_id
    assert w.curves.point_count("outer_loss") == run["iterations"]
    assert "stopped" in w.status_label.text()
    assert w.start_button.isEnabled() and w.form.isEnabled()


def test_engine_error_before_start_is_shown_at_the_field(make_window, qtbot, db_path):
    """k_shot + q_query larger than the demo labels hold: the engine says so under K-shot; no run row."""
    w = make_window()
    w.form.editor("k_shot").setValue(60)
    assert w.form.valid
    _click(qtbot, w.start_button)
    qtbot.waitUntil(lambda: not w.running, timeout=30_000)
    assert "k_shot + q_query" in w.form.error_text("k_shot")
    assert w.error_box is None  # shown at the field, not in a dialog
    assert "Not started" in w.status_label.text()
    assert w.store.list_runs() == []
    assert w.start_button.isEnabled()
    w.form.editor("k_shot").setValue(5)  # the next edit clears the engine's message
    assert w.form.error_text("k_shot") == ""


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_absent_device_gives_the_clear_error(make_window, qtbot):
    w = make_window()
    dev = w.form.editor("device")
    dev.setCurrentIndex(dev.findData("cuda"))
    _click(qtbot, w.start_button)
    qtbot.waitUntil(lambda: not w.running, timeout=30_000)
    assert "CUDA" in w.form.error_text("device")


def test_failing_run_shows_the_error_and_the_app_stays_usable(make_window, qtbot, fail_outer_step):
    """A fault during training: the session stores the run as failed, the window says why and goes on."""
    fail_outer_step("maml", at=3)
    w = make_window(config=ExperimentConfig(meta_iterations=50, val_interval=5, **FAST))
    _click(qtbot, w.start_button)
    qtbot.waitUntil(lambda: not w.running, timeout=60_000)
    assert w.error_box is not None and "boom in outer step 3" in w.error_box.text()
    assert "boom" in w.error_box.detailedText()  # the traceback
    assert "failed" in w.status_label.text()
    run = w.store.list_runs()[0]
    assert run["status"] == "failed" and "boom in outer step 3" in run["error"]
    assert w.runs.status_of(run["id"]) == "failed"
    assert w.runs.selected_run_id() == run["id"]
    assert w.curves.point_count("outer_loss") == 2  # the two good iterations
    assert "boom in outer step 3" in w.details.value("error")
    assert w.start_button.isEnabled() and w.form.isEnabled()
    w.error_box.close()


def test_next_run_after_a_failure(make_window, qtbot, fake_session):
    w = make_window(config=ExperimentConfig(meta_iterations=50, val_interval=5))
    for _ in range(2):  # the window can run one experiment after another
        _click(qtbot, w.start_button)
        qtbot.waitUntil(lambda: not w.running, timeout=30_000)
    runs = w.store.list_runs()
    assert [r["status"] for r in runs] == ["completed", "completed"]
    assert w.runs.status_of(runs[0]["id"]) == "completed"
    assert w.details.run_id == runs[0]["id"]
    assert w.curves.point_count("outer_loss") == 50


def test_records_are_batched(make_window, qtbot, fake_session):
    """Thousands of fast iterations arrive as a few dozen signals; every point is plotted."""
    w = make_window(config=ExperimentConfig(meta_iterations=3000, val_interval=100))
    t0 = time.monotonic()
    _click(qtbot, w.start_button)
    qtbot.waitUntil(lambda: not w.running, timeout=60_000)
    elapsed = time.monotonic() - t0
    stats = w.last_run_stats
    assert stats["records"] == 3000
    assert stats["signals"] <= elapsed / 0.05 + 3
    assert stats["signals"] < 3000 / 10
    assert w.curves.point_count("outer_loss") == 3000
    assert w.curves.point_count("val_accuracy") == 30
    assert w.progress.value() == 3000


def test_close_during_a_run_asks_then_stops_cleanly(make_window, qtbot, db_path, monkeypatch):
    w = make_window(config=ExperimentConfig(meta_iterations=100_000, val_interval=1000, **FAST))
    _click(qtbot, w.start_button)
    qtbot.waitUntil(lambda: w.progress.value() >= 3, timeout=60_000)

    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.No)
    w.close()
    assert w.isVisible() and w.running

    asked = []
    monkeypatch.setattr(QMessageBox, "question",
                        lambda *a, **k: asked.append(a) or QMessageBox.StandardButton.Yes)
    w.close()
    assert asked
    qtbot.waitUntil(lambda: not w.isVisible(), timeout=30_000)
    assert not w.running
    store = RunStore(db_path)
    try:
        run = store.list_runs()[0]
        assert run["status"] == "stopped" and run["iterations"] >= 3
    finally:
        store.close()


def test_browsing_other_runs_during_a_live_run(make_window, qtbot, db_path, fake_session):
    store = RunStore(db_path)
    old = store.create_run(ExperimentConfig().to_dict(), "older")
    store.add_metrics([(old, s, "outer_loss", 1.0, 0.0) for s in range(1, 8)])
    store.update_run(old, status="completed", iterations=7)
    store.close()
    fake_session.delay = 0.005
    w = make_window(config=ExperimentConfig(meta_iterations=100_000))
    _click(qtbot, w.start_button)
    qtbot.waitUntil(lambda: w.live_run_id is not None and w.progress.value() > 5, timeout=30_000)
    live = w.live_run_id
    assert w.runs.selected_run_id() == live and w.curves.run_id == live

    assert w.runs.select_run(old)
    assert w.curves.run_id == old and w.curves.point_count("outer_loss") == 7
    assert w.details.value("name") == "older"
    qtbot.wait(200)  # live records keep arriving without touching the shown run
    assert w.curves.point_count("outer_loss") == 7

    assert w.runs.select_run(live)
    shown = w.curves.point_count("outer_loss")
    assert shown >= 5 and w.curves.run_id == live
    qtbot.waitUntil(lambda: w.curves.point_count("outer_loss") > shown, timeout=10_000)
    _click(qtbot, w.stop_button)
    qtbot.waitUntil(lambda: not w.running, timeout=20_000)
    assert w.runs.selected_run_id() == live


def test_quitting_the_application_stops_the_run(make_window, qtbot, db_path, fake_session):
    """What ``QApplication.aboutToQuit`` does: stop the run and wait for its thread (no dangling thread)."""
    fake_session.delay = 0.01
    w = make_window(config=ExperimentConfig(meta_iterations=100_000))
    _click(qtbot, w.start_button)
    qtbot.waitUntil(lambda: w.progress.value() > 5, timeout=30_000)
    t0 = time.monotonic()
    assert w.shutdown(20_000)
    assert time.monotonic() - t0 < 5
    assert not w.running and w.start_button.isEnabled()
    run = w.store.list_runs()[0]
    assert run["status"] == "stopped"


def test_runs_from_another_process_appear(make_window, qtbot, db_path):
    """A run written by someone else (the CLI) shows up on refresh; its curves grow while it runs."""
    w = make_window(refresh_ms=100)
    other = RunStore(db_path)  # stands in for the CLI process
    try:
        cfg = ExperimentConfig(meta_iterations=10).to_dict()
        rid = other.create_run(cfg, "from the cli")
        other.update_run(rid, status="running", iterations=2)
        other.add_metrics([(rid, s, "outer_loss", 1.0 / s, s * 0.1) for s in (1, 2)])
        qtbot.waitUntil(lambda: w.runs.status_of(rid) == "running", timeout=5_000)
        assert w.runs.select_run(rid)
        assert w.details.run_id == rid
        assert w.curves.point_count("outer_loss") == 2
        other.add_metrics([(rid, s, "outer_loss", 1.0 / s, s * 0.1) for s in (3, 4, 5)])
        other.update_run(rid, iterations=5, best_val_accuracy=0.5, best_val_step=5)
        qtbot.waitUntil(lambda: w.curves.point_count("outer_loss") == 5, timeout=5_000)
        model = w.runs.model()
        row = {model.headerData(c, Qt.Orientation.Horizontal): model.index(0, c).data()
               for c in range(model.columnCount())}
        assert row["Name"] == "from the cli" and row["Iterations"] == "5 / 10" and row["Best val"] == "50.0% @ 5"
        other.update_run(rid, status="completed")
        qtbot.waitUntil(lambda: w.runs.status_of(rid) == "completed", timeout=5_000)
        assert w.details.value("status") == "completed" and w.details.value("iterations") == "5 / 10"
    finally:
        other.close()
    # "Use this config" copies the stored config into the form
    _click(qtbot, w.use_config_button)
    assert w.form.config().meta_iterations == 10


def test_resume_button_continues_a_stopped_run(make_window, qtbot, db_path):
    """A run stopped at iteration 15 (checkpoint every 10) resumes from the window to 30, same id."""
    from engine import ExperimentConfig, RunControl, RunStore, TrainingSession

    control = RunControl()
    cfg = ExperimentConfig(algorithm="protonet", meta_iterations=30, val_interval=10, val_episodes=5,
                           checkpoint_interval=10, device="cpu")
    session = TrainingSession(cfg, db_path, control)
    for rec in session.run():
        if rec.step == 15:
            control.request_stop()
    assert session.status == "stopped"
    window = make_window(config=ExperimentConfig(algorithm="maml", meta_iterations=7))  # another config
    window.refresh_runs()
    assert window.runs.select_run(session.run_id)
    qtbot.waitUntil(lambda: window.resume_button.isEnabled(), timeout=5000)
    assert not window.use_config_button.isHidden()
    qtbot.mouseClick(window.resume_button, Qt.MouseButton.LeftButton)
    # the disabled form shows the resumed run's config, not the one it held
    assert not window.form.isEnabled()
    assert window.form.values()["algorithm"] == "protonet" and window.form.values()["meta_iterations"] == 30
    qtbot.waitUntil(lambda: not window.running, timeout=120_000)
    store = RunStore(db_path)
    run = store.get_run(session.run_id)
    assert run["status"] == "completed" and run["iterations"] == 30
    steps = [s for s, _v, _t in store.get_metrics(session.run_id, ["outer_loss"])["outer_loss"]]
    assert steps == list(range(1, 31))
    assert [r.step for r in window._live_records] == list(range(1, 31))  # stored part + resumed part
    assert not window.resume_button.isEnabled()  # completed runs cannot be resumed
