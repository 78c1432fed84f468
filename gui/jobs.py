"""Run short blocking engine calls (export, model loading, adaptation, prediction) off the GUI thread.

A :class:`JobThread` owns one :class:`~PySide6.QtCore.QThread` with one :class:`_Runner` in it. Jobs
(plain callables) are queued to that thread and run one after the other, in submission order, so
objects they share (a loaded classifier) are only ever touched by one thread. Results and errors
come back through queued signals to callbacks that run in the GUI thread.

Anything that needs a SQLite connection must open it inside the job (connections are per thread).
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QThread, Signal, Slot

from engine import MetaStudioError


class _Runner(QObject):
    """Lives in the job thread: calls each job and reports its result or error."""

    done = Signal(int, object)
    failed = Signal(int, str, str)

    @Slot(int, object)
    def run(self, job_id: int, fn: Callable[[], Any]) -> None:
        try:
            result = fn()
        except MetaStudioError as err:
            self.failed.emit(job_id, str(err), "")
        except Exception as err:  # noqa: BLE001 - shown to the user, never kills the thread
            self.failed.emit(job_id, f"{type(err).__name__}: {err}", traceback.format_exc())
        else:
            self.done.emit(job_id, result)


class JobThread(QObject):
    """A background thread that runs submitted callables in order.

    Args:
        name: the thread's object name (shown by debuggers).
        parent: the owning widget (the thread is stopped by :meth:`stop`, call it when closing).

    Callbacks: ``on_done(result)`` and ``on_error(message, traceback_text)`` run in the GUI thread;
    ``traceback_text`` is empty for a :class:`~engine.MetaStudioError` (bad input, not a bug).
    """

    _submit = Signal(int, object)

    def __init__(self, name: str, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._thread = QThread(self)
        self._thread.setObjectName(name)
        self._runner = _Runner()
        self._runner.moveToThread(self._thread)
        self._submit.connect(self._runner.run)  # queued: the runner lives in the other thread
        self._runner.done.connect(self._on_done)
        self._runner.failed.connect(self._on_failed)
        self._thread.finished.connect(self._runner.deleteLater)
        self._callbacks: dict[int, tuple[Callable, Callable | None]] = {}
        self._next_id = 0
        self._thread.start()

    @property
    def pending(self) -> int:
        """Jobs submitted and not yet reported back."""
        return len(self._callbacks)

    def submit(self, fn: Callable[[], Any], on_done: Callable[[Any], None],
               on_error: Callable[[str, str], None] | None = None) -> int:
        """Queue ``fn()`` to the job thread; returns the job id."""
        self._next_id += 1
        self._callbacks[self._next_id] = (on_done, on_error)
        self._submit.emit(self._next_id, fn)
        return self._next_id

    @Slot(int, object)
    def _on_done(self, job_id: int, result: Any) -> None:
        on_done, _ = self._callbacks.pop(job_id, (None, None))
        if on_done is not None:
            on_done(result)

    @Slot(int, str, str)
    def _on_failed(self, job_id: int, message: str, details: str) -> None:
        _, on_error = self._callbacks.pop(job_id, (None, None))
        if on_error is not None:
            on_error(message, details)

    def stop(self, timeout_ms: int = 60_000) -> bool:
        """Let the running job finish (queued ones are dropped), end the thread; True if it ended."""
        self._callbacks.clear()
        self._thread.quit()
        return self._thread.wait(timeout_ms)
