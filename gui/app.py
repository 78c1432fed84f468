"""Start the MetaStudio window: ``metastudio``, ``metastudio gui [--db PATH]`` or ``python -m gui``.

The engine (and so torch) is imported only after a small splash screen is on screen, so the user
sees the application react at once; the window follows when the imports are done.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QFont, QPainter, QPixmap
from PySide6.QtWidgets import QApplication, QMessageBox, QSplashScreen


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
    first. Returns the application's exit code (1 if the database cannot be opened).
    """
    t0 = time.perf_counter()
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
