"""Thread-safe stop / pause requests that a training loop checks between iterations."""

from __future__ import annotations

import threading


class RunControl:
    """Flags set by the GUI or a signal handler, read by the training loop.

    The loop calls :meth:`checkpoint` between iterations (and between validation episodes): it
    blocks while paused and returns True when a stop was requested.
    """

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._running = threading.Event()
        self._running.set()

    def request_stop(self) -> None:
        """Ask the loop to end at its next check (also wakes a paused loop)."""
        self._stop.set()
        self._running.set()

    def pause(self) -> None:
        """Hold the loop at its next check until :meth:`resume` or :meth:`request_stop`."""
        self._running.clear()

    def resume(self) -> None:
        """Let a paused loop go on."""
        self._running.set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    def checkpoint(self, on_pause=None, on_resume=None) -> bool:
        """Block while paused (calling the hooks on entering and leaving); True if a stop was requested."""
        if not self._running.is_set():
            if on_pause:
                on_pause()
            self._running.wait()
            if on_resume and not self._stop.is_set():
                on_resume()
        return self._stop.is_set()
