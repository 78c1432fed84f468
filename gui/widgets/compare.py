"""Compare two or more runs: overlaid curves, a config table of the keys that differ, a results table.

Every run is drawn in its own stable colour (:func:`gui.widgets.colors.run_color`), the same colour it
has everywhere in the window. Non-finite values (NaN, ±inf) are marked with red crosses at the run's last
finite value before them, as on the Curves tab, and counted in the legend. The widget reads from the
window's :class:`~engine.RunStore` (GUI thread) when the selection changes or
:meth:`CompareWidget.refresh` is called.

Exports: the selected runs' metrics as CSV (long format, :func:`engine.write_metrics_csv`) and the plot
as PNG or SVG (pyqtgraph's exporters, chosen by the file suffix). Both take a path argument so that
scripts and tests bypass the file dialogs.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QModelIndex, QPersistentModelIndex, QSortFilterProxyModel, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QFont, QShowEvent, QStandardItem, QStandardItemModel
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMessageBox,
    QPushButton,
    QSlider,
    QSplitter,
    QStackedWidget,
    QTableView,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from engine import MetaStudioError, RunStore, write_metrics_csv
from gui.widgets.colors import run_color
from gui.widgets.curves import AXIS_WIDTH, DOWNSAMPLE_FACTOR, NONFINITE_COLOR, X_MODES, ema, nonfinite_markers

# metric -> (picker label, y label)
METRICS = {
    "outer_loss": ("Outer (query) loss", "loss"),
    "inner_loss_post": ("Inner loss after adaptation", "loss"),
    "query_accuracy": ("Query accuracy (train episodes)", "accuracy"),
    "val_accuracy": ("Meta-val accuracy", "accuracy"),
}
DIFFERS_ROLE = Qt.ItemDataRole.UserRole + 1
DIFFER_BRUSH = QBrush(QColor(255, 241, 196))
MISSING = "—"
RESULT_COLUMNS = ("Run", "Status", "Iterations", "Best meta-val acc", "Meta-test: meta", "Nearest centroid",
                  "Finetune head", "Meta-gain")
HINT = "Select two or more runs in the run list (Ctrl/Shift+click) to compare them here."


def _flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def _fmt_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return ", ".join(_fmt_value(v) for v in value)
    return str(value)


def _num(value: Any) -> float:
    """A stored result number (floats, or ``"nan"`` / ``"inf"`` strings for non-finite ones)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def format_score(score: dict[str, Any] | None, regression: bool) -> str:
    """One method's meta-test score as shown in the results table: ``"72.4 ± 1.8 %"`` for accuracy,
    ``"0.412 ± 0.051 MSE"`` for regression; ``"n/a"`` when the method was not evaluated."""
    if not score:
        return "n/a"
    ci = _num(score.get("ci95"))
    if regression:
        v = _num(score.get("mse"))
        text = f"{v:.3g} ± {ci:.2g} MSE"
        if score.get("diverged"):
            text += f" ({score['diverged']} diverged)"
        return text
    return f"{100 * _num(score.get('accuracy')):.1f} ± {100 * ci:.1f} %"


def format_gain(gain: dict[str, Any] | None, regression: bool) -> str:
    """meta-gain ± CI: percentage points of accuracy, or the MSE reduction for regression."""
    if not gain:
        return "n/a"
    v, ci = _num(gain.get("value")), _num(gain.get("ci95"))
    if regression:
        return f"{v:+.3g} ± {ci:.2g} MSE"
    return f"{round(100 * v, 1) + 0.0:+.1f} ± {100 * ci:.1f} pp"  # + 0.0: never "-0.0"


class _DifferingFilter(QSortFilterProxyModel):
    """Hides the config rows whose value is the same in every run, while ``only_differing`` is on."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.only_differing = True

    def set_only_differing(self, on: bool) -> None:
        self.beginFilterChange()
        self.only_differing = on
        self.endFilterChange(QSortFilterProxyModel.Direction.Rows)

    def filterAcceptsRow(self, source_row: int, source_parent: QModelIndex | QPersistentModelIndex) -> bool:
        if not self.only_differing:
            return True
        return bool(self.sourceModel().index(source_row, 0, source_parent).data(DIFFERS_ROLE))


class CompareWidget(QWidget):
    """Side-by-side view of the runs selected in the run list (two or more).

    Args:
        store: the window's run database connection (used only in the GUI thread).

    Signals:
        statusMessage(str): a one-line result of an export, for the status bar.
    """

    statusMessage = Signal(str)

    def __init__(self, store: RunStore, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.store = store
        self.run_ids: list[int] = []
        self._runs: dict[int, dict[str, Any]] = {}
        self._metrics: dict[int, dict[str, list[tuple[int, float, float]]]] = {}
        self._evaluations: dict[int, list[dict[str, Any]]] = {}
        self._signature: tuple = ()
        self._items: dict[int, tuple[pg.PlotDataItem, pg.PlotDataItem, pg.PlotDataItem]] = {}  # raw, smooth, marks
        self._stale = False  # run_ids changed while hidden: read them when shown

        outer = QVBoxLayout(self)
        outer.setContentsMargins(4, 4, 4, 4)
        self.stack = QStackedWidget()
        outer.addWidget(self.stack)
        self.hint = QLabel(HINT)
        self.hint.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.hint.setWordWrap(True)
        self.hint.setStyleSheet("color: #666; font-size: 13px; padding: 20px;")
        self.stack.addWidget(self.hint)

        page = QWidget()
        lay = QVBoxLayout(page)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(4)
        self.heading = QLabel()
        self.heading.setStyleSheet("font-weight: 600; padding: 2px;")
        lay.addWidget(self.heading)
        lay.addWidget(self._build_options())

        self.view = pg.PlotWidget(background="w")
        self.view.setMinimumHeight(200)
        self.plot = self.view.getPlotItem()
        self.plot.setDownsampling(auto=True, mode="peak")
        self.plot.setClipToView(True)
        for axis in ("left", "bottom"):
            self.plot.getAxis(axis).enableAutoSIPrefix(False)
        self.plot.getAxis("left").setWidth(AXIS_WIDTH)
        self.plot.showGrid(x=True, y=True, alpha=0.2)
        self.legend = self.plot.addLegend(offset=(-10, 10), labelTextSize="9pt", labelTextColor="#222",
                                          brush=pg.mkBrush(255, 255, 255, 220), pen=pg.mkPen(200, 200, 200))

        self.results = QTableWidget(0, len(RESULT_COLUMNS))
        self.results.setHorizontalHeaderLabels(RESULT_COLUMNS)
        self.results.verticalHeader().setVisible(False)
        self.results.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.results.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.results.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.results.setToolTip("Meta-test accuracy ± 95% CI of the latest evaluation (metastudio eval RUN_ID).\n"
                                "Meta-gain: meta − finetune head on the same episodes (regression: MSE reduction).")

        self.config_model = QStandardItemModel(self)
        self.config_filter = _DifferingFilter(self)
        self.config_filter.setSourceModel(self.config_model)
        self.config_view = QTableView()
        self.config_view.setModel(self.config_filter)
        self.config_view.verticalHeader().setVisible(False)
        self.config_view.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.config_view.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.config_view.horizontalHeader().setStretchLastSection(True)
        self.only_differing = QCheckBox("Only differing keys")
        self.only_differing.setChecked(True)
        self.only_differing.toggled.connect(self.config_filter.set_only_differing)
        self.config_count = QLabel()
        self.config_count.setStyleSheet("color: #666;")
        config_box = QWidget()
        config_lay = QVBoxLayout(config_box)
        config_lay.setContentsMargins(0, 0, 0, 0)
        config_head = QHBoxLayout()
        title = QLabel("Config")
        title.setStyleSheet("font-weight: 600;")
        config_head.addWidget(title)
        config_head.addWidget(self.only_differing)
        config_head.addWidget(self.config_count)
        config_head.addStretch(1)
        config_lay.addLayout(config_head)
        config_lay.addWidget(self.config_view)
        results_box = QWidget()
        results_lay = QVBoxLayout(results_box)
        results_lay.setContentsMargins(0, 0, 0, 0)
        title = QLabel("Results")
        title.setStyleSheet("font-weight: 600;")
        results_lay.addWidget(title)
        results_lay.addWidget(self.results)

        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.view)
        split.addWidget(results_box)
        split.addWidget(config_box)
        split.setStretchFactor(0, 5)
        split.setStretchFactor(1, 2)
        split.setStretchFactor(2, 3)
        split.setChildrenCollapsible(False)
        lay.addWidget(split, 1)
        self.stack.addWidget(page)
        self.set_runs([])

    def _build_options(self) -> QWidget:
        row = QWidget()
        lay = QHBoxLayout(row)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(8)
        self.metric_combo = QComboBox()
        for name, (label, _y) in METRICS.items():
            self.metric_combo.addItem(label, name)
        self.metric_combo.currentIndexChanged.connect(lambda _i: self._draw())
        # long metric names are elided rather than widen the window's right panel
        self.metric_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.metric_combo.setMinimumContentsLength(12)
        lay.addWidget(self.metric_combo)
        lay.addWidget(QLabel("x:"))
        self.x_combo = QComboBox()
        for mode, label in X_MODES.items():
            self.x_combo.addItem(label, mode)
        self.x_combo.currentIndexChanged.connect(lambda _i: self._draw(autorange=True))
        lay.addWidget(self.x_combo)
        lay.addWidget(QLabel("smoothing:"))
        self.smooth_slider = QSlider(Qt.Orientation.Horizontal)
        self.smooth_slider.setRange(0, 99)
        self.smooth_slider.setFixedWidth(100)
        self.smooth_slider.setToolTip("Exponential moving average (bias-corrected), 0 = off; the raw curves stay faint.")
        self.smooth_label = QLabel("off")
        self.smooth_label.setMinimumWidth(30)
        self.smooth_slider.valueChanged.connect(self._on_smoothing)
        lay.addWidget(self.smooth_slider)
        lay.addWidget(self.smooth_label)
        lay.addStretch(1)
        self.csv_button = QPushButton("Export CSV…")
        self.csv_button.setToolTip("Every stored metric of the compared runs, long format: run,step,metric,value,time.")
        self.csv_button.clicked.connect(lambda: self._export_csv_clicked())
        self.plot_button = QPushButton("Save plot…")
        self.plot_button.setToolTip("The plot above as PNG or SVG (by the file name's suffix).")
        self.plot_button.clicked.connect(lambda: self._save_plot_clicked())
        lay.addWidget(self.csv_button)
        lay.addWidget(self.plot_button)
        return row

    # ---- options --------------------------------------------------------------------------------
    @property
    def metric(self) -> str:
        """The metric drawn (a key of :data:`METRICS`)."""
        return self.metric_combo.currentData()

    def set_metric(self, name: str) -> None:
        """Draw metric ``name`` (a key of :data:`METRICS`). Raises ValueError for another name."""
        if name not in METRICS:
            raise ValueError(f"unknown compare metric {name!r}; use one of {list(METRICS)}")
        self.metric_combo.setCurrentIndex(list(METRICS).index(name))

    @property
    def smoothing(self) -> float:
        """The EMA weight of the overlaid curves, 0 (off) to 0.99."""
        return self.smooth_slider.value() / 100

    def _on_smoothing(self, value: int) -> None:
        self.smooth_label.setText("off" if value == 0 else f"{value / 100:.2f}")
        self._draw()

    # ---- data -----------------------------------------------------------------------------------
    def set_runs(self, run_ids: Sequence[int]) -> None:
        """Compare these runs (in this order); fewer than two shows a hint instead.

        While the widget is hidden (another tab showing) the runs are only noted and read from the
        store when it is shown, so selecting runs costs nothing until the comparison is looked at.
        """
        self.run_ids = list(dict.fromkeys(int(r) for r in run_ids))
        if self.isVisible():
            self.refresh(force=True)
        else:
            self._stale = True

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        if self._stale:
            self.refresh(force=True)

    def refresh(self, force: bool = False) -> bool:
        """Re-read the compared runs from the store if they changed (status, iterations, evaluations) or
        ``force``; returns True if the view was rebuilt. Runs deleted meanwhile are dropped."""
        runs: dict[int, dict[str, Any]] = {}
        for rid in self.run_ids:
            try:
                runs[rid] = self.store.get_run(rid)
            except KeyError:
                continue
        evaluations = {rid: self.store.list_evaluations(rid) for rid in runs}
        signature = tuple((rid, r.get("name"), r.get("status"), r.get("iterations"), r.get("best_val_step"),
                           len(evaluations[rid])) for rid, r in runs.items())
        if not force and signature == self._signature and not self._stale:
            return False
        self._signature = signature
        self._stale = False
        self._runs, self._evaluations = runs, evaluations
        if len(runs) < 2:
            self._metrics = {}
            self.stack.setCurrentIndex(0)
            self.hint.setText(HINT if len(self.run_ids) < 2 else
                              "Fewer than two of the selected runs are still in the database.")
            return True
        self._metrics = {rid: self.store.get_metrics(rid, names=list(METRICS)) for rid in runs}
        self.heading.setText(f"Comparing {len(runs)} runs: " + ", ".join(f"#{rid}" for rid in runs))
        self.stack.setCurrentIndex(1)
        self._draw(autorange=True)
        self._fill_results()
        self._fill_config()
        return True

    @property
    def shown_run_ids(self) -> list[int]:
        """The runs in the view (the selection, less any no longer in the database)."""
        return list(self._runs)

    @staticmethod
    def run_label(run: dict[str, Any]) -> str:
        """``"#12 name"``: how a run is named in the legend and the tables."""
        name = run.get("name") or ""
        return f"#{run['id']} {name}".strip()

    def _draw(self, autorange: bool = False) -> None:
        for items in self._items.values():
            for item in items:
                self.plot.removeItem(item)
        self._items.clear()
        self.legend.clear()
        if len(self._runs) < 2:
            return
        metric = self.metric
        x_mode = self.x_combo.currentData()
        weight = self.smoothing
        self.plot.setLabel("left", METRICS[metric][1])
        self.plot.setLabel("bottom", X_MODES[x_mode])
        self.plot.setTitle(METRICS[metric][0], color="#333", size="10pt")
        for rid, run in self._runs.items():
            rows = self._metrics.get(rid, {}).get(metric, [])
            arr = np.array([(s, v, math.nan if t is None else t) for s, v, t in rows], dtype=np.float64) \
                if rows else np.empty((0, 3))
            x = arr[:, 0] if x_mode == "step" else arr[:, 2]
            v = arr[:, 1]
            finite = np.isfinite(v)
            color = QColor(run_color(rid))
            faint = QColor(color)
            faint.setAlpha(60)
            raw = pg.PlotDataItem(x, np.where(finite, v, np.nan), connect="finite", autoDownsampleFactor=DOWNSAMPLE_FACTOR,
                                  pen=pg.mkPen(faint if weight > 0 else color, width=1 if weight > 0 else 1.6))
            sx, sy = (x[finite], ema(v, weight)[finite]) if weight > 0 else (np.empty(0), np.empty(0))
            smooth = pg.PlotDataItem(sx, sy, connect="finite", autoDownsampleFactor=DOWNSAMPLE_FACTOR,
                                     pen=pg.mkPen(color, width=2))
            smooth.setVisible(weight > 0)
            mx, my = nonfinite_markers(x, v)
            marks = pg.PlotDataItem(mx, my, pen=None, symbol="x", symbolSize=11,
                                    symbolPen=pg.mkPen(NONFINITE_COLOR, width=2), symbolBrush=None)
            marks.setZValue(2)
            for item in (raw, smooth, marks):
                self.plot.addItem(item)
            self._items[rid] = (raw, smooth, marks)
            bad = int((~finite).sum())
            label = html.escape(self.run_label(run)) + (f" ({bad} non-finite)" if bad else "")
            self.legend.addItem(smooth if weight > 0 else raw, label)
        if autorange:
            self.plot.enableAutoRange()

    def _fill_results(self) -> None:
        self.results.setRowCount(len(self._runs))
        for row, (rid, run) in enumerate(self._runs.items()):
            regression = run["config"].get("dataset") == "sinusoid"
            evals = self._evaluations.get(rid, [])
            latest = evals[-1]["result"] if evals else {}
            methods = latest.get("methods", {})
            best = run.get("best_val_accuracy")
            best_text = f"{100 * best:.1f} % @ {run.get('best_val_step')}" if best is not None else MISSING
            if evals:
                cells = [format_score(methods.get("meta"), regression),
                         "n/a" if regression else format_score(methods.get("nearest_centroid"), regression),
                         format_score(methods.get("finetune_head"), regression),
                         format_gain(latest.get("meta_gain"), regression)]
            else:
                cells = ["not evaluated", "", "", ""]
            values = [self.run_label(run), run.get("status") or "", str(run.get("iterations") or 0), best_text, *cells]
            for col, text in enumerate(values):
                item = QTableWidgetItem(text)
                if col == 0:
                    item.setForeground(QBrush(QColor(run_color(rid))))
                    font = QFont()
                    font.setBold(True)
                    item.setFont(font)
                if evals and col >= 4:
                    e = evals[-1]
                    item.setToolTip(f"{e.get('episodes')} episodes, seed {e.get('seed')}, {e.get('created_at')}")
                self.results.setItem(row, col, item)
        self.results.resizeColumnsToContents()
        self.results.resizeRowsToContents()
        # tall enough for every run (up to 6 rows, then it scrolls) plus a horizontal scroll bar
        rows = min(self.results.rowCount(), 6)
        height = (self.results.horizontalHeader().sizeHint().height() + self.results.verticalHeader().length()
                  * rows // max(self.results.rowCount(), 1) + 2 * self.results.frameWidth()
                  + self.results.horizontalScrollBar().sizeHint().height() + 2)
        self.results.setMinimumHeight(height)
        self.results.setMaximumHeight(height)

    def _fill_config(self) -> None:
        flat = {rid: _flatten(run["config"]) for rid, run in self._runs.items()}
        keys = sorted(set().union(*flat.values()))
        self.config_model.clear()
        self.config_model.setHorizontalHeaderLabels(["key", *(self.run_label(r) for r in self._runs.values())])
        for col, rid in enumerate(self._runs, start=1):
            self.config_model.horizontalHeaderItem(col).setForeground(QBrush(QColor(run_color(rid))))
        differing = 0
        for key in keys:
            texts = [_fmt_value(flat[rid][key]) if key in flat[rid] else MISSING for rid in self._runs]
            differs = len(set(texts)) > 1
            differing += differs
            key_item = QStandardItem(key)
            key_item.setData(differs, DIFFERS_ROLE)
            row = [key_item, *(QStandardItem(t) for t in texts)]
            if differs:
                font = QFont()
                font.setBold(True)
                key_item.setFont(font)
                for item in row:
                    item.setBackground(DIFFER_BRUSH)
            self.config_model.appendRow(row)
        self.config_count.setText(f"{differing} of {len(keys)} keys differ")

    # ---- reading back -----------------------------------------------------------------------------
    def config_keys(self) -> list[str]:
        """The config keys shown now (all keys, or only the differing ones), top to bottom."""
        return [self.config_filter.index(r, 0).data() for r in range(self.config_filter.rowCount())]

    def config_value(self, key: str, run_id: int) -> str:
        """The text shown for ``key`` in ``run_id``'s column (``"—"`` if the run has no such key).

        Raises:
            KeyError: the key or the run is not in the table.
        """
        col = list(self._runs).index(run_id) + 1 if run_id in self._runs else None
        if col is None:
            raise KeyError(f"run {run_id} is not compared here")
        for r in range(self.config_model.rowCount()):
            if self.config_model.item(r, 0).text() == key:
                return self.config_model.item(r, col).text()
        raise KeyError(f"no config key {key!r}")

    def config_differs(self, key: str) -> bool:
        """Whether ``key``'s row is marked as differing (and highlighted)."""
        for r in range(self.config_model.rowCount()):
            if self.config_model.item(r, 0).text() == key:
                return bool(self.config_model.item(r, 0).data(DIFFERS_ROLE))
        raise KeyError(f"no config key {key!r}")

    def result_row(self, run_id: int) -> dict[str, str]:
        """The results table's cells of a run, by column title."""
        row = list(self._runs).index(run_id)
        return {title: self.results.item(row, col).text() for col, title in enumerate(RESULT_COLUMNS)}

    def curve_item(self, run_id: int, smoothed: bool = False) -> pg.PlotDataItem:
        """The plot item of a run's raw (or smoothed) curve of the current metric."""
        return self._items[run_id][1 if smoothed else 0]

    def marker_item(self, run_id: int) -> pg.PlotDataItem:
        """The red crosses marking a run's non-finite values of the current metric (empty if none)."""
        return self._items[run_id][2]

    def legend_labels(self) -> list[str]:
        """The legend's labels, in run order."""
        return [label.text for _sample, label in self.legend.items]

    # ---- exports ----------------------------------------------------------------------------------
    def export_csv(self, path: str | Path) -> int:
        """Write every stored metric of the compared runs to ``path`` (see :func:`engine.write_metrics_csv`);
        returns the number of rows.

        Raises:
            MetaStudioError: fewer than two runs compared, or the file cannot be written.
        """
        if len(self._runs) < 2:
            raise MetaStudioError("select two or more runs to export their metrics.")
        rows = write_metrics_csv(self.store, list(self._runs), path)
        self.statusMessage.emit(f"Wrote {rows} metric rows of runs {', '.join(map(str, self._runs))} to {path}.")
        return rows

    def save_plot(self, path: str | Path) -> Path:
        """Save the overlaid curves as PNG (``.png``) or SVG (``.svg``) by the suffix of ``path``.

        Raises:
            ValueError: another suffix.
            MetaStudioError: the file could not be written.
        """
        target = Path(path).expanduser()
        suffix = target.suffix.lower()
        if suffix not in (".png", ".svg"):
            raise ValueError(f"save the plot as .png or .svg, not {target.suffix or 'a file without a suffix'!r}")
        from pyqtgraph.exporters import ImageExporter, SVGExporter

        if suffix == ".png":
            exporter = ImageExporter(self.plot)
            exporter.parameters()["width"] = 2 * max(int(self.view.width()), 400)  # crisp in papers and on HiDPI
            exporter.export(str(target))
        else:
            try:
                SVGExporter(self.plot).export(str(target))
            except (ValueError, IndexError):
                # pyqtgraph 0.14's SVG post-processing fails on the path syntax of recent Qt SVG output
                # (pyqtgraph issue #3485): let Qt's own SVG generator draw the plot widget instead.
                self._render_svg(target)
        if not target.is_file() or target.stat().st_size == 0:
            raise MetaStudioError(f"could not write the plot to '{target}'.", hint="Pick a writable folder.")
        self.statusMessage.emit(f"Saved the plot to {target}.")
        return target

    def _render_svg(self, target: Path) -> None:
        from PySide6.QtCore import QRect, QSize
        from PySide6.QtGui import QPainter
        from PySide6.QtSvg import QSvgGenerator

        size = self.view.size()
        gen = QSvgGenerator()
        gen.setFileName(str(target))
        gen.setSize(QSize(size.width(), size.height()))
        gen.setViewBox(QRect(0, 0, size.width(), size.height()))
        gen.setTitle(self.plot.titleLabel.text or "MetaStudio comparison")
        painter = QPainter(gen)
        try:
            self.view.render(painter)
        finally:
            painter.end()

    # ---- dialogs (small methods, so tests can replace them) ---------------------------------------
    def _ask_save_path(self, title: str, default: str, filters: str) -> str:
        path, _ = QFileDialog.getSaveFileName(self, title, default, filters)
        return path

    def _show_error(self, title: str, text: str) -> None:
        QMessageBox.warning(self, title, text)

    def _export_csv_clicked(self, path: str | None = None) -> int | None:
        path = path or self._ask_save_path("Export the compared runs' metrics", "metrics.csv", "CSV (*.csv)")
        if not path:
            return None
        try:
            return self.export_csv(path)
        except MetaStudioError as err:
            self._show_error("Cannot export the metrics", str(err))
            return None

    def _save_plot_clicked(self, path: str | None = None) -> Path | None:
        path = path or self._ask_save_path("Save the plot", "compare.png", "PNG image (*.png);;SVG drawing (*.svg)")
        if not path:
            return None
        if not Path(path).suffix:
            path = f"{path}.png"
        try:
            return self.save_plot(path)
        except (MetaStudioError, ValueError) as err:
            self._show_error("Cannot save the plot", str(err))
            return None
