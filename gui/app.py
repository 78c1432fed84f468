"""Start the MetaStudio window: ``metastudio``, ``metastudio gui [--db PATH]`` or ``python -m gui``.

The engine (and so torch) is imported only after a small splash screen is on screen, so the user
sees the application react at once; the window follows when the imports are done.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QFont, QPainter, QPixmap
from PySide6.QtWidgets import QApplication, QMessageBox, QSplashScreen

NO_DISPLAY_EXIT = 2  # the exit code when there is no display to open the window on


def missing_display(env: Mapping[str, str] | None = None, platform: str | None = None) -> str | None:
    """Why the window cannot open here, or None when it (probably) can.

    On Linux and the BSDs Qt needs an X11 (``DISPLAY``) or Wayland (``WAYLAND_DISPLAY``) display unless
    ``QT_QPA_PLATFORM`` picks a platform plugin explicitly (``offscreen`` for scripted use); without
    one, Qt aborts the process with a bare "could not connect to display" message. ``env`` and
    ``platform`` default to ``os.environ`` and ``sys.platform``.
    """
    env = os.environ if env is None else env
    platform = sys.platform if platform is None else platform
    if not platform.startswith(("linux", "freebsd", "openbsd", "netbsd")):
        return None
    if env.get("DISPLAY") or env.get("WAYLAND_DISPLAY") or env.get("QT_QPA_PLATFORM"):
        return None
    return ("metastudio: no display found (neither DISPLAY nor WAYLAND_DISPLAY is set), so the window cannot "
            "open. Use the command line instead (`metastudio train --config exp.yaml`, `metastudio --help`), or set "
            "QT_QPA_PLATFORM=offscreen for scripted use.")


def _splash() -> QSplashScreen:
    pix = QPixmap(420, 120)
    pix.fill(QColor("#263238"))
    p = QPainter(pix)
    p.setPen(QColor("white"))
    font = QFont()
    font.setPointSize(18)
    font.setBold(True)
    p.setFont(font)
    p.drawText(24, 56, "MetaStudio")
    font.setPointSize(10)
    font.setBold(False)
    p.setFont(font)
    p.drawText(24, 90, "Loading the engine…")
    p.end()
    splash = QSplashScreen(pix, Qt.WindowType.WindowStaysOnTopHint)
    return splash


def main(argv: list[str] | None = None, db_path: str | Path | None = None) -> int:
    """Open the window on ``db_path`` (None = the default database) and run the event loop.

    Runs left ``running``/``paused`` by a process that no longer exists are marked ``interrupted``
    first. Returns the application's exit code: 1 if the database cannot be opened,
    :data:`NO_DISPLAY_EXIT` (2, after a one-line message on stderr) if there is no display to open
    the window on (see :func:`missing_display`).
    """
    t0 = time.perf_counter()
    problem = None if QApplication.instance() is not None else missing_display()
    if problem:
        print(problem, file=sys.stderr)
        return NO_DISPLAY_EXIT
    app = QApplication.instance() or QApplication(list(sys.argv if argv is None else argv))
    app.setApplicationName("MetaStudio")
    app.setOrganizationName("MetaStudio")
    splash = _splash()
    splash.show()
    app.processEvents()

    from engine import MetaStudioError, RunStore  # heavy (torch): after the splash is up
    from gui.main_window import MainWindow

    try:
        store = RunStore(db_path)
        try:
            stale = store.mark_interrupted()
        finally:
            store.close()
        window = MainWindow(db_path=store.path)
    except MetaStudioError as err:
        splash.close()
        QMessageBox.critical(None, "MetaStudio cannot start", str(err))
        return 1
    if stale:
        window.statusBar().showMessage(
            f"Marked {len(stale)} run(s) left by an ended process as interrupted: {', '.join(map(str, stale))}.",
            10_000)
    app.aboutToQuit.connect(window.shutdown)
    window.show()
    splash.finish(window)
    window.startup_s = time.perf_counter() - t0
    return int(app.exec())


if __name__ == "__main__":
    sys.exit(main())
