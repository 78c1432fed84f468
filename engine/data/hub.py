"""Labelled text from Hugging Face ``datasets``: ``dataset: hf:NAME[:CONFIG]``.

``NAME`` is a hub id (``PolyAI/banking77``) or a local folder ``datasets`` can read (data files such
as ``train.csv`` / ``test.parquet``). The local cache is tried first, with the hub switched off, so a
data set downloaded once loads offline without waiting on the network; only if that fails, and the
environment does not say offline (``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE``), is it downloaded.
Every split is read; its name becomes the ``split`` column (which, for per-example splits, the label
splitter ignores with a warning). ``ClassLabel`` columns are turned into their label names.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from engine.errors import DataError

_OFFLINE_VALUES = {"1", "true", "yes", "on"}


def parse_hub_spec(spec: str) -> tuple[str, str | None]:
    """``"hf:NAME[:CONFIG]"`` -> (NAME, CONFIG or None).

    Raises:
        DataError: no name after ``hf:``.
    """
    body = spec[3:] if spec.startswith("hf:") else spec
    name, _, config = body.partition(":")
    if not name.strip():
        raise DataError("no data set name after 'hf:'.", field="dataset",
                        hint="Write hf:NAME or hf:NAME:CONFIG, e.g. hf:PolyAI/banking77.")
    return name.strip(), (config.strip() or None)


def env_offline() -> bool:
    """True when the environment asks Hugging Face libraries to stay offline."""
    return any(os.environ.get(k, "").strip().lower() in _OFFLINE_VALUES
               for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"))


@contextmanager
def _hub_switched_off() -> Iterator[None]:
    """Make ``datasets`` / ``huggingface_hub`` use only local files for the duration (no retries on a
    missing network). Sets their module-level offline flags and restores them."""
    import datasets.config as dcfg
    import huggingface_hub.constants as hcfg

    old = (dcfg.HF_HUB_OFFLINE, hcfg.HF_HUB_OFFLINE)
    dcfg.HF_HUB_OFFLINE = hcfg.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        dcfg.HF_HUB_OFFLINE, hcfg.HF_HUB_OFFLINE = old


def _load(name: str, config: str | None):
    import datasets

    datasets.disable_progress_bars()  # the CLI and the window report progress themselves
    datasets.utils.logging.set_verbosity_error()
    errors: list[str] = []
    with _hub_switched_off():
        try:
            return datasets.load_dataset(name, config)
        except Exception as err:  # datasets raises many types (ConnectionError, FileNotFoundError, ...)
            errors.append(str(err).splitlines()[0] if str(err) else type(err).__name__)
    if not env_offline():
        try:
            return datasets.load_dataset(name, config)
        except Exception as err:
            errors.append(str(err).splitlines()[0] if str(err) else type(err).__name__)
    where = "offline (HF_HUB_OFFLINE is set)" if env_offline() else "offline, or no such data set"
    raise DataError(f"Hugging Face data set '{name}'{f' ({config})' if config else ''} is not in the local "
                    f"cache and could not be downloaded now ({where}): {errors[-1]}", field="dataset",
                    hint="Download it once while online (python -c \"import datasets; datasets.load_dataset("
                         f"'{name}')\"), or export it to a .jsonl / .parquet file and pick that file.")


def read_hub_dataset(spec: str) -> tuple[list[dict[str, Any]], list[str], str]:
    """Read every split of ``hf:NAME[:CONFIG]``.

    Returns:
        (rows as dicts with a ``split`` key added, column names, fingerprint: sha256 of the name, config
        and each split's ``datasets`` fingerprint).

    Raises:
        DataError: ``datasets`` not installed, the data set is neither cached nor downloadable, or it is
            not a dict of splits of rows.
    """
    name, config = parse_hub_spec(spec)
    try:
        import datasets  # noqa: F401
    except ImportError:
        raise DataError("reading Hugging Face data sets needs the 'datasets' package.", field="dataset",
                        hint="Run: pip install 'metastudio[hub]'  (or pip install datasets)") from None
    loaded = _load(name, config)
    splits = loaded.items() if hasattr(loaded, "items") else [("train", loaded)]
    rows: list[dict[str, Any]] = []
    columns: list[str] = []
    parts = [name, config or ""]
    for split_name, ds in splits:
        features = getattr(ds, "features", {}) or {}
        names = {col: f.int2str for col, f in features.items() if hasattr(f, "int2str") and hasattr(f, "names")}
        for col in getattr(ds, "column_names", []):
            if col not in columns:
                columns.append(col)
        parts.append(f"{split_name}:{getattr(ds, '_fingerprint', '')}:{len(ds)}")
        for r in ds:
            r = dict(r)
            for col, to_name in names.items():
                if isinstance(r.get(col), int) and r[col] >= 0:
                    r[col] = to_name(r[col])
            r.setdefault("split", split_name)
            rows.append(r)
    if "split" not in columns:
        columns.append("split")
    fingerprint = hashlib.sha256(json.dumps(parts).encode()).hexdigest()
    return rows, columns, fingerprint
