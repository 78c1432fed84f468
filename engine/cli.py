"""The ``metastudio`` command line: ``gui`` (default), ``train``, ``resume``, ``runs``, ``show``, ``eval``,
``export``, ``rename``, ``tag``, ``delete`` (and any commands listed in :data:`COMMANDS`).

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
from collections.abc import Callable
from typing import Any

from engine.errors import DataError, MetaStudioError

EXIT_BAD_INPUT = 2


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def plural(count: int, noun: str, plural_form: str | None = None) -> str:
    """``"1 run"``, ``"3 runs"``: the count with the noun in the right number (``plural_form`` for irregular
    nouns, default ``noun + "s"``)."""
    return f"{count} {noun if count == 1 else (plural_form or noun + 's')}"


def _print_json(obj: dict) -> None:
    sys.stdout.write(json.dumps(_json_safe(obj)) + "\n")
    sys.stdout.flush()


def _add_common(p: argparse.ArgumentParser, top: bool = False) -> None:
    """``--db`` and ``--debug``, accepted before and after the sub-command. A sub-command's copy defaults to
    SUPPRESS, so ``metastudio --db X runs`` keeps the top-level value instead of resetting it to None."""
    default: dict = {} if top else {"default": argparse.SUPPRESS}
    p.add_argument("--db", metavar="PATH", help="run database (default: $METASTUDIO_DB or the user data folder)",
                   **default)
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors", **default)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    parser = argparse.ArgumentParser(prog="metastudio", description="Meta-learning experiment manager.")
    _add_common(parser, top=True)
    sub = parser.add_subparsers(dest="command")
    p = sub.add_parser("gui", help="open the window (the default)")
    _add_common(p)
    p = sub.add_parser("train", help="meta-train headless and store the run")
    _add_common(p)
    p.add_argument("--config", metavar="FILE", help="YAML or JSON experiment config (default: built-in defaults)")
    p.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], help="override a config key")
    p.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    p = sub.add_parser("resume", help="continue an interrupted, stopped or failed run from its last checkpoint")
    _add_common(p)
    p.add_argument("run_id", type=int, metavar="RUN_ID")
    p.add_argument("--json", action="store_true", help="print a JSON summary as the last line (as for train)")
    p = sub.add_parser("runs", help="list stored runs")
    _add_common(p)
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("show", help="show one run: config, status, metrics")
    _add_common(p)
    p.add_argument("run_id", type=int)
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("eval", help="meta-test a run on held-out classes against two baselines (stored)")
    _add_common(p)
    p.add_argument("run_id", type=int, metavar="RUN_ID")
    p.add_argument("--episodes", type=int, default=600, help="meta-test episodes, the same for every method")
    p.add_argument("--seed", type=int, default=0, help="episode seed (same seed, same episodes and numbers)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), help="override the run's device")
    p.add_argument("--json", action="store_true", help="print the result as one JSON line (the last line)")
    p = sub.add_parser("export", help="write a run's checkpoint as a Hugging Face style folder")
    _add_common(p)
    p.add_argument("run_id", type=int, metavar="RUN_ID")
    p.add_argument("out_dir", metavar="OUT_DIR")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT_DIR")
    p.add_argument("--onnx", metavar="SUPPORT", help="also adapt the exported model on SUPPORT (a .csv/.jsonl/"
                   ".parquet of text,label examples) and write the adapted classifier as OUT_DIR/model.onnx "
                   "(needs: pip install 'metastudio[onnx]')")
    p.add_argument("--json", action="store_true", help='print {"run_id", "path"} as the last line')
    p = sub.add_parser("metrics", help="write runs' stored metrics as CSV (long format: run,step,metric,value,time)")
    _add_common(p)
    p.add_argument("run_ids", type=int, nargs="+", metavar="RUN_ID")
    p.add_argument("--csv", metavar="OUT", required=True, help="the CSV file to write (replaced atomically); "
                   "- writes to standard output")
    p.add_argument("--metric", action="append", default=None, help="only this metric (repeatable)")
    p = sub.add_parser("rename", help="give a run a new name")
    _add_common(p)
    p.add_argument("run_id", type=int, metavar="RUN_ID")
    p.add_argument("name", metavar="NAME")
    p = sub.add_parser("tag", help="set a run's tags (replacing them; no TAG clears them)")
    _add_common(p)
    p.add_argument("run_id", type=int, metavar="RUN_ID")
    p.add_argument("tags", nargs="*", metavar="TAG")
    p = sub.add_parser("delete", help="delete runs with their metrics and checkpoint files (not exports)")
    _add_common(p)
    p.add_argument("run_ids", type=int, nargs="+", metavar="RUN_ID")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    return parser


def cmd_train(args: argparse.Namespace) -> int:
    from engine.config import ExperimentConfig, apply_overrides, load_config
    from engine.training import RunControl, TrainingSession

    config = load_config(args.config) if args.config else ExperimentConfig()
    config = apply_overrides(config, args.set)
    control = RunControl()
    session = TrainingSession(config, args.db, control, on_status=_status_printer(args.json))
    return _drive_session(session, control, args)


def cmd_resume(args: argparse.Namespace) -> int:
    from engine.training import RunControl, TrainingSession

    control = RunControl()
    session = TrainingSession.resume(args.run_id, args.db, control, on_status=_status_printer(args.json))
    return _drive_session(session, control, args)


class _StatusPrinter:
    """Writes set-up progress lines to stderr (nothing when ``quiet``) and remembers them, so a data
    warning that repeats a status line (e.g. the embedding-cache summary) is not printed twice."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.shown: set[str] = set()

    def __call__(self, message: str) -> None:
        self.shown.add(message)
        if not self.quiet:
            sys.stderr.write(f"{message}\n")


def _status_printer(quiet: bool) -> _StatusPrinter:
    return _StatusPrinter(quiet)


def _drive_session(session, control, args: argparse.Namespace) -> int:
    """Iterate a train/resume session with a progress bar and Ctrl-C handling, then print its summary.

    Data warnings go to stderr as ``warning: ...`` lines once the run exists. A failure after the run
    row exists prints ``run N failed: ...`` (the traceback is stored with the run) and returns 1.
    """
    previous = signal.getsignal(signal.SIGINT)

    def on_sigint(_sig, _frame):
        if control.stop_requested:
            signal.signal(signal.SIGINT, previous)
        control.request_stop()
        sys.stderr.write("\nstopping after this iteration (Ctrl-C again to abort)\n")

    signal.signal(signal.SIGINT, on_sigint)
    quiet = args.json
    from tqdm import tqdm

    bar = None
    warned = False

    def show_warnings() -> None:
        nonlocal warned
        if not warned and session.run_id is not None:
            warned = True
            shown = getattr(session.on_status, "shown", set())
            for w in session.warnings:
                if w not in shown:  # the cache summary is both a status line and a stored note
                    sys.stderr.write(f"warning: {w}\n")

    try:
        for rec in session.run():
            show_warnings()
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
        show_warnings()
        sys.stderr.write(f"run {session.run_id} failed: {err}\n")
    except Exception as err:  # a bug or a library failure: stored with its traceback by the session
        if bar:
            bar.close()
        if session.run_id is None:
            raise
        show_warnings()
        if args.debug:
            traceback.print_exc()
        sys.stderr.write(f"run {session.run_id} failed: {type(err).__name__}: {err} (the traceback is stored: "
                         f"metastudio show {session.run_id})\n")
    finally:
        if bar:
            bar.close()
        signal.signal(signal.SIGINT, previous)
    summary = {"run_id": session.run_id, "status": session.status, "iterations": session.iterations,
               "stop_reason": session.stop_reason, "final": session.final_metrics}
    if session.resumed_from is not None:
        summary["resumed_from"] = session.resumed_from
    if session.error:
        summary["error"] = session.error
    if args.json:
        _print_json(summary)
    else:
        final = ", ".join(f"{k}={v:.4f}" for k, v in session.final_metrics.items())
        print(f"run {session.run_id} {session.status} after {plural(session.iterations, 'iteration')} "
              f"({session.stop_reason}); {final}")
    return 0 if session.status in ("completed", "stopped") else 1


def cmd_runs(args: argparse.Namespace) -> int:
    from engine.store import RunStore

    store = RunStore(args.db)
    store.mark_interrupted()
    runs = [{k: r[k] for k in ("id", "name", "status", "algorithm", "created_at", "iterations",
                               "best_val_accuracy", "tags")} for r in store.list_runs()]
    if args.json:
        _print_json({"runs": runs})
        return 0
    if not runs:
        print(f"no runs yet in {store.path}")
        return 0
    print(f"{'id':>4}  {'status':<11} {'algorithm':<9} {'iters':>6} {'best val':>8}  {'created':<25} name")
    for r in runs:
        best = f"{r['best_val_accuracy']:.3f}" if r["best_val_accuracy"] is not None else "-"
        tags = f"  [{', '.join(r['tags'])}]" if r["tags"] else ""
        print(f"{r['id']:>4}  {r['status']:<11} {r['algorithm']:<9} {r['iterations'] or 0:>6} {best:>8}  "
              f"{r['created_at']:<25} {r['name']}{tags}")
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
    evaluations = store.list_evaluations(args.run_id)
    if args.json:
        out = dict(run)
        out["metrics"] = {name: [[s, v] for s, v, _t in rows] for name, rows in metrics.items()}
        out["evaluations"] = evaluations
        _print_json(out)
        return 0
    print(f"run {run['id']}: {run['name']}  [{run['status']}]  {run['iterations']} iterations"
          + (f"  stop: {run['stop_reason']}" if run["stop_reason"] else ""))
    if run["error"]:
        print(f"error: {run['error']}")
    if run.get("traceback") and run["status"] in ("failed", "interrupted"):
        print("traceback (stored with the run):")
        print("  " + run["traceback"].rstrip().replace("\n", "\n  "))
    for w in run.get("warnings") or []:
        print(f"warning: {w}")
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
    for ev in evaluations:
        print(f"evaluation {ev['id']} ({ev['created_at']}, {ev['split']}, seed {ev['seed']}):")
        _print_evaluation(ev["result"], indent="  ")
    return 0


def _fmt(value: Any, pct: bool) -> str:
    if not isinstance(value, int | float):
        return str(value)  # "inf" / "nan" as stored
    return f"{100 * value:.2f}" if pct else f"{value:.4f}"


def _print_evaluation(result: dict, indent: str = "") -> None:
    """A meta-test result as a small table: accuracy in % (or MSE) ± 95% CI per method, then meta-gain."""
    methods = result.get("methods", {})
    regression = any("mse" in m for m in methods.values())
    key, unit = ("mse", "MSE") if regression else ("accuracy", "accuracy %")
    print(f"{indent}{result.get('episodes')} meta-test episodes (seed {result.get('seed')})")
    extra = "   median  diverged" if regression else ""
    print(f"{indent}{'method':<18} {unit:>11} {'± 95% CI':>9}{extra}")
    for name, m in methods.items():
        line = f"{indent}{name:<18} {_fmt(m.get(key), not regression):>11} {_fmt(m.get('ci95'), not regression):>9}"
        if regression:
            line += f" {_fmt(m.get('median'), False):>8} {m.get('diverged', 0):>9}"
        print(line)
    gain = result.get("meta_gain")
    if gain:
        what = "finetune_head MSE − meta MSE" if regression else "meta − finetune_head, points"
        value, ci = gain.get("value"), gain.get("ci95")
        sign = "+" if isinstance(value, int | float) and value >= 0 else ""
        print(f"{indent}meta-gain ({what}): {sign}{_fmt(value, not regression)} ± {_fmt(ci, not regression)}")


def _announcing(store, run_id: int, say: Callable[[str], None]) -> Callable[[str], None]:
    """``say``, first naming the run and its database once work on it starts (a forgotten ``--db``
    shows at once; a refusal before any work stays one line)."""
    said = False

    def status(message: str) -> None:
        nonlocal said
        if not said:
            said = True
            try:
                run = store.get_run(run_id)
                say(f"run {run_id} '{run.get('name') or ''}' ({run.get('algorithm')}, {run.get('status')}) "
                    f"in {store.path}")
            except KeyError:
                pass
        say(message)

    return status


def cmd_eval(args: argparse.Namespace) -> int:
    from engine.evaluation import evaluate_run
    from engine.store import RunStore

    if args.episodes < 1:
        raise MetaStudioError(f"--episodes must be at least 1 (got {args.episodes}).", field="--episodes")
    store = RunStore(args.db)
    say = (lambda m: None) if args.json else (lambda m: sys.stderr.write(f"{m}\n"))
    say = _announcing(store, args.run_id, say)
    result = evaluate_run(store, args.run_id, episodes=args.episodes, seed=args.seed, device=args.device,
                          status=say)
    if args.json:
        _print_json(result)
    else:
        print(f"run {args.run_id}:")
        _print_evaluation(result)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from engine.export import export_run
    from engine.store import RunStore

    support = None
    if args.onnx:  # checked before anything is written
        from engine.data.loading import load_labelled_data
        from engine.export.onnx import require_onnx

        require_onnx()
        try:
            support = load_labelled_data(args.onnx)
        except DataError as err:  # the file is --onnx's, not the run's data set
            raise DataError(err.message, field="--onnx", hint=err.hint) from None
        if len(set(support.labels)) < 2:
            raise DataError(f"'{args.onnx}' has only one label; a classifier needs at least 2.", field="--onnx",
                            hint="Add examples of another label.")
    store = RunStore(args.db)
    say = (lambda m: None) if args.json else (lambda m: sys.stderr.write(f"{m}\n"))
    say = _announcing(store, args.run_id, say)
    path = export_run(store, args.run_id, args.out_dir, overwrite=args.overwrite, status=say)
    result = {"run_id": args.run_id, "path": str(path)}
    if support is not None:
        from engine.export import load_checkpoint

        say(f"adapting on {len(support.texts)} examples of {len(set(support.labels))} labels from {args.onnx}")
        clf = load_checkpoint(path, device="cpu").adapt(support.texts, support.labels)
        result["onnx"] = str(clf.export_onnx(path / "model.onnx"))
        result["labels"] = clf.classes
    if args.json:
        _print_json(result)
    else:
        print(f"exported run {args.run_id} to {path}")
        if support is not None:
            print(f"wrote the classifier adapted to {', '.join(result['labels'])} to {result['onnx']}")
    return 0


def cmd_metrics(args: argparse.Namespace) -> int:
    from engine.store import RunStore, write_metrics_csv

    store = RunStore(args.db)
    ids = list(dict.fromkeys(args.run_ids))
    to_stdout = args.csv == "-"
    rows = write_metrics_csv(store, ids, sys.stdout if to_stdout else args.csv, names=args.metric)
    runs = f"run {ids[0]}" if len(ids) == 1 else f"runs {', '.join(map(str, ids))}"
    where = "standard output" if to_stdout else args.csv
    # With the CSV on stdout the summary goes to stderr, so a pipe receives only CSV.
    print(f"wrote {plural(rows, 'row')} of {runs} to {where}", file=sys.stderr if to_stdout else sys.stdout)
    return 0


def _open_run(args: argparse.Namespace, run_id: int):
    """The store and the row of ``run_id``; a missing run is bad input (exit status 2)."""
    from engine.store import RunStore

    store = RunStore(args.db)
    try:
        return store, store.get_run(run_id)
    except KeyError:
        raise MetaStudioError(f"no run with id {run_id} in {store.path}.", field="RUN_ID",
                              hint="List runs with: metastudio runs") from None


def cmd_rename(args: argparse.Namespace) -> int:
    store, _run = _open_run(args, args.run_id)
    print(f"run {args.run_id} renamed to {store.rename_run(args.run_id, args.name)!r}")
    return 0


def cmd_tag(args: argparse.Namespace) -> int:
    store, _run = _open_run(args, args.run_id)
    tags = store.set_tags(args.run_id, args.tags)
    print(f"run {args.run_id} tags: {', '.join(tags) if tags else '(none)'}")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    """Delete runs after a y/N question on the terminal (``--yes`` skips it; required without a terminal)."""
    store, _run = _open_run(args, args.run_ids[0])
    store.mark_interrupted()
    runs = [_open_run(args, rid)[1] for rid in dict.fromkeys(args.run_ids)]
    active = [r["id"] for r in runs if r["status"] in ("running", "paused")]  # live: mark_interrupted ran
    if active:
        which = f"run {active[0]} is" if len(active) == 1 else f"runs {', '.join(map(str, active))} are"
        raise MetaStudioError(f"{which} still active; nothing was deleted.",
                              field="RUN_ID", hint="Stop them first.")
    files_of = {r["id"]: len(store.list_checkpoints(r["id"])) for r in runs}
    if not args.yes:
        if not sys.stdin.isatty():
            raise MetaStudioError("not deleting without confirmation.", field="--yes",
                                  hint="Pass --yes to delete from a script.")
        for r in runs:
            files = files_of[r["id"]]
            print(f"  run {r['id']}: {r['name']} [{r['status']}], {plural(files, 'checkpoint')}")
        what = "this run" if len(runs) == 1 else f"these {len(runs)} runs"
        answer = input(f"Delete {what} with their metrics and checkpoint files? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return 1
    for r in runs:
        store.delete_run(r["id"])
        print(f"deleted run {r['id']} ({r['name']}) with {plural(files_of[r['id']], 'checkpoint')}")
    return 0


def cmd_gui(args: argparse.Namespace) -> int:
    # The window lives in the separate gui package; the engine itself never imports Qt, so the
    # launcher looks it up by name only when asked to open the window.
    import importlib

    return importlib.import_module("gui.app").main(db_path=args.db)


def _silence_stdout() -> None:
    """Point stdout at /dev/null (after a broken pipe) so the interpreter's final flush cannot fail."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no real file descriptor behind sys.stdout
        pass


COMMANDS = {"train": cmd_train, "resume": cmd_resume, "runs": cmd_runs, "show": cmd_show, "gui": cmd_gui,
            "eval": cmd_eval, "export": cmd_export, "metrics": cmd_metrics, "rename": cmd_rename,
            "tag": cmd_tag, "delete": cmd_delete, None: cmd_gui}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``metastudio`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except BrokenPipeError:
        # The reader went away (`metastudio runs | head -3`): stop quietly, as Unix tools do. Further
        # writes to the closed pipe (and Python's flush at exit) are sent to /dev/null.
        _silence_stdout()
        return 141  # 128 + SIGPIPE (13): the status of a tool that the closed pipe stopped
    except MetaStudioError as err:
        if args.debug:
            traceback.print_exc()
        sys.stderr.write(f"metastudio: error: {err}\n")
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        sys.stderr.write("metastudio: interrupted\n")
        return 130
    except Exception as err:  # not bad input but a bug or a library failure: one line unless --debug
        if args.debug:
            raise
        first = (str(err).strip().splitlines() or [""])[0][:300]
        sys.stderr.write(f"metastudio: unexpected error: {type(err).__name__}: {first} "
                         "(run again with --debug for the traceback)\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
