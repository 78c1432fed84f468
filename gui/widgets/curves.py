"""Training curves of one run: outer loss, inner loss before/after adaptation, accuracy.

Three pyqtgraph plots share their x axis (meta-iteration). Points arrive either all at once from
the store (:meth:`CurvesWidget.show_metrics`) or in batches from a live run
(:meth:`CurvesWidget.append_records`). Long runs stay fast: every plot uses automatic peak
downsampling and clips to the visible range.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from engine import StepRecord

SMOOTH = "outer_loss_smoothed"
EMA_ALPHA = 0.05
# metric -> (plot key, legend name, pen, symbol)
SERIES: dict[str, tuple[str, str, dict, str | None]] = {
    "outer_loss": ("outer", "query loss", {"color": (31, 119, 180, 110), "width": 1}, None),
    SMOOTH: ("outer", "smoothed", {"color": (31, 119, 180), "width": 2}, None),
    "inner_loss_pre": ("inner", "before adaptation", {"color": (255, 127, 14), "width": 1.5}, None),
    "inner_loss_post": ("inner", "after adaptation", {"color": (44, 160, 44), "width": 1.5}, None),
    "query_accuracy": ("acc", "query (train episodes)", {"color": (127, 127, 127, 140), "width": 1}, None),
    "val_accuracy": ("acc", "meta-val", {"color": (148, 103, 189), "width": 2}, "o"),
}
PLOTS = (
    ("outer", "Outer loop: query loss", "loss"),
    ("inner", "Inner loop: support loss", "loss"),
    ("acc", "Accuracy", "accuracy"),
)


class CurvesWidget(QWidget):
    """Plots of one run's metrics, fed from the store or from live step records."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(2)
        self.title = QLabel("No run selected")
        self.title.setStyleSheet("font-weight: 600; padding: 4px;")
        self.title.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        lay.addWidget(self.title)
        self.plots: dict[str, pg.PlotItem] = {}
        self._curves: dict[str, pg.PlotDataItem] = {}
        self._x: dict[str, list[float]] = {}
        self._y: dict[str, list[float]] = {}
        self._ema: float | None = None
        self.run_id: int | None = None
        self.last_step = 0
        first: pg.PlotItem | None = None
        for key, title, ylabel in PLOTS:
            view = pg.PlotWidget(background="w")
            view.setMinimumHeight(140)
            plot = view.getPlotItem()
            plot.setTitle(title, color="#333", size="10pt")
            plot.setLabel("left", ylabel)
            plot.setLabel("bottom", "meta-iteration")
            plot.showGrid(x=True, y=True, alpha=0.25)
            plot.setDownsampling(auto=True, mode="peak")
            plot.setClipToView(True)
            for axis in ("left", "bottom"):
                plot.getAxis(axis).enableAutoSIPrefix(False)
            # accuracy curves live near the top, so their legend goes bottom-right
            plot.addLegend(offset=(-10, -10) if key == "acc" else (-10, 10), labelTextSize="8pt",
                           brush=pg.mkBrush(255, 255, 255, 210), pen=pg.mkPen(200, 200, 200))
            if key == "acc":
                plot.setLimits(yMin=-0.02, yMax=1.02)  # auto-range, but never outside [0, 1]
            if first is None:
                first = plot
            else:
                plot.setXLink(first)
            self.plots[key] = plot
            lay.addWidget(view, 1)
        for name, (key, legend, pen, symbol) in SERIES.items():
            kw = {"symbol": symbol, "symbolSize": 5, "symbolBrush": pen["color"], "symbolPen": None} if symbol else {}
            self._curves[name] = self.plots[key].plot([], [], name=legend, pen=pg.mkPen(**pen), connect="finite", **kw)
        self.clear()

    # ---- data -----------------------------------------------------------------------------------
    def clear(self, title: str = "No run selected", run_id: int | None = None) -> None:
        """Remove every point and show ``title``."""
        self.run_id = run_id
        self.last_step = 0
        self._ema = None
        for name in self._curves:
            self._x[name], self._y[name] = [], []
            self._curves[name].setData([], [])
        self.title.setText(title)

    def set_title(self, title: str) -> None:
        """Change the heading above the plots."""
        self.title.setText(title)

    def _add(self, name: str, step: int, value: float) -> None:
        self._x[name].append(step)
        self._y[name].append(value)
        if name == "outer_loss" and math.isfinite(value):
            self._ema = value if self._ema is None else (1 - EMA_ALPHA) * self._ema + EMA_ALPHA * value
            self._x[SMOOTH].append(step)
            self._y[SMOOTH].append(self._ema)

    def _redraw(self, names: Iterable[str]) -> None:
        for name in set(names):
            if name in self._curves:
                self._curves[name].setData(np.asarray(self._x[name], dtype=float),
                                           np.asarray(self._y[name], dtype=float))

    def append_records(self, records: Sequence[StepRecord]) -> None:
        """Add the points of a batch of live records (steps already shown are skipped)."""
        touched: set[str] = set()
        for rec in records:
            if rec.step <= self.last_step:
                continue
            for name, value in rec.metrics.items():
                if name in self._curves:
                    self._add(name, rec.step, value)
                    touched.add(name)
            self.last_step = rec.step
        if "outer_loss" in touched:
            touched.add(SMOOTH)
        self._redraw(touched)

    def show_metrics(self, metrics: Mapping[str, Sequence[tuple[int, float, float]]], append: bool = False) -> None:
        """Show metrics as :meth:`engine.RunStore.get_metrics` returns them (replacing, or appending)."""
        if not append:
            keep_title, keep_id = self.title.text(), self.run_id
            self.clear(keep_title, keep_id)
        # Feed step by step so that the smoothed curve is computed in order.
        by_step: dict[int, dict[str, float]] = {}
        for name, rows in metrics.items():
            for step, value, _t in rows:
                by_step.setdefault(step, {})[name] = value
        touched: set[str] = set()
        for step in sorted(by_step):
            if step <= self.last_step:
                continue
            for name, value in by_step[step].items():
                if name in self._curves:
                    self._add(name, step, value)
                    touched.add(name)
            self.last_step = step
        if "outer_loss" in touched:
            touched.add(SMOOTH)
        self._redraw(touched)

    # ---- inspection -----------------------------------------------------------------------------
    def curve(self, name: str) -> pg.PlotDataItem:
        """The plot item of a metric (``outer_loss``, ``inner_loss_pre``, ``val_accuracy``, ...)."""
        return self._curves[name]

    def point_count(self, name: str) -> int:
        """How many points the metric's curve holds (read back from pyqtgraph, before downsampling)."""
        x, _y = self._curves[name].getOriginalDataset()
        return 0 if x is None else len(x)
