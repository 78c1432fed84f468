"""Shared helpers of the benchmark scripts: argument parsing, tables, the machine's state."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python benchmarks/x.py` from a checkout
    sys.path.insert(0, str(ROOT))
# What engine/_env.py sets for the app, before any benchmark imports torch (import this module first).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the two flags every benchmark takes."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true",
                   help="the same code path, sized to finish in under a minute on 2 CPU cores")
    p.add_argument("--json", action="store_true", help="print the table as one JSON object on the last line")
    return p


def machine() -> dict:
    """CPU count, torch threads, the 1-minute load average and versions: what a figure depends on."""
    import torch

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "load_1min": load,
            "python": platform.python_version(), "torch": torch.__version__,
            "device": "cuda" if torch.cuda.is_available() else "cpu"}


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence], notes: Sequence[str] = ()) -> None:
    """A fixed-width text table on stdout."""
    cells = [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]
    print(f"\n{title}")
    print("  ".join(str(h).ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for r in cells:
        print("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))))
    for n in notes:
        print(f"  {n}")
    sys.stdout.flush()


def _fmt(value) -> str:
    if isinstance(value, float):
        if value != value:
            return "-"
        return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"
    return "-" if value is None else str(value)


def emit_json(obj: dict) -> None:
    """The JSON object on one line (the last line of stdout); NaN and infinities become null."""
    sys.stdout.write(json.dumps(_finite(obj), default=_json_default, allow_nan=False) + "\n")
    sys.stdout.flush()


def _finite(value):
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _json_default(value):
    if isinstance(value, float):
        return None
    return str(value)


def report_end(obj: dict, as_json: bool) -> None:
    """Print the load average at the end of a run (the figures' context), then the JSON line if asked."""
    print(f"\nload average (1 min) at the end: {machine()['load_1min']}")
    if as_json:
        emit_json(obj)
