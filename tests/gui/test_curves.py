"""The curves widget with real pyqtgraph plots: options, smoothing, non-finite values, summaries, 100k points."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PySide6.QtCore import Qt

from engine import StepRecord
from gui.widgets.curves import CurvesWidget, ema, nice_ceil, snapped_range


@pytest.fixture
def curves(qtbot):
    w = CurvesWidget()
    qtbot.addWidget(w)
    w.resize(800, 700)
    w.show()
    return w


def _drawn(item):
    x, y = item.getOriginalDataset()
    return (np.empty(0), np.empty(0)) if x is None else (np.asarray(x), np.asarray(y))


def _metrics(values, name="outer_loss", dt=0.5):
    return {name: [(i + 1, v, (i + 1) * dt) for i, v in enumerate(values)]}


def test_ema_bias_correction():
    v = np.array([2.0, 4.0, np.nan, 6.0])
    out = ema(v, 0.5)
    assert out[0] == 2.0  # debiased: the first point is not pulled towards 0
    assert out[1] == pytest.approx((0.5 * 0.5 * 2 + 0.5 * 4) / (1 - 0.25))
    assert math.isnan(out[2])  # skipped, and it does not enter the average
    assert out[3] == pytest.approx((0.5 * (0.25 * 2 + 0.5 * 4) + 0.5 * 6) / (1 - 0.125))
    np.testing.assert_array_equal(ema(np.array([1.0, 3.0]), 0.0), [1.0, 3.0])
    with pytest.raises(ValueError, match="smoothing weight"):
        ema(v, 1.0)


def test_redraws_are_coalesced_and_flush_draws(curves, qtbot):
    curves.append_records([StepRecord(s, 100, s * 0.1, {"outer_loss": 1.0 / s}) for s in range(1, 11)])
    assert curves.point_count("outer_loss") == 10 and curves.last_step == 10
    qtbot.waitUntil(lambda: len(_drawn(curves.curve("outer_loss"))[0]) == 10, timeout=2000)  # the timer draws
    curves.append_records([StepRecord(11, 100, 1.1, {"outer_loss": 0.05})])
    curves.append_records([StepRecord(5, 100, 0.5, {"outer_loss": 9.0})])  # an old step: skipped
    curves.flush()
    x, y = _drawn(curves.curve("outer_loss"))
    assert list(x) == list(range(1, 12)) and y[-1] == 0.05


def test_x_by_time_and_log_y(curves):
    curves.show_metrics(_metrics([1.0, 0.1, 0.01], dt=2.5))
    curves.flush()
    assert list(_drawn(curves.curve("outer_loss"))[0]) == [1, 2, 3]
    curves.x_combo.setCurrentIndex(1)  # the user picks "training time (s)"
    assert curves.x_mode == "time"
    assert list(_drawn(curves.curve("outer_loss"))[0]) == [2.5, 5.0, 7.5]
    assert curves.plots["outer"].getAxis("bottom").labelText == "training time (s)"
    curves.log_check.setChecked(True)
    assert curves.log_y and curves.plots["outer"].ctrl.logYCheck.isChecked()
    assert not curves.plots["acc"].ctrl.logYCheck.isChecked()  # accuracy stays linear
    y_shown = curves.curve("outer_loss").getData()[1]
    np.testing.assert_allclose(y_shown, [0.0, -1.0, -2.0])  # drawn as log10
    curves.log_check.setChecked(False)
    np.testing.assert_allclose(curves.curve("outer_loss").getData()[1], [1.0, 0.1, 0.01])


def test_smoothing_changes_the_drawn_curve_not_the_raw(curves):
    values = [4.0, 0.0, 4.0, 0.0, 4.0, 0.0]
    curves.show_metrics({**_metrics(values), **_metrics([2.0, 1.0, 2.0, 1.0, 2.0, 1.0], "inner_loss_post")})
    curves.flush()
    assert curves.smoothing == 0.6 and curves.smoothed_curve("outer_loss").isVisible()  # on by default
    curves.smooth_slider.setValue(0)
    assert not curves.smoothed_curve("outer_loss").isVisible()
    assert curves.curve("outer_loss").opts["pen"].color().alpha() == 255
    curves.smooth_slider.setValue(80)  # the user drags the slider to 0.8
    assert curves.smoothing == 0.8 and curves.smooth_label.text() == "0.80"
    raw_x, raw_y = _drawn(curves.curve("outer_loss"))
    assert list(raw_y) == values  # the raw curve is unchanged, drawn faint behind
    assert curves.curve("outer_loss").opts["pen"].color().alpha() < 100
    sm_x, sm_y = _drawn(curves.smoothed_curve("outer_loss"))
    assert curves.smoothed_curve("outer_loss").isVisible()
    np.testing.assert_allclose(sm_y, ema(np.array(values), 0.8))
    assert sm_y[0] == 4.0 and 0.0 < sm_y[-1] < 4.0 and np.ptp(sm_y[2:]) < np.ptp(values)
    assert len(_drawn(curves.smoothed_curve("inner_loss_post"))[1]) == 6  # every loss curve
    assert len(_drawn(curves.smoothed_curve("val_accuracy"))[1]) == 0  # not accuracy
    # live points continue the average
    curves.append_records([StepRecord(7, 10, 3.5, {"outer_loss": 4.0})])
    curves.flush()
    np.testing.assert_allclose(_drawn(curves.smoothed_curve("outer_loss"))[1], ema(np.array(values + [4.0]), 0.8))
    curves.smooth_slider.setValue(0)
    assert not curves.smoothed_curve("outer_loss").isVisible()
    assert curves.curve("outer_loss").opts["pen"].color().alpha() == 255


def test_nan_and_inf_are_marked_and_counted(curves):
    values = [1.0, 0.5, float("nan"), 0.4, float("inf"), float("nan")]
    curves.show_metrics(_metrics(values))
    curves.flush()
    assert curves.point_count("outer_loss") == 6
    x, y = _drawn(curves.curve("outer_loss"))
    assert len(x) == 6 and np.isfinite(y).sum() == 3  # the finite part is still drawn
    mx, my = _drawn(curves.marker_item("outer_loss"))
    assert list(mx) == [3, 5, 6] and list(my) == [0.5, 0.4, 0.4]  # at the last finite value before each
    assert curves.warning_text("outer") == "⚠ outer_loss: 3 non-finite values (first at step 3)"
    assert curves._warnings["outer"].isVisible()
    assert curves.warning_text("acc") == ""
    assert "last 0.4" in curves.summary_text("outer")


def test_summaries_last_min_max_best_step(curves):
    curves.show_metrics({**_metrics([0.9, 0.3, 0.5, 0.7]),
                         **_metrics([0.2, 0.8, 0.6], "val_accuracy")})
    curves.flush()
    loss = curves.summary("outer_loss")
    assert (loss["last"], loss["min"], loss["max"], loss["best"], loss["best_step"]) == (0.7, 0.3, 0.9, 0.3, 2)
    acc = curves.summary("val_accuracy")
    assert (acc["last"], acc["min"], acc["max"], acc["best"], acc["best_step"]) == (0.6, 0.2, 0.8, 0.8, 2)
    assert "last 0.7 · min 0.3 · max 0.9 · best 0.3 @ step 2" in curves.summary_text("outer")
    assert "best 0.8 @ step 2" in curves.summary_text("acc")


def test_share_axes_moves_the_inner_losses(curves):
    curves.show_metrics({**_metrics([1.0, 0.8]), **_metrics([2.0, 1.5], "inner_loss_pre"),
                         **_metrics([0.7, 0.6], "inner_loss_post")})
    curves.flush()
    outer, inner = curves.plots["outer"], curves.plots["inner"]
    assert curves.curve("inner_loss_pre") in inner.listDataItems()
    curves.share_check.setChecked(True)
    assert curves.curve("inner_loss_pre") in outer.listDataItems()
    assert curves.curve("inner_loss_post") in outer.listDataItems()
    assert curves.curve("inner_loss_pre").isVisible() and len(_drawn(curves.curve("inner_loss_pre"))[1]) == 2
    assert not [i for i in inner.listDataItems() if i.isVisible()]
    assert not curves._boxes["inner"].isVisible()
    labels = [label.text for _sample, label in curves._legends["outer"].items]
    assert labels == ["query loss", "inner loss before adaptation", "inner loss after adaptation"]
    assert "before adaptation" in curves.summary_text("outer")
    curves.grab()  # paint: auto-range runs
    lo, hi = outer.viewRange()[1]
    assert lo <= 0.6 and hi >= 2.0  # one y axis holds all three
    curves.share_check.setChecked(False)
    assert curves.curve("inner_loss_pre") in inner.listDataItems() and curves._boxes["inner"].isVisible()


def test_100k_points(curves):
    n = 100_000
    steps = np.arange(1, n + 1)
    curves.show_metrics({"outer_loss": [(int(s), 1.0 / s ** 0.3, s * 1e-3) for s in steps]})
    curves.flush()
    assert curves.point_count("outer_loss") == n
    x, _y = _drawn(curves.curve("outer_loss"))
    assert len(x) == n
    curves.grab()  # paint: auto-range, then downsampling to the view's width
    shown = curves.curve("outer_loss").getData()[0]
    assert len(shown) < n / 10  # peak-downsampled for display
    assert curves.summary("outer_loss")["best_step"] == n


def _live(curves, first, last):
    curves.append_records([StepRecord(s, 10**6, s * 0.01, {"outer_loss": 2.0 / s ** 0.5, "query_accuracy": 0.5})
                           for s in range(first, last + 1)])
    curves.flush()


def test_a_growing_run_is_followed_in_steps(curves):
    outer, acc = curves.plots["outer"].getViewBox(), curves.plots["acc"].getViewBox()
    ranges = []
    for first in range(1, 2000, 25):  # 80 redraws of 25 new points
        _live(curves, first, first + 24)
        (x0, x1), (y0, y1) = outer.viewRange()
        assert x0 <= 1 and x1 >= first + 24  # every point stays in view
        assert y0 <= 2.0 / (first + 24) ** 0.5 and y1 >= 2.0
        assert acc.viewRange()[0] == pytest.approx([x0, x1])  # the x axes stay linked
        if not ranges or x1 != ranges[-1][1]:  # x extended: to a round bound with >= 25% headroom
            assert (x1 - x0) / 1.04 >= 1.25 * (first + 23)
        ranges.append((x0, x1, y0, y1))
    assert len(set(ranges)) <= 16  # the view changed at few redraws, not at each of the 80
    assert curves.following == {"x": True, "outer": True, "inner": True, "acc": True}


def _wheel(curves, key, delta=240):
    """A real mouse-wheel zoom over the centre of plot ``key``."""
    from PySide6.QtCore import QPoint, QPointF, Qt
    from PySide6.QtGui import QWheelEvent
    from PySide6.QtWidgets import QApplication

    view = curves.plots[key].getViewBox().getViewWidget()
    pos = QPointF(view.viewport().rect().center())
    event = QWheelEvent(pos, QPointF(view.viewport().mapToGlobal(pos.toPoint())), QPoint(0, 0), QPoint(0, delta),
                        Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(view.viewport(), event)


def test_zooming_stops_following_until_reset(curves, qtbot):
    _live(curves, 1, 100)
    (x0, x1), _y = curves.plots["outer"].getViewBox().viewRange()
    _wheel(curves, "outer")  # the user zooms in on the outer plot
    assert curves.following == {"x": False, "outer": False, "inner": True, "acc": True}
    zoomed = curves.plots["outer"].getViewBox().viewRange()
    assert zoomed[0][1] - zoomed[0][0] < 0.7 * (x1 - x0)
    _live(curves, 101, 400)
    assert curves.plots["outer"].getViewBox().viewRange() == zoomed  # the view stays where the user put it
    view = curves.plots["outer"].getViewBox().getViewWidget()
    centre = view.viewport().rect().center()
    # a double-click as Qt delivers it: press, release, double-click (the second press), release
    qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=centre)
    qtbot.mouseDClick(view.viewport(), Qt.MouseButton.LeftButton, pos=centre)
    qtbot.mouseRelease(view.viewport(), Qt.MouseButton.LeftButton, pos=centre)
    assert curves.following == {"x": True, "outer": True, "inner": True, "acc": True}
    _live(curves, 401, 425)
    (x0, x1), (y0, y1) = curves.plots["outer"].getViewBox().viewRange()
    assert x0 <= 1 and x1 >= 425 and y0 <= 2.0 / 425 ** 0.5 and y1 >= 2.0  # every point in view again


def test_round_bounds_of_a_followed_view():
    assert [nice_ceil(v) for v in (1.0, 1.1, 7.5, 9.99, 12.5, 3001.0)] == pytest.approx([1, 1.2, 8, 10, 15, 4000])
    assert snapped_range(0.12, 1.67) == pytest.approx((0.0, 1.8))  # steps of 0.2 ~ span / 10
    assert snapped_range(0.5, 0.5) == pytest.approx((0.45, 0.55)) and snapped_range(0.0, 0.0) == (-1.0, 1.0)
