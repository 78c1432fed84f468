"""Render the main window during a short demo run to ``docs/screenshots/main_window_running.png``.

Runs offscreen (no display needed) on a temporary database: starts a run on the bundled demo data set
with the bundled model, waits until the curves hold some points, grabs the window, then stops the run.

    python docs/screenshot.py [--out PATH] [--points N] [--timeout SECONDS]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "docs"))


def main(argv: list[str] | None = None) -> int:
    """Take the screenshot; returns 0 on success, 1 if no points arrived in time."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots" / "main_window_running.png")
    parser.add_argument("--points", type=int, default=120, help="outer-loss points to wait for")
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds to wait for them")
    args = parser.parse_args(argv)

    from _shot import finish
    from PySide6.QtCore import QEventLoop
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([sys.argv[0]])
    from engine import ExperimentConfig
    from gui.main_window import MainWindow

    with tempfile.TemporaryDirectory() as tmp:
        config = ExperimentConfig(name="demo 5-way 5-shot", meta_iterations=3000, val_interval=10,
                                  val_episodes=20, meta_batch_size=4, inner_steps=3)
        window = MainWindow(db_path=Path(tmp) / "runs.db", config=config)
        window.show()
        if not window.start_run():
            print("the run did not start:", window.status_label.text(), file=sys.stderr)
            return 1
        deadline = time.monotonic() + args.timeout
        while window.curves.point_count("outer_loss") < args.points and window.running:
            if time.monotonic() > deadline:
                print(f"timed out after {args.timeout:.0f} s waiting for {args.points} points", file=sys.stderr)
                window.shutdown()
                return 1
            # bounded: plain processEvents() keeps going while the worker keeps posting batches
            app.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 50)
            time.sleep(0.02)
        ok = finish(app, window, args.out)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
