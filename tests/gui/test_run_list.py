"""The run list: sort, filter, multi-select, tags, notes, rename and delete through the real widgets."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QPoint, Qt
from PySide6.QtGui import QGuiApplication, QIcon
from PySide6.QtWidgets import QMessageBox

from engine import RunStore
from gui.widgets.colors import PALETTE, run_color
from gui.widgets.run_list import COL, RunListView, parse_tags, short_name


def _add_run(store: RunStore, name: str, *, algorithm: str = "maml", model: str = "bundled", dataset: str = "demo",
             n_way: int = 5, k_shot: int = 1, best: float | None = None, best_step: int | None = None,
             iterations: int = 0, duration: float | None = None, status: str = "completed", tags=(), notes: str = "",
             checkpoints: int = 0) -> int:
    cfg = {"algorithm": algorithm, "model": model, "dataset": dataset, "n_way": n_way, "k_shot": k_shot,
           "meta_iterations": max(iterations, 1)}
    rid = store.create_run(cfg, name)
    store.update_run(rid, status=status, iterations=iterations, best_val_accuracy=best, best_val_step=best_step,
                     duration_s=duration, tags=list(tags), notes=notes)
    store.add_metrics([(rid, s, "outer_loss", 1.0 / s, 0.1 * s) for s in range(1, 4)])
    folder = store.checkpoint_dir / f"run-{rid}"
    for step in range(1, checkpoints + 1):
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"resume-{step}.safetensors"
        path.write_bytes(b"\0" * 128)
        store.add_checkpoint(rid, step, "resume", path)
    return rid


def _four_runs(store: RunStore) -> dict[str, int]:
    return {
        "A": _add_run(store, "maml baseline", best=0.62, best_step=100, iterations=200, duration=50.0,
                      tags=["baseline"], notes="inner lr 0.5 looks too high", checkpoints=2),
        "B": _add_run(store, "protonet clinc", algorithm="protonet", model="/models/bert-tiny/",
                      dataset="/data/clinc150.jsonl", n_way=10, k_shot=5, best=0.90, best_step=40, iterations=40,
                      duration=3725.0, checkpoints=1),
        "C": _add_run(store, "anil quick", algorithm="anil", iterations=7, status="failed", duration=2.0),
        "D": _add_run(store, "maml long", best=0.085, best_step=9, iterations=1000, duration=600.0,
                      checkpoints=2),
    }


def _view(qtbot, db_path) -> tuple[RunListView, RunStore, dict[str, int]]:
    store = RunStore(db_path)
    ids = _four_runs(store)
    view = RunListView(store=store)
    qtbot.addWidget(view)
    qtbot.addWidget(view.filter_edit)
    view.resize(1200, 400)
    view.show()
    view.reload()
    return view, store, ids


def _click_header(qtbot, view: RunListView, col: int) -> None:
    head = view.horizontalHeader()
    x = head.sectionViewportPosition(col) + head.sectionSize(col) // 2
    qtbot.mouseClick(head.viewport(), Qt.MouseButton.LeftButton, pos=QPoint(x, head.height() // 2))


def test_columns_and_numeric_sorting(qtbot, db_path):
    view, _store, ids = _view(qtbot, db_path)
    a, b, c, d = ids["A"], ids["B"], ids["C"], ids["D"]
    assert view.visible_run_ids() == [d, c, b, a]  # newest first
    model = view.model()

    def row_of(rid: int) -> dict[str, str]:
        r = view.visible_run_ids().index(rid)
        return {model.headerData(col, Qt.Orientation.Horizontal): model.index(r, col).data()
                for col in range(model.columnCount())}

    assert row_of(b) == {"ID": str(b), "Name": "protonet clinc", "Status": "completed", "Algorithm": "protonet",
                         "Base model": "bert-tiny", "Data set": "clinc150.jsonl", "N-way/K-shot": "10-way 5-shot",
                         "Best val": "90.0% @ 40", "Iterations": "40 / 40", "Duration": "1h 02m",
                         "Created": row_of(b)["Created"], "Tags": ""}
    assert row_of(a)["Base model"] == "bundled MiniLM" and row_of(a)["Tags"] == "baseline"
    # the less used columns start hidden; the header's context menu shows and hides them
    assert view.shown_columns() == ["ID", "Name", "Status", "Algorithm", "Best val", "Iterations", "Created"]
    assert not view.column_actions["Data set"].isChecked() and view.column_actions["Status"].isChecked()
    view.column_actions["Data set"].setChecked(True)
    assert not view.isColumnHidden(COL["Data set"]) and view.columnWidth(COL["Data set"]) >= 60
    view.column_actions["Data set"].setChecked(False)
    assert view.isColumnHidden(COL["Data set"]) and view.isColumnHidden(COL["Tags"])

    # a click on "Best val" sorts by the number (8.5% < 62% < 90%), not the text; no value sorts lowest
    _click_header(qtbot, view, COL["Best val"])
    order = view.visible_run_ids()
    assert order in ([c, d, a, b], [b, a, d, c])
    if order[0] == c:
        _click_header(qtbot, view, COL["Best val"])
    assert view.visible_run_ids() == [b, a, d, c]
    view.sortByColumn(COL["Iterations"], Qt.SortOrder.AscendingOrder)  # 7 < 40 < 200 < 1000
    assert view.visible_run_ids() == [c, b, a, d]
    view.sortByColumn(COL["Duration"], Qt.SortOrder.DescendingOrder)
    assert view.visible_run_ids() == [b, d, a, c]
    view.sortByColumn(COL["Name"], Qt.SortOrder.AscendingOrder)
    assert view.visible_run_ids() == [c, a, d, b]

    # the periodic refresh keeps the sort order, the selection, the column sizes and the scroll position
    view.sortByColumn(COL["Best val"], Qt.SortOrder.DescendingOrder)
    assert view.select_runs([a, d]) == [a, d]
    widths = [view.columnWidth(col) for col in range(model.columnCount())]
    for _ in range(2):
        view.reload()
    assert view.selected_run_ids() == [a, d] and view.selected_run_id() == a
    assert view.visible_run_ids() == [b, a, d, c]
    assert [view.columnWidth(col) for col in range(model.columnCount())] == widths


def test_filter_by_text_tag_and_notes(qtbot, db_path):
    view, store, ids = _view(qtbot, db_path)
    a, b, c, d = ids["A"], ids["B"], ids["C"], ids["D"]
    qtbot.keyClicks(view.filter_edit, "MAML")
    assert view.visible_run_ids() == [d, a]
    view.filter_edit.clear()
    qtbot.keyClicks(view.filter_edit, "maml   base")  # every word must match
    assert view.visible_run_ids() == [a]
    for text, expected in (("too high", [a]), ("bert-tiny", [b]), ("clinc150", [b]), ("failed", [c]),
                           ("baseline", [a]), ("nothing-like-this", []), (f"#{d}", [d]), ("", [d, c, b, a])):
        view.set_filter_text(text)
        assert view.visible_run_ids() == expected, text
    # a tag set elsewhere shows (and filters) after the next refresh, the filter text staying
    store.set_tags(c, ["sweep"])
    view.set_filter_text("sweep")
    assert view.visible_run_ids() == []
    view.reload()
    assert view.visible_run_ids() == [c] and view.filter_edit.text() == "sweep"
    # selecting a hidden run clears the filter
    assert view.select_run(b) and view.filter_edit.text() == "" and view.selected_run_ids() == [b]


def test_multi_select_signals(qtbot, db_path):
    view, _store, ids = _view(qtbot, db_path)
    a, _b, c, d = ids["A"], ids["B"], ids["C"], ids["D"]
    with qtbot.waitSignal(view.runsSelected) as many, qtbot.waitSignal(view.runSelected) as one:
        view.select_runs([d, a])
    assert many.args == [[d, a]] and one.args == [d]
    # ctrl-click adds a row: it becomes the current run
    r = view.visible_run_ids().index(c)
    rect = view.visualRect(view.model().index(r, COL["Name"]))
    with qtbot.waitSignal(view.runsSelected) as many:
        qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.ControlModifier,
                         rect.center())
    assert many.args == [[d, c, a]] and view.selected_run_id() == c
    qtbot.keyClick(view.filter_edit, Qt.Key.Key_End)  # a plain key: no modifier stays held for later tests
    assert QGuiApplication.keyboardModifiers() == Qt.KeyboardModifier.NoModifier
    assert view.delete_action.text() == "Delete 3 runs…" and not view.rename_action.isEnabled()


def test_tags_notes_rename_through_the_window(make_window, qtbot, db_path, monkeypatch):
    store = RunStore(db_path)
    ids = _four_runs(store)
    a, b = ids["A"], ids["B"]
    w = make_window(refresh_ms=100_000)
    view = w.runs
    assert view.store is w.store and w.runs.filter_edit.isVisible()

    # tags of two runs at once: A keeps "baseline" (only it had it), both get "sweep"
    assert view.select_runs([a, b]) == [b, a]
    asked = []
    monkeypatch.setattr(view, "ask_tags", lambda runs, common: asked.append(common) or parse_tags("sweep, ,Sweep"))
    view.tags_action.trigger()
    assert asked == [[]]
    fresh = RunStore(db_path)
    assert fresh.get_run(a)["tags"] == ["baseline", "sweep"] and fresh.get_run(b)["tags"] == ["sweep"]
    view.set_filter_text("sweep")
    assert view.visible_run_ids() == [b, a]
    view.set_filter_text("")

    # one run: its tags become the typed ones; the details show them
    assert view.select_run(a) and w.details.run_id == a
    monkeypatch.setattr(view, "ask_tags", lambda runs, common: asked.append(common) or ["lr 1e-3", "sweep"])
    view.tags_action.trigger()
    assert asked[-1] == ["baseline", "sweep"]
    assert RunStore(db_path).get_run(a)["tags"] == ["lr 1e-3", "sweep"]
    assert w.details.value("tags") == "lr 1e-3, sweep"

    # notes: typed into the box, saved once typing stops, read back from a fresh connection
    assert w.notes.isEnabled() and w.notes.toPlainText() == "inner lr 0.5 looks too high"
    w.notes.selectAll()
    qtbot.keyClicks(w.notes, "try inner lr 0.1")
    assert w.notes.dirty
    qtbot.waitUntil(lambda: RunStore(db_path).get_run(a)["notes"] == "try inner lr 0.1", timeout=5_000)
    assert not w.notes.dirty
    # switching runs saves pending notes at once, and shows the other run's (empty) notes
    qtbot.keyClicks(w.notes, "; and more val episodes")
    assert view.select_run(b)
    assert RunStore(db_path).get_run(a)["notes"] == "try inner lr 0.1; and more val episodes"
    assert w.notes.toPlainText() == "" and w.notes.run_id == b
    w.refresh_runs()
    view.set_filter_text("val episodes")
    assert view.visible_run_ids() == [a]
    view.set_filter_text("")
    # a run's notes load with the cursor at their end: what is typed next continues them
    assert view.select_run(a) and w.notes.textCursor().position() == len(w.notes.toPlainText()) > 0
    w.notes.setFocus()
    qtbot.keyClicks(w.notes, " (later)")
    assert w.notes.toPlainText() == "try inner lr 0.1; and more val episodes (later)"
    w.notes.save()
    assert view.select_run(b)

    # rename (F2 / context menu); an empty name is refused with a clear error
    assert view.select_run(b)
    monkeypatch.setattr(view, "ask_name", lambda run: "  protonet, 10-way ")
    view.rename_action.trigger()
    assert RunStore(db_path).get_run(b)["name"] == "protonet, 10-way"
    assert view.run(b)["name"] == "protonet, 10-way" and w.details.value("name") == "protonet, 10-way"
    monkeypatch.setattr(view, "ask_name", lambda run: "   ")
    view.rename_action.trigger()
    assert "cannot be empty" in w.last_error and RunStore(db_path).get_run(b)["name"] == "protonet, 10-way"


def test_delete_selected_runs_with_their_checkpoints(make_window, qtbot, db_path, monkeypatch, tmp_path):
    store = RunStore(db_path)
    ids = _four_runs(store)
    a, b, c, d = ids["A"], ids["B"], ids["C"], ids["D"]
    folders = {rid: store.checkpoint_dir / f"run-{rid}" for rid in (a, b, d)}
    files = {rid: [Path(ck["path"]) for ck in store.list_checkpoints(rid)] for rid in (a, b, d)}
    assert all(f.is_file() for fs in files.values() for f in fs)
    w = make_window(refresh_ms=100_000)
    view = w.runs
    assert view.select_run(a) and w.curves.run_id == a
    assert view.select_runs([a, d]) == [d, a] and w.details.run_id == a  # the first given is current

    # declined (the real confirmation box, answered No): nothing is deleted; the box names the runs and files
    shown = []

    def answer_no(box):
        shown.append(box.text() + "\n" + box.informativeText())
        return QMessageBox.StandardButton.No

    monkeypatch.setattr(QMessageBox, "exec", answer_no)
    view.delete_action.trigger()
    assert len(shown) == 1 and "Delete 2 runs?" in shown[0] and "maml baseline" in shown[0] \
        and "maml long" in shown[0] and "checkpoint files (4 file(s)" in shown[0]
    assert len(RunStore(db_path).list_runs()) == 4 and all(folders[r].is_dir() for r in (a, d))

    # accepted: rows, metrics and checkpoint files are gone; the other runs keep theirs
    confirmed = []
    monkeypatch.setattr(view, "confirm_delete", lambda runs: confirmed.append([r["id"] for r in runs]) or True)
    with qtbot.waitSignal(view.runsDeleted) as deleted:
        view.delete_action.trigger()
    assert confirmed == [[d, a]] and deleted.args == [[d, a]]
    fresh = RunStore(db_path)
    assert [r["id"] for r in fresh.list_runs()] == [c, b]
    assert fresh.db.execute("select count(*) from metrics where run_id in (?, ?)", [a, d]).fetchone()[0] == 0
    assert not folders[a].exists() and not folders[d].exists()
    assert not any(f.exists() for f in files[a] + files[d])
    assert folders[b].is_dir() and all(f.is_file() for f in files[b])
    # the window forgot them: the table, the details, the notes and the curves
    assert view.visible_run_ids() == [c, b] and view.selected_run_ids() == []
    assert w.details.run_id is None and w.notes.run_id is None and not w.notes.isEnabled()
    assert w.curves.run_id is None


def test_an_active_run_is_not_deleted(make_window, qtbot, db_path, monkeypatch):
    store = RunStore(db_path)
    done = _add_run(store, "done", checkpoints=1)
    live = _add_run(store, "live", status="running", checkpoints=1)  # pid = this process: alive
    w = make_window(refresh_ms=100_000)
    assert w.runs.select_runs([live, done]) == [live, done]
    monkeypatch.setattr(w.runs, "confirm_delete", lambda runs: True)
    assert w.runs.delete_selected() == [done]
    assert "cannot be deleted while active" in w.last_error and f"run {live} is running" in w.last_error
    assert [r["id"] for r in RunStore(db_path).list_runs()] == [live]
    assert (store.checkpoint_dir / f"run-{live}").is_dir() and not (store.checkpoint_dir / f"run-{done}").exists()


def test_short_names():
    assert short_name("bundled") == "bundled MiniLM"
    assert short_name("sentence-transformers/all-MiniLM-L6-v2") == "all-MiniLM-L6-v2"
    assert short_name("/home/me/models/bert-tiny/") == "bert-tiny"
    assert short_name("hf:org/intents:small") == "hf:intents:small"
    assert short_name("demo") == "demo" and short_name(None) == ""
    assert parse_tags(" a, lr sweep,, ") == ["a", "lr sweep"]


def _lab(hex_color: str) -> tuple[float, float, float]:
    """sRGB "#rrggbb" -> CIELAB (D65), to measure how different two colours look."""
    def lin(c: float) -> float:
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (lin(int(hex_color[i:i + 2], 16) / 255) for i in (1, 3, 5))
    x = (0.4124 * r + 0.3576 * g + 0.1805 * b) / 0.95047
    y = 0.2126 * r + 0.7152 * g + 0.0722 * b
    z = (0.0193 * r + 0.1192 * g + 0.9505 * b) / 1.08883

    def f(t: float) -> float:
        return t ** (1 / 3) if t > 0.008856 else 7.787 * t + 16 / 116

    return 116 * f(y) - 16, 500 * (f(x) - f(y)), 200 * (f(y) - f(z))


def test_run_colours_stay_distinct_beyond_ten_runs():
    assert [run_color(i) for i in range(1, 11)] == list(PALETTE)  # Tableau 10 first
    assert run_color(2) != run_color(12) and run_color(12) == run_color(12)
    colours = [run_color(i) for i in range(1, 301)]
    assert len(set(colours)) == 300
    labs = [_lab(c) for c in colours]
    closest = min(sum((p - q) ** 2 for p, q in zip(labs[i], labs[j], strict=True)) ** 0.5
                  for i in range(300) for j in range(i + 1, min(300, i + 21)))
    assert closest > 12  # any two runs up to 20 ids apart are told apart side by side (CIELAB ΔE)
    assert all(0 <= _lab(c)[0] <= 75 for c in colours[10:])  # dark enough to read on white


def test_id_swatch_keeps_its_colour_when_selected(qtbot, db_path):
    view, _store, ids = _view(qtbot, db_path)
    rid = ids["A"]
    assert view.select_run(rid)
    view.setFocus()
    row = view.visible_run_ids().index(rid)
    index = view.model().index(row, COL["ID"])
    icon = index.data(Qt.ItemDataRole.DecorationRole)
    assert isinstance(icon, QIcon)
    for mode in (QIcon.Mode.Normal, QIcon.Mode.Selected):
        assert icon.pixmap(12, 12, mode).toImage().pixelColor(6, 6).name() == run_color(rid)
    # what is painted: the selected row's ID cell holds the exact run colour (not blended with the highlight)
    rect = view.visualRect(index)
    image = view.viewport().grab(rect).toImage()
    painted = {image.pixelColor(x, y).name() for x in range(image.width()) for y in range(image.height())}
    assert run_color(rid) in painted
