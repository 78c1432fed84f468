"""The main window: run list and details (left), experiment form (centre), live curves / playground (right).

Export (a completed or stopped run to a folder) and the playground's load/adapt/predict calls run in
their own :class:`~gui.jobs.JobThread` threads, which open their own database connections.

Threading: the window owns one :class:`~engine.RunStore` connection, used only in the GUI thread
(run list, details, stored curves; refreshed every ``refresh_ms`` so runs started from the CLI in
another process appear). A run started here is driven by a :class:`~gui.worker.TrainingWorker` in
its own :class:`~PySide6.QtCore.QThread`, which opens its own connection; the window only receives
its queued, batched signals. One run at a time: Start is disabled while a run is active.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from PySide6.QtCore import Qt, QThread, QTimer, Signal, Slot
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from engine import (
    ConfigError,
    ExperimentConfig,
    MetaStudioError,
    RunControl,
    RunStore,
    StepRecord,
    default_db_path,
    load_config,
    validate_config,
)
from engine.store import RESUMABLE_STATUSES
from gui.jobs import JobThread
from gui.widgets.compare import CompareWidget
from gui.widgets.curves import CurvesWidget
from gui.widgets.experiment_form import ExperimentForm
from gui.widgets.playground import PlaygroundWidget
from gui.widgets.run_list import RunDetails, RunListView, RunNotesEdit, format_duration
from gui.worker import ReportingRunControl, TrainingWorker


def stored_records(metrics: dict[str, list[tuple[int, float, float]]], total: int,
                   before_step: int) -> list[StepRecord]:
    """Stored metric rows (``RunStore.get_metrics``) as step records, for steps below ``before_step``."""
    by_step: dict[int, StepRecord] = {}
    for name, rows in metrics.items():
        for step, value, time_s in rows:
            if step < before_step:
                rec = by_step.setdefault(step, StepRecord(step, total, time_s or 0.0, {}))
                rec.metrics[name] = value
    return [by_step[s] for s in sorted(by_step)]

ACTIVE = ("running", "paused")


def is_regression(config: dict[str, Any]) -> bool:
    """A stored run config trains a regression task (sinusoid): no accuracy to plot."""
    try:
        return validate_config(config).task_type == "regression"
    except MetaStudioError:  # an old or hand-edited config: judge by the data set alone
        return config.get("dataset") == "sinusoid"


def _probe_devices() -> list[str]:
    """The usable device names; imports torch (seconds), so it runs in a job thread."""
    from engine.models.device import available_devices

    return available_devices()


def _panel(title: str, *widgets: QWidget, margins: int = 4) -> QWidget:
    box = QWidget()
    lay = QVBoxLayout(box)
    lay.setContentsMargins(margins, margins, margins, margins)
    lay.setSpacing(4)
    head = QLabel(title)
    head.setStyleSheet("font-weight: 600; font-size: 13px;")
    lay.addWidget(head)
    for w in widgets:
        lay.addWidget(w)
    return box


class MainWindow(QMainWindow):
    """MetaStudio's window: browse stored runs, edit an experiment, run it and watch its curves.

    Args:
        db_path: the run database (None = :func:`engine.default_db_path`).
        config: the experiment the form starts with (the defaults if None).
        refresh_ms: how often the run list is re-read from the database.
    """

    _exportStatus = Signal(str)  # emitted from the export thread, queued to the status bar

    def __init__(self, db_path: str | Path | None = None, config: ExperimentConfig | None = None,
                 refresh_ms: int = 2000) -> None:
        super().__init__()
        self.db_path = Path(db_path).expanduser() if db_path else default_db_path()
        self.store = RunStore(self.db_path)  # the GUI thread's own connection
        self.setWindowTitle(f"MetaStudio — {self.db_path}")

        self._thread: QThread | None = None
        self._worker: TrainingWorker | None = None
        self._control: RunControl | None = None
        self._live_run_id: int | None = None
        self._live_records: list[StepRecord] = []
        self._live_config: ExperimentConfig | None = None
        self._paused_at: int | None = None  # the iteration the live run holds after (None: not holding)
        self._plot_live = False
        self._close_after_run = False
        self._closed = False
        self._shown_run: dict[str, Any] | None = None
        self.last_error: str = ""
        self.last_run_stats: dict[str, int] = {}  # records received / signals used by the last run
        self.error_box: QMessageBox | None = None

        # ---- left: runs and the selected run's details ---------------------------------------------
        self.runs = RunListView(store=self.store)
        self.runs.runSelected.connect(self._on_run_selected)
        self.runs.runsEdited.connect(self.refresh_runs)
        self.runs.runsDeleted.connect(self._on_runs_deleted)
        self.runs.errorOccurred.connect(self.show_error)
        self.runs.statusMessage.connect(self._set_status)
        self.details = RunDetails()
        self.notes = RunNotesEdit(self.store)
        self.notes.setMaximumHeight(110)
        self.notes.errorOccurred.connect(self.show_error)
        self.notes.notesSaved.connect(lambda rid: self._set_status(f"Saved the notes of run {rid}."))
        self.use_config_button = QPushButton("Use this config")
        self.use_config_button.setToolTip("Copy the selected run's config into the experiment form.")
        self.use_config_button.setEnabled(False)
        self.use_config_button.clicked.connect(self._use_selected_config)
        left = QSplitter(Qt.Orientation.Vertical)
        left.addWidget(_panel("Runs", self.runs.filter_edit, self.runs))
        self.resume_button = QPushButton("Resume run")
        self.resume_button.setToolTip("Continue the selected interrupted, stopped or failed run from its last\n"
                                      "checkpoint (same run id; the curve goes on without a gap).")
        self.resume_button.setEnabled(False)
        self.resume_button.clicked.connect(self.resume_selected_run)
        run_buttons = QWidget()
        row = QHBoxLayout(run_buttons)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.use_config_button)
        row.addWidget(self.resume_button)
        self.export_button = QPushButton("Export…")
        self.export_button.setToolTip("Save the selected completed or stopped run as a Hugging Face style folder\n"
                                      "(model.safetensors, config, tokenizer, metastudio.json, README).")
        self.export_button.setEnabled(False)
        self.export_button.clicked.connect(lambda: self.export_selected_run())  # not clicked(bool) as out_dir
        row.addWidget(self.export_button)
        left.addWidget(_panel("Selected run", self.details, self.notes, run_buttons))
        left.setStretchFactor(0, 3)
        left.setStretchFactor(1, 2)

        # ---- centre: the experiment form and the run buttons ----------------------------------------
        # CUDA/MPS are known once torch is in: the probe below imports it off the GUI thread
        self.form = ExperimentForm(config, devices=["auto", "cpu"])
        self.form.validityChanged.connect(self._update_buttons)
        self.form.changed.connect(self._on_form_edited)
        self.start_button = QPushButton("Start")
        self.start_button.setToolTip("Start meta-training with this experiment (Ctrl+Return).\n"
                                     "One run at a time: Start is disabled while a run is active.")
        self.start_button.setShortcut(QKeySequence("Ctrl+Return"))
        self.start_button.setStyleSheet("QPushButton:enabled { font-weight: 600; }")
        self.start_button.clicked.connect(self.start_run)
        self.pause_button = QPushButton("Pause")
        self.pause_button.setToolTip("Hold the run after the current iteration; click again to resume.")
        self.pause_button.clicked.connect(self.toggle_pause)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("End the run after the current iteration; it is kept as 'stopped'.")
        self.stop_button.clicked.connect(self.stop_run)
        buttons = QHBoxLayout()
        for b in (self.start_button, self.pause_button, self.stop_button):
            b.setMinimumHeight(30)
            buttons.addWidget(b)
        centre = _panel("Experiment", self.form)
        centre.layout().addLayout(buttons)

        # ---- right: curves -------------------------------------------------------------------------
        self.curves = CurvesWidget()
        self.playground = PlaygroundWidget(self.db_path)
        self.playground.statusMessage.connect(self._set_status)
        self.right_tabs = QTabWidget()
        self.right_tabs.addTab(_panel("Curves", self.curves), "Curves")
        self.right_tabs.addTab(self.playground, "Playground")
        self.compare = CompareWidget(self.store)
        self.compare.statusMessage.connect(self._set_status)
        self.right_tabs.addTab(self.compare, "Compare")
        self.runs.runsSelected.connect(self.compare_runs)
        self.right_tabs.currentChanged.connect(lambda _i: self._refresh_compare())
        right = self.right_tabs
        self._export_jobs = JobThread("metastudio-export", self)
        self._probe_jobs = JobThread("metastudio-probe", self)
        self._probe_jobs.submit(_probe_devices, self.form.set_available_devices)
        self._exporting = False
        self._exportStatus.connect(self._on_export_status)

        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(left)
        split.addWidget(centre)
        split.addWidget(right)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 3)
        split.setStretchFactor(2, 5)
        split.setChildrenCollapsible(False)
        self.setCentralWidget(split)
        self.splitter = split

        # ---- status bar ------------------------------------------------------------------------------
        self.status_label = QLabel("Ready.")
        self.status_label.setMinimumWidth(200)
        self.progress = QProgressBar()
        self.progress.setFixedWidth(340)
        self.progress.setTextVisible(True)
        self._reset_progress()
        self.statusBar().addWidget(self.status_label, 1)
        self.statusBar().addPermanentWidget(self.progress)

        self._build_menu()
        self.resize(1680, 980)
        # the form gets the width it needs (no horizontal scrolling), the run list its main columns
        form_w = self.form.minimumWidth() + 40
        split.setSizes([610, form_w, 1680 - 610 - form_w])

        self._details_timer = QTimer(self)  # the selected live run's iteration count in the details
        self._details_timer.setSingleShot(True)
        self._details_timer.setInterval(250)
        self._details_timer.timeout.connect(self._show_live_iterations)

        self.refresh_timer = QTimer(self)
        self.refresh_timer.setInterval(refresh_ms)
        self.refresh_timer.timeout.connect(self.refresh_runs)
        self.refresh_timer.start()
        self.refresh_runs()
        self._update_buttons()

    # ---- menu ------------------------------------------------------------------------------------------
    def _build_menu(self) -> None:
        file_menu = self.menuBar().addMenu("&File")
        load = QAction("&Load config…", self)
        load.setShortcut(QKeySequence.StandardKey.Open)
        load.triggered.connect(self._load_config_file)
        save = QAction("&Save config as…", self)
        save.setShortcut(QKeySequence.StandardKey.Save)
        save.triggered.connect(self._save_config_file)
        quit_ = QAction("&Quit", self)
        quit_.setShortcut(QKeySequence.StandardKey.Quit)
        quit_.triggered.connect(self.close)
        for a in (load, save):
            file_menu.addAction(a)
        file_menu.addSeparator()
        file_menu.addAction(quit_)
        self.load_config_action, self.save_config_action = load, save

    def _load_config_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load an experiment config", "",
                                              "Configs (*.yaml *.yml *.json);;All files (*)")
        if not path:
            return
        try:
            self.form.set_config(load_config(path))
            self._set_status(f"Loaded config from {path}.")
        except MetaStudioError as err:
            self.show_error("Cannot load the config", str(err))

    def _save_config_file(self) -> None:
        try:
            cfg = self.form.config()
        except ConfigError as err:
            self.show_error("The config is not valid", str(err))
            return
        path, _ = QFileDialog.getSaveFileName(self, "Save the experiment config", "experiment.yaml",
                                              "YAML (*.yaml *.yml)")
        if path:
            Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), encoding="utf-8")
            self._set_status(f"Saved config to {path}.")

    # ---- state ---------------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """True while a run started from this window is active (its thread is alive)."""
        return self._thread is not None

    @property
    def live_run_id(self) -> int | None:
        """The database id of the run this window is driving (None before it is created)."""
        return self._live_run_id

    def _set_status(self, text: str) -> None:
        self.status_label.setText(text)
        self.status_label.setToolTip(text)

    @Slot()
    def _on_form_edited(self) -> None:
        """An edit answers a "Not started: ..." message (the form re-checks the field itself): drop it."""
        if self.status_label.text().startswith("Not started"):
            self._set_status("Ready.")

    def _reset_progress(self) -> None:
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("idle")

    @Slot()
    def _update_buttons(self, *_args: Any) -> None:
        running = self.running
        stopping = running and self._control is not None and self._control.stop_requested
        self.start_button.setEnabled(not running and self.form.valid)
        self.pause_button.setEnabled(running and not stopping)
        self.stop_button.setEnabled(running and not stopping)
        self.form.setEnabled(not running)
        self.use_config_button.setEnabled(not running and self.details.run_id is not None)
        shown = self._shown_run_status()
        self.resume_button.setEnabled(not running and shown in RESUMABLE_STATUSES and shown != "created")
        self.export_button.setEnabled(not self._exporting and self._shown_run_exportable())
        self.playground.set_run(self.details.run_id)
        self.load_config_action.setEnabled(not running)
        paused = running and self._control is not None and self._control.paused
        self.pause_button.setText("Resume" if paused else "Pause")

    # ---- run list ----------------------------------------------------------------------------------
    @Slot()
    def refresh_runs(self) -> None:
        """Re-read the run list (and new points of a run being trained by another process)."""
        if self._closed:
            return
        try:
            runs = self.store.list_runs()
        except MetaStudioError as err:
            self._set_status(f"Cannot read the run database: {err}")
            return
        self.runs.set_runs(runs)
        self._refresh_compare()
        rid = self.details.run_id
        if rid is None:
            return
        row = self.runs.run(rid)
        if row is None:
            return
        if row != self._shown_run:
            self._shown_run = row
            self.details.show_run(row)
            self.notes.show_run(row)
            if rid == self._live_run_id and self._live_records:  # the store lags the live records
                self.details.set_iterations(self._live_records[-1].step, self._live_records[-1].total)
        if not self._plot_live and self.curves.run_id == rid and row.get("status") in ACTIVE:
            self.curves.show_metrics(self.store.get_metrics(rid, after_step=self.curves.last_step), append=True)
            self.curves.set_title(self._run_title(row))

    @Slot(list)
    def compare_runs(self, run_ids: list[int]) -> None:
        """Show these runs in the Compare tab (the run list's multi-selection; < 2 shows a hint there)."""
        if self._closed:
            return
        self.compare.set_runs(run_ids)  # read from the store only while the Compare tab shows
        n = len(self.compare.run_ids)
        self.right_tabs.setTabText(self.right_tabs.indexOf(self.compare), f"Compare ({n})" if n >= 2 else "Compare")

    def _refresh_compare(self) -> None:
        """Re-read the compared runs if the Compare tab is showing and they changed (runs still training)."""
        if not self._closed and self.right_tabs.currentWidget() is self.compare and len(self.compare.run_ids) >= 2:
            self.compare.refresh()

    @staticmethod
    def _run_title(run: dict[str, Any]) -> str:
        return f"Run {run['id']}: {run.get('name') or ''} ({run.get('status')})"

    @Slot(int)
    def _on_run_selected(self, run_id: int) -> None:
        if self._closed:
            return
        if run_id < 0:
            self.details.show_run(None)
            self.notes.show_run(None)
            self._shown_run = None
            self._update_buttons()
            return
        try:
            run = self.store.get_run(run_id)
        except KeyError:
            return
        self._shown_run = self.runs.run(run_id)
        self.details.show_run(run)
        self.notes.show_run(run)
        self._update_buttons()
        self.curves.set_accuracy_shown(not is_regression(run.get("config") or {}))
        if self.running and run_id == self._live_run_id:
            self._plot_live = True
            self.curves.clear(self._run_title(run), run_id)
            self.curves.append_records(self._live_records)
            if self._live_records:
                self.details.set_iterations(self._live_records[-1].step, self._live_records[-1].total)
            return
        self._plot_live = False
        self.curves.clear(self._run_title(run), run_id)
        self.curves.show_metrics(self.store.get_metrics(run_id))

    @Slot(list)
    def _on_runs_deleted(self, run_ids: list[int]) -> None:
        """Runs deleted from the list: forget them in the details, notes and curves."""
        if self.details.run_id in run_ids:
            self.details.show_run(None)
            self.notes.show_run(None)
            self._shown_run = None
        if self.curves.run_id in run_ids and not self._plot_live:
            self.curves.clear()
        self.refresh_runs()
        self._update_buttons()

    @Slot()
    def _use_selected_config(self) -> None:
        rid = self.details.run_id
        if rid is None or self.running:
            return
        try:
            self.form.set_config(validate_config(self.store.get_run(rid)["config"]))
            self._set_status(f"Copied the config of run {rid} into the form.")
        except (MetaStudioError, KeyError) as err:
            self.show_error("Cannot use this config", str(err))

    # ---- running ---------------------------------------------------------------------------------
    def _shown_run_status(self) -> str | None:
        rid = self.details.run_id
        if rid is None:
            return None
        try:
            return self.store.get_run(rid)["status"]
        except KeyError:
            return None

    def _shown_run_exportable(self) -> bool:
        """The selected run is completed or stopped and trained on text (not sinusoid regression)."""
        rid = self.details.run_id
        if rid is None:
            return False
        try:
            run = self.store.get_run(rid)
        except KeyError:
            return False
        return run["status"] in ("completed", "stopped") and run["config"].get("dataset") != "sinusoid"

    @Slot(str)
    def _on_export_status(self, text: str) -> None:
        if self._exporting:
            self._set_status(f"Exporting: {text}")

    def export_selected_run(self, out_dir: str | Path | None = None) -> bool:
        """Export the selected run to a folder (asked for if None) in a worker thread.

        A non-empty folder is overwritten only after a Yes to the confirmation question. The result
        shows in the status bar; a :class:`~engine.MetaStudioError` in an error box. False if not started.
        """
        rid = self.details.run_id
        if rid is None or self._exporting or not self._shown_run_exportable():
            return False
        if out_dir is None:
            out_dir = QFileDialog.getExistingDirectory(self, f"Export run {rid} to a folder")
            if not out_dir:
                return False
        target = Path(out_dir)
        overwrite = False
        if target.is_dir() and any(target.iterdir()):
            if not (target / "metastudio.json").is_file():  # the engine only replaces a previous export
                self.show_error(f"Cannot export run {rid}",
                                f"{target} is not empty and is not a MetaStudio export, so nothing in it is "
                                "replaced.\n\nPick an empty folder or a previous export.")
                return False
            answer = QMessageBox.question(
                self, "Overwrite the folder?",
                f"{target} is not empty.\n\nExport run {rid} into it anyway (its export files are replaced)?",
                QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No)
            if answer != QMessageBox.StandardButton.Yes:
                return False
            overwrite = True
        db_path = self.db_path

        def job() -> Path:
            from engine.export import export_run

            store = RunStore(db_path)  # the export thread's own connection
            try:
                return export_run(store, rid, target, overwrite=overwrite, status=self._exportStatus.emit)
            finally:
                store.close()

        def done(path: Path) -> None:
            self._exporting = False
            self._set_status(f"Exported run {rid} to {path}.")
            self._update_buttons()

        def failed(error: str, details: str) -> None:
            self._exporting = False
            self._set_status(f"Export of run {rid} failed: {error}")
            self.show_error(f"Cannot export run {rid}", error, details)
            self._update_buttons()

        self._exporting = True
        self._set_status(f"Exporting run {rid} to {target} (rebuilding its model)…")
        self._export_jobs.submit(job, done, failed)
        self._update_buttons()
        return True

    @Slot()
    def resume_selected_run(self) -> bool:
        """Continue the selected interrupted/stopped/failed run in a worker thread (one run at a time)."""
        rid = self.details.run_id
        if self.running or rid is None:
            return False
        try:
            config = validate_config(self.store.get_run(rid)["config"])
        except (MetaStudioError, KeyError) as err:
            self.show_error("Cannot resume this run", str(err))
            return False
        self.form.set_config(config)  # the (disabled) form shows what is running, not the last copied config
        return self._launch(config, resume_run_id=rid)

    @Slot()
    def start_run(self) -> bool:
        """Start the form's experiment in a worker thread; False if invalid or already running."""
        if self.running:
            return False
        try:
            config = self.form.config()
        except ConfigError as err:
            self.form.set_external_error(err.field, err.message)
            self._set_status(f"Not started: {err}")
            return False
        return self._launch(config)

    def _launch(self, config: ExperimentConfig, resume_run_id: int | None = None) -> bool:
        self._live_config = config
        self._live_run_id = None
        self._live_records = []
        self._plot_live = True
        self.curves.clear(f"Preparing: {config.display_name}")
        self.curves.set_accuracy_shown(config.task_type != "regression")
        self.progress.setRange(0, 0)  # busy until the first record
        self.progress.setFormat("preparing…")
        self._paused_at = None
        self._control = ReportingRunControl()
        self._worker = TrainingWorker(config, self.db_path, self._control, resume_run_id=resume_run_id)
        self._thread = QThread(self)
        self._thread.setObjectName("metastudio-training")
        self._worker.moveToThread(self._thread)
        self._worker.status.connect(self._on_worker_status)
        self._worker.started.connect(self._on_worker_started)
        self._worker.records.connect(self._on_records)
        self._worker.rejected.connect(self._on_rejected)
        self._worker.failed.connect(self._on_failed)
        self._worker.paused.connect(self._on_paused)
        self._worker.resumed.connect(self._on_resumed)
        self._worker.finished.connect(self._on_worker_finished)
        # Direct: quit() is thread-safe, and shutdown() may be blocking the GUI thread in wait().
        self._worker.finished.connect(self._thread.quit, Qt.ConnectionType.DirectConnection)
        self._thread.started.connect(self._worker.run)
        self._thread.finished.connect(self._on_thread_finished)
        self._set_status(f"Resuming run {resume_run_id}…" if resume_run_id is not None
                         else f"Starting {config.display_name}…")
        self._thread.start()
        self._update_buttons()
        return True

    @Slot()
    def toggle_pause(self) -> None:
        """Pause the active run at its next iteration, or resume it."""
        if not self.running or self._control is None:
            return
        if self._control.paused:
            self._control.resume()
            if self._paused_at is None:  # the pause had not taken effect yet
                self._set_status("Resumed.")
        else:
            self._control.pause()
            # the iteration in progress finishes first; _on_paused says where the run holds
            self._set_status("Pausing after the current iteration…" if self._live_records
                             else "Pausing once set-up is done…")
        self._update_buttons()

    def _live_title(self, status: str) -> None:
        """Show the live run's status (``paused`` / ``running``) in the curves' title."""
        if self._plot_live and self._live_run_id is not None and self.curves.run_id == self._live_run_id:
            run = self.runs.run(self._live_run_id) or {"id": self._live_run_id, "name": ""}
            self.curves.set_title(self._run_title({**run, "status": status}))

    def _progress_text(self, step: int, total: int, eta_s: float | None) -> str:
        if self._paused_at is not None:
            return f"iteration {step} / {total} — paused"
        return f"iteration {step} / {total} — {format_duration(eta_s)} left"

    @Slot()
    def _show_live_iterations(self) -> None:
        live = self._live_run_id
        if not self._closed and self._live_records and live is not None and self.details.run_id == live:
            self.details.set_iterations(self._live_records[-1].step, self._live_records[-1].total)

    @Slot(int)
    def _on_paused(self, step: int) -> None:
        """The live run now holds after iteration ``step``: say so in the status bar, progress and title."""
        if self._closed or not self.running:
            return
        self._paused_at = step
        total = self._live_records[-1].total if self._live_records else 0
        if self._control is not None and self._control.stop_requested:
            return
        self._set_status(f"Paused after iteration {step}." if step else "Paused before the first iteration.")
        if total:
            self.progress.setFormat(self._progress_text(step, total, None))
        self.refresh_runs()  # the run row says "paused" now
        self._live_title("paused")
        self._update_buttons()

    @Slot()
    def _on_resumed(self) -> None:
        """The paused live run goes on: restore the running texts."""
        if self._closed or not self.running:
            return
        self._paused_at = None
        if self._live_records:
            last = self._live_records[-1]
            self.progress.setFormat(self._progress_text(last.step, last.total, last.eta_s))
        if self._control is not None and not self._control.stop_requested:
            self._set_status("Resumed.")
        self.refresh_runs()
        self._live_title("running")
        self._update_buttons()

    @Slot()
    def stop_run(self) -> None:
        """Ask the active run to end after its current iteration (kept as ``stopped``)."""
        if not self.running or self._control is None:
            return
        self._control.request_stop()
        self._set_status("Stopping…" if self._live_run_id is not None else "Stopping once set-up is done…")
        self._update_buttons()

    @Slot(str)
    def _on_worker_status(self, text: str) -> None:
        if self.running and not (self._control and self._control.stop_requested):
            self._set_status(text[:1].upper() + text[1:])

    @Slot(int)
    def _on_worker_started(self, run_id: int) -> None:
        if self._closed:
            return
        self._live_run_id = run_id
        self.refresh_runs()
        # Select the new run: its details, and the live curves (see _on_run_selected).
        if self.runs.selected_run_id() == run_id:
            self._on_run_selected(run_id)
        else:
            self.runs.select_run(run_id)
        self._update_buttons()

    @Slot(list)
    def _on_records(self, records: list[StepRecord]) -> None:
        if not records:
            return
        if not self._live_records and records[0].step > 1 and self._live_run_id is not None:
            # a resumed run: draw the stored curve up to its checkpoint, then the new points
            self._live_records = stored_records(self.store.get_metrics(self._live_run_id), records[0].total,
                                                before_step=records[0].step)
            if self._plot_live:
                self.curves.append_records(self._live_records)
        self._live_records.extend(records)
        last = records[-1]
        self.progress.setRange(0, last.total)
        self.progress.setValue(last.step)
        self.progress.setFormat(self._progress_text(last.step, last.total, last.eta_s))
        if self._plot_live:
            self.curves.append_records(records)
        if self.details.run_id == self._live_run_id and not self._details_timer.isActive():
            self._details_timer.start()  # the store lags: show the live count, at most 4 times a second

    @Slot(str, str, str)
    def _on_rejected(self, field: str, text: str, full: str) -> None:
        self._set_status(f"Not started: {full}")
        if not self.form.set_external_error(field, text):
            self.show_error("The experiment cannot start", full)

    @Slot(str, str)
    def _on_failed(self, error: str, details: str) -> None:
        where = f"Run {self._live_run_id} failed" if self._live_run_id is not None else "The run could not start"
        self.show_error(where, error, details)

    @Slot(str, str, str)
    def _on_worker_finished(self, status: str, stop_reason: str, error: str) -> None:
        rid = self._live_run_id
        if status == "rejected":
            self.curves.clear("Not started")
        elif rid is not None:
            why = f" ({stop_reason})" if stop_reason else ""
            took = format_duration(self._live_records[-1].elapsed_s) if self._live_records else ""
            msg = f"Run {rid} {status}{why}" + (f" after {took} of training." if took else ".")
            if error:
                msg += f" Error: {error}"
            self._set_status(msg)
        self._reset_progress()
        if self._live_records:
            last = self._live_records[-1]
            self.progress.setRange(0, last.total)
            self.progress.setValue(last.step)
            self.progress.setFormat(f"iteration {last.step} / {last.total} — {status}")

    @Slot()
    def _on_thread_finished(self) -> None:
        thread, worker = self._thread, self._worker
        if thread is None:
            return  # already handled (shutdown() waits and calls this itself)
        if thread is not None:
            thread.wait()
            thread.deleteLater()
        if worker is not None:
            self.last_run_stats = {"records": worker.record_count, "signals": worker.emit_count}
            worker.deleteLater()
        self._thread = self._worker = None
        rid, self._live_run_id = self._live_run_id, None
        self._plot_live = False
        self.refresh_runs()
        if rid is not None:
            # Show the finished run from the store (selecting it replaces the live curves).
            if self.runs.selected_run_id() == rid:
                self._on_run_selected(rid)
            else:
                self.runs.select_run(rid)
        self._update_buttons()
        if self._close_after_run:
            self.close()

    # ---- errors and closing --------------------------------------------------------------------------
    def show_error(self, title: str, text: str, details: str = "") -> None:
        """Show an error in a window-modal box that does not block the event loop."""
        self.last_error = text
        if self.error_box is not None:
            self.error_box.close()
        box = QMessageBox(QMessageBox.Icon.Critical, title, text, QMessageBox.StandardButton.Ok, self)
        if details:
            box.setDetailedText(details)
        box.setWindowModality(Qt.WindowModality.WindowModal)
        box.open()
        self.error_box = box

    def shutdown(self, timeout_ms: int = 60_000) -> bool:
        """Stop an active run and wait for its thread (blocking); True if no thread is left running."""
        if self._thread is None:
            return True
        if self._control is not None:
            self._control.request_stop()
        done = self._thread.wait(timeout_ms)
        if done:
            self._on_thread_finished()
        return done

    def closeEvent(self, event: QCloseEvent) -> None:
        if self.running:
            if not self._close_after_run:
                last = self._live_records[-1] if self._live_records else None
                where = f" (iteration {last.step} / {last.total})" if last else ""
                answer = QMessageBox.question(
                    self, "Stop the run and quit?",
                    f"A run is in progress{where}.\n\nStop it and close MetaStudio? "
                    "What it has trained so far is kept as a stopped run.",
                    QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                    QMessageBox.StandardButton.No)
                if answer != QMessageBox.StandardButton.Yes:
                    event.ignore()
                    return
                self._close_after_run = True
                self.stop_run()
                self._set_status("Stopping the run before closing…")
            event.ignore()  # closes for real once the worker thread has finished
            return
        self.refresh_timer.stop()
        if self.error_box is not None:
            self.error_box.close()
        if not self._closed:
            self._closed = True
            self.notes.save()  # typed notes not saved yet
            self.playground.shutdown()
            self._export_jobs.stop()
            self._probe_jobs.stop()
            self.store.close()
        event.accept()
