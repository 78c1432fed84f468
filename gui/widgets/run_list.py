"""The run list (a sortable table of the store's runs) and the selected run's details.

The table is fed plain row dicts from :meth:`engine.RunStore.list_runs`; refreshing with the same
runs updates cells in place, so the selection and scroll position survive the periodic refresh.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
    Signal,
)
from PySide6.QtGui import QColor, QFont
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QTableView,
    QTreeWidget,
    QTreeWidgetItem,
    QWidget,
)

from gui.widgets.experiment_form import GROUPS, LABELS

COLUMNS = ("ID", "Name", "Status", "Algorithm", "N-way/K-shot", "Iterations", "Best val", "Created")
STATUS_COLORS = {
    "running": "#1565c0", "paused": "#ef6c00", "completed": "#2e7d32", "stopped": "#616161",
    "failed": "#c62828", "interrupted": "#8e24aa", "created": "#616161",
}
_Index = QModelIndex | QPersistentModelIndex


def local_time(iso: str | None, short: bool = False) -> str:
    """An ISO-8601 UTC time from the store as local ``YYYY-MM-DD HH:MM`` ("" if missing).

    ``short`` drops the year when it is the current one (``MM-DD HH:MM``).
    """
    if not iso:
        return ""
    try:
        t = datetime.fromisoformat(iso).astimezone()
    except ValueError:
        return iso
    if short and t.year == datetime.now().year:
        return t.strftime("%m-%d %H:%M")
    return t.strftime("%Y-%m-%d %H:%M")


def format_duration(seconds: float | None) -> str:
    """``3725`` -> ``"1h 02m"``, ``65`` -> ``"1m 05s"``, ``4.2`` -> ``"4s"``."""
    if seconds is None:
        return ""
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s}s"


def _iterations(run: dict[str, Any]) -> str:
    total = (run.get("config") or {}).get("meta_iterations")
    done = run.get("iterations") or 0
    return f"{done} / {total}" if total else str(done)


def _best(run: dict[str, Any]) -> str:
    acc = run.get("best_val_accuracy")
    return "" if acc is None else f"{100 * acc:.1f}%"


class RunTableModel(QAbstractTableModel):
    """Runs as table rows (newest first); :data:`Qt.ItemDataRole.UserRole` holds the sort key."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.runs: list[dict[str, Any]] = []

    def rowCount(self, parent: _Index = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.runs)

    def columnCount(self, parent: _Index = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        return None

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        run = self.runs[index.row()]
        col = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return (str(run["id"]), run.get("name") or "", run.get("status") or "", run.get("algorithm") or "",
                    f"{run.get('n_way')}-way {run.get('k_shot')}-shot", _iterations(run), _best(run),
                    local_time(run.get("created_at"), short=True))[col]
        if role == Qt.ItemDataRole.UserRole:
            return (run["id"], (run.get("name") or "").lower(), run.get("status") or "", run.get("algorithm") or "",
                    (run.get("n_way") or 0, run.get("k_shot") or 0), run.get("iterations") or 0,
                    run.get("best_val_accuracy") if run.get("best_val_accuracy") is not None else -1.0,
                    run.get("created_at") or "")[col]
        if role == Qt.ItemDataRole.ForegroundRole and col == 2:
            return QColor(STATUS_COLORS.get(run.get("status") or "", "#000000"))
        if role == Qt.ItemDataRole.FontRole and col == 2 and run.get("status") in ("running", "paused"):
            font = QFont()
            font.setBold(True)
            return font
        if role == Qt.ItemDataRole.ToolTipRole:
            tip = [f"Run {run['id']}: {run.get('name') or ''}", f"model: {run.get('model')}",
                   f"data set: {run.get('dataset')}", f"created: {local_time(run.get('created_at'))}"]
            if run.get("stop_reason"):
                tip.append(f"stop reason: {run['stop_reason']}")
            if run.get("error"):
                tip.append(f"error: {run['error']}")
            return "\n".join(tip)
        if role == Qt.ItemDataRole.TextAlignmentRole and col in (0, 5, 6):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def set_runs(self, runs: list[dict[str, Any]]) -> None:
        """Replace the rows; cells update in place when only their values changed."""
        old = [r["id"] for r in self.runs]
        new = [r["id"] for r in runs]
        if new == old:
            self.runs = runs
            if runs:
                self.dataChanged.emit(self.index(0, 0), self.index(len(runs) - 1, len(COLUMNS) - 1))
        elif len(new) > len(old) and new[len(new) - len(old):] == old:
            added = len(new) - len(old)
            self.beginInsertRows(QModelIndex(), 0, added - 1)
            self.runs = runs
            self.endInsertRows()
            if old:
                self.dataChanged.emit(self.index(added, 0), self.index(len(runs) - 1, len(COLUMNS) - 1))
        else:
            self.beginResetModel()
            self.runs = runs
            self.endResetModel()

    def run_at(self, row: int) -> dict[str, Any]:
        return self.runs[row]

    def row_of(self, run_id: int) -> int | None:
        for i, r in enumerate(self.runs):
            if r["id"] == run_id:
                return i
        return None


class RunListView(QTableView):
    """The table of runs; emits :attr:`runSelected` with the selected run id (or -1 for none)."""

    runSelected = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.source = RunTableModel(self)
        self.proxy = QSortFilterProxyModel(self)
        self.proxy.setSourceModel(self.source)
        self.proxy.setSortRole(Qt.ItemDataRole.UserRole)
        self.setModel(self.proxy)
        self.setSortingEnabled(True)
        self.sortByColumn(0, Qt.SortOrder.DescendingOrder)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setAlternatingRowColors(True)
        self.setWordWrap(False)
        self.verticalHeader().hide()
        self.verticalHeader().setDefaultSectionSize(22)
        head = self.horizontalHeader()
        head.setStretchLastSection(False)
        head.setMinimumSectionSize(30)
        head.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        head.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self._selected: int | None = None
        self.selectionModel().selectionChanged.connect(self._on_selection)

    def set_runs(self, runs: list[dict[str, Any]]) -> None:
        """Show these runs, keeping the selected run selected if it is still there."""
        keep = self._selected
        self.source.set_runs(runs)
        if keep is not None and self.selected_run_id() != keep and not self.select_run(keep, emit=False):
            self._selected = None
            self.runSelected.emit(-1)

    def selected_run_id(self) -> int | None:
        rows = self.selectionModel().selectedRows()
        if not rows:
            return None
        src = self.proxy.mapToSource(rows[0])
        return self.source.run_at(src.row())["id"]

    def select_run(self, run_id: int, emit: bool = True) -> bool:
        """Select (and scroll to) a run; False if it is not listed."""
        row = self.source.row_of(run_id)
        if row is None:
            return False
        if not emit:
            self._selected = run_id
        idx = self.proxy.mapFromSource(self.source.index(row, 0))
        self.selectRow(idx.row())
        self.scrollTo(idx)
        return True

    def run(self, run_id: int) -> dict[str, Any] | None:
        row = self.source.row_of(run_id)
        return None if row is None else self.source.run_at(row)

    def status_of(self, run_id: int) -> str | None:
        """The status the table shows for a run (None if not listed)."""
        run = self.run(run_id)
        return None if run is None else run.get("status")

    def _on_selection(self, *_args: Any) -> None:
        rid = self.selected_run_id()
        if rid != self._selected:
            self._selected = rid
            self.runSelected.emit(-1 if rid is None else rid)


class RunDetails(QTreeWidget):
    """Read-only key/value view of a run: its record (status, times, error) and its config."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setColumnCount(2)
        self.setHeaderLabels(["Key", "Value"])
        self.setRootIsDecorated(True)
        self.setAlternatingRowColors(True)
        self.setUniformRowHeights(True)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.header().setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        self.header().setStretchLastSection(True)
        self.run_id: int | None = None
        self._top: QTreeWidgetItem | None = None
        self._items: dict[str, QTreeWidgetItem] = {}

    @staticmethod
    def _run_rows(run: dict[str, Any]) -> list[tuple[str, str]]:
        best = _best(run)
        if best and run.get("best_val_step") is not None:
            best += f" at iteration {run['best_val_step']}"
        rows = [
            ("name", run.get("name")), ("status", run.get("status")), ("stop reason", run.get("stop_reason")),
            ("error", run.get("error")), ("iterations", _iterations(run)), ("best val accuracy", best),
            ("created", local_time(run.get("created_at"))), ("started", local_time(run.get("started_at"))),
            ("finished", local_time(run.get("finished_at"))), ("training time", format_duration(run.get("duration_s"))),
            ("data fingerprint", (run.get("data_fingerprint") or "")[:16]),
            ("warnings", "; ".join(run.get("warnings") or [])), ("process id", run.get("pid")),
        ]
        return [(k, str(v)) for k, v in rows if v not in (None, "")]

    def _style(self, item: QTreeWidgetItem, key: str, value: str) -> None:
        item.setToolTip(1, value)
        if key == "error":
            item.setForeground(1, QColor("#c62828"))
        elif key == "status":
            item.setForeground(1, QColor(STATUS_COLORS.get(value, "#000000")))

    def show_run(self, run: dict[str, Any] | None) -> None:
        """Fill the view from a :meth:`engine.RunStore.get_run` row (None clears it).

        Showing the same run again updates the values in place (scroll position and folding kept).
        """
        if run is not None and run["id"] == self.run_id and self._top is not None:
            rows = self._run_rows(run)
            if [k for k, _ in rows] == list(self._items):
                for key, value in rows:
                    item = self._items[key]
                    if item.text(1) != value:
                        item.setText(1, value)
                        self._style(item, key, value)
                return
        self.clear()
        self._items = {}
        self._top = None
        self.run_id = None if run is None else run["id"]
        if run is None:
            return
        bold = QFont()
        bold.setBold(True)
        top = self._top = QTreeWidgetItem(self, ["Run", f"#{run['id']}"])
        top.setFont(0, bold)
        for key, value in self._run_rows(run):
            item = self._items[key] = QTreeWidgetItem(top, [key, value])
            self._style(item, key, value)
        cfg = QTreeWidgetItem(self, ["Config", ""])
        cfg.setFont(0, bold)
        config = dict(run.get("config") or {})
        order = ["name", *[n for _, names in GROUPS for n in names]]
        for key in [*[k for k in order if k in config], *sorted(k for k in config if k not in order)]:
            value = config[key]
            item = QTreeWidgetItem(cfg, [key, "" if value is None else str(value)])
            item.setToolTip(0, LABELS.get(key, key))
            item.setToolTip(1, str(value))
        self.expandAll()

    def value(self, key: str) -> str | None:
        """The shown value of a run row (``"status"``, ``"error"``, ...), None if not shown."""
        item = self._items.get(key)
        return None if item is None else item.text(1)
