"""Render the Playground tab to ``docs/screenshots/playground.png``.

Runs offscreen on a temporary database: trains a short protonet run on the bundled demo data set with
the bundled model, selects it, loads it in the playground, adapts it to alarm / weather / music
examples, types a query and grabs the window once the prediction is shown.

    python docs/screenshot_playground.py [--out PATH] [--iterations N] [--timeout SECONDS]
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
    """Take the screenshot; returns 0 on success, 1 if a step did not finish in time."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots" / "playground.png")
    parser.add_argument("--iterations", type=int, default=20, help="meta-iterations of the demo run")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for each step")
    args = parser.parse_args(argv)

    from _shot import finish
    from PySide6.QtCore import QEventLoop
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([sys.argv[0]])
    from engine import ExperimentConfig, TrainingSession
    from gui.main_window import MainWindow
    from gui.widgets.playground import SAMPLE_EXAMPLES

    def wait(condition, what: str) -> bool:
        deadline = time.monotonic() + args.timeout
        while not condition():
            if time.monotonic() > deadline:
                print(f"timed out after {args.timeout:.0f} s waiting for {what}", file=sys.stderr)
                return False
            app.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 50)
            time.sleep(0.02)
        return True

    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "runs.db"
        config = ExperimentConfig(name="demo protonet", algorithm="protonet", dataset="demo",
                                  meta_iterations=args.iterations, val_interval=10, val_episodes=10, device="cpu")
        session = TrainingSession(config, db_path=db)
        for _ in session.run():
            pass
        window = MainWindow(db_path=db)
        window.show()
        window.runs.select_run(session.run_id)
        window.right_tabs.setCurrentWidget(window.playground)
        pg = window.playground
        ok = wait(lambda: window.details.run_id == session.run_id, "the run selection") and pg.load()
        ok = ok and wait(lambda: pg.classifier is not None and not pg.busy, "the model")
        pg.examples.setPlainText(SAMPLE_EXAMPLES)
        ok = ok and pg.adapt() and wait(lambda: pg.adapted and not pg.busy, "adaptation")
        pg.query.setText("set an alarm for six thirty")
        ok = ok and wait(lambda: pg.last_prediction is not None, "the prediction")
        ok = finish(app, window, args.out, save=ok)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
