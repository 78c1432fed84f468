"""PySide6 6.12.0 on Python < 3.12 drops references to None/True; importing ``gui`` must compensate."""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal

import gui  # noqa: F401 - applies the work-arounds
from gui.qt_compat import apply_workarounds


class _Emitter(QObject):
    ping = Signal(int)


def test_many_void_calls_and_emissions_do_not_crash():
    """Enough calls to exhaust the real reference counts of None and True many times over."""
    applied = apply_workarounds()
    obj = _Emitter()
    got = []
    obj.ping.connect(got.append)
    for i in range(50_000):
        obj.setObjectName("x")
        obj.ping.emit(i)
    assert len(got) == 50_000
    assert isinstance(applied, list)
