"""The run database: SQLite through ``sqlite-utils``, WAL mode, one connection per thread.

Tables: ``runs`` (one row per run: config JSON, status, times, error), ``metrics`` (run_id, name,
step, value, time_s), ``checkpoints`` (files written for a run) and ``schema_meta`` (the schema
version). Every write is one committed transaction, so a killed process keeps what was written.
A :class:`RunStore` must be used only from the thread that opened it (SQLite enforces this); the
training worker and the GUI each open their own.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import sqlite3
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlite_utils

from engine.errors import ConfigError, StoreError

SCHEMA_VERSION = 2
STATUSES = ("created", "running", "paused", "completed", "stopped", "failed", "interrupted")
ACTIVE_STATUSES = ("running", "paused")
# statuses `metastudio resume` / TrainingSession.resume accept (`created` only when its process is gone)
RESUMABLE_STATUSES = ("interrupted", "stopped", "failed", "created")
_RUN_COLUMNS_V1 = {
    "id": int, "name": str, "status": str, "algorithm": str, "model": str, "dataset": str,
    "n_way": int, "k_shot": int, "config": str, "created_at": str, "started_at": str,
    "finished_at": str, "iterations": int, "stop_reason": str, "error": str, "traceback": str,
    "pid": int, "label_split": str, "data_fingerprint": str, "warnings": str, "notes": str,
    "tags": str, "best_val_accuracy": float, "best_val_step": int, "duration_s": float,
}
# columns of the current schema (v1 columns plus any added by later migrations)
_RUN_COLUMNS = {**_RUN_COLUMNS_V1}


def default_db_path() -> Path:
    """``$METASTUDIO_DB`` if set, else ``metastudio.db`` in the user data folder (platformdirs)."""
    env = os.environ.get("METASTUDIO_DB")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_data_path

    return user_data_path("MetaStudio", appauthor=False) / "metastudio.db"


def now_iso() -> str:
    """The current UTC time as ISO-8601 with seconds."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunStore:
    """Access to one run database file.

    Args:
        path: the SQLite file (created with its folder if missing); None = :func:`default_db_path`.

    Raises:
        StoreError: the folder cannot be created or the file cannot be opened / written.
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path).expanduser() if path else default_db_path()
        deadline = time.monotonic() + 30.0
        while True:
            conn = None
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(str(self.path), timeout=30.0)
                conn.execute("PRAGMA busy_timeout = 30000")
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
                self.db = sqlite_utils.Database(conn)
                self._migrate()
                return
            except (OSError, sqlite3.Error) as err:
                if conn is not None:
                    conn.close()
                # Several processes creating the same new file at once can get SQLITE_BUSY without the
                # busy handler being called (switching to WAL, stale schema): wait a moment and retry.
                if isinstance(err, sqlite3.OperationalError) and "locked" in str(err) \
                        and time.monotonic() < deadline:
                    time.sleep(random.uniform(0.02, 0.2))
                    continue
                raise StoreError(f"cannot open the run database '{self.path}': {err}.", field="db",
                                 hint="Pick a writable folder with --db PATH or METASTUDIO_DB.") from None

    @property
    def checkpoint_dir(self) -> Path:
        """Folder beside the database where run checkpoints live: ``<db name>-checkpoints/run-<id>/``.

        Named after the database file, so two databases in one folder never share (and overwrite) the
        checkpoint files of their equally numbered runs. Rows store absolute paths, so files written
        under an earlier layout stay readable.
        """
        return self.path.parent / f"{self.path.stem}-checkpoints"

    # ---- schema -------------------------------------------------------------------------------
    def _migrate(self) -> None:
        """Bring the file up to :data:`SCHEMA_VERSION` in one committed transaction.

        An up-to-date file is only read. Otherwise the write lock is taken first (``BEGIN IMMEDIATE``,
        which waits for the busy timeout) and the version read again under it, so two processes
        opening a new or old file at once never interleave their schema changes.
        """
        db = self.db
        if self._stored_version() >= max(MIGRATIONS):
            return
        with db.conn:
            db.conn.execute("BEGIN IMMEDIATE")
            if "schema_meta" not in db.table_names():
                db["schema_meta"].create({"key": str, "value": str}, pk="key")
            version = self._stored_version()
            for target, step in sorted(MIGRATIONS.items()):
                if version < target:
                    step(db)
                    db["schema_meta"].upsert({"key": "schema_version", "value": str(target)}, pk="key")
                    version = target

    def _stored_version(self) -> int:
        """The file's schema version: 0 for a new file, 1 for a file from before versioning."""
        names = self.db.table_names()
        if "schema_meta" in names:
            row = self.db.execute("select value from schema_meta where key = 'schema_version'").fetchone()
            if row:
                return int(row[0])
        return 1 if "runs" in names else 0

    @property
    def schema_version(self) -> int:
        return int(self.db["schema_meta"].get("schema_version")["value"])

    def close(self) -> None:
        self.db.conn.close()

    # ---- runs ---------------------------------------------------------------------------------
    def create_run(self, config: dict[str, Any], name: str) -> int:
        """Insert a run in status ``created``; returns its id."""
        row = {"name": name, "status": "created", "algorithm": config.get("algorithm", ""),
               "model": config.get("model", ""), "dataset": config.get("dataset", ""),
               "n_way": config.get("n_way"), "k_shot": config.get("k_shot"),
               "config": json.dumps(config, sort_keys=True), "created_at": now_iso(), "pid": os.getpid(),
               "iterations": 0, "notes": "", "tags": "[]"}
        with self._write():
            return int(self.db["runs"].insert(row).last_pk)

    def update_run(self, run_id: int, **fields: Any) -> None:
        """Set columns of a run; dict/list values are stored as JSON."""
        unknown = set(fields) - set(_RUN_COLUMNS)
        if unknown:
            raise KeyError(f"unknown run columns: {sorted(unknown)}")
        if "status" in fields and fields["status"] not in STATUSES:
            raise ValueError(f"unknown status {fields['status']!r}")
        clean = {k: json.dumps(v) if isinstance(v, dict | list | tuple) else v for k, v in fields.items()}
        with self._write():
            self.db["runs"].update(run_id, clean)

    def get_run(self, run_id: int) -> dict[str, Any]:
        """The run's row with ``config``, ``tags``, ``label_split`` and ``warnings`` decoded.

        Raises:
            KeyError: no run with that id.
        """
        try:
            row = self.db["runs"].get(run_id)
        except sqlite_utils.db.NotFoundError:
            raise KeyError(f"no run with id {run_id} in {self.path}") from None
        return _decode(row)

    def list_runs(self) -> list[dict[str, Any]]:
        """All runs, newest first, decoded as :meth:`get_run`."""
        return [_decode(r) for r in self.db["runs"].rows_where(order_by="id desc")]

    def rename_run(self, run_id: int, name: str) -> str:
        """Give a run a new display name (surrounding white space removed); returns the stored name.

        Raises:
            ConfigError: the name is empty or only white space.
            KeyError: no run with that id.
        """
        clean = (name or "").strip()
        if not clean:
            raise ConfigError("a run name cannot be empty.", field="name", hint="Type at least one character.")
        self._update_existing(run_id, name=clean)
        return clean

    def set_tags(self, run_id: int, tags: Iterable[str]) -> list[str]:
        """Replace a run's tags; returns the stored list.

        Tags are normalised: white space stripped, empty ones dropped, duplicates (ignoring case) removed,
        the first spelling and the given order kept.

        Raises:
            ConfigError: a tag is not a string.
            KeyError: no run with that id.
        """
        clean = normalise_tags(tags)
        self._update_existing(run_id, tags=json.dumps(clean))
        return clean

    def set_notes(self, run_id: int, text: str) -> None:
        """Replace a run's free-text notes (stored as given; "" clears them).

        Raises:
            KeyError: no run with that id.
        """
        self._update_existing(run_id, notes=text or "")

    def _update_existing(self, run_id: int, **fields: Any) -> None:
        sets = ", ".join(f"[{k}] = ?" for k in fields)
        with self._write():
            cur = self.db.conn.execute(f"update runs set {sets} where id = ?", [*fields.values(), run_id])
        if cur.rowcount != 1:
            raise KeyError(f"no run with id {run_id} in {self.path}")

    def delete_run(self, run_id: int, *, remove_files: bool = True) -> list[Path]:
        """Remove a run with its metrics, checkpoint and evaluation rows, and its checkpoint files.

        The rows go in one transaction that first checks, under the write lock, that the run is not
        active (``running``/``paused`` by a live process). Then the checkpoint files recorded for the
        run and its folder ``checkpoint_dir / "run-<id>"`` are removed. Folders the run was exported to
        are not touched (they are not the store's).

        Args:
            run_id: the run.
            remove_files: False keeps the checkpoint files (only the rows are removed).

        Returns:
            The checkpoint files and folders that were removed.

        Raises:
            KeyError: no run with that id.
            StoreError: the run is active (stop it first), the database cannot be written, or some
                checkpoint files could not be removed (the rows are gone then; the message lists them).
        """
        with self._write():
            self.db.conn.execute("BEGIN IMMEDIATE")
            row = self.db.conn.execute("select status, pid from runs where id = ?", [run_id]).fetchone()
            if row is None:
                raise KeyError(f"no run with id {run_id} in {self.path}")
            status, pid = row
            if status in ACTIVE_STATUSES and _pid_alive(pid):
                raise StoreError(f"run {run_id} is {status} (process {pid}); it cannot be deleted while active.",
                                 field="RUN_ID", hint="Stop the run first, then delete it.")
            paths = [Path(p) for (p,) in self.db.conn.execute(
                "select path from checkpoints where run_id = ?", [run_id]) if p]
            for table, col in (("metrics", "run_id"), ("checkpoints", "run_id"), ("evaluations", "run_id"),
                               ("runs", "id")):
                self.db.conn.execute(f"delete from {table} where {col} = ?", [run_id])
        if not remove_files:
            return []
        removed: list[Path] = []
        failed: list[str] = []
        for path in [*paths, self.checkpoint_dir / f"run-{run_id}"]:
            if not path.exists() and not path.is_symlink():
                continue
            try:
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
                removed.append(path)
            except OSError as err:
                failed.append(f"{path} ({err.strerror or err})")
        if failed:
            raise StoreError(f"run {run_id} was deleted but {len(failed)} checkpoint file(s) could not be "
                             f"removed: {'; '.join(failed)}.", field="RUN_ID",
                             hint="Remove them by hand or check the folder's permissions.")
        return removed

    def mark_interrupted(self) -> list[int]:
        """Mark runs left ``created``/``running``/``paused`` by a process that no longer exists as
        ``interrupted``; returns their ids.

        Each update only applies if the row still has the status and pid that were read, so a run that
        another process resumed in the meantime is left alone.
        """
        stale = [(r["id"], r["status"], r["pid"]) for r in
                 self.db["runs"].rows_where("status in ('created', 'running', 'paused')")
                 if not _pid_alive(r["pid"])]
        marked = []
        for rid, status, pid in stale:
            with self._write():
                cur = self.db.conn.execute(
                    "update runs set status = 'interrupted', finished_at = ?, error = ? "
                    "where id = ? and status = ? and pid is ?",
                    [now_iso(), "the process running it ended without finishing (killed or crashed)",
                     rid, status, pid])
            if cur.rowcount:
                marked.append(rid)
        return marked

    # ---- metrics ------------------------------------------------------------------------------
    def add_metrics(self, rows: Iterable[tuple[int, int, str, float, float]]) -> int:
        """Write ``(run_id, step, name, value, time_s)`` rows in one transaction; returns the count.

        A repeated (run, name, step) replaces the earlier value. NaN is stored as NULL, ±inf as is.
        """
        recs = [(r, n, s, None if v is None or math.isnan(v) else float(v), t) for r, s, n, v, t in rows]
        if recs:
            with self._write():
                self.db.conn.executemany(
                    "insert or replace into metrics (run_id, name, step, value, time_s) values (?, ?, ?, ?, ?)",
                    recs)
        return len(recs)

    def get_metrics(self, run_id: int, names: Sequence[str] | None = None,
                    after_step: int = -1) -> dict[str, list[tuple[int, float, float]]]:
        """``{name: [(step, value, time_s), ...]}`` sorted by step; NULL values read back as NaN."""
        where = "run_id = ? and step > ?"
        args: list[Any] = [run_id, after_step]
        if names:
            where += f" and name in ({','.join('?' * len(names))})"
            args += list(names)
        out: dict[str, list[tuple[int, float, float]]] = {}
        for r in self.db["metrics"].rows_where(where, args, order_by="name, step"):
            v = r["value"]
            out.setdefault(r["name"], []).append((r["step"], float("nan") if v is None else v, r["time_s"]))
        return out

    def last_step(self, run_id: int) -> int:
        """The largest step with a metric for this run (-1 if none)."""
        row = self.db.execute("select max(step) from metrics where run_id = ?", [run_id]).fetchone()
        return -1 if row[0] is None else int(row[0])

    def delete_metrics_after(self, run_id: int, step: int) -> int:
        """Delete the run's metric rows with ``step > step`` (one transaction); returns how many.

        Used when a run resumes from the checkpoint of ``step``: rows written after it are recomputed.
        """
        with self._write():
            cur = self.db.conn.execute("delete from metrics where run_id = ? and step > ?", [run_id, step])
        return cur.rowcount

    # ---- checkpoints ----------------------------------------------------------------------------
    def add_checkpoint(self, run_id: int, step: int, kind: str, path: str | Path) -> int:
        """Record a checkpoint file; returns its id."""
        p = Path(path)
        size = sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size
        with self._write():
            return int(self.db["checkpoints"].insert(
                {"run_id": run_id, "step": step, "kind": kind, "path": str(p), "bytes": size,
                 "created_at": now_iso()}).last_pk)

    def list_checkpoints(self, run_id: int) -> list[dict[str, Any]]:
        """Checkpoint rows of a run, oldest first."""
        return list(self.db["checkpoints"].rows_where("run_id = ?", [run_id], order_by="step, id"))

    # ---- evaluations ------------------------------------------------------------------------------
    def add_evaluation(self, run_id: int, *, episodes: int, seed: int, split: str, result: dict[str, Any]) -> int:
        """Store one meta-test result (the dict of :func:`engine.evaluation.evaluate_run`); returns its id.

        Non-finite floats in ``result`` are stored as the strings ``"inf"``, ``"-inf"`` and ``"nan"``.
        """
        row = {"run_id": run_id, "created_at": now_iso(), "episodes": episodes, "seed": seed, "split": split,
               "result": json.dumps(_finite_json(result))}
        with self._write():
            return int(self.db["evaluations"].insert(row).last_pk)

    def list_evaluations(self, run_id: int) -> list[dict[str, Any]]:
        """Evaluation rows of a run, oldest first, with ``result`` decoded."""
        rows = self.db["evaluations"].rows_where("run_id = ?", [run_id], order_by="id")
        return [{**r, "result": json.loads(r["result"]) if r["result"] else {}} for r in rows]

    def delete_checkpoints(self, ids: Iterable[int]) -> None:
        """Remove checkpoint rows by id in one transaction (deleting the files is the caller's job)."""
        ids = list(ids)
        if ids:
            with self._write():
                self.db.conn.executemany("delete from checkpoints where id = ?", [(i,) for i in ids])

    def claim_run(self, run_id: int, expected_status: str, **fields: Any) -> bool:
        """Atomically set a run to ``running`` with this process's pid, if its status is still
        ``expected_status`` (two processes resuming the same run: only one wins). ``fields`` are
        further columns to set in the same transaction. Returns False if another process got there first.
        """
        clean = {k: json.dumps(v) if isinstance(v, dict | list | tuple) else v for k, v in fields.items()}
        unknown = set(clean) - set(_RUN_COLUMNS)
        if unknown:
            raise KeyError(f"unknown run columns: {sorted(unknown)}")
        clean.update(status="running", pid=os.getpid())
        sets = ", ".join(f"[{k}] = ?" for k in clean)
        with self._write():
            cur = self.db.conn.execute(f"update runs set {sets} where id = ? and status = ?",
                                       [*clean.values(), run_id, expected_status])
        return cur.rowcount == 1

    # ---- helpers ----------------------------------------------------------------------------------
    def _write(self):
        """A committed transaction; disk-full and read-only errors become :class:`StoreError`."""
        return _Transaction(self)


class _Transaction:
    """``with conn:`` (commit on success, rollback on error) that turns I/O failures into StoreError."""

    def __init__(self, store: RunStore) -> None:
        self.store = store

    def __enter__(self) -> None:
        self.store.db.conn.__enter__()

    def __exit__(self, exc_type, exc, tb) -> bool:
        conn = self.store.db.conn
        try:
            conn.__exit__(exc_type, exc, tb)
        except sqlite3.Error as err:
            exc = err
        if isinstance(exc, sqlite3.OperationalError | sqlite3.DatabaseError):
            raise StoreError(f"cannot write to '{self.store.path}': {exc}.", field="db",
                             hint="Free disk space or pick a writable database location.") from None
        return False


def _schema_v1(db: sqlite_utils.Database) -> None:
    """The first released schema: runs, metrics, checkpoints."""
    db["runs"].create(_RUN_COLUMNS_V1, pk="id", not_null={"status", "config", "created_at"},
                      defaults={"status": "created", "iterations": 0, "notes": "", "tags": "[]"}, if_not_exists=True)
    db["metrics"].create({"run_id": int, "name": str, "step": int, "value": float, "time_s": float},
                         pk=("run_id", "name", "step"), foreign_keys=[("run_id", "runs", "id")], if_not_exists=True)
    db["metrics"].create_index(["run_id", "step"], if_not_exists=True)
    db["checkpoints"].create({"id": int, "run_id": int, "step": int, "kind": str, "path": str, "bytes": int,
                              "created_at": str}, pk="id", foreign_keys=[("run_id", "runs", "id")],
                             if_not_exists=True)


def _schema_v2(db: sqlite_utils.Database) -> None:
    """Evaluations (meta-test results per method) and run columns added after v1."""
    db["evaluations"].create({"id": int, "run_id": int, "created_at": str, "episodes": int, "seed": int,
                              "split": str, "result": str}, pk="id",
                             foreign_keys=[("run_id", "runs", "id")], if_not_exists=True)
    have = set(db["runs"].columns_dict)
    for col, typ in _RUN_COLUMNS.items():
        if col not in have:
            db["runs"].add_column(col, typ)


# version -> step that upgrades the file from version-1 to it; append new steps, never edit old ones
MIGRATIONS = {1: _schema_v1, 2: _schema_v2}


def _finite_json(value: Any) -> Any:
    """``value`` with non-finite floats replaced by ``"inf"`` / ``"-inf"`` / ``"nan"`` (strict JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _finite_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_json(v) for v in value]
    return value


def normalise_tags(tags: Iterable[str]) -> list[str]:
    """Tags stripped of white space, without empty ones or duplicates (ignoring case), order kept.

    Raises:
        ConfigError: ``tags`` is a single string or holds something that is not a string.
    """
    if isinstance(tags, str):
        raise ConfigError("tags must be a list of strings, not one string.", field="tags")
    out: list[str] = []
    seen: set[str] = set()
    for tag in tags:
        if not isinstance(tag, str):
            raise ConfigError(f"a tag must be a string, not {type(tag).__name__} ({tag!r}).", field="tags")
        clean = tag.strip()
        if clean and clean.casefold() not in seen:
            seen.add(clean.casefold())
            out.append(clean)
    return out


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    for key, empty in (("config", {}), ("tags", []), ("label_split", None), ("warnings", [])):
        raw = out.get(key)
        out[key] = json.loads(raw) if raw else empty
    return out
