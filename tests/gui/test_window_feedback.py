"""What the window tells while a run is live: the pause state, the live iteration count, start-up."""

from __future__ import annotations

import re

from PySide6.QtCore import Qt

from engine import ExperimentConfig


def _click(qtbot, button):
    assert button.isEnabled()
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)


def test_pause_shows_the_iteration_reached_and_resume_restores(make_window, qtbot, fake_session):
    fake_session.delay = 0.01
    w = make_window(config=ExperimentConfig(meta_iterations=100_000, val_interval=1000))
    _click(qtbot, w.start_button)
    qtbot.waitUntil(lambda: w.live_run_id is not None and w.progress.value() > 20, timeout=30_000)
    assert "running" in w.curves.title.text()

    _click(qtbot, w.pause_button)
    assert w.pause_button.text() == "Resume"
    qtbot.waitUntil(lambda: w.status_label.text().startswith("Paused after iteration"), timeout=10_000)
    step = int(re.search(r"iteration (\d+)", w.status_label.text()).group(1))
    qtbot.wait(150)  # nothing more arrives while held
    # the message, the progress bar, the curve and the details agree on where the run holds
    assert step == w.progress.value() == w._live_records[-1].step == w.curves.point_count("outer_loss")
    assert w.progress.text() == f"iteration {step} / 100000 — paused"
    assert w.curves.title.text().endswith("(paused)")
    qtbot.waitUntil(lambda: w.details.value("iterations") == f"{step} / 100000", timeout=5_000)

    _click(qtbot, w.pause_button)
    qtbot.waitUntil(lambda: w.progress.value() > step + 3, timeout=10_000)
    assert w.status_label.text() == "Resumed." and w.pause_button.text() == "Pause"
    assert w.progress.text().endswith(" left") and "paused" not in w.progress.text()
    assert w.curves.title.text().endswith("(running)")
    _click(qtbot, w.stop_button)
    qtbot.waitUntil(lambda: not w.running, timeout=20_000)


def test_details_follow_the_live_iteration_count(make_window, qtbot, fake_session):
    """The store is written about twice a second; the details show the records' count as they arrive."""
    fake_session.delay = 0.01
    w = make_window(config=ExperimentConfig(meta_iterations=100_000, val_interval=1000), refresh_ms=60_000)
    _click(qtbot, w.start_button)
    qtbot.waitUntil(lambda: w.live_run_id is not None and w.details.run_id == w.live_run_id, timeout=30_000)
    for _ in range(2):  # the shown count follows the progress (updated at most 4 times a second)
        qtbot.waitUntil(lambda: int(w.details.value("iterations").split(" / ")[0]) >= w.progress.value() - 40
                        and w.progress.value() > 30, timeout=10_000)
        shown = int(w.details.value("iterations").split(" / ")[0])
        assert shown > 0 and w.details.value("iterations").endswith(" / 100000")
        qtbot.waitUntil(lambda n=shown: int(w.details.value("iterations").split(" / ")[0]) > n, timeout=5_000)
    _click(qtbot, w.stop_button)
    qtbot.waitUntil(lambda: not w.running, timeout=20_000)


def test_sinusoid_runs_show_no_accuracy_plot(make_window, qtbot, db_path):
    from engine import RunStore

    store = RunStore(db_path)
    sine = store.create_run(ExperimentConfig(dataset="sinusoid", inner_lr=0.01, inner_steps=1).to_dict(), "sine")
    text = store.create_run(ExperimentConfig().to_dict(), "text")
    for rid in (sine, text):
        store.add_metrics([(rid, s, "outer_loss", 1.0 / s, 0.1 * s) for s in range(1, 6)])
        store.update_run(rid, status="completed", iterations=5)
    store.close()
    w = make_window()
    w.refresh_runs()
    assert w.runs.select_run(sine)
    assert not w.curves.accuracy_shown and not w.curves.plots["acc"].getViewWidget().isVisible()
    assert w.curves.plots["outer"].getViewWidget().isVisible()
    assert w.runs.select_run(text)
    assert w.curves.accuracy_shown and w.curves.plots["acc"].getViewWidget().isVisible()


def _add_runs(db_path, n: int) -> list[int]:
    from engine import RunStore

    store = RunStore(db_path)
    ids = []
    try:
        for i in range(n):
            cfg = ExperimentConfig(algorithm=("maml", "protonet", "anil")[i % 3])
            rid = store.create_run(cfg.to_dict(), f"{cfg.algorithm} demo 5w5s run {i}")
            store.add_metrics([(rid, s, m, v, 0.1 * s) for s in range(1, 41)
                               for m, v in (("outer_loss", 1 / s), ("inner_loss_pre", 1.6), ("inner_loss_post", 0.4),
                                            ("query_accuracy", 1.0), ("val_accuracy", 0.95))])
            store.update_run(rid, status="completed", iterations=1000, best_val_accuracy=0.962, best_val_step=250,
                             duration_s=4.0)
            ids.append(rid)
    finally:
        store.close()
    return ids


def test_form_and_run_list_fit_the_default_window(make_window, qtbot, db_path):
    ids = _add_runs(db_path, 3)
    w = make_window()
    assert (w.width(), w.height()) == (1680, 980)
    qtbot.waitUntil(lambda: w.runs.model().rowCount() == 3, timeout=5_000)
    w.runs.select_run(ids[-1])
    for size in ((1680, 980), (1280, 800)):
        w.resize(*size)
        qtbot.wait(50)
        scroll = w.form.scroll_area
        content = scroll.widget()
        # no horizontal scrolling: every field, spin arrow and group border is inside the panel
        assert not scroll.horizontalScrollBar().isVisible(), size
        assert content.minimumSizeHint().width() <= scroll.viewport().width() == content.width(), size
        spin = w.form.editor("meta_batch_size")
        right_edge = spin.mapTo(content, spin.rect().topRight()).x()
        assert right_edge < scroll.viewport().width(), size
    w.resize(1680, 980)
    qtbot.wait(50)
    # the run list shows its main columns without scrolling sideways; the others are one right-click away
    assert w.runs.shown_columns() == ["ID", "Name", "Status", "Algorithm", "Best val", "Iterations", "Created"]
    assert not w.runs.horizontalScrollBar().isVisible()
    shown = [c for c in range(w.runs.model().columnCount()) if not w.runs.isColumnHidden(c)]
    assert sum(w.runs.columnWidth(c) for c in shown) <= w.runs.viewport().width()


def test_plot_legends_sit_outside_the_data(make_window, qtbot, db_path):
    ids = _add_runs(db_path, 1)
    w = make_window()
    qtbot.waitUntil(lambda: w.runs.model().rowCount() == 1, timeout=5_000)
    w.runs.select_run(ids[0])
    w.curves.flush()
    qtbot.wait(100)
    for shared in (False, True):  # sharing the loss axes puts three entries in the outer plot's legend
        w.curves.set_share_axes(shared)
        qtbot.wait(50)
        for key, plot in w.curves.plots.items():
            legend = plot.legend
            if key == "inner" and shared:
                continue  # hidden with its plot
            assert len(legend.items) == (3 if shared and key == "outer" else 1 if key == "outer" else 2)
            legend_box = legend.sceneBoundingRect()
            data_box = plot.getViewBox().sceneBoundingRect()
            assert legend_box.height() < 30 and not legend_box.intersects(data_box), key  # one row, above the data
            assert plot.sceneBoundingRect().contains(legend_box), key  # not cut at the right
            title = plot.titleLabel.item.sceneBoundingRect()
            assert not title.intersects(legend_box), key


def test_long_start_error_is_elided_and_the_status_clears_on_edit(make_window, qtbot):
    """K-shot larger than the demo labels hold: the engine's long message (it lists the labels) is cut
    under the field with the whole text in the tooltip; editing the field clears the status bar."""
    from gui.widgets.experiment_form import ERROR_MAX_CHARS, elide_message

    w = make_window()
    w.form.editor("k_shot").setValue(60)
    _click(qtbot, w.start_button)
    qtbot.waitUntil(lambda: not w.running and w.form.error_text("k_shot") != "", timeout=30_000)
    full = w.form.error_text("k_shot")
    assert "k_shot + q_query" in full and len(full) > ERROR_MAX_CHARS
    shown = w.form.shown_error_text("k_shot")
    assert shown.endswith("…") and len(shown) <= ERROR_MAX_CHARS and full.startswith(shown[:-1])
    label = w.form.editor("k_shot").parentWidget().error
    assert label.isVisibleTo(w.form) and label.toolTip() == full
    assert w.status_label.text().startswith("Not started")

    w.form.editor("k_shot").setValue(5)
    assert w.status_label.text() == "Ready." and w.form.error_text("k_shot") == ""
    assert not label.isVisibleTo(w.form) and label.toolTip() == ""
    assert elide_message("short") == "short" and elide_message("word " * 50, 40).endswith("word…")


def test_a_real_sinusoid_run_trains_pauses_and_resumes(make_window, qtbot):
    """The real engine: sinusoid picked in the form trains without diverging (the paper's settings), and a
    pause shows the iteration the session holds at, with the run row marked paused."""
    w = make_window()
    w.form.editor("dataset").setEditText("sinusoid")
    w.form.editor("meta_iterations").setValue(100_000)
    w.form.editor("val_episodes").setValue(5)
    w.form.editor("device").setCurrentIndex(w.form.editor("device").findData("cpu"))
    _click(qtbot, w.start_button)
    qtbot.waitUntil(lambda: w.live_run_id is not None and w.progress.value() >= 30, timeout=60_000)
    assert not w.curves.accuracy_shown
    _click(qtbot, w.pause_button)
    qtbot.waitUntil(lambda: w.status_label.text().startswith("Paused after iteration"), timeout=20_000)
    step = int(re.search(r"iteration (\d+)", w.status_label.text()).group(1))
    qtbot.wait(200)
    assert step == w.progress.value() == w._live_records[-1].step >= 30
    assert w.progress.text().endswith("— paused") and w.curves.title.text().endswith("(paused)")
    assert w.runs.status_of(w.live_run_id) == "paused" and w.details.value("status") == "paused"
    assert w.store.get_run(w.live_run_id)["status"] == "paused"
    losses = [r.metrics["outer_loss"] for r in w._live_records]
    assert all(v == v and v < 1e3 for v in losses)  # finite: inner_lr 0.01 does not diverge
    _click(qtbot, w.pause_button)
    qtbot.waitUntil(lambda: w.progress.value() > step + 5, timeout=20_000)
    assert w.curves.title.text().endswith("(running)") and w.runs.status_of(w.live_run_id) == "running"
    _click(qtbot, w.stop_button)
    qtbot.waitUntil(lambda: not w.running, timeout=30_000)
