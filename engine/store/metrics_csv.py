"""Write stored metrics of one or more runs to a CSV file in long format.

One row per (run, step, metric): ``run,step,metric,value,time`` where ``run`` is the run id, ``value``
the stored float (NaN written as ``nan``, infinities as ``inf`` / ``-inf``) and ``time`` the seconds of
training since the run started (the stored ``time_s``; empty if unknown). Rows are ordered by run (in
the order given), then step, then metric name. The file is written to a temporary file in the target
folder and moved in place with :func:`os.replace`, so a crash never leaves a half-written CSV; it gets
the mode of a normally created file (0644 with umask 022). An open text stream (e.g. ``sys.stdout``)
can be given instead of a path.
"""

from __future__ import annotations

import csv
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TextIO

from engine._files import current_umask
from engine.errors import MetaStudioError, StoreError

HEADER = ("run", "step", "metric", "value", "time")


def write_metrics_csv(store, run_ids: Iterable[int], path: str | Path | TextIO,
                      names: Sequence[str] | None = None) -> int:
    """Write the metrics of ``run_ids`` from ``store`` to ``path`` (long format, see the module doc).

    Args:
        store: an open :class:`~engine.store.RunStore`.
        run_ids: the runs, in the order their rows are written (a repeated id is written once).
        path: the CSV file to create or replace (its folder must exist), or an open text stream
            to write to (not closed; e.g. ``sys.stdout``).
        names: only these metric names (default: every stored metric); each must be stored for at
            least one of the runs.

    Returns:
        The number of data rows written (the header not counted).

    Raises:
        MetaStudioError: a run id is not in the database, or a name in ``names`` is stored for none of
            the runs (the message lists the metrics they have); nothing is written.
        StoreError: the file cannot be written (missing folder, permissions, disk full).
    """
    ids = list(dict.fromkeys(int(r) for r in run_ids))
    for rid in ids:
        try:
            store.get_run(rid)
        except KeyError:
            raise MetaStudioError(f"no run with id {rid} in {store.path}; nothing was written.", field="RUN_ID",
                                  hint="List runs with: metastudio runs") from None
    if names:
        stored = sorted({n for rid in ids for n in store.get_metrics(rid)})
        unknown = [n for n in dict.fromkeys(names) if n not in stored]
        if unknown:
            runs = ", ".join(map(str, ids))
            raise MetaStudioError(f"no metric {', '.join(map(repr, unknown))} in run(s) {runs}; nothing was "
                                  "written.", field="--metric",
                                  hint=f"Metrics stored: {', '.join(stored) or 'none'}.")
    if not isinstance(path, str | Path):  # an open stream
        return _write_rows(store, ids, names, path)
    target = Path(path).expanduser()
    fd, tmp = None, None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes it private (0600)
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as fh:
            fd = None  # owned by the file object now
            count = _write_rows(store, ids, names, fh)
        os.replace(tmp, target)
        tmp = None
        return count
    except OSError as err:
        raise StoreError(f"cannot write the metrics CSV '{target}': {err.strerror or err}.", field="path",
                         hint="Pick an existing, writable folder.") from None
    finally:
        if fd is not None:
            os.close(fd)
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def _write_rows(store, ids: list[int], names: Sequence[str] | None, fh: TextIO) -> int:
    """The header and the data rows of ``ids`` to ``fh``; returns the number of data rows."""
    writer = csv.writer(fh)
    writer.writerow(HEADER)
    count = 0
    for rid in ids:
        rows = [(step, name, value, time_s)
                for name, series in store.get_metrics(rid, names).items()
                for step, value, time_s in series]
        rows.sort(key=lambda r: (r[0], r[1]))
        for step, name, value, time_s in rows:
            # str(float) round-trips exactly and spells non-finite values nan / inf / -inf
            writer.writerow((rid, step, name, str(float(value)), "" if time_s is None else str(time_s)))
        count += len(rows)
    return count
