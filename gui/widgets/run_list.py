"""The run list (a sortable, filterable table of the store's runs), the selected run's details and notes.

The table is fed plain row dicts from :meth:`engine.RunStore.list_runs`; refreshing with the same
runs updates cells in place, so the selection, sort order, column sizes and scroll position survive
the periodic refresh. Given a store, the table also renames, tags and deletes runs (context menu).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from PySide6.QtCore import (
    QAbstractTableModel,
    QItemSelection,
    QItemSelectionModel,
    QModelIndex,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
    QTimer,
    Signal,
)
from PySide6.QtGui import (
    QAction,
    QColor,
    QFocusEvent,
    QFont,
    QIcon,
    QKeySequence,
    QPainter,
    QPixmap,
    QTextCursor,
)
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QInputDialog,
    QLineEdit,
    QMessageBox,
    QPlainTextEdit,
    QTableView,
    QTreeWidget,
    QTreeWidgetItem,
    QWidget,
)

from engine import MetaStudioError, RunStore
from gui.widgets.colors import run_color
from gui.widgets.experiment_form import GROUPS, LABELS

COLUMNS = ("ID", "Name", "Status", "Algorithm", "Base model", "Data set", "N-way/K-shot", "Best val",
           "Iterations", "Duration", "Created", "Tags")
COL = {name: i for i, name in enumerate(COLUMNS)}
SORT_ROLE = Qt.ItemDataRole.UserRole  # raw sort keys: numbers for numeric columns, folded text otherwise
STATUS_COLORS = {
    "running": "#1565c0", "paused": "#ef6c00", "completed": "#2e7d32", "stopped": "#616161",
    "failed": "#c62828", "interrupted": "#8e24aa", "created": "#616161",
}
_RIGHT = {COL["ID"], COL["Best val"], COL["Iterations"], COL["Duration"]}
# Caps of the initial column widths (px), so that the main columns fit the default window's run list;
# the user can widen any of them, and the full text is in each row's tooltip.
_MAX_WIDTH = {COL["Name"]: 140, COL["Algorithm"]: 80, COL["Base model"]: 150, COL["Data set"]: 130,
              COL["Iterations"]: 84, COL["Created"]: 92, COL["Tags"]: 160}
# Hidden until the user ticks them in the header's context menu: the generated run name already says
# the algorithm, data set and N-way/K-shot, and the details panel shows them all.
DEFAULT_HIDDEN = ("Base model", "Data set", "N-way/K-shot", "Duration", "Tags")
_Index = QModelIndex | QPersistentModelIndex
_SWATCH_PX = 12


def color_swatch(color: str, size: int = _SWATCH_PX) -> QIcon:
    """A filled square of ``color`` (``"#rrggbb"``) with a thin dark border, as an icon whose selected and
    active pixmaps are the plain colour: a selected row does not tint it with the highlight colour (a
    bare QColor decoration is blended with the selection, so pink and purple runs look alike)."""
    pix = QPixmap(size, size)
    pix.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pix)
    painter.setPen(QColor(0, 0, 0, 110))
    painter.setBrush(QColor(color))
    painter.drawRect(0, 0, size - 1, size - 1)
    painter.end()
    icon = QIcon()
    for mode in (QIcon.Mode.Normal, QIcon.Mode.Selected, QIcon.Mode.Active):
        icon.addPixmap(pix, mode)
    return icon


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


def short_name(value: str | None) -> str:
    """A model or data set spec as a short label: ``"bundled"`` -> ``"bundled MiniLM"``, a path or hub id
    -> its last part (``/m/bert-tiny/`` -> ``bert-tiny``, ``hf:org/data:cfg`` -> ``hf:data:cfg``)."""
    if not value:
        return ""
    if value == "bundled":
        return "bundled MiniLM"
    prefix, rest = ("hf:", value[3:]) if value.startswith("hf:") else ("", value)
    tail = rest.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    return prefix + (tail or rest)


def parse_tags(text: str) -> list[str]:
    """Comma-separated tags as a list (``"a, lr sweep,"`` -> ``["a", "lr sweep"]``); see
    :meth:`engine.RunStore.set_tags` for the normalisation the store applies."""
    return [t.strip() for t in text.split(",") if t.strip()]


def _iterations(run: dict[str, Any]) -> str:
    total = (run.get("config") or {}).get("meta_iterations")
    done = run.get("iterations") or 0
    return f"{done} / {total}" if total else str(done)


def _best(run: dict[str, Any]) -> str:
    acc = run.get("best_val_accuracy")
    return "" if acc is None else f"{100 * acc:.1f}%"


def _best_at(run: dict[str, Any]) -> str:
    best = _best(run)
    return f"{best} @ {run['best_val_step']}" if best and run.get("best_val_step") is not None else best


def _search_text(run: dict[str, Any]) -> str:
    """What the filter matches: id, name, status, algorithm, model, data set, tags and notes (folded)."""
    parts = [f"#{run['id']}", str(run["id"]), run.get("name"), run.get("status"), run.get("algorithm"),
             run.get("model"), short_name(run.get("model")), run.get("dataset"), *(run.get("tags") or []),
             run.get("notes")]
    return "\n".join(str(p) for p in parts if p).casefold()


class RunTableModel(QAbstractTableModel):
    """Runs as table rows (newest first); :data:`SORT_ROLE` holds each cell's raw sort key."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.runs: list[dict[str, Any]] = []
        self._swatches: dict[str, QIcon] = {}  # colour -> swatch icon (built once per colour)

    def rowCount(self, parent: _Index = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.runs)

    def columnCount(self, parent: _Index = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.ToolTipRole \
                and COLUMNS[section] == "Best val":
            return "Best meta-validation accuracy @ the iteration it was reached"
        return None

    @staticmethod
    def display(run: dict[str, Any], col: int) -> str:
        """The text of one cell."""
        name = COLUMNS[col]
        if name == "ID":
            return str(run["id"])
        if name == "Name":
            return run.get("name") or ""
        if name == "Status":
            return run.get("status") or ""
        if name == "Algorithm":
            return run.get("algorithm") or ""
        if name == "Base model":
            return short_name(run.get("model"))
        if name == "Data set":
            return short_name(run.get("dataset"))
        if name == "N-way/K-shot":
            return f"{run.get('n_way')}-way {run.get('k_shot')}-shot" if run.get("n_way") else ""
        if name == "Best val":
            return _best_at(run)
        if name == "Iterations":
            return _iterations(run)
        if name == "Duration":
            return format_duration(run.get("duration_s"))
        if name == "Created":
            return local_time(run.get("created_at"), short=True)
        return ", ".join(run.get("tags") or [])

    @staticmethod
    def sort_key(run: dict[str, Any], col: int) -> Any:
        """The raw value a column sorts by (a number for numeric columns; missing numbers sort first)."""
        name = COLUMNS[col]
        if name == "ID":
            return int(run["id"])
        if name == "N-way/K-shot":
            return float((run.get("n_way") or 0) * 10_000 + (run.get("k_shot") or 0))
        if name == "Best val":
            acc = run.get("best_val_accuracy")
            return -1.0 if acc is None else float(acc)
        if name == "Iterations":
            return int(run.get("iterations") or 0)
        if name == "Duration":
            d = run.get("duration_s")
            return -1.0 if d is None else float(d)
        if name == "Created":
            return run.get("created_at") or ""
        return RunTableModel.display(run, col).casefold()

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        run = self.runs[index.row()]
        col = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return self.display(run, col)
        if role == SORT_ROLE:
            return self.sort_key(run, col)
        if role == Qt.ItemDataRole.DecorationRole and col == COL["ID"]:
            color = run_color(run["id"])
            icon = self._swatches.get(color)
            if icon is None:
                icon = self._swatches[color] = color_swatch(color)
            return icon
        if role == Qt.ItemDataRole.ForegroundRole and col == COL["Status"]:
            return QColor(STATUS_COLORS.get(run.get("status") or "", "#000000"))
        if role == Qt.ItemDataRole.FontRole and col == COL["Status"] and run.get("status") in ("running", "paused"):
            font = QFont()
            font.setBold(True)
            return font
        if role == Qt.ItemDataRole.ToolTipRole:
            tip = [f"Run {run['id']}: {run.get('name') or ''}", f"model: {run.get('model')}",
                   f"data set: {run.get('dataset')}", f"created: {local_time(run.get('created_at'))}"]
            if run.get("tags"):
                tip.append(f"tags: {', '.join(run['tags'])}")
            if run.get("stop_reason"):
                tip.append(f"stop reason: {run['stop_reason']}")
            if run.get("error"):
                tip.append(f"error: {run['error']}")
            if run.get("notes"):
                tip.append(f"notes: {run['notes'][:300]}")
            return "\n".join(tip)
        if role == Qt.ItemDataRole.TextAlignmentRole and col in _RIGHT:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def set_runs(self, runs: list[dict[str, Any]]) -> bool:
        """Replace the rows; cells update in place when only their values changed.

        Returns True when the model had to be reset (runs removed or reordered): selections are lost then.
        """
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
            return True
        return False

    def run_at(self, row: int) -> dict[str, Any]:
        return self.runs[row]

    def row_of(self, run_id: int) -> int | None:
        for i, r in enumerate(self.runs):
            if r["id"] == run_id:
                return i
        return None


class RunFilterProxy(QSortFilterProxyModel):
    """Sorts by :data:`SORT_ROLE` and keeps the runs whose text contains every word of the filter
    (case-insensitive; matched against id, name, status, algorithm, model, data set, tags, notes)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._words: list[str] = []
        self.setSortRole(SORT_ROLE)
        self.setDynamicSortFilter(True)

    @property
    def words(self) -> list[str]:
        return list(self._words)

    def set_filter_text(self, text: str) -> None:
        """Show only runs matching all white-space separated words of ``text`` ("" shows every run)."""
        words = text.casefold().split()
        if words == self._words:
            return
        self.beginFilterChange()
        self._words = words
        self.endFilterChange(QSortFilterProxyModel.Direction.Rows)

    def filterAcceptsRow(self, source_row: int, source_parent: _Index) -> bool:
        if not self._words:
            return True
        model = self.sourceModel()
        if not isinstance(model, RunTableModel) or source_row >= len(model.runs):
            return True
        text = _search_text(model.run_at(source_row))
        return all(w in text for w in self._words)


class RunListView(QTableView):
    """The table of runs: sortable columns, a text filter, multi-selection, rename/tag/delete.

    Signals:
        runSelected(int): the current run changed (its id, or -1 for none): the run whose details show.
        runsSelected(list): the selected run ids changed (view order).
        runsEdited(list): these runs were renamed or tagged here.
        runsDeleted(list): these runs were deleted here (with their checkpoint files).
        errorOccurred(str, str): an edit failed (title, message).
        statusMessage(str): a one-line result for the status bar.

    Args:
        store: the GUI thread's run database connection, needed for the edit actions (None: read-only).
    """

    runSelected = Signal(int)
    runsSelected = Signal(list)
    runsEdited = Signal(list)
    runsDeleted = Signal(list)
    errorOccurred = Signal(str, str)
    statusMessage = Signal(str)

    def __init__(self, parent: QWidget | None = None, store: RunStore | None = None) -> None:
        super().__init__(parent)
        self.store = store
        self.source = RunTableModel(self)
        self.proxy = RunFilterProxy(self)
        self.proxy.setSourceModel(self.source)
        self.setModel(self.proxy)
        self.setSortingEnabled(True)
        self.sortByColumn(COL["ID"], Qt.SortOrder.DescendingOrder)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setAlternatingRowColors(True)
        self.setWordWrap(False)
        self.verticalHeader().hide()
        self.verticalHeader().setDefaultSectionSize(22)
        head = self.horizontalHeader()
        head.setStretchLastSection(True)
        head.setMinimumSectionSize(30)
        head.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)  # sizes stay put across refreshes
        head.setSectionsMovable(True)
        self._sized = False

        # the filter box: main_window places it above the table
        self.filter_edit = QLineEdit()
        self.filter_edit.setPlaceholderText("Filter runs…")
        self.filter_edit.setClearButtonEnabled(True)
        self.filter_edit.setToolTip("Show runs whose id, name, status, algorithm, model, data set, tags or notes\n"
                                    "contain every word typed here (case-insensitive).")
        self.filter_edit.textChanged.connect(self.proxy.set_filter_text)

        # the edit actions: context menu and keyboard
        self.rename_action = QAction("Rename…", self)
        self.rename_action.setShortcut(QKeySequence(Qt.Key.Key_F2))
        self.rename_action.triggered.connect(lambda: self.rename_selected())
        self.tags_action = QAction("Edit tags…", self)
        self.tags_action.triggered.connect(lambda: self.edit_tags_selected())
        self.delete_action = QAction("Delete…", self)
        self.delete_action.setShortcut(QKeySequence(QKeySequence.StandardKey.Delete))
        self.delete_action.triggered.connect(lambda: self.delete_selected())
        for action in (self.rename_action, self.tags_action, self.delete_action):
            action.setShortcutContext(Qt.ShortcutContext.WidgetShortcut)
            self.addAction(action)
        self.setContextMenuPolicy(Qt.ContextMenuPolicy.ActionsContextMenu)
        # the header's context menu shows or hides columns
        head.setContextMenuPolicy(Qt.ContextMenuPolicy.ActionsContextMenu)
        self.column_actions: dict[str, QAction] = {}
        for col, name in enumerate(COLUMNS):
            if name in ("ID", "Name"):
                continue
            action = QAction(name, head)
            action.setCheckable(True)
            action.setChecked(name not in DEFAULT_HIDDEN)
            self.setColumnHidden(col, name in DEFAULT_HIDDEN)
            action.toggled.connect(lambda on, c=col: self._show_column(c, on))
            head.addAction(action)
            self.column_actions[name] = action

        self._selected: int | None = None
        self._selected_ids: list[int] = []
        self._restoring = False
        self.selectionModel().selectionChanged.connect(self._on_selection)
        self.selectionModel().currentChanged.connect(self._on_selection)
        self._update_actions(0)

    def _show_column(self, col: int, shown: bool) -> None:
        self.setColumnHidden(col, not shown)
        if shown and self.columnWidth(col) < 40:  # never sized while hidden
            self.resizeColumnToContents(col)
            self.setColumnWidth(col, min(max(self.columnWidth(col), 60), _MAX_WIDTH.get(col, 400)))

    def shown_columns(self) -> list[str]:
        """The names of the columns not hidden (model order)."""
        return [name for col, name in enumerate(COLUMNS) if not self.isColumnHidden(col)]

    # ---- contents --------------------------------------------------------------------------------
    def set_runs(self, runs: list[dict[str, Any]]) -> None:
        """Show these runs, keeping the selected runs selected (and the scroll position) if still there."""
        keep_ids, keep_current = list(self._selected_ids), self._selected
        scroll = self.verticalScrollBar().value()
        self._restoring = True
        try:
            reset = self.source.set_runs(runs)
            if reset or set(self.selected_run_ids()) != set(keep_ids):
                self._select_ids(keep_ids, keep_current)
                self.verticalScrollBar().setValue(scroll)
        finally:
            self._restoring = False
        if runs and not self._sized:
            self._sized = True
            self.resizeColumnsToContents()
            for col, width in _MAX_WIDTH.items():
                self.setColumnWidth(col, min(max(self.columnWidth(col), 60), width))
        self._on_selection()

    def reload(self) -> None:
        """Re-read the runs from the store (no-op without one)."""
        if self.store is not None:
            self.set_runs(self.store.list_runs())

    def set_filter_text(self, text: str) -> None:
        """Type ``text`` into the filter box (see :class:`RunFilterProxy`)."""
        self.filter_edit.setText(text)

    def visible_run_ids(self) -> list[int]:
        """The ids of the rows shown (after filtering), top to bottom."""
        return [self.source.run_at(self.proxy.mapToSource(self.proxy.index(r, 0)).row())["id"]
                for r in range(self.proxy.rowCount())]

    def run(self, run_id: int) -> dict[str, Any] | None:
        row = self.source.row_of(run_id)
        return None if row is None else self.source.run_at(row)

    def status_of(self, run_id: int) -> str | None:
        """The status the table shows for a run (None if not listed)."""
        run = self.run(run_id)
        return None if run is None else run.get("status")

    # ---- selection -------------------------------------------------------------------------------
    def selected_run_ids(self) -> list[int]:
        """The ids of the selected runs, in view order (top to bottom)."""
        rows = sorted(self.selectionModel().selectedRows(), key=lambda i: i.row())
        return [self.source.run_at(self.proxy.mapToSource(i).row())["id"] for i in rows]

    def selected_runs(self) -> list[dict[str, Any]]:
        """The rows of the selected runs, in view order."""
        return [r for r in (self.run(i) for i in self.selected_run_ids()) if r is not None]

    def selected_run_id(self) -> int | None:
        """The current run: the selected row with the keyboard focus, else the first selected row."""
        sm = self.selectionModel()
        cur = sm.currentIndex()
        if cur.isValid() and sm.isRowSelected(cur.row(), QModelIndex()):
            return self.source.run_at(self.proxy.mapToSource(cur).row())["id"]
        ids = self.selected_run_ids()
        return ids[0] if ids else None

    def select_run(self, run_id: int, emit: bool = True) -> bool:
        """Select only this run and scroll to it (clearing the filter if it hides the run); False if
        it is not listed. ``emit=False`` selects it without emitting :attr:`runSelected`."""
        row = self.source.row_of(run_id)
        if row is None:
            return False
        idx = self.proxy.mapFromSource(self.source.index(row, 0))
        if not idx.isValid():
            self.filter_edit.clear()
            idx = self.proxy.mapFromSource(self.source.index(row, 0))
        if not emit:
            self._selected = run_id
        # not selectRow(): with extended selection it follows the keyboard modifiers held at the moment
        flags = QItemSelectionModel.SelectionFlag
        self.selectionModel().setCurrentIndex(idx, flags.ClearAndSelect | flags.Rows)
        self.scrollTo(idx)
        return True

    def select_runs(self, run_ids: list[int]) -> list[int]:
        """Select these runs (those listed and not filtered out; the first becomes current); returns them."""
        self._select_ids(run_ids, run_ids[0] if run_ids else None)
        return self.selected_run_ids()

    def _select_ids(self, run_ids: list[int], current: int | None) -> None:
        sel = QItemSelection()
        cur_idx = QModelIndex()
        for rid in run_ids:
            row = self.source.row_of(rid)
            if row is None:
                continue
            idx = self.proxy.mapFromSource(self.source.index(row, 0))
            if idx.isValid():
                sel.select(idx, idx)
                if rid == current or not cur_idx.isValid():
                    cur_idx = idx
        sm = self.selectionModel()
        flags = QItemSelectionModel.SelectionFlag
        sm.select(sel, flags.ClearAndSelect | flags.Rows)
        sm.setCurrentIndex(cur_idx, flags.NoUpdate)

    def _on_selection(self, *_args: Any) -> None:
        if self._restoring:
            return
        ids = self.selected_run_ids()
        rid = self.selected_run_id()
        self._update_actions(len(ids))
        if ids != self._selected_ids:
            self._selected_ids = ids
            self.runsSelected.emit(ids)
        if rid != self._selected:
            self._selected = rid
            self.runSelected.emit(-1 if rid is None else rid)

    def _update_actions(self, n: int) -> None:
        editable = self.store is not None
        self.rename_action.setEnabled(editable and n == 1)
        self.tags_action.setEnabled(editable and n >= 1)
        self.delete_action.setEnabled(editable and n >= 1)
        self.delete_action.setText(f"Delete {n} runs…" if n > 1 else "Delete…")
        self.tags_action.setText(f"Edit tags of {n} runs…" if n > 1 else "Edit tags…")

    # ---- dialogs (small methods, so tests can replace them) ------------------------------------------
    def ask_name(self, run: dict[str, Any]) -> str | None:
        """Ask for a run's new name; None if cancelled."""
        text, ok = QInputDialog.getText(self, "Rename run", f"New name of run {run['id']}:",
                                        QLineEdit.EchoMode.Normal, run.get("name") or "")
        return text if ok else None

    def ask_tags(self, runs: list[dict[str, Any]], common: list[str]) -> list[str] | None:
        """Ask for tags (comma-separated), pre-filled with those all ``runs`` share; None if cancelled."""
        what = f"run {runs[0]['id']}" if len(runs) == 1 else f"{len(runs)} runs (tags only some have are kept)"
        text, ok = QInputDialog.getText(self, "Edit tags", f"Tags of {what}, separated by commas:",
                                        QLineEdit.EchoMode.Normal, ", ".join(common))
        return parse_tags(text) if ok else None

    def confirm_delete(self, runs: list[dict[str, Any]]) -> bool:
        """Ask before deleting ``runs``: lists them and says that their checkpoint files go too."""
        files = size = 0
        if self.store is not None:
            for r in runs:
                cks = self.store.list_checkpoints(r["id"])
                files += len(cks)
                size += sum(ck.get("bytes") or 0 for ck in cks)
        lines = [f"#{r['id']}  {r.get('name') or ''}  [{r.get('status')}]" for r in runs[:15]]
        if len(runs) > 15:
            lines.append(f"… and {len(runs) - 15} more")
        box = QMessageBox(QMessageBox.Icon.Warning, "Delete runs?",
                          f"Delete {len(runs)} run{'s' if len(runs) > 1 else ''}?", parent=self)
        box.setInformativeText(
            "\n".join(lines) + f"\n\nTheir metrics, evaluations and checkpoint files ({files} file(s), "
            f"{size / 1e6:.1f} MB) are removed from disk. Exported folders are kept. This cannot be undone.")
        box.setStandardButtons(QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No)
        box.setDefaultButton(QMessageBox.StandardButton.No)
        return box.exec() == QMessageBox.StandardButton.Yes

    # ---- edits -----------------------------------------------------------------------------------
    def rename_selected(self, name: str | None = None) -> bool:
        """Rename the current run to ``name`` (asked for if None); True if renamed.

        Failures (an empty name, a database error) are reported through :attr:`errorOccurred`.
        """
        rid = self.selected_run_id()
        run = None if rid is None else self.run(rid)
        if run is None or self.store is None:
            return False
        if name is None:
            name = self.ask_name(run)
            if name is None:
                return False
        try:
            stored = self.store.rename_run(rid, name)
        except (MetaStudioError, KeyError) as err:
            self.errorOccurred.emit(f"Cannot rename run {rid}", str(err))
            return False
        self.reload()
        self.runsEdited.emit([rid])
        self.statusMessage.emit(f"Renamed run {rid} to “{stored}”.")
        return True

    def edit_tags_selected(self, tags: list[str] | None = None) -> bool:
        """Set the tags of the selected runs (asked for if None); True if stored.

        For one run, its tags become ``tags``. For several, the tags all of them had that are no longer
        listed are removed, the listed ones appended, and tags only some of them have are kept.
        """
        runs = self.selected_runs()
        if not runs or self.store is None:
            return False
        first = runs[0].get("tags") or []
        common = [t for t in first if all(t.casefold() in {x.casefold() for x in r.get("tags") or []} for r in runs)]
        if tags is None:
            tags = self.ask_tags(runs, common)
            if tags is None:
                return False
        removed = {t.casefold() for t in common} - {t.casefold() for t in tags}
        done: list[int] = []
        try:
            for r in runs:
                kept = [] if len(runs) == 1 else [t for t in r.get("tags") or [] if t.casefold() not in removed]
                self.store.set_tags(r["id"], [*kept, *tags])
                done.append(r["id"])
        except (MetaStudioError, KeyError) as err:
            self.errorOccurred.emit("Cannot set the tags", str(err))
        self.reload()
        if done:
            self.runsEdited.emit(done)
            self.statusMessage.emit(f"Tags set on run{'s' if len(done) > 1 else ''} {', '.join(map(str, done))}.")
        return bool(done)

    def delete_selected(self) -> list[int]:
        """After :meth:`confirm_delete`, delete the selected runs with their checkpoint files.

        Returns the deleted ids. An active run (training in some process) is refused by the store and
        reported through :attr:`errorOccurred`, as are files that could not be removed.
        """
        runs = self.selected_runs()
        if not runs or self.store is None or not self.confirm_delete(runs):
            return []
        deleted: list[int] = []
        errors: list[str] = []
        for r in runs:
            try:
                self.store.delete_run(r["id"])
                deleted.append(r["id"])
            except KeyError:
                deleted.append(r["id"])  # already deleted elsewhere
            except MetaStudioError as err:
                errors.append(str(err))
        self.reload()
        if deleted:
            self.runsDeleted.emit(deleted)
            self.statusMessage.emit(f"Deleted run{'s' if len(deleted) > 1 else ''} {', '.join(map(str, deleted))} "
                                    "and their checkpoint files.")
        if errors:
            self.errorOccurred.emit("Some runs were not deleted", "\n".join(errors))
        return deleted


class RunNotesEdit(QPlainTextEdit):
    """Free-text notes of one run, saved to the store ``delay_ms`` after typing stops and on focus-out.

    Args:
        store: the GUI thread's run database connection.
        delay_ms: the pause in typing after which the notes are saved.
    """

    notesSaved = Signal(int)
    errorOccurred = Signal(str, str)

    def __init__(self, store: RunStore, delay_ms: int = 800, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.store = store
        self.run_id: int | None = None
        self._dirty = False
        self._loading = False
        self.setPlaceholderText("Notes on this run (saved as you type)…")
        self.setTabChangesFocus(True)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(delay_ms)
        self._timer.timeout.connect(self.save)
        self.textChanged.connect(self._on_text_changed)
        self.setEnabled(False)

    @property
    def dirty(self) -> bool:
        """True while typed text is not saved yet."""
        return self._dirty

    def show_run(self, run: dict[str, Any] | None) -> None:
        """Show a run's notes (None clears and disables the box); pending edits of the previous run are
        saved first. The same run again only refreshes the text if it is not being edited."""
        if run is not None and run["id"] == self.run_id:
            text = run.get("notes") or ""
            if not self._dirty and not self.hasFocus() and text != self.toPlainText():
                self._load(text)
            return
        self.save()
        self.run_id = None if run is None else run["id"]
        self._load("" if run is None else run.get("notes") or "")
        self.setEnabled(run is not None)

    def _load(self, text: str) -> None:
        self._loading = True
        try:
            self.setPlainText(text)
            self.moveCursor(QTextCursor.MoveOperation.End)  # typing continues the notes, not prepends
        finally:
            self._loading = False
        self._dirty = False

    def _on_text_changed(self) -> None:
        if self._loading or self.run_id is None:
            return
        self._dirty = True
        self._timer.start()

    def save(self) -> bool:
        """Write pending notes now; True if something was written."""
        self._timer.stop()
        if not self._dirty or self.run_id is None:
            return False
        self._dirty = False
        try:
            self.store.set_notes(self.run_id, self.toPlainText())
        except KeyError:
            return False  # the run was deleted meanwhile
        except MetaStudioError as err:
            self._dirty = True
            self.errorOccurred.emit(f"Cannot save the notes of run {self.run_id}", str(err))
            return False
        self.notesSaved.emit(self.run_id)
        return True

    def focusOutEvent(self, event: QFocusEvent) -> None:
        self.save()
        super().focusOutEvent(event)


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
            ("error", run.get("error")), ("tags", ", ".join(run.get("tags") or [])),
            ("iterations", _iterations(run)), ("best val accuracy", best),
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

    def set_iterations(self, done: int, total: int | None = None) -> None:
        """Show a live iteration count (``done / total``) before the store has it; no-op if no run shows."""
        item = self._items.get("iterations")
        text = f"{done} / {total}" if total else str(done)
        if item is None and self._top is not None:  # a new run: no iterations row yet
            item = self._items["iterations"] = QTreeWidgetItem(self._top, ["iterations", text])
        if item is not None and item.text(1) != text:
            item.setText(1, text)
            item.setToolTip(1, text)

    def value(self, key: str) -> str | None:
        """The shown value of a run row (``"status"``, ``"error"``, ...), None if not shown."""
        item = self._items.get(key)
        return None if item is None else item.text(1)
