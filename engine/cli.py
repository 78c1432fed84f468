"""The ``metastudio`` command line: ``gui`` (default), ``train``, ``runs``, ``show``.

Every command takes ``--db PATH`` (else ``$METASTUDIO_DB``, else the user data folder). Bad input
prints one line on stderr and exits with status 2 (``--debug`` shows the traceback). With ``--json``
the last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import traceback
from typing import Any

from engine.errors import MetaStudioError

EXIT_BAD_INPUT = 2


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _print_json(obj: dict) -> None:
    sys.stdout.write(json.dumps(_json_safe(obj)) + "\n")
    sys.stdout.flush()


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", metavar="PATH", help="run database (default: $METASTUDIO_DB or the user data folder)")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    parser = argparse.ArgumentParser(prog="metastudio", description="Meta-learning experiment manager.")
    _add_common(parser)
    sub = parser.add_subparsers(dest="command")
    p = sub.add_parser("gui", help="open the window (the default)")
    _add_common(p)
    p = sub.add_parser("train", help="meta-train headless and store the run")
    _add_common(p)
    p.add_argument("--config", metavar="FILE", help="YAML or JSON experiment config (default: built-in defaults)")
    p.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], help="override a config key")
    p.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    p = sub.add_parser("runs", help="list stored runs")
    _add_common(p)
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("show", help="show one run: config, status, metrics")
    _add_common(p)
    p.add_argument("run_id", type=int)
    p.add_argument("--json", action="store_true")
    return parser


def cmd_train(args: argparse.Namespace) -> int:
    from engine.config import ExperimentConfig, apply_overrides, load_config
    from engine.training import RunControl, TrainingSession

    config = load_config(args.config) if args.config else ExperimentConfig()
    config = apply_overrides(config, args.set)
    control = RunControl()
    previous = signal.getsignal(signal.SIGINT)

    def on_sigint(_sig, _frame):
        if control.stop_requested:
            signal.signal(signal.SIGINT, previous)
        control.request_stop()
        sys.stderr.write("\nstopping after this iteration (Ctrl-C again to abort)\n")

    signal.signal(signal.SIGINT, on_sigint)
    quiet = args.json
    session = TrainingSession(config, args.db, control,
                              on_status=(lambda m: None) if quiet else (lambda m: sys.stderr.write(f"{m}\n")))
    from tqdm import tqdm

    bar = None
    try:
        for rec in session.run():
            if bar is None:
                bar = tqdm(total=rec.total, desc=f"run {session.run_id}", unit="it", file=sys.stderr,
                           disable=quiet, dynamic_ncols=True)
                bar.update(rec.step - 1)
            bar.update(1)
            shown = {k: f"{v:.3f}" for k, v in session.final_metrics.items()
                     if k in ("outer_loss", "query_accuracy", "val_accuracy")}
            bar.set_postfix(shown, refresh=False)
    except MetaStudioError as err:
        if bar:
            bar.close()
        if session.run_id is None:
            raise
        sys.stderr.write(f"run {session.run_id} failed: {err}\n")
    finally:
        if bar:
            bar.close()
        signal.signal(signal.SIGINT, previous)
    summary = {"run_id": session.run_id, "status": session.status, "iterations": session.iterations,
               "stop_reason": session.stop_reason, "final": session.final_metrics}
    if session.error:
        summary["error"] = session.error
    if args.json:
        _print_json(summary)
    else:
        final = ", ".join(f"{k}={v:.4f}" for k, v in session.final_metrics.items())
        print(f"run {session.run_id} {session.status} after {session.iterations} iterations "
              f"({session.stop_reason}); {final}")
    return 0 if session.status in ("completed", "stopped") else 1


def cmd_runs(args: argparse.Namespace) -> int:
    from engine.store import RunStore

    store = RunStore(args.db)
    store.mark_interrupted()
    runs = [{k: r[k] for k in ("id", "name", "status", "algorithm", "created_at", "iterations",
                               "best_val_accuracy")} for r in store.list_runs()]
    if args.json:
        _print_json({"runs": runs})
        return 0
    if not runs:
        print(f"no runs yet in {store.path}")
        return 0
    print(f"{'id':>4}  {'status':<11} {'algorithm':<9} {'iters':>6} {'best val':>8}  {'created':<25} name")
    for r in runs:
        best = f"{r['best_val_accuracy']:.3f}" if r["best_val_accuracy"] is not None else "-"
        print(f"{r['id']:>4}  {r['status']:<11} {r['algorithm']:<9} {r['iterations'] or 0:>6} {best:>8}  "
              f"{r['created_at']:<25} {r['name']}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from engine.store import RunStore

    store = RunStore(args.db)
    store.mark_interrupted()
    try:
        run = store.get_run(args.run_id)
    except KeyError:
        raise MetaStudioError(f"no run with id {args.run_id} in {store.path}.", field="RUN_ID",
                              hint="List runs with: metastudio runs") from None
    metrics = store.get_metrics(args.run_id)
    run["checkpoints"] = store.list_checkpoints(args.run_id)
    if args.json:
        out = dict(run)
        out["metrics"] = {name: [[s, v] for s, v, _t in rows] for name, rows in metrics.items()}
        _print_json(out)
        return 0
    print(f"run {run['id']}: {run['name']}  [{run['status']}]  {run['iterations']} iterations"
          + (f"  stop: {run['stop_reason']}" if run["stop_reason"] else ""))
    if run["error"]:
        print(f"error: {run['error']}")
    print("config:")
    for k, v in run["config"].items():
        print(f"  {k}: {v}")
    if run["label_split"]:
        ls = run["label_split"]
        print(f"labels: {len(ls['train'])} meta-train / {len(ls['val'])} meta-val / {len(ls['test'])} meta-test "
              f"({ls['origin']})")
    print("metrics (last / min / max):")
    for name, rows in metrics.items():
        vals = [v for _s, v, _t in rows if math.isfinite(v)]
        if vals:
            print(f"  {name:<16} {vals[-1]:.4f} / {min(vals):.4f} / {max(vals):.4f}  ({len(rows)} points)")
    return 0


def cmd_gui(args: argparse.Namespace) -> int:
    from gui.app import main as gui_main

    return gui_main(db_path=args.db)


COMMANDS = {"train": cmd_train, "runs": cmd_runs, "show": cmd_show, "gui": cmd_gui, None: cmd_gui}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``metastudio`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except MetaStudioError as err:
        if args.debug:
            traceback.print_exc()
        sys.stderr.write(f"metastudio: error: {err}\n")
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        sys.stderr.write("metastudio: interrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
