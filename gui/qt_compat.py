"""Work-arounds for defects of particular Qt for Python releases, applied when ``gui`` is imported.

PySide6 6.12.0 on Python 3.10/3.11 (its abi3 wheel claims both): the bindings return ``None`` from
every void method (``QPainter.setPen``, ``QObject.setObjectName``, ...) and ``True`` from
``SignalInstance.emit()`` without taking a reference, as if these objects were immortal (they are
only from Python 3.12 on). Each call lowers their reference count by one; after a few hundred calls
Python aborts with "Fatal Python error: none_dealloc: deallocating None" (or ``bool_dealloc``), in
whichever thread is unlucky. pyqtgraph makes hundreds of such calls per repaint, so the window dies
within seconds of a run starting. PySide6 6.11.x is not affected.

When a short probe shows the leak, :func:`apply_workarounds` gives ``None``, ``True`` and ``False``
an immortal-sized reference count (what Python 3.12 does for every interpreter), so the lost
references never reach zero. The real fix is not to install that release on Python < 3.12
(``PySide6-Essentials>=6.6,!=6.12.0``).
"""

from __future__ import annotations

import ctypes
import logging
import sys

log = logging.getLogger(__name__)
_IMMORTAL = 1 << 40
_applied: list[str] | None = None


def singleton_reference_leaks(calls: int = 16) -> dict[str, int]:
    """References to ``None`` / ``True`` lost by ``calls`` void calls / signal emissions (0 = healthy)."""
    from PySide6.QtCore import QObject, Signal

    class _Probe(QObject):
        ping = Signal()

    probe = _Probe()
    before_none = sys.getrefcount(None)
    for _ in range(calls):
        probe.setObjectName("probe")
    lost_none = before_none - sys.getrefcount(None)
    before_true = sys.getrefcount(True)
    for _ in range(calls):
        probe.ping.emit()
    lost_true = before_true - sys.getrefcount(True)
    return {"None": max(lost_none, 0), "True": max(lost_true, 0)}


def apply_workarounds() -> list[str]:
    """Apply the work-arounds this interpreter and PySide6 need (once); returns their names."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = []
    if sys.version_info < (3, 12) and sys.implementation.name == "cpython":
        leaks = singleton_reference_leaks()
        if any(n >= 8 for n in leaks.values()):
            import PySide6

            for obj in (None, True, False):
                # ob_refcnt is the first field (a Py_ssize_t) of every CPython object.
                ctypes.c_ssize_t.from_address(id(obj)).value += _IMMORTAL
            _applied.append("immortal-singletons")
            log.warning("PySide6 %s drops references to None/True on Python %d.%d (lost per 16 calls: %s); "
                        "compensated. Install PySide6-Essentials 6.11.x to avoid this.",
                        PySide6.__version__, *sys.version_info[:2], leaks)
    return _applied
