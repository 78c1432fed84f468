"""Window speed: start-up, Start to first point, event-loop stalls during a fast run, redraws, logging.

Runs offscreen (``QT_QPA_PLATFORM=offscreen``) on the real :class:`gui.main_window.MainWindow` and the
real engine, with the embedding cache in a temporary folder.

Measures:
  app start           a fresh ``python`` process running ``gui.app.main`` until the window is shown and the
                      event loop runs (goal ≤ 3 s)
  start→first point   pressing Start with the bundled defaults (MAML, demo data) until the first outer-loss
                      point is plotted: first with an empty embedding cache (includes importing
                      transformers, loading the model, encoding the data set), then again (goal ≤ 10 s)
  event-loop stall    the lateness of a 10 ms QTimer while a fast run (ProtoNet on cached embeddings,
                      hundreds of iterations/s) streams records into the window: p50 / p99 / max (goal p99 < 50 ms)
  updates/s           ``records`` signals per second reaching the window during that run (goal ≤ 20)
  redraw 100k         appending a batch of 25 points to curves already holding 100,000 points, drawing them
                      (``CurvesWidget.flush``, what its 8 Hz redraw timer does) and repainting the three
                      plots, median of 20, with the default loss smoothing (raw + smoothed curves) (goal < 30 ms)
  logging share       (wall time − training time) / wall time of a headless TrainingSession doing a fast run:
                      the metrics buffer, the batched SQLite transactions and the run-row updates (goal < 2%)

Run:  python benchmarks/gui_latency.py [--quick] [--json]
"""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from _common import ROOT, machine, parser, print_table, report_end  # noqa: E402

TMP = Path(tempfile.mkdtemp(prefix="metastudio-gui-latency-"))
os.environ["METASTUDIO_CACHE"] = str(TMP / "cache")

CHILD = r"""
import os, sys
os.environ["QT_QPA_PLATFORM"] = "offscreen"
from PySide6.QtCore import QTimer
import gui.app
import gui.main_window

def ready():  # the window is shown and the event loop dispatches events: usable
    print("READY", flush=True)
    os._exit(0)

show = gui.main_window.MainWindow.show
def show_then_report(self):
    show(self)
    QTimer.singleShot(0, ready)
gui.main_window.MainWindow.show = show_then_report
sys.exit(gui.app.main(db_path=sys.argv[1]))
"""


def app_start_seconds(repeats: int) -> list[float]:
    """Wall seconds from spawning ``python`` to the window shown with a running event loop."""
    out = []
    for i in range(repeats):
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", CHILD, str(TMP / f"start-{i}.db")], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        for line in proc.stdout:  # type: ignore[union-attr]
            if line.strip() == "READY":
                out.append(time.perf_counter() - t0)
                break
        proc.wait(timeout=120)
    return out


def wait_until(app, condition, timeout_s: float) -> bool:
    end = time.perf_counter() + timeout_s
    while time.perf_counter() < end:
        app.processEvents()
        if condition():
            return True
        time.sleep(0.002)
    return condition()


def stop_and_wait(app, window) -> None:
    window.stop_run()
    wait_until(app, lambda: not window.running, 300)


def start_to_first_point(app, window, config) -> float:
    """Seconds from Start to the first plotted outer-loss point; the run is then stopped."""
    window.form.set_config(config)
    t0 = time.perf_counter()
    window.start_run()
    ok = wait_until(app, lambda: window.curves.point_count("outer_loss") >= 1, 600)
    took = time.perf_counter() - t0
    stop_and_wait(app, window)
    return took if ok else float("nan")


def stall_during_fast_run(app, window, config, seconds: float) -> dict:
    """Lateness of a 10 ms timer while a fast run streams records into the window."""
    from PySide6.QtCore import QEventLoop, QTimer

    window.form.set_config(config)
    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    batches: list[int] = []
    update_s: list[float] = []
    original = window.curves.append_records

    def timed_append(records):  # the window's handler of each ``records`` signal (GUI thread)
        t = time.perf_counter()
        original(records)
        update_s.append(time.perf_counter() - t)
        batches.append(len(records))

    window.curves.append_records = timed_append
    window.start_run()
    wait_until(app, lambda: window.curves.point_count("outer_loss") >= 1, 300)  # set-up done, records flowing
    first_step = window._live_records[-1].step
    update_s.clear()
    loop = QEventLoop()
    timer.start()
    t0 = time.perf_counter()
    QTimer.singleShot(int(seconds * 1000), loop.quit)
    loop.exec()
    duration = time.perf_counter() - t0
    timer.stop()
    last_step = window._live_records[-1].step
    stop_and_wait(app, window)
    window.curves.append_records = original
    late = [max(0.0, (b - a) - 0.010) * 1000 for a, b in zip(ticks, ticks[1:], strict=False)]
    late.sort()
    if not late:  # the event loop never ran a tick: the whole window was one stall
        late = [duration * 1000]
    pct = lambda q: late[min(len(late) - 1, int(q * len(late)))]  # noqa: E731
    return {"stall_p50_ms": pct(0.5), "stall_p99_ms": pct(0.99), "stall_max_ms": late[-1], "ticks": len(late),
            "iterations_per_s": (last_step - first_step) / duration, "updates_per_s": len(batches) / duration,
            "records_per_update": statistics.mean(batches) if batches else 0.0,
            "gui_update_ms_median": statistics.median(update_s) * 1000 if update_s else float("nan")}


def redraw_100k(app, n_points: int, repeats: int = 20, smoothing: float | None = None) -> dict:
    """Append 25 points to curves holding ``n_points``, draw them (``flush``) and render the three plots
    (``QWidget.grab``, a synchronous paint): milliseconds for the data update, the paint, and both."""
    import pyqtgraph as pg

    from engine import StepRecord
    from gui.widgets.curves import CurvesWidget

    w = CurvesWidget()
    if smoothing is not None:  # default: the widget's own (loss curves smoothed, raw faint behind)
        w.set_smoothing(smoothing)
    w.resize(900, 700)
    w.show()
    app.processEvents()
    views = w.findChildren(pg.PlotWidget)

    def rec(step: int) -> StepRecord:
        m = {"outer_loss": 1.0 / step ** 0.3, "inner_loss_pre": 1.6, "inner_loss_post": 0.5 + 1.0 / step,
             "query_accuracy": 0.5 + (step % 7) / 20}
        if step % 25 == 0:
            m["val_accuracy"] = 0.7
        return StepRecord(step, n_points + 10_000, step * 1e-3, m)

    t = time.perf_counter()
    w.append_records([rec(s) for s in range(1, n_points + 1)])
    w.flush()
    for view in views:
        view.grab()
    load_s = time.perf_counter() - t
    data, paint = [], []
    step = n_points
    for _ in range(repeats):
        batch = [rec(s) for s in range(step + 1, step + 26)]
        step += 25
        t0 = time.perf_counter()
        w.append_records(batch)
        w.flush()
        t1 = time.perf_counter()
        for view in views:
            view.grab()
        t2 = time.perf_counter()
        data.append(t1 - t0)
        paint.append(t2 - t1)
    w.close()
    total = [a + b for a, b in zip(data, paint, strict=True)]
    return {"points": w.point_count("outer_loss"), "plots": len(views), "first_load_ms": load_s * 1000,
            "data_ms_median": statistics.median(data) * 1000, "paint_ms_median": statistics.median(paint) * 1000,
            "redraw_ms_median": statistics.median(total) * 1000, "redraw_ms_max": max(total) * 1000}


def logging_share(config, db: Path) -> dict:
    """(wall − training) / wall of a headless session: what storing and handing over records costs."""
    import threading

    from engine import TrainingSession

    session = TrainingSession(config, db)
    lock = threading.Lock()
    pending = []
    t_first = t_last = None
    first_elapsed = last_elapsed = 0.0
    n = 0
    for rec in session.run():  # what the GUI worker does per record: buffer it under a lock
        with lock:
            pending.append(rec)
        n += 1
        now = time.perf_counter()
        if t_first is None:
            t_first, first_elapsed = now, rec.elapsed_s
        t_last, last_elapsed = now, rec.elapsed_s
    wall = t_last - t_first
    train = last_elapsed - first_elapsed
    return {"iterations": n, "wall_s": wall, "train_s": train, "logging_share": (wall - train) / wall,
            "iterations_per_s": (n - 1) / wall}


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([])
    starts = app_start_seconds(1 if args.quick else 3)

    from engine import ExperimentConfig
    from gui.main_window import MainWindow

    window = MainWindow(db_path=TMP / "runs.db", refresh_ms=2000)
    window.resize(1600, 950)
    window.show()
    app.processEvents()
    defaults = ExperimentConfig(device="cpu")
    cold = start_to_first_point(app, window, defaults)
    warm = start_to_first_point(app, window, defaults)
    fast = ExperimentConfig(algorithm="protonet", meta_iterations=10**6, val_interval=10**6, val_episodes=5,
                            device="cpu", checkpoint_interval=0)
    stall = stall_during_fast_run(app, window, fast, 4.0 if args.quick else 12.0)
    redraw = redraw_100k(app, 100_000, 10 if args.quick else 20)
    window.close()
    log_cfg = fast.model_copy(update={"meta_iterations": 1500 if args.quick else 6000})
    logging = logging_share(log_cfg, TMP / "logging.db")

    rows = [
        ("app start → usable window (s)", statistics.median(starts), "≤ 3"),
        ("Start → first point, empty cache (s)", cold, "≤ 10"),
        ("Start → first point, warm cache (s)", warm, "≤ 10"),
        ("event-loop stall p50 (ms)", stall["stall_p50_ms"], ""),
        ("event-loop stall p99 (ms)", stall["stall_p99_ms"], "< 50"),
        ("event-loop stall max (ms)", stall["stall_max_ms"], ""),
        ("record updates reaching the window per s", stall["updates_per_s"], "≤ 20"),
        ("iterations/s of the run meanwhile", stall["iterations_per_s"], ""),
        ("GUI time per update, median (ms)", stall["gui_update_ms_median"], ""),
        ("redraw: 25 new points on 100k-point curves (ms)", redraw["redraw_ms_median"], "< 30"),
        ("  of which data update (ms)", redraw["data_ms_median"], ""),
        ("  of which painting the 3 plots (ms)", redraw["paint_ms_median"], ""),
        ("first load of 100k points (ms)", redraw["first_load_ms"], ""),
        ("logging share of step time (%)", 100 * logging["logging_share"], "< 2"),
    ]
    print_table("Window speed (offscreen, CPU)", ("measure", "value", "goal"), rows,
                notes=[f"fast run: ProtoNet on cached embeddings of the demo set, {stall['ticks']} timer ticks",
                       f"logging: {logging['iterations']} iterations at {logging['iterations_per_s']:.0f} it/s"])
    out = {"benchmark": "gui_latency", "quick": args.quick, "machine": machine(), "app_start_s": starts,
           "start_to_first_point_cold_s": cold, "start_to_first_point_warm_s": warm, "stall": stall,
           "redraw": redraw, "logging": logging}
    report_end(out, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
