"""Training curves of one run: outer loss, inner loss before/after adaptation, accuracy.

Three pyqtgraph plots share their x axis (meta-iteration, or seconds of training). Points arrive
either all at once from the store (:meth:`CurvesWidget.show_metrics`) or in batches from a live run
(:meth:`CurvesWidget.append_records`); they are kept in growable numpy arrays and each plot is redrawn at
most :data:`REDRAW_HZ` times a second, one plot per timer tick so that no single event-loop iteration
paints all three (:meth:`CurvesWidget.flush` draws everything at once).

Options (the row above the plots): x by iteration or wall-clock time, log-y for the loss plots, an
exponential-moving-average smoothing of the loss curves (with bias correction; the raw curve stays
faint behind it), and one shared axes for the inner and outer losses. Non-finite values (NaN, ±inf)
are drawn as red crosses at the last finite value before them and counted under the plot. Under each
plot a summary gives the last value, min/max and the best step of each of its curves.

Long runs stay fast: every curve uses pyqtgraph's automatic peak downsampling and clips to the
visible range, and the axes have fixed widths so new tick labels never re-lay out the plots. While a run
grows, the view follows it in steps instead of auto-ranging at every redraw: x extends to a round bound
with about 25% headroom, y to round bounds around the running min/max of the points, so most redraws
leave the view range (and the axes' ticks) unchanged. Zooming or panning a plot stops the following on
that axis; a double-click or pyqtgraph's "A" button (:meth:`CurvesWidget.reset_view`) resumes it.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from engine import StepRecord

REDRAW_HZ = 8
AXIS_WIDTH = 56  # px of the left axis: fixed, so changing tick labels never re-lay out the plot
NONFINITE_COLOR = (214, 39, 40)
X_MODES = {"step": "meta-iteration", "time": "training time (s)"}
# Points drawn per pixel column before peak downsampling kicks in (pyqtgraph's default is 5). Peak mode
# keeps each bin's min and max, so 1.5 bins per pixel loses nothing visible and paints ~3x fewer lines.
DOWNSAMPLE_FACTOR = 1.5
MAX_SYMBOLS = 400  # a curve with more points than this is drawn as a line only (symbols are slow to paint)
X_HEADROOM = 0.25  # a growing run's x range extends to a round bound at least this fraction past its last point
Y_STEPS = 10  # a growing run's y range snaps outwards to multiples of a round step of about span / Y_STEPS
VIEW_PADDING = 0.02  # fraction of the followed range added on each side (pyqtgraph's auto-range pads alike)
_NICE = (1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0)


@dataclass(frozen=True)
class Series:
    """How one metric is drawn: its plot, legend label, colour, marker and whether lower is better."""

    plot: str
    label: str
    color: tuple[int, ...]  # RGB or RGBA
    lower_is_better: bool
    smooth: bool = True
    symbol: str | None = None
    width: float = 1.5


SERIES: dict[str, Series] = {
    "outer_loss": Series("outer", "query loss", (31, 119, 180), True),
    "inner_loss_pre": Series("inner", "before adaptation", (255, 127, 14), True),
    "inner_loss_post": Series("inner", "after adaptation", (44, 160, 44), True),
    "query_accuracy": Series("acc", "query (train episodes)", (127, 127, 127, 150), False, smooth=False, width=1),
    "val_accuracy": Series("acc", "meta-val", (148, 103, 189), False, smooth=False, symbol="o", width=2),
}
PLOTS = {
    "outer": ("Outer loop: query loss", "loss"),
    "inner": ("Inner loop: support loss", "loss"),
    "acc": ("Accuracy", "accuracy"),
}
DEFAULT_SMOOTHING = 0.6  # TensorBoard's default weight
SHARED_TITLE = "Losses"  # short: the one-row legend beside it names the outer and inner curves
SMOOTHED_SUFFIX = "_smoothed"


def ema(values: np.ndarray, weight: float) -> np.ndarray:
    """Exponential moving average with bias correction (as TensorBoard's smoothing slider).

    ``s_k = weight·s_{k-1} + (1 − weight)·x_k`` with ``s_0 = 0``, returned as ``s_k / (1 − weight^k)``
    where k counts the finite values so far, so the first points are not pulled towards 0.
    Non-finite inputs are skipped (their output is NaN and they do not enter the average).

    Args:
        values: 1-D float array.
        weight: in [0, 1); 0 returns the values unchanged (non-finite ones as NaN).

    Raises:
        ValueError: ``weight`` outside [0, 1).
    """
    out, _state = ema_continue(values, weight, (0.0, 0))
    return out


def ema_continue(values: np.ndarray, weight: float, state: tuple[float, int]) -> tuple[np.ndarray, tuple[float, int]]:
    """:func:`ema` of ``values`` continuing from ``state`` = (biased average, finite count); returns the
    smoothed values and the new state, so a growing curve is smoothed in O(new points)."""
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"smoothing weight must be in [0, 1), got {weight}")
    v = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(v)
    if weight == 0.0:
        out = np.where(finite, v, np.nan)
        return out, (float(v[finite][-1]) if finite.any() else state[0], state[1] + int(finite.sum()))
    s, k = state
    out = np.full(len(v), np.nan)
    a = 1.0 - weight
    for i, x in enumerate(v.tolist()):
        if math.isfinite(x):
            s = weight * s + a * x
            k += 1
            out[i] = s / (1.0 - weight ** k)
    return out, (s, k)


def nice_ceil(value: float) -> float:
    """The smallest round number (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6 or 8 times a power of ten) ≥ ``value``;
    ``value`` itself when it is not positive and finite."""
    if not (value > 0 and math.isfinite(value)):
        return value
    scale = 10.0 ** math.floor(math.log10(value))
    return next(m * scale for m in _NICE if m * scale >= value * (1 - 1e-12))


def snapped_range(lo: float, hi: float, steps: int = Y_STEPS) -> tuple[float, float]:
    """``[lo, hi]`` widened outwards to multiples of a round step of about ``(hi − lo) / steps`` (a single
    value gets a range of ±10% of itself, or ±1 around 0)."""
    span = hi - lo
    if span <= 0:
        span = abs(hi) * 0.2 or 2.0
        lo, hi = lo - span / 2, hi + span / 2
    step = nice_ceil(span / steps)
    return math.floor(lo / step) * step, math.ceil(hi / step) * step


def _finite_min_max(values: np.ndarray) -> tuple[float, float]:
    """(min, max) over the finite values, (inf, −inf) when there are none."""
    v = values[np.isfinite(values)]
    return (float(v.min()), float(v.max())) if len(v) else (math.inf, -math.inf)


class _Columns:
    """Growable float64 columns (step, time, value, smoothed) with amortised doubling, and the running
    finite bounds of step, time and value (and the smallest positive value, for log axes)."""

    __slots__ = ("data", "n", "bounds")

    def __init__(self, capacity: int = 1024) -> None:
        self.data = np.empty((4, capacity))
        self.n = 0
        # name -> [min, max]; "pos" holds the smallest positive value and the largest value
        self.bounds = {key: [math.inf, -math.inf] for key in ("step", "time", "value", "pos")}

    def _grow_bounds(self, key: str, values: np.ndarray) -> None:
        lo, hi = _finite_min_max(values)
        b = self.bounds[key]
        b[0], b[1] = min(b[0], lo), max(b[1], hi)

    def extend(self, step: np.ndarray, time: np.ndarray, value: np.ndarray, smoothed: np.ndarray) -> None:
        k = len(step)
        need = self.n + k
        if need > self.data.shape[1]:
            grown = np.empty((4, max(need, 2 * self.data.shape[1])))
            grown[:, :self.n] = self.data[:, :self.n]
            self.data = grown
        for row, col in enumerate((step, time, value, smoothed)):
            self.data[row, self.n:need] = col
        self.n = need
        self._grow_bounds("step", step)
        self._grow_bounds("time", time)
        self._grow_bounds("value", value)
        self._grow_bounds("pos", np.where(value > 0, value, np.nan))

    @property
    def step(self) -> np.ndarray:
        return self.data[0, :self.n]

    @property
    def time(self) -> np.ndarray:
        return self.data[1, :self.n]

    @property
    def value(self) -> np.ndarray:
        return self.data[2, :self.n]

    @property
    def smoothed(self) -> np.ndarray:
        return self.data[3, :self.n]


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def summarize(steps: np.ndarray, values: np.ndarray, lower_is_better: bool) -> dict[str, Any]:
    """Summary of one curve: ``last``, ``min``, ``max``, ``best``, ``best_step`` over its finite values
    (None when it has none), and ``nonfinite`` (count) with ``first_nonfinite_step`` (None if none)."""
    finite = np.isfinite(values)
    bad = np.flatnonzero(~finite)
    out: dict[str, Any] = {"points": len(values), "nonfinite": len(bad),
                           "first_nonfinite_step": int(steps[bad[0]]) if len(bad) else None,
                           "last": None, "min": None, "max": None, "best": None, "best_step": None}
    if finite.any():
        idx = np.flatnonzero(finite)
        fv = values[idx]
        best = int(idx[np.argmin(fv) if lower_is_better else np.argmax(fv)])
        out.update(last=float(fv[-1]), min=float(fv.min()), max=float(fv.max()), best=float(values[best]),
                   best_step=int(steps[best]))
    return out


def nonfinite_markers(x: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where to mark the non-finite values of a curve: their x, at the last finite y before each (the
    first finite y after it when there is none before; 1.0 when the curve has no finite value)."""
    finite = np.isfinite(values)
    bad = np.flatnonzero(~finite)
    if not len(bad):
        return np.empty(0), np.empty(0)
    if not finite.any():
        return x[bad], np.ones(len(bad))
    pos = np.where(finite, np.arange(len(values)), -1)
    last = np.maximum.accumulate(pos)[bad]
    last[last < 0] = np.flatnonzero(finite)[0]
    return x[bad], values[last]


class CurvesWidget(QWidget):
    """Plots of one run's metrics, fed from the store or from live step records.

    Signals:
        optionsChanged(): an option (x axis, log-y, smoothing, shared axes) was changed.
    """

    optionsChanged = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(2)
        self.title = QLabel("No run selected")
        self.title.setStyleSheet("font-weight: 600; padding: 4px;")
        self.title.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        lay.addWidget(self.title)
        lay.addWidget(self._build_options())

        self.plots: dict[str, pg.PlotItem] = {}
        self._boxes: dict[str, QWidget] = {}
        self._summaries: dict[str, QLabel] = {}
        self._warnings: dict[str, QLabel] = {}
        self._legends: dict[str, pg.LegendItem] = {}
        first: pg.PlotItem | None = None
        for key, (title, ylabel) in PLOTS.items():
            box = QWidget()
            box_lay = QVBoxLayout(box)
            box_lay.setContentsMargins(0, 0, 0, 0)
            box_lay.setSpacing(0)
            view = pg.PlotWidget(background="w")
            view.setMinimumHeight(120)
            plot = view.getPlotItem()
            plot.setTitle(title, color="#333", size="10pt", justify="left")  # the legend is on the right
            plot.setLabel("left", ylabel)
            plot.setLabel("bottom", X_MODES["step"])
            plot.setDownsampling(auto=True, mode="peak")
            plot.setClipToView(True)
            for axis in ("left", "bottom"):
                plot.getAxis(axis).enableAutoSIPrefix(False)
            plot.getAxis("left").setWidth(AXIS_WIDTH)
            plot.getAxis("bottom").setHeight(36)
            # The legend sits outside the data: one row in the title line, right-aligned (the title moves
            # left), so no curve is ever hidden behind it.
            legend = self._legends[key] = plot.addLegend(offset=None, labelTextSize="8pt", labelTextColor="#222",
                                                         colCount=3, horSpacing=8, frame=False)
            legend.setParentItem(plot)
            legend.layout.setContentsMargins(2, 0, 2, 0)
            if key == "acc":
                plot.setLimits(yMin=-0.02, yMax=1.02)  # auto-range, but never outside [0, 1]
            if first is None:
                first = plot
            else:
                plot.setXLink(first)
            plot.getViewBox().sigRangeChangedManually.connect(
                lambda mask, key=key: self._on_manual_range(key, mask))
            view.scene().sigMouseClicked.connect(self._on_scene_click)
            summary = QLabel()
            summary.setStyleSheet("color: #333; font-size: 11px; padding: 0 4px;")
            summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            warning = QLabel()
            warning.setStyleSheet("color: #c62828; font-size: 11px; font-weight: 600; padding: 0 4px;")
            warning.setWordWrap(True)
            warning.hide()
            box_lay.addWidget(view, 1)
            box_lay.addWidget(summary)
            box_lay.addWidget(warning)
            self.plots[key] = plot
            self._boxes[key] = box
            self._summaries[key] = summary
            self._warnings[key] = warning
            lay.addWidget(box, 1)

        # Each metric has (raw, smoothed, non-finite markers) items in its own plot; the inner losses have a
        # second, hidden set in the outer plot used while the loss axes are shared (moving items between
        # pyqtgraph views is not supported).
        self._items: dict[str, dict[str, tuple[pg.PlotDataItem, pg.PlotDataItem, pg.PlotDataItem]]] = {}
        self._data: dict[str, _Columns] = {}
        self._ema_state: dict[str, tuple[float, int]] = {}
        for name, s in SERIES.items():
            self._items[name] = {}
            for key in (s.plot, "outer") if s.plot == "inner" else (s.plot,):
                kw = {"symbol": s.symbol, "symbolSize": 5, "symbolBrush": s.color, "symbolPen": None} \
                    if s.symbol else {}
                raw = pg.PlotDataItem([], [], pen=pg.mkPen(color=s.color, width=s.width), connect="finite",
                                     autoDownsampleFactor=DOWNSAMPLE_FACTOR, **kw)
                smooth = pg.PlotDataItem([], [], pen=pg.mkPen(color=s.color, width=2), connect="finite",
                                        autoDownsampleFactor=DOWNSAMPLE_FACTOR)
                marks = pg.PlotDataItem([], [], pen=None, symbol="x", symbolSize=11,
                                        symbolPen=pg.mkPen(NONFINITE_COLOR, width=2), symbolBrush=None)
                for item in (raw, smooth, marks):
                    self.plots[key].addItem(item)
                    item.setVisible(key == s.plot)
                smooth.setVisible(False)
                smooth.setZValue(1)
                marks.setZValue(2)
                self._items[name][key] = (raw, smooth, marks)

        self._weight = 0.0
        self._x_mode = "step"
        self._log_y = False
        self._shared = False
        self._dirty: set[str] = set()
        # Following a growing run (see the module docstring): whether x / each plot's y follows, and the
        # range last set (None: not set since the last reset, take the data's range).
        self._live = False
        self._follow_x = True
        self._follow_y = dict.fromkeys(PLOTS, True)
        self._x_range: tuple[float, float] | None = None
        self._y_range: dict[str, tuple[float, float] | None] = dict.fromkeys(PLOTS)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(1000 // (REDRAW_HZ * len(PLOTS)))
        self._timer.timeout.connect(self._redraw_next)
        self._turn = 0  # index in PLOTS of the plot the timer's next tick redraws
        self.run_id: int | None = None
        self.last_step = 0
        self._sync_legends()
        self.clear()
        self.set_smoothing(DEFAULT_SMOOTHING)

    def _build_options(self) -> QWidget:
        row = QWidget()
        lay = QHBoxLayout(row)
        lay.setContentsMargins(4, 0, 4, 0)
        lay.setSpacing(8)
        lay.addWidget(QLabel("x:"))
        self.x_combo = QComboBox()
        for mode, label in X_MODES.items():
            self.x_combo.addItem(label, mode)
        self.x_combo.setToolTip("Plot against the meta-iteration or the seconds of training (pauses excluded).")
        self.x_combo.currentIndexChanged.connect(lambda _i: self.set_x_mode(self.x_combo.currentData()))
        lay.addWidget(self.x_combo)
        self.log_check = QCheckBox("log y")
        self.log_check.setToolTip("Logarithmic y axis for the loss plots (accuracy stays linear).")
        self.log_check.toggled.connect(self.set_log_y)
        lay.addWidget(self.log_check)
        self.share_check = QCheckBox("share loss axes")
        self.share_check.setToolTip("Draw the inner loss (before and after adaptation) and the outer loss on one plot.")
        self.share_check.toggled.connect(self.set_share_axes)
        lay.addWidget(self.share_check)
        self.grid_check = QCheckBox("grid")
        self.grid_check.setToolTip("Grid lines (off by default: they make repainting long curves ~40% slower).")
        self.grid_check.toggled.connect(self.set_grid)
        lay.addWidget(self.grid_check)
        lay.addWidget(QLabel("smoothing:"))
        self.smooth_slider = QSlider(Qt.Orientation.Horizontal)
        self.smooth_slider.setRange(0, 99)
        self.smooth_slider.setFixedWidth(110)
        self.smooth_slider.setToolTip("Exponential moving average of the loss curves (weight 0 = off, up to 0.99),\n"
                                      "bias-corrected; the raw curve stays faint behind it.")
        self.smooth_label = QLabel("off")
        self.smooth_label.setMinimumWidth(30)
        self.smooth_slider.valueChanged.connect(lambda v: self.set_smoothing(v / 100))
        lay.addWidget(self.smooth_slider)
        lay.addWidget(self.smooth_label)
        lay.addStretch(1)
        return row

    # ---- options --------------------------------------------------------------------------------
    @property
    def smoothing(self) -> float:
        """The EMA weight of the loss curves, 0 (off) to 0.99."""
        return self._weight

    @property
    def x_mode(self) -> str:
        """``"step"`` (meta-iteration) or ``"time"`` (seconds of training)."""
        return self._x_mode

    @property
    def log_y(self) -> bool:
        """Whether the loss plots have a logarithmic y axis."""
        return self._log_y

    @property
    def shared_axes(self) -> bool:
        """Whether the inner losses are drawn on the outer loss's plot."""
        return self._shared

    def set_smoothing(self, weight: float) -> None:
        """Smooth every loss curve with an EMA of ``weight`` (0 = off, at most 0.99; see :func:`ema`).

        Raises:
            ValueError: ``weight`` outside [0, 0.99].
        """
        if not 0.0 <= weight <= 0.99 + 1e-9:
            raise ValueError(f"smoothing weight must be in [0, 0.99], got {weight}")
        weight = round(float(weight), 2)
        self.smooth_label.setText("off" if weight == 0 else f"{weight:.2f}")
        if self.smooth_slider.value() != round(weight * 100):
            self.smooth_slider.setValue(round(weight * 100))  # re-enters with the same weight
            return
        if weight == self._weight:
            return
        self._weight = weight
        for name, s in SERIES.items():
            if s.smooth:
                d = self._data[name]
                smoothed, self._ema_state[name] = ema_continue(d.value, weight, (0.0, 0))
                d.smoothed[:] = smoothed
                self._dirty.add(name)
                on = weight > 0
                color = (*s.color, 60) if on else s.color
                for raw, _smooth, _marks in self._items[name].values():
                    raw.setPen(pg.mkPen(color=color, width=1 if on else s.width))
                self._items[name][self.plot_of(name)][1].setVisible(on)
        self._sync_legends()
        self.flush()
        self.optionsChanged.emit()

    def set_x_mode(self, mode: str) -> None:
        """Plot against ``"step"`` (meta-iteration) or ``"time"`` (seconds of training).

        Raises:
            ValueError: another mode.
        """
        if mode not in X_MODES:
            raise ValueError(f"unknown x mode {mode!r}; use one of {sorted(X_MODES)}")
        if self.x_combo.currentData() != mode:
            self.x_combo.setCurrentIndex(list(X_MODES).index(mode))  # re-enters
            return
        if mode == self._x_mode:
            return
        self._x_mode = mode
        for plot in self.plots.values():
            plot.setLabel("bottom", X_MODES[mode])
        self._dirty.update(SERIES)
        self.flush()
        for plot in self.plots.values():
            plot.enableAutoRange(x=True)
        self.optionsChanged.emit()

    def set_log_y(self, on: bool) -> None:
        """Logarithmic y axis on the loss plots (non-positive values are not drawn in log mode)."""
        on = bool(on)
        if self.log_check.isChecked() != on:
            self.log_check.setChecked(on)  # re-enters
            return
        if on == self._log_y:
            return
        self._log_y = on
        for key in ("outer", "inner"):
            self.plots[key].setLogMode(y=on)
            self.plots[key].enableAutoRange(y=True)
        self.optionsChanged.emit()

    def set_share_axes(self, on: bool) -> None:
        """Draw the inner losses (before/after adaptation) on the outer loss's plot (hiding the inner plot)."""
        on = bool(on)
        if self.share_check.isChecked() != on:
            self.share_check.setChecked(on)  # re-enters
            return
        if on == self._shared:
            return
        self._shared = on
        for name, s in SERIES.items():
            if s.plot == "inner":
                old, new = self._items[name]["inner" if on else "outer"], self._items[name][self.plot_of(name)]
                for item in old:
                    item.setData([], [])
                    item.setVisible(False)
                new[0].setVisible(True)
                new[1].setVisible(s.smooth and self._weight > 0)
                new[2].setVisible(True)
        self._boxes["inner"].setVisible(not on)
        self.plots["outer"].setTitle(SHARED_TITLE if on else PLOTS["outer"][0], color="#333", size="10pt")
        self._sync_legends()
        self._dirty.update(SERIES)
        self.flush()
        self.plots["outer"].enableAutoRange(y=True)
        self.optionsChanged.emit()

    def set_grid(self, on: bool) -> None:
        """Show or hide grid lines on every plot."""
        if self.grid_check.isChecked() != bool(on):
            self.grid_check.setChecked(bool(on))  # re-enters
            return
        for plot in self.plots.values():
            plot.showGrid(x=bool(on), y=bool(on), alpha=0.25 if on else 0.0)

    def plot_of(self, name: str) -> str:
        """The key of the plot (``"outer"``, ``"inner"``, ``"acc"``) where metric ``name`` is drawn now."""
        key = SERIES[name].plot
        return "outer" if self._shared and key == "inner" else key

    def _sync_legends(self) -> None:
        for legend in self._legends.values():
            legend.clear()
        for name, s in SERIES.items():
            raw, smooth, _marks = self._items[name][self.plot_of(name)]
            item = smooth if s.smooth and self._weight > 0 else raw
            label = s.label
            if self._shared and s.plot == "inner":
                label = f"inner loss {s.label}"
            self._legends[self.plot_of(name)].addItem(item, label)
        for legend in self._legends.values():  # right-aligned in the title line, re-placed as its width changes
            legend.anchor(itemPos=(1, 0), parentPos=(1, 0), offset=(-6, 4))

    # ---- data -----------------------------------------------------------------------------------
    def clear(self, title: str = "No run selected", run_id: int | None = None) -> None:
        """Remove every point and show ``title``; the next curves are auto-ranged again."""
        self.run_id = run_id
        self.last_step = 0
        for name in SERIES:
            self._data[name] = _Columns()
            self._ema_state[name] = (0.0, 0)
        self._dirty.update(SERIES)
        self.flush()
        self.reset_view()
        self._live = False
        self.title.setText(title)

    def reset_view(self) -> None:
        """Show every point again (auto-range both axes of every plot) and follow the run as it grows.

        A double-click on a plot does this; so does pyqtgraph's "A" button (auto-range)."""
        self._follow_x = True
        self._x_range = None
        for key, plot in self.plots.items():
            self._follow_y[key] = True
            self._y_range[key] = None
            plot.enableAutoRange()

    @property
    def following(self) -> dict[str, bool]:
        """Whether the view follows the points as they arrive: ``"x"`` (shared by the plots) and each plot's
        y (``"outer"``, ``"inner"``, ``"acc"``). Zooming or panning turns an axis off; :meth:`reset_view`
        (double-click, the "A" button) turns them back on."""
        x = self._follow_x or any(p.getViewBox().autoRangeEnabled()[0] for p in self.plots.values())
        return {"x": bool(x), **{key: bool(self._follow_y[key] or self.plots[key].getViewBox().autoRangeEnabled()[1])
                                 for key in PLOTS}}

    def _on_manual_range(self, key: str, mask: Sequence[bool]) -> None:
        """The user zoomed or panned plot ``key``: stop following on the axes it changed."""
        if mask[0]:
            self._follow_x = False
        if mask[1]:
            self._follow_y[key] = False

    def _on_scene_click(self, event: Any) -> None:
        if event.double() and event.button() == Qt.MouseButton.LeftButton:
            event.accept()
            self.reset_view()

    def set_title(self, title: str) -> None:
        """Change the heading above the plots."""
        self.title.setText(title)

    def set_accuracy_shown(self, shown: bool) -> None:
        """Show or hide the accuracy plot (hidden for regression runs such as sinusoid: no accuracy)."""
        self._boxes["acc"].setVisible(shown)

    @property
    def accuracy_shown(self) -> bool:
        """False while the accuracy plot is hidden (:meth:`set_accuracy_shown`)."""
        return not self._boxes["acc"].isHidden()

    def _extend(self, name: str, steps: Sequence[float] | np.ndarray, times: Sequence[float] | np.ndarray,
                values: Sequence[float] | np.ndarray) -> None:
        v = np.asarray(values, dtype=np.float64)
        if not len(v):
            return
        if SERIES[name].smooth:
            smoothed, self._ema_state[name] = ema_continue(v, self._weight, self._ema_state[name])
        else:
            smoothed = np.full(len(v), np.nan)
        self._data[name].extend(np.asarray(steps, dtype=np.float64), np.asarray(times, dtype=np.float64), v, smoothed)
        self._dirty.add(name)

    def _schedule(self) -> None:
        if self._dirty and not self._timer.isActive():
            self._timer.start()

    def append_records(self, records: Sequence[StepRecord]) -> None:
        """Add the points of a batch of live records (steps already shown are skipped); drawn within
        1/:data:`REDRAW_HZ` s, or at once by :meth:`flush`."""
        cols: dict[str, tuple[list[int], list[float], list[float]]] = {n: ([], [], []) for n in SERIES}
        last = self.last_step
        for rec in records:
            if rec.step <= last:
                continue
            for name, value in rec.metrics.items():
                col = cols.get(name)
                if col is not None:
                    col[0].append(rec.step)
                    col[1].append(rec.elapsed_s)
                    col[2].append(value)
            last = rec.step
        self.last_step = last
        for name, (steps, times, values) in cols.items():
            self._extend(name, steps, times, values)
        self._live = True
        self._schedule()

    def show_metrics(self, metrics: Mapping[str, Sequence[tuple[int, float, float | None]]],
                     append: bool = False) -> None:
        """Show metrics as :meth:`engine.RunStore.get_metrics` returns them (``{name: [(step, value, time_s)]}``
        sorted by step), replacing the curves or appending the steps after :attr:`last_step`."""
        if not append:
            self.clear(self.title.text(), self.run_id)
        else:
            self._live = True  # a run growing in the store (polled): follow it as a live one
        after = self.last_step
        last = after
        for name, rows in metrics.items():
            if not rows:
                continue
            arr = np.array([(s, v, math.nan if t is None else t) for s, v, t in rows], dtype=np.float64)
            arr = arr[arr[:, 0] > after]
            if not len(arr):
                continue
            last = max(last, int(arr[-1, 0]))
            if name in SERIES:
                self._extend(name, arr[:, 0], arr[:, 2], arr[:, 1])
        self.last_step = last
        self._schedule()

    def flush(self) -> None:
        """Draw the points added since the last redraw now, on every plot (normally done by a timer)."""
        self._timer.stop()
        self._draw(set(self._dirty))

    def _redraw_next(self) -> None:
        """Timer tick: draw the new points of the next plot in turn. One plot per tick, so that no single
        event-loop iteration paints all three plots; each still redraws at most :data:`REDRAW_HZ` times a
        second."""
        key = list(PLOTS)[self._turn]
        self._turn = (self._turn + 1) % len(PLOTS)
        self._draw({n for n in self._dirty if self.plot_of(n) == key})
        self._schedule()

    def _draw(self, dirty: set[str]) -> None:
        """Give the curves of the metrics ``dirty`` their points, then follow or auto-range the views."""
        self._dirty -= dirty
        if not dirty:
            return
        for name in dirty:
            s = SERIES[name]
            d = self._data[name]
            x = d.step if self._x_mode == "step" else d.time
            v = d.value
            finite = np.isfinite(v)
            all_finite = bool(finite.all())
            y = v if all_finite else np.where(finite, v, np.nan)
            raw, smooth, marks = self._items[name][self.plot_of(name)]
            smoothing = s.smooth and self._weight > 0
            if s.symbol:
                want = s.symbol if len(v) <= MAX_SYMBOLS else None
                if raw.opts["symbol"] != want:
                    raw.setSymbol(want)
            raw.setData(x, y)
            if smoothing:
                sm = d.smoothed
                if all_finite:
                    smooth.setData(x, sm)
                else:
                    smooth.setData(x[finite], sm[finite])
            elif smooth.xData is not None and len(smooth.xData):
                smooth.setData([], [])
            mx, my = nonfinite_markers(x, v)
            marks.setData(mx, my)
        keys = {self.plot_of(n) for n in dirty}
        if self._live:
            self._follow_growth(keys)
        # Auto-range now, master (x-linked) plot first: left to each plot's paint, the first plot to paint
        # would move the shared x range after the others painted, and they would all paint twice.
        for plot in self.plots.values():
            plot.getViewBox().updateAutoRange()
        for key in {SERIES[n].plot for n in dirty} | keys:
            self._update_texts(key)

    def _follow_growth(self, keys: set[str]) -> None:
        """Set the followed x range, and the followed y ranges of the plots ``keys``, of a growing run,
        changing them only when points leave them.

        An axis auto-ranged by pyqtgraph (at the start, after "A", a double-click or an option change) is
        taken over: its auto-range is turned off and the range is set here from the running bounds of the
        points, so most redraws change no range and pyqtgraph neither re-ranges nor regenerates ticks."""
        vbs = [plot.getViewBox() for plot in self.plots.values()]
        if any(vb.autoRangeEnabled()[0] for vb in vbs):
            self._follow_x, self._x_range = True, None
        if self._follow_x:
            lo, hi = math.inf, -math.inf
            for name in SERIES:
                b = self._data[name].bounds[self._x_mode]
                lo, hi = min(lo, b[0]), max(hi, b[1])
            if lo <= hi:
                r = self._x_range
                if r is None or lo < r[0] or hi > r[1]:
                    self._x_range = r = (lo, lo + nice_ceil(max(hi - lo, 1.0) * (1 + X_HEADROOM)))
                    self.plots["outer"].getViewBox().setXRange(*r, padding=VIEW_PADDING)
                for vb in vbs:
                    if vb.autoRangeEnabled()[0]:
                        vb.enableAutoRange(x=False)
        for key in keys:
            vb = self.plots[key].getViewBox()
            if vb.autoRangeEnabled()[1]:
                self._follow_y[key], self._y_range[key] = True, None
            if not self._follow_y[key] or (key == "inner" and self._shared):
                continue
            log = self._log_y and key != "acc"
            lo, hi = math.inf, -math.inf
            for name in SERIES:
                if self.plot_of(name) == key:
                    b = self._data[name].bounds["pos" if log else "value"]
                    lo, hi = min(lo, b[0]), max(hi, b[1])
            if not lo <= hi:
                continue  # no point to show yet (or none positive on a log axis)
            if log:
                lo, hi = math.log10(lo), math.log10(hi)
            r = self._y_range[key]
            if r is None or lo < r[0] or hi > r[1]:
                self._y_range[key] = r = snapped_range(lo, hi)
                vb.setYRange(*r, padding=VIEW_PADDING)
            elif vb.autoRangeEnabled()[1]:
                vb.enableAutoRange(y=False)

    def _update_texts(self, key: str) -> None:
        names = [n for n in SERIES if self.plot_of(n) == key]
        if key == "inner" and self._shared:
            names = []
        parts, warnings = [], []
        for name in names:
            sm = self.summary(name)
            if sm["points"] == 0:
                continue
            label = html.escape(SERIES[name].label)
            if sm["last"] is None:
                parts.append(f"<b>{label}</b>: no finite value")
            else:
                parts.append(f"<b>{label}</b>: last {_fmt(sm['last'])} · min {_fmt(sm['min'])} · "
                             f"max {_fmt(sm['max'])} · best {_fmt(sm['best'])} @ step {sm['best_step']}")
            if sm["nonfinite"]:
                n = sm["nonfinite"]
                warnings.append(f"{name}: {n} non-finite value{'s' if n != 1 else ''} "
                                f"(first at step {sm['first_nonfinite_step']})")
        self._summaries[key].setText("<br>".join(parts))
        self._warnings[key].setText("⚠ " + "; ".join(warnings) if warnings else "")
        self._warnings[key].setVisible(bool(warnings))

    # ---- inspection -----------------------------------------------------------------------------
    def curve(self, name: str) -> pg.PlotDataItem:
        """The plot item of a metric's raw curve (``outer_loss``, ``inner_loss_pre``, ``val_accuracy``, ...);
        ``<name>_smoothed`` gives its smoothed curve (see :meth:`smoothed_curve`).

        Raises:
            KeyError: an unknown metric name.
        """
        if name.endswith(SMOOTHED_SUFFIX) and name[:-len(SMOOTHED_SUFFIX)] in SERIES:
            return self.smoothed_curve(name[:-len(SMOOTHED_SUFFIX)])
        if name not in SERIES:
            raise KeyError(f"no curve named {name!r}; curves: {sorted(SERIES)}")
        return self._items[name][self.plot_of(name)][0]

    def smoothed_curve(self, name: str) -> pg.PlotDataItem:
        """The plot item of a loss metric's smoothed curve (empty and hidden while smoothing is off)."""
        return self._items[name][self.plot_of(name)][1]

    def marker_item(self, name: str) -> pg.PlotDataItem:
        """The red crosses marking a metric's non-finite values."""
        return self._items[name][self.plot_of(name)][2]

    def point_count(self, name: str) -> int:
        """How many points the metric's curve holds (non-finite ones included), drawn or not yet."""
        return self._data[name].n

    def values(self, name: str) -> np.ndarray:
        """A copy of the metric's raw values in step order (NaN and ±inf as received)."""
        return self._data[name].value.copy()

    def summary(self, name: str) -> dict[str, Any]:
        """The metric's summary as shown under its plot (see :func:`summarize`)."""
        d = self._data[name]
        return summarize(d.step, d.value, SERIES[name].lower_is_better)

    def summary_text(self, plot: str) -> str:
        """The summary line(s) shown under a plot (``"outer"``, ``"inner"``, ``"acc"``), as rich text."""
        return self._summaries[plot].text()

    def warning_text(self, plot: str) -> str:
        """The non-finite warning shown under a plot ('' if none)."""
        return self._warnings[plot].text()
