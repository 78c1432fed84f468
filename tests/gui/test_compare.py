"""The Compare tab with real widgets: runs made directly in the store (no training), selected in the run list."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
from PySide6.QtCore import Qt

from engine import ExperimentConfig, RunStore
from gui.widgets.colors import PALETTE, run_color


def _eval(meta, centroid, head, gain):
    return {"episodes": 100, "seed": 0,
            "methods": {"meta": {"accuracy": meta[0], "ci95": meta[1]},
                        "nearest_centroid": {"accuracy": centroid[0], "ci95": centroid[1]},
                        "finetune_head": {"accuracy": head[0], "ci95": head[1]}},
            "meta_gain": {"value": gain[0], "ci95": gain[1]}}


@pytest.fixture
def runs(db_path):
    """Three text runs (inner_lr / k_shot differ) and a sinusoid run, with metrics and evaluations."""
    base = ExperimentConfig(device="cpu").to_dict()
    store = RunStore(db_path)
    a = store.create_run({**base, "inner_lr": 0.5, "k_shot": 5}, "maml k5")
    b = store.create_run({**base, "inner_lr": 0.1, "k_shot": 1}, "maml k1")
    c = store.create_run({**base, "inner_lr": 0.5, "k_shot": 5, "algorithm": "protonet"}, "protonet")
    s = store.create_run({**base, "dataset": "sinusoid", "algorithm": "maml"}, "sine")
    for rid, scale in ((a, 1.0), (b, 2.0), (c, 0.5), (s, 3.0)):
        rows = [(rid, step, "outer_loss", scale / step, step * 0.1) for step in range(1, 41)]
        rows += [(rid, step, "val_accuracy", 0.5 + step / 100, step * 0.1) for step in (10, 20, 30, 40)]
        store.add_metrics(rows)
        store.update_run(rid, status="completed", iterations=40, best_val_accuracy=0.9, best_val_step=40)
    store.add_metrics([(b, 41, "outer_loss", float("nan"), 4.1)])
    store.add_evaluation(a, episodes=100, seed=0, split="test",
                         result=_eval((0.72, 0.015), (0.65, 0.02), (0.69, 0.018), (0.03, 0.01)))
    store.add_evaluation(s, episodes=50, seed=0, split="test",
                         result={"episodes": 50, "seed": 0,
                                 "methods": {"meta": {"mse": 0.25, "ci95": 0.05, "median": 0.2, "diverged": 0},
                                             "finetune_head": {"mse": 2.5, "ci95": 0.4, "median": 2.0,
                                                               "diverged": 1}},
                                 "meta_gain": {"value": 2.25, "ci95": 0.39}})
    store.close()
    return {"a": a, "b": b, "c": c, "s": s}


@pytest.fixture
def window(make_window, runs):
    w = make_window()
    w.right_tabs.setCurrentWidget(w.compare)
    return w


def test_differing_config_keys(window, runs):
    a, b = runs["a"], runs["b"]
    assert window.compare.stack.currentIndex() == 0  # nothing selected: the hint
    assert "two or more runs" in window.compare.hint.text()
    assert window.runs.select_runs([a, b])
    cmp = window.compare
    assert sorted(cmp.shown_run_ids) == [a, b] and cmp.stack.currentIndex() == 1
    assert window.right_tabs.tabText(window.right_tabs.indexOf(cmp)) == "Compare (2)"
    assert cmp.only_differing.isChecked()
    assert cmp.config_keys() == ["inner_lr", "k_shot"]
    assert (cmp.config_value("inner_lr", a), cmp.config_value("inner_lr", b)) == ("0.5", "0.1")
    assert (cmp.config_value("k_shot", a), cmp.config_value("k_shot", b)) == ("5", "1")
    assert cmp.config_count.text() == f"2 of {len(ExperimentConfig().to_dict())} keys differ"
    # the differing cells are highlighted, the others not
    row = next(r for r in range(cmp.config_filter.rowCount()) if cmp.config_filter.index(r, 0).data() == "k_shot")
    assert cmp.config_filter.index(row, 1).data(Qt.ItemDataRole.BackgroundRole) is not None
    row = next(r for r in range(cmp.config_model.rowCount()) if cmp.config_model.item(r, 0).text() == "seed")
    assert cmp.config_model.item(row, 1).data(Qt.ItemDataRole.BackgroundRole) is None  # the same in both
    cmp.only_differing.setChecked(False)
    keys = cmp.config_keys()
    assert keys == sorted(ExperimentConfig().to_dict()) and "meta_iterations" in keys
    assert cmp.config_differs("inner_lr") and not cmp.config_differs("meta_iterations")
    assert cmp.config_value("meta_iterations", a) == cmp.config_value("meta_iterations", b) == "300"
    # one run selected again: the hint
    window.runs.select_run(a)
    assert cmp.stack.currentIndex() == 0
    assert window.right_tabs.tabText(window.right_tabs.indexOf(cmp)) == "Compare"


def test_a_run_keeps_its_colour_across_selections(window, runs):
    a, b, c = runs["a"], runs["b"], runs["c"]
    cmp = window.compare
    window.runs.select_runs([a, b])
    first = cmp.curve_item(a).opts["pen"].color().name()
    assert first == run_color(a) and cmp.curve_item(b).opts["pen"].color().name() == run_color(b) != first
    window.runs.select_runs([a, c])
    assert cmp.curve_item(a).opts["pen"].color().name() == first
    assert sorted(cmp.legend_labels()) == sorted([f"#{a} maml k5", f"#{c} protonet"])
    assert run_color(a) != run_color(a + len(PALETTE)) and run_color(a) != run_color(a + 1)
    # the curves: outer loss by step, then by time, then meta-val accuracy; smoothing keeps the raw
    x, y = cmp.curve_item(a).getOriginalDataset()
    assert list(x) == list(range(1, 41)) and y[0] == 1.0
    cmp.x_combo.setCurrentIndex(1)
    assert cmp.curve_item(a).getOriginalDataset()[0][0] == pytest.approx(0.1)
    cmp.set_metric("val_accuracy")
    assert list(cmp.curve_item(c).getOriginalDataset()[1]) == pytest.approx([0.6, 0.7, 0.8, 0.9])
    cmp.set_metric("outer_loss")
    cmp.smooth_slider.setValue(90)
    assert list(cmp.curve_item(a).getOriginalDataset()[1][:2]) == [1.0, 0.5]
    smooth = cmp.curve_item(a, smoothed=True)
    assert smooth.isVisible() and 0.5 < smooth.getOriginalDataset()[1][1] < 1.0  # pulled towards 1.0


def test_results_table(window, runs):
    a, b, s = runs["a"], runs["b"], runs["s"]
    window.runs.select_runs([a, b, s])
    cmp = window.compare
    ra = cmp.result_row(a)
    assert ra["Status"] == "completed" and ra["Iterations"] == "40" and ra["Best meta-val acc"] == "90.0 % @ 40"
    assert ra["Meta-test: meta"] == "72.0 ± 1.5 %"
    assert ra["Nearest centroid"] == "65.0 ± 2.0 %" and ra["Finetune head"] == "69.0 ± 1.8 %"
    assert ra["Meta-gain"] == "+3.0 ± 1.0 pp"
    assert cmp.result_row(b)["Meta-test: meta"] == "not evaluated"
    rs = cmp.result_row(s)
    assert rs["Meta-test: meta"] == "0.25 ± 0.05 MSE" and rs["Nearest centroid"] == "n/a"
    assert rs["Finetune head"] == "2.5 ± 0.4 MSE (1 diverged)" and rs["Meta-gain"] == "+2.25 ± 0.39 MSE"
    # a non-finite loss is named in the legend and marked on the plot (a red cross at the last finite value)
    assert f"#{b} maml k1 (1 non-finite)" in cmp.legend_labels()
    mx, my = cmp.marker_item(b).getOriginalDataset()
    assert list(mx) == [41] and list(my) == [2.0 / 40]
    assert cmp.marker_item(b).opts["symbol"] == "x" and cmp.marker_item(b).opts["symbolPen"].color().red() == 214
    assert cmp.marker_item(b) in cmp.plot.listDataItems() and cmp.marker_item(b).isVisible()
    assert cmp.marker_item(a).getOriginalDataset() == (None, None)  # all finite: no cross


def test_csv_export(window, runs, tmp_path, monkeypatch):
    a, b = runs["a"], runs["b"]
    window.runs.select_runs([a, b])
    cmp = window.compare
    out = tmp_path / "metrics.csv"
    monkeypatch.setattr(cmp, "_ask_save_path", lambda *_args: str(out))
    cmp.csv_button.click()  # the button, with the file dialog answered
    with open(out, newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["run", "step", "metric", "value", "time"]
    assert len(rows) == 1 + 2 * 44 + 1  # 40 losses + 4 accuracies per run, and b's NaN
    ids = [int(r[0]) for r in rows[1:]]
    assert set(ids) == {a, b}
    first_a = next(r for r in rows[1:] if int(r[0]) == a and r[2] == "outer_loss")
    assert first_a[1:] == ["1", "outer_loss", "1.0", "0.1"]
    nan_row = next(r for r in rows[1:] if int(r[0]) == b and r[1] == "41")
    assert nan_row[2] == "outer_loss" and math.isnan(float(nan_row[3]))
    assert "Wrote 89 metric rows" in window.status_label.text()


def test_save_plot_png_and_svg(window, runs, tmp_path, monkeypatch):
    window.runs.select_runs([runs["a"], runs["c"]])
    cmp = window.compare
    png = cmp.save_plot(tmp_path / "plot.png")
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    svg = cmp.save_plot(tmp_path / "plot.svg")
    text = svg.read_text(encoding="utf-8")
    assert "<svg" in text and len(text) > 1000
    with pytest.raises(ValueError, match=r"\.png or \.svg"):
        cmp.save_plot(tmp_path / "plot.jpg")
    errors = []
    monkeypatch.setattr(cmp, "_ask_save_path", lambda *_args: str(tmp_path / "noext"))
    monkeypatch.setattr(cmp, "_show_error", lambda title, text: errors.append(text))
    cmp.plot_button.click()  # no suffix typed: saved as PNG
    assert (tmp_path / "noext.png").read_bytes()[:4] == b"\x89PNG" and not errors
    assert np.isfinite(cmp.plot.viewRange()[1]).all()


def test_selection_is_read_when_the_tab_shows(make_window, runs):
    """Selecting runs while another tab shows costs nothing; the Compare tab reads them when shown."""
    w = make_window()
    assert w.right_tabs.tabText(w.right_tabs.currentIndex()) == "Curves"
    w.runs.select_runs([runs["a"], runs["c"]])
    assert w.compare.shown_run_ids == []  # not read yet
    assert w.right_tabs.tabText(w.right_tabs.indexOf(w.compare)) == "Compare (2)"
    w.right_tabs.setCurrentWidget(w.compare)
    assert sorted(w.compare.shown_run_ids) == sorted([runs["a"], runs["c"]])
    assert w.compare.config_keys() == ["algorithm"]
