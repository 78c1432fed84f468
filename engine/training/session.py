"""A stored training run: the one code path that the CLI and the window both drive.

``TrainingSession.run()`` is a generator. Iterate it in the thread that should do the work (the
CLI's main thread or the GUI's worker QThread): it opens its own database connection there, prepares
the trainer (bad input raises before any row is written), creates the run row, writes metrics in
small batched transactions (every ``flush_interval_s`` seconds), saves the final checkpoint and sets
the final status: ``completed`` / ``stopped`` / ``failed`` (with the error and traceback).
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

from engine.config import ExperimentConfig
from engine.errors import MetaStudioError
from engine.store.runstore import RunStore, now_iso
from engine.training.checkpoint import save_tensors_atomic
from engine.training.control import RunControl
from engine.training.trainer import MetaTrainer, StepRecord


class TrainingSession:
    """Prepare, run and store one meta-training run.

    Args:
        config: the experiment.
        db_path: the run database (None = the default location).
        control: stop/pause flags shared with the caller's UI.
        on_status: receives set-up progress text (called in the iterating thread).
        flush_interval_s: the longest time metrics wait before being committed.

    After iteration: :attr:`run_id`, :attr:`status`, :attr:`stop_reason`, :attr:`error`,
    :attr:`final_metrics` (last value of each metric) and :attr:`iterations` are set.
    """

    def __init__(self, config: ExperimentConfig, db_path: str | Path | None = None,
                 control: RunControl | None = None, on_status: Callable[[str], None] | None = None,
                 flush_interval_s: float = 0.5) -> None:
        self.config = config
        self.db_path = db_path
        self.control = control or RunControl()
        self.on_status = on_status or (lambda _m: None)
        self.flush_interval_s = flush_interval_s
        self.run_id: int | None = None
        self.status = "created"
        self.stop_reason: str | None = None
        self.error: str | None = None
        self.final_metrics: dict[str, float] = {}
        self.iterations = 0
        self.trainer: MetaTrainer | None = None

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
        trainer = self.trainer = MetaTrainer(self.config, self.control, status=self.on_status)
        trainer.prepare()  # raises on bad input before anything is written
        c = self.config
        self.run_id = store.create_run(c.to_dict(), c.display_name)
        store.update_run(self.run_id, status="running", started_at=now_iso(),
                         label_split=trainer.tasks.split.to_dict(),
                         data_fingerprint=trainer.tasks.data.fingerprint,
                         warnings=list(trainer.tasks.data.warnings))
        self.status = "running"
        self.on_status(f"run {self.run_id}: training")
        pending: list[tuple[int, int, str, float, float]] = []
        last_flush = time.monotonic()

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

        control = self.control
        orig_checkpoint = control.checkpoint
        control.checkpoint = lambda *a, **k: orig_checkpoint(  # type: ignore[method-assign]
            on_pause=lambda: set_paused(True), on_resume=lambda: set_paused(False))
        elapsed = 0.0
        try:
            for rec in trainer.run():
                self.iterations = rec.step
                elapsed = rec.elapsed_s
                for name, value in rec.metrics.items():
                    pending.append((self.run_id, rec.step, name, value, rec.elapsed_s))
                    self.final_metrics[name] = value
                if time.monotonic() - last_flush >= self.flush_interval_s:
                    flush()
                yield rec
            flush()
            self.stop_reason = trainer.stop_reason
            self.status = "stopped" if trainer.stop_reason == "user" else "completed"
            path = store.checkpoint_dir / f"run-{self.run_id}" / "final.safetensors"
            save_tensors_atomic(trainer.meta_state(), path, {"run_id": str(self.run_id), "step": str(self.iterations)})
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
            self.status = "failed"
            self.error = str(err) if isinstance(err, MetaStudioError) else f"{type(err).__name__}: {err}"
            try:
                flush()
            finally:
                store.update_run(self.run_id, status="failed", error=self.error, finished_at=now_iso(),
                                 traceback=traceback.format_exc(), duration_s=elapsed,
                                 stop_reason="diverged" if "diverged" in self.error else "error")
            raise
        finally:
            control.checkpoint = orig_checkpoint  # type: ignore[method-assign]
