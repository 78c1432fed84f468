"""The training worker: drives one :class:`~engine.TrainingSession` in a background thread.

The window moves a :class:`TrainingWorker` to a :class:`~PySide6.QtCore.QThread` and connects that
thread's ``started`` signal to :meth:`TrainingWorker.run`. Everything the session does, including
opening its own SQLite connection, happens in that thread; the GUI thread only receives signals.

Step records are never sent one by one: the loop appends them to a buffer and a small flusher
thread emits the buffer as one ``records`` signal at most every ``emit_interval_s`` (20 per second
by default), so a fast run (thousands of iterations per second) cannot flood the GUI thread and a
slow one still shows each point within 50 ms. What is left is flushed before ``finished``.
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, Signal, Slot

from engine import ExperimentConfig, MetaStudioError, RunControl, StepRecord

if TYPE_CHECKING:
    from engine import TrainingSession


class ReportingRunControl(RunControl):
    """A :class:`~engine.RunControl` that also tells when a pause takes effect and when it ends.

    :meth:`~engine.RunControl.pause` only asks the loop to hold at its next check; the iteration in
    progress still finishes. ``on_paused`` is called (in the training thread) once the loop actually
    holds, after the session's own hooks (the run row already says ``paused``); ``on_resumed`` when it
    goes on again. Both are plain attributes, set by :class:`TrainingWorker`.
    """

    def __init__(self) -> None:
        super().__init__()
        self.on_paused: Callable[[], None] | None = None
        self.on_resumed: Callable[[], None] | None = None

    def checkpoint(self, on_pause: Callable[[], Any] | None = None,
                   on_resume: Callable[[], Any] | None = None) -> bool:
        """As :meth:`engine.RunControl.checkpoint`, calling :attr:`on_paused` / :attr:`on_resumed` too."""

        def paused() -> None:
            if on_pause:
                on_pause()
            if self.on_paused:
                self.on_paused()

        def resumed() -> None:
            if on_resume:
                on_resume()
            if self.on_resumed:
                self.on_resumed()

        return super().checkpoint(on_pause=paused, on_resume=resumed)


class TrainingWorker(QObject):
    """Run one experiment and report progress through queued signals.

    Args:
        config: the validated experiment.
        db_path: the run database the session writes to (its own connection, in the worker thread).
        control: the stop/pause flags the window shares with the training loop.
        emit_interval_s: the shortest time between two ``records`` signals.
        resume_run_id: continue this stored run (same id) from its last checkpoint instead of
            starting ``config`` anew (see :meth:`~engine.TrainingSession.resume`).

    Signals:
        status(str): set-up and progress text (``"loading the base model 'bundled'"``, ...).
        started(int): the run's database id, once the session has created the run row.
        records(list): a batch of :class:`~engine.StepRecord`, oldest first.
        rejected(str, str, str): the engine refused the experiment before any run was created:
            ``(field, message, full_text)`` from the :class:`~engine.MetaStudioError` (field may be "").
        failed(str, str): ``(error, traceback)`` of any other failure (the run, if created, is
            stored as ``failed`` by the session).
        paused(int): the loop now holds after this iteration (the last one it finished; 0 before the
            first); only with a :class:`ReportingRunControl`. The records up to it are sent first.
        resumed(): the paused loop goes on (only with a :class:`ReportingRunControl`).
        finished(str, str, str): ``(status, stop_reason, error)``; status is the session's final
            status (``completed`` / ``stopped`` / ``failed``) or ``rejected``. Always emitted last.
    """

    status = Signal(str)
    started = Signal(int)
    records = Signal(list)
    rejected = Signal(str, str, str)
    failed = Signal(str, str)
    paused = Signal(int)
    resumed = Signal()
    finished = Signal(str, str, str)

    def __init__(self, config: ExperimentConfig, db_path: str | Path | None, control: RunControl,
                 emit_interval_s: float = 0.05, resume_run_id: int | None = None) -> None:
        super().__init__()
        self.config = config
        self.resume_run_id = resume_run_id
        self.db_path = db_path
        self.control = control
        self.emit_interval_s = emit_interval_s
        self.run_id: int | None = None
        self.record_count = 0
        self.emit_count = 0
        self.last_step = 0  # the iteration of the newest record
        self._pending: list[StepRecord] = []
        self._lock = threading.Lock()

    # ---- batching ---------------------------------------------------------------------------
    def _flush(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
        if batch:
            self.emit_count += 1
            self.records.emit(batch)

    def _flusher(self, done: threading.Event) -> None:
        while not done.wait(self.emit_interval_s):
            self._flush()

    def _on_paused(self) -> None:
        self._flush()  # the records up to the pause arrive before the signal
        self.paused.emit(self.last_step)

    # ---- the run ----------------------------------------------------------------------------
    def _check_started(self, session: TrainingSession) -> None:
        if self.run_id is None and session.run_id is not None:
            self.run_id = session.run_id
            self.started.emit(session.run_id)

    @Slot()
    def run(self) -> None:
        """Iterate the session to its end; never raises (errors become signals)."""
        from engine import TrainingSession  # torch: loaded in this worker thread, not at window start-up

        session: TrainingSession | None = None

        def on_status(message: str) -> None:
            if session is not None:
                self._check_started(session)
            self.status.emit(message)

        if isinstance(self.control, ReportingRunControl):
            self.control.on_paused = self._on_paused
            self.control.on_resumed = self.resumed.emit
        status, stop_reason, error = "failed", "", ""
        done = threading.Event()
        flusher = threading.Thread(target=self._flusher, args=(done,), name="metastudio-records", daemon=True)
        flusher.start()
        try:
            if self.resume_run_id is not None:  # continue a stored run from its last checkpoint
                session = TrainingSession.resume(self.resume_run_id, self.db_path, self.control, on_status=on_status)
            else:
                session = TrainingSession(self.config, self.db_path, self.control, on_status=on_status)
            for rec in session.run():
                self._check_started(session)
                with self._lock:
                    self._pending.append(rec)
                self.record_count += 1
                self.last_step = rec.step
            status, stop_reason = session.status, session.stop_reason or ""
        except MetaStudioError as err:
            error = str(err)
            if session is None or session.run_id is None:
                status = "rejected"
                text = err.message + (f" {err.hint}" if err.hint else "")
                self.rejected.emit(err.field or "", text, error)
            else:
                status, stop_reason = "failed", session.stop_reason or "error"
                self.failed.emit(error, traceback.format_exc())
        except Exception as err:  # the window must survive any failure
            error = f"{type(err).__name__}: {err}"
            if session is not None and session.run_id is not None:
                status, stop_reason = "failed", "error"
            else:
                status = "rejected"
            self.failed.emit(error, traceback.format_exc())
        finally:
            done.set()
            flusher.join()
            self._flush()
            if session is not None:
                self._check_started(session)
            self.finished.emit(status, stop_reason, error)
