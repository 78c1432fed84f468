"""File-mode helpers for atomic writers.

``tempfile.mkstemp`` / ``mkdtemp`` create private files (0600) and folders (0700). Outputs meant to be
shared (exports, CSVs, ONNX models) are given the modes a plain ``open()`` / ``mkdir()`` would give,
i.e. 0666 / 0777 minus the process umask (0644 / 0755 with the usual umask 022).
"""

from __future__ import annotations

import os
from pathlib import Path


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux: /proc/self/status)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: read by setting, then restore at once
    os.umask(mask)
    return mask


def follow_umask(path: str | Path) -> None:
    """Give ``path`` (and, for a folder, everything below it) the modes of normally created files.

    Raises:
        OSError: a mode cannot be changed (e.g. the files belong to another user).
    """
    mask = current_umask()
    root = Path(path)
    if not root.is_dir():
        os.chmod(root, 0o666 & ~mask)
        return
    os.chmod(root, 0o777 & ~mask)
    for folder, dirs, files in os.walk(root):
        for d in dirs:
            os.chmod(os.path.join(folder, d), 0o777 & ~mask)
        for f in files:
            os.chmod(os.path.join(folder, f), 0o666 & ~mask)
