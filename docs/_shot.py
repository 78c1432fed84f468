"""Shared ending of the screenshot scripts: let the window settle, save it, close it."""

from __future__ import annotations

import time
from pathlib import Path


def settle(app, rounds: int = 10) -> None:
    """Process events in bounded slices so the last batches, the layout and the repaint land (a plain
    ``processEvents()`` keeps going while a worker keeps posting)."""
    from PySide6.QtCore import QEventLoop

    for _ in range(rounds):
        app.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 50)
        time.sleep(0.02)


def finish(app, window, out: Path, save: bool = True) -> bool:
    """Settle, grab ``window`` into ``out`` (when ``save``), stop its run and close it; True if written."""
    settle(app)
    ok = False
    if save:
        out.parent.mkdir(parents=True, exist_ok=True)
        ok = window.grab().save(str(out))
        print(f"wrote {out}" if ok else f"could not write {out}")
    window.shutdown()
    window.close()
    app.processEvents()
    return ok
