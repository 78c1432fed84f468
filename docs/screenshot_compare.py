"""Render the Compare tab to ``docs/screenshots/compare.png``.

Runs offscreen on a temporary database: trains three short runs on the bundled demo data set with the
bundled model (ProtoNet, ANIL and first-order MAML, which differ in algorithm and a few settings),
meta-tests each on a few episodes, opens the window, selects the three runs and grabs the window with
the Compare tab showing (outer loss, smoothed).

    python docs/screenshot_compare.py [--out PATH] [--iterations N] [--episodes N]
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

RUNS = (
    {"name": "protonet 5-shot", "algorithm": "protonet"},
    {"name": "anil 5-shot", "algorithm": "anil", "inner_lr": 0.5},
    {"name": "fomaml 5-shot", "algorithm": "fomaml", "inner_lr": 0.3, "inner_steps": 3},
)


def main(argv: list[str] | None = None) -> int:
    """Train, evaluate and take the screenshot; returns 0 on success."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots" / "compare.png")
    parser.add_argument("--iterations", type=int, default=300, help="meta-iterations of each run")
    parser.add_argument("--episodes", type=int, default=100, help="meta-test episodes of each evaluation")
    args = parser.parse_args(argv)

    from _shot import finish
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([sys.argv[0]])
    from engine import ExperimentConfig, RunStore, TrainingSession
    from engine.evaluation import evaluate_run
    from gui.main_window import MainWindow

    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "runs.db"
        ids = []
        for spec in RUNS:
            config = ExperimentConfig(dataset="demo", meta_iterations=args.iterations, val_interval=10,
                                      val_episodes=20, device="cpu", **spec)
            t0 = time.monotonic()
            session = TrainingSession(config, db_path=db)
            for _ in session.run():
                pass
            ids.append(session.run_id)
            store = RunStore(db)
            evaluate_run(store, session.run_id, episodes=args.episodes, seed=0)
            store.close()
            print(f"run {session.run_id} ({spec['name']}): {session.status} in {time.monotonic() - t0:.0f} s")
        window = MainWindow(db_path=db)
        window.resize(1800, 1000)
        window.show()
        window.right_tabs.setCurrentWidget(window.compare)
        window.runs.select_runs(ids)
        cmp = window.compare
        ok = sorted(cmp.shown_run_ids) == sorted(ids)
        if not ok:
            print(f"the Compare tab shows runs {cmp.shown_run_ids}, expected {ids}", file=sys.stderr)
        cmp.set_metric("outer_loss")
        cmp.smooth_slider.setValue(80)
        ok = finish(app, window, args.out, save=ok)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
