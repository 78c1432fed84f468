"""Checkpoint files: meta-parameters in safetensors, written to a temporary file then renamed.

Nothing here unpickles: tensors are read with ``safetensors`` only, so a checkpoint file cannot run code.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def save_tensors_atomic(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict | None = None) -> Path:
    """Write ``tensors`` as safetensors at ``path`` via a temp file + ``os.replace`` (never half-written).

    Tensors are copied to contiguous CPU storage first, so the file holds values, not live references.

    Raises:
        OSError: the folder is not writable or the disk is full (the temp file is removed).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()}
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=".safetensors", dir=path.parent)
    os.close(fd)
    try:
        save_file(data, tmp, metadata=meta)
        _fsync_path(tmp)  # the bytes reach the disk before the name does (power loss, not just a kill)
        os.replace(tmp, path)
        _fsync_path(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file onto the CPU."""
    return load_file(str(path))


TEMP_PREFIX = ".tmp-"


def _fsync_path(path: str | Path) -> None:
    """Flush a file's (or a folder's entries') data to the disk; a no-op where the OS refuses it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_temp(folder: str | Path) -> int:
    """Delete ``.tmp-*`` files and folders that a killed writer left in ``folder``; returns the count.

    Only call it when no other writer works in ``folder`` (e.g. a run's checkpoint folder on resume).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    count = 0
    for p in folder.glob(f"{TEMP_PREFIX}*"):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        count += 1
    return count


@contextmanager
def atomic_folder(target: str | Path) -> Iterator[Path]:
    """Build a folder (an export, a checkpoint set) under a temporary name, then rename it into place.

    Yields the temporary folder (a sibling of ``target``, so the rename never crosses file systems).
    On success an existing ``target`` is moved aside, the new folder renamed to ``target`` and the old
    one deleted; on any error the temporary folder is removed and ``target`` is left as it was.
    ``target`` is resolved first (``..`` and symlinks), so it lands exactly where the caller pointed.

    Raises:
        OSError: the parent folder is not writable or the disk is full (nothing is left behind).
    """
    target = Path(target).expanduser().resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{target.name}-", dir=target.parent))
    try:
        yield tmp
        for f in tmp.rglob("*"):
            if f.is_file():
                _fsync_path(f)
        old = None
        if target.exists():
            old = target.with_name(f"{TEMP_PREFIX}{target.name}-old-{os.getpid()}")
            os.replace(target, old)
        os.replace(tmp, target)
        _fsync_path(target.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
