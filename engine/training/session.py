"""A stored training run: the one code path that the CLI and the window both drive.

``TrainingSession.run()`` is a generator. Iterate it in the thread that should do the work (the
CLI's main thread or the GUI's worker QThread): it opens its own database connection there, prepares
the trainer (bad input raises before any row is written), creates the run row, writes metrics in
small batched transactions (every ``flush_interval_s`` seconds), saves the final checkpoint and sets
the final status: ``completed`` / ``stopped`` / ``failed`` (with the error and traceback).

Status lifecycle: ``created`` -> ``running`` <-> ``paused`` -> ``completed`` | ``stopped`` | ``failed``;
a run whose process died while ``created``/``running``/``paused`` is marked ``interrupted`` by the
next process that opens the database (:meth:`RunStore.mark_interrupted`, called here on start).

Resume: every ``checkpoint_interval`` iterations (and when the run is paused or stopped) a resume
checkpoint is written (see :mod:`engine.training.resume`). ``TrainingSession.resume(run_id)`` continues
an ``interrupted`` / ``stopped`` / ``failed`` run under the same id from its last checkpoint: metric
rows after that checkpoint are deleted and recomputed, so every step is stored exactly once.
"""

from __future__ import annotations

import gc
import math
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from engine.config import ExperimentConfig, absolute_paths, check_stored_paths, validate_config
from engine.errors import (
    ConfigError,
    DataError,
    DivergenceError,
    MemoryExhaustedError,
    MetaStudioError,
    StoreError,
)
from engine.store.runstore import ACTIVE_STATUSES, RESUMABLE_STATUSES, RunStore, _pid_alive, now_iso
from engine.training.checkpoint import remove_stale_temp, save_tensors_atomic
from engine.training.control import RunControl
from engine.training.resume import (
    KEEP_RESUME,
    RESUME_KIND,
    load_resume_checkpoint,
    restore_state,
    save_resume_checkpoint,
)
from engine.training.trainer import MetaTrainer, StepRecord

OOM_ADVICE = ("Use fewer inner_steps, a first-order algorithm (fomaml, or first_order=true), a smaller "
              "meta_batch_size, fewer adapt_layers/train_layers, or lora_maml.")


def is_out_of_memory(err: BaseException) -> bool:
    """True for CUDA/MPS out-of-memory errors, PyTorch's CPU allocator failing ("DefaultCPUAllocator: not
    enough memory") and Python's :class:`MemoryError`."""
    if isinstance(err, MemoryError | torch.OutOfMemoryError):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and any(
        s in text for s in ("out of memory", "not enough memory", "cublas_status_alloc_failed"))


def release_memory() -> None:
    """Collect garbage and return cached accelerator memory to the driver (after an out-of-memory error)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    mps = getattr(torch, "mps", None)
    if mps is not None and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        mps.empty_cache()


class TrainingSession:
    """Prepare, run and store one meta-training run.

    Args:
        config: the experiment (None when ``resume_run_id`` is given: the stored config is used); relative
            local ``dataset`` / ``model`` paths are resolved against the working folder now (stored absolute).
        db_path: the run database (None = the default location).
        control: stop/pause flags shared with the caller's UI.
        on_status: receives set-up progress text (called in the iterating thread).
        flush_interval_s: the longest time metrics wait before being committed.
        resume_run_id: continue this stored run instead of creating one (see :meth:`resume`).

    After iteration: :attr:`run_id`, :attr:`status`, :attr:`stop_reason`, :attr:`error`,
    :attr:`final_metrics` (last value of each metric) and :attr:`iterations` are set;
    :attr:`warnings` (what data cleaning changed) once the run row exists; :attr:`resumed_from`
    (the checkpoint step a resumed run continued after, 0 = from the start) for resumed runs.

    Raises:
        ConfigError: neither a config nor a run to resume.
    """

    def __init__(self, config: ExperimentConfig | None, db_path: str | Path | None = None,
                 control: RunControl | None = None, on_status: Callable[[str], None] | None = None,
                 flush_interval_s: float = 0.5, resume_run_id: int | None = None) -> None:
        if config is None and resume_run_id is None:
            raise ConfigError("no experiment config given.", field="config", hint="Pass a config or a run to resume.")
        # Relative data/model paths are made absolute now, so the stored run works from any folder later.
        self.config = absolute_paths(config) if config is not None else None
        self.db_path = db_path
        self.control = control or RunControl()
        self.on_status = on_status or (lambda _m: None)
        self.flush_interval_s = flush_interval_s
        self.resume_run_id = resume_run_id
        self.resumed_from: int | None = None
        self.run_id: int | None = None
        self.status = "created"
        self.stop_reason: str | None = None
        self.error: str | None = None
        self.final_metrics: dict[str, float] = {}
        self.iterations = 0
        self.warnings: list[str] = []
        self.trainer: MetaTrainer | None = None

    @classmethod
    def resume(cls, run_id: int, db_path: str | Path | None = None, control: RunControl | None = None,
               on_status: Callable[[str], None] | None = None, flush_interval_s: float = 0.5) -> TrainingSession:
        """A session that continues stored run ``run_id`` (same id, stored config) from its last checkpoint.

        Iterate :meth:`run` as for a new run: records start at the step after the checkpoint and end at
        the config's ``meta_iterations``. Before any change to the database, :meth:`run` raises
        :class:`~engine.errors.ConfigError` (field ``RUN_ID``) for an unknown run, one that is still
        running in a live process or one already ``completed``; :class:`~engine.errors.DataError` if
        the data file changed since the run started; and the usual bad-input errors of a new run.
        Accepted statuses: ``interrupted``, ``stopped``, ``failed`` (and ``created`` whose process is gone).
        """
        return cls(None, db_path, control, on_status, flush_interval_s, resume_run_id=run_id)

    def run(self) -> Iterator[StepRecord]:
        """Yield one :class:`StepRecord` per meta-iteration while storing the run.

        Raises:
            MetaStudioError: bad input found while preparing (no run row is created), or a fault
                during training (the run is stored as ``failed`` first).
            Exception: any other failure, after the run is stored as ``failed`` with its traceback.
        """
        store = RunStore(self.db_path)
        try:
            yield from self._run(store)
        finally:
            store.close()

    def _run(self, store: RunStore) -> Iterator[StepRecord]:
        store.mark_interrupted()
        row = self._resumable_row(store) if self.resume_run_id is not None else None
        if row is not None:
            check_stored_paths(row["config"], row["id"], store.path)
            self.config = validate_config(row["config"])
        trainer = self.trainer = MetaTrainer(self.config, self.control, status=self.on_status)
        oom: str | None = None
        try:
            trainer.prepare()  # raises on bad input before anything is written
        except BaseException as err:
            if not is_out_of_memory(err):
                raise
            oom = f"out of memory while preparing the run: {_first_line(err)}."
        if oom is not None:  # outside the except block, so the failed frames (and their tensors) are gone
            trainer = self.trainer = None
            release_memory()
            raise MemoryExhaustedError(oom, hint=OOM_ADVICE)
        c = self.config
        summary = trainer.data_summary()  # label split (None for sinusoid), fingerprint, warnings
        start, elapsed0 = 0, 0.0
        if row is None:
            self.run_id = store.create_run(c.to_dict(), c.display_name)
            store.update_run(self.run_id, status="running", started_at=now_iso(), **summary)
            self.warnings = list(summary.get("warnings") or [])
        else:
            self.run_id = row["id"]
            start, elapsed0 = self._restore(store, trainer, row, summary.get("data_fingerprint"))
        self.status = "running"
        self.iterations = start
        self.on_status(f"run {self.run_id}: training" + (f" (resumed after iteration {start})" if row else ""))
        folder = store.checkpoint_dir / f"run-{self.run_id}"
        pending: list[tuple[int, int, str, float, float]] = []
        last_flush = time.monotonic()
        saved_step = start  # a resume checkpoint of this step exists (or step 0: nothing to save)
        due: int | None = None  # a periodic checkpoint is due for this step at the next iteration boundary
        boundary = False  # True between a record's yield and the trainer's next control check
        elapsed = elapsed0

        def flush() -> None:
            nonlocal last_flush
            if pending:
                store.add_metrics(pending)
                pending.clear()
            update = {"iterations": self.iterations}
            if trainer.best_val is not None:
                update.update(best_val_accuracy=trainer.best_val[0], best_val_step=trainer.best_val[1])
            store.update_run(self.run_id, **update)
            last_flush = time.monotonic()

        def set_paused(paused: bool) -> None:
            flush()
            store.update_run(self.run_id, status="paused" if paused else "running")

        def save_resume(step: int) -> None:
            """Commit the metrics up to ``step``, then write its resume checkpoint and record it."""
            nonlocal saved_step
            flush()
            path = save_resume_checkpoint(trainer, folder, step, elapsed)
            store.add_checkpoint(self.run_id, step, RESUME_KIND, path)
            saved_step = step
            self._prune_resume_checkpoints(store)

        control = self.control
        orig_checkpoint = control.checkpoint

        def checkpoint_hook(*_a, **_k) -> bool:
            # The trainer's first control check after a record is the boundary between two iterations:
            # the finished one's state is complete and the next one has not drawn its episodes yet.
            nonlocal due, boundary
            at_boundary, boundary = boundary, False
            if at_boundary and due is not None:
                step, due = due, None
                save_resume(step)

            def on_pause() -> None:
                if at_boundary and self.iterations > saved_step:
                    save_resume(self.iterations)  # a paused run that is then killed resumes from here
                set_paused(True)

            return orig_checkpoint(on_pause=on_pause, on_resume=lambda: set_paused(False))

        control.checkpoint = checkpoint_hook  # type: ignore[method-assign]
        oom = None
        try:
            for rec in trainer.run(start_step=start + 1):
                self.iterations = rec.step
                elapsed = rec.elapsed_s
                for name, value in rec.metrics.items():
                    pending.append((self.run_id, rec.step, name, value, rec.elapsed_s))
                    self.final_metrics[name] = value
                interval = c.checkpoint_interval
                if interval and rec.step % interval == 0 and all(map(math.isfinite, rec.metrics.values())):
                    due = rec.step
                boundary = True
                if time.monotonic() - last_flush >= self.flush_interval_s:
                    flush()
                yield rec
            flush()
            self.stop_reason = trainer.stop_reason
            self.status = "stopped" if trainer.stop_reason == "user" else "completed"
            if self.status == "stopped" and self.iterations > saved_step:
                save_resume(self.iterations)  # resume goes on exactly from here
            path = folder / "final.safetensors"
            try:
                save_tensors_atomic(trainer.meta_state(), path,
                                    {"run_id": str(self.run_id), "step": str(self.iterations)})
            except OSError as err:
                raise StoreError(f"cannot write the final checkpoint '{path}': {err.strerror or err}.",
                                 field="checkpoint", hint="Free disk space or make the database folder "
                                                          "writable, then resume the run.") from None
            store.add_checkpoint(self.run_id, self.iterations, "final", path)
            store.update_run(self.run_id, status=self.status, stop_reason=self.stop_reason,
                             finished_at=now_iso(), duration_s=elapsed)
        except GeneratorExit:
            # The caller stopped iterating (e.g. the window closed): keep what we have as stopped.
            flush()
            self.status, self.stop_reason = "stopped", "user"
            store.update_run(self.run_id, status="stopped", stop_reason="user", finished_at=now_iso(),
                             duration_s=elapsed)
            raise
        except BaseException as err:
            if isinstance(err, KeyboardInterrupt):  # a hard Ctrl-C: resumable from the last checkpoint
                self.status, self.error, reason = "interrupted", "aborted by the user (Ctrl-C)", "user"
            else:
                self.status = "failed"
                if is_out_of_memory(err):
                    oom = f"out of memory at iteration {self.iterations + 1}: {_first_line(err)}."
                    self.error = f"{oom} {OOM_ADVICE}"
                else:
                    self.error = str(err) if isinstance(err, MetaStudioError) else f"{type(err).__name__}: {err}"
                reason = "diverged" if isinstance(err, DivergenceError) else "error"
            tb = traceback.format_exc()
            for write in (flush, lambda: store.update_run(
                    self.run_id, status=self.status, error=self.error, finished_at=now_iso(), traceback=tb,
                    duration_s=elapsed, stop_reason=reason)):
                try:
                    write()
                except MetaStudioError:
                    pass  # the database itself failed: the original error, raised below, says more
            self.stop_reason = reason
            if oom is None:
                raise
        finally:
            control.checkpoint = orig_checkpoint  # type: ignore[method-assign]
        if oom is not None:  # outside the except block, so the failed frames (and their tensors) are gone
            trainer = self.trainer = None
            release_memory()
            raise MemoryExhaustedError(oom, hint=OOM_ADVICE)

    # ---- resume ---------------------------------------------------------------------------------
    def _resumable_row(self, store: RunStore) -> dict[str, Any]:
        """The stored run to resume, checked (nothing is written here).

        Raises:
            ConfigError: no such run, still running in a live process, or already completed.
        """
        rid = self.resume_run_id
        try:
            row = store.get_run(rid)
        except KeyError:
            raise ConfigError(f"no run with id {rid} in {store.path}.", field="RUN_ID",
                              hint="List runs with: metastudio runs") from None
        status = row["status"]
        if status in ACTIVE_STATUSES or (status == "created" and _pid_alive(row["pid"])):
            raise ConfigError(f"run {rid} is still {status} in process {row['pid']}.", field="RUN_ID",
                              hint="Stop it first (or wait until it ends), then resume.")
        if status == "completed":
            raise ConfigError(f"run {rid} already completed ({row['stop_reason']}); there is nothing to resume.",
                              field="RUN_ID", hint="Start a new run with more meta_iterations instead.")
        if status not in RESUMABLE_STATUSES:
            raise ConfigError(f"run {rid} has status '{status}' and cannot be resumed.", field="RUN_ID")
        return row

    def _restore(self, store: RunStore, trainer: MetaTrainer, row: dict[str, Any],
                 fingerprint: str | None) -> tuple[int, float]:
        """Load the newest usable resume checkpoint into ``trainer``, claim the run and drop what came after.

        Returns ``(step, elapsed_s)`` of the checkpoint (``(0, 0.0)``: none usable, start over).

        Raises:
            DataError: the data set's contents changed since the run started.
            ConfigError: another process claimed the run first.
        """
        rid = row["id"]
        if row.get("data_fingerprint") and fingerprint and row["data_fingerprint"] != fingerprint:
            raise DataError(f"the data set '{self.config.dataset}' changed since run {rid} started "
                            "(its contents differ).", field="dataset",
                            hint="Restore the file the run was started with, or start a new run.")
        notes: list[str] = []
        step, elapsed, found = 0, 0.0, False
        for ck in reversed(store.list_checkpoints(rid)):
            if ck["kind"] != RESUME_KIND:
                continue
            try:
                tensors, state = load_resume_checkpoint(ck["path"])
                step, elapsed = restore_state(trainer, tensors, state)
            except (OSError, StoreError, KeyError, ValueError, TypeError) as err:
                notes.append(f"the checkpoint of iteration {ck['step']} could not be used ({err}).")
                continue
            found = True
            break
        fields: dict[str, Any] = {"error": None, "traceback": None, "finished_at": None, "stop_reason": None}
        if not row.get("started_at"):
            fields["started_at"] = now_iso()
        if not store.claim_run(rid, row["status"], **fields):
            raise ConfigError(f"run {rid} was just resumed by another process.", field="RUN_ID",
                              hint="List runs with: metastudio runs")
        dropped = store.delete_metrics_after(rid, step)
        later = [ck for ck in store.list_checkpoints(rid) if ck["step"] > step or ck["kind"] != RESUME_KIND]
        store.delete_checkpoints(ck["id"] for ck in later)  # the final one too: the run goes on
        for ck in later:
            Path(ck["path"]).unlink(missing_ok=True)
        remove_stale_temp(store.checkpoint_dir / f"run-{rid}")  # left by a writer killed mid-write
        note = (f"resumed at {now_iso()} from the checkpoint of iteration {step}" if found else
                f"resumed at {now_iso()} from the start (no usable checkpoint)")
        if dropped:
            note += f"; {dropped} metric value(s) stored after it are recomputed"
        self.warnings = [*(row.get("warnings") or []), *notes, note + "."]
        store.update_run(rid, iterations=step, duration_s=elapsed, warnings=self.warnings)
        if row.get("best_val_step") and row["best_val_step"] > step:
            store.update_run(rid, best_val_accuracy=None, best_val_step=None)  # recomputed after the checkpoint
        self.resumed_from = step
        self.final_metrics = {name: rows[-1][1] for name, rows in store.get_metrics(rid).items() if rows}
        return step, elapsed

    def _prune_resume_checkpoints(self, store: RunStore) -> None:
        """Keep the newest :data:`KEEP_RESUME` resume checkpoints of this run; delete older rows and files."""
        resume = [ck for ck in store.list_checkpoints(self.run_id) if ck["kind"] == RESUME_KIND]
        old = resume[:-KEEP_RESUME]
        if old:
            store.delete_checkpoints(ck["id"] for ck in old)
            for ck in old:
                Path(ck["path"]).unlink(missing_ok=True)


def _first_line(err: BaseException) -> str:
    """The first line of an exception's message (its type name if empty), at most 300 characters."""
    text = str(err).strip()
    return (text.splitlines()[0] if text else type(err).__name__)[:300]
