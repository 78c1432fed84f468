"""Read labelled text from JSONL, CSV or Parquet into a :class:`LabelledData` table.

Labels are always strings: ``NA``, ``None``, ``null``, ``nan``, ``0`` and ``1`` stay the text they are.
Label strings that differ only by case or whitespace are merged (with a warning) before any split.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import DataError

RESOURCES = Path(__file__).resolve().parents[2] / "resources"
DEMO_DATASET = RESOURCES / "demo" / "intents.jsonl"
SUPPORTED_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet")
HUB_PREFIX = "hf:"  # dataset "hf:NAME[:CONFIG]" loads a Hugging Face data set (engine.data.hub)
_WS = re.compile(r"\s+")


def normalise_label(label: str) -> str:
    """The key two labels are merged on: whitespace collapsed and stripped, case folded."""
    return _WS.sub(" ", label).strip().casefold()


@dataclass
class LabelledData:
    """Rows of (text, label[, split]) after cleaning.

    Attributes:
        texts: the texts, row order kept (after dropping empty ones and exact duplicates per label).
        labels: one display label per row; rows whose labels normalise equal share one display form.
        splits: the file's ``split`` column per row, or None if it has none.
        source: where the rows came from (path or ``"demo"``).
        fingerprint: sha256 of the source file's bytes (identifies the data in exports and caches).
        warnings: human-readable notes on what cleaning changed.
    """

    texts: list[str]
    labels: list[str]
    splits: list[str] | None
    source: str
    fingerprint: str
    warnings: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def label_names(self) -> list[str]:
        """Distinct labels, sorted."""
        return sorted(set(self.labels))


def resolve_dataset_path(dataset: str) -> Path:
    """Map ``"demo"`` to the bundled file, anything else to a path.

    Raises:
        DataError: the path does not exist or has an unsupported suffix.
    """
    if dataset == "demo":
        return DEMO_DATASET
    p = Path(dataset).expanduser()
    if not p.exists():
        raise DataError(f"data file '{p}' does not exist.", field="dataset",
                        hint="Pick a .jsonl, .csv or .parquet file, or use 'demo'.")
    if p.is_dir():
        raise DataError(f"'{p}' is a folder, not a data file.", field="dataset",
                        hint="Pick the .jsonl/.csv/.parquet file inside it.")
    if p.suffix.lower() not in SUPPORTED_SUFFIXES:
        raise DataError(f"'{p.name}' has an unsupported type '{p.suffix}'.", field="dataset",
                        hint=f"Use one of {', '.join(SUPPORTED_SUFFIXES)}.")
    return p


def _as_text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and value != value:  # NaN from parquet
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _read_jsonl(raw: str, path: Path) -> tuple[list[dict], list[str]]:
    rows: list[dict] = []
    for lineno, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"line {lineno} of '{path.name}' is not valid JSON ({err.msg}).", field="dataset",
                            hint="Each line must be one JSON object such as {\"text\": ..., \"label\": ...}.") from None
        if not isinstance(obj, dict):
            raise DataError(f"line {lineno} of '{path.name}' is a {type(obj).__name__}, not a JSON object.",
                            field="dataset")
        rows.append(obj)
    columns = list(rows[0].keys()) if rows else []
    return rows, columns


def _read_csv(raw: str, path: Path) -> tuple[list[dict], list[str]]:
    """Rows of a CSV/TSV file as dicts keyed by the header (short rows lack the missing keys).

    Raises:
        DataError: a quote that is never closed, or another syntax error (naming the line); a row with
            more non-empty fields than the header has (naming the line: the usual cause is an unquoted
            delimiter inside the text, which would shift the label column, so such rows are refused
            rather than read with a wrong label). Extra empty fields (a trailing delimiter) are ignored.
    """
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        sample = raw[:4096]
        if path.suffix.lower() == ".csv" and sample:
            delimiter = csv.Sniffer().sniff(sample, delimiters=",;\t").delimiter
    except csv.Error:
        pass
    shown = "tab" if delimiter == "\t" else repr(delimiter)
    reader = csv.reader(io.StringIO(raw), delimiter=delimiter, strict=True)
    header: list[str] | None = None
    rows: list[dict] = []
    too_long: list[int] = []
    start = 1  # the physical line the record being read starts on
    try:
        for record in reader:
            line, start = start, reader.line_num + 1
            if header is None:
                header = record
                continue
            if not record:
                continue  # a blank line
            if len(record) > len(header) and any(f.strip() for f in record[len(header):]):
                too_long.append(line)
            rows.append(dict(zip(header, record, strict=False)))
    except csv.Error as err:
        if reader.line_num > start or "end of data" in str(err):
            raise DataError(f"'{path.name}' is not valid CSV: the quote opened on line {start} is never closed "
                            f"(the field runs on to line {reader.line_num}).", field="dataset",
                            hint='Close the quote, or write a quote inside a quoted field as "".') from None
        raise DataError(f"'{path.name}' is not valid CSV at line {start}: {err}.", field="dataset",
                        hint='Quote fields that hold the delimiter or quotes; write a quote inside a quoted '
                             'field as "".') from None
    if too_long:
        more = f" (and {len(too_long) - 1} more rows)" if len(too_long) > 1 else ""
        raise DataError(f"line {too_long[0]} of '{path.name}' has more fields than the header's {len(header or [])} "
                        f"(delimiter {shown}){more}; an unquoted delimiter inside a text would shift the label.",
                        field="dataset", hint="Quote texts that contain the delimiter, e.g. \"hello, world\",greet.")
    return rows, list(header or [])


def _read_parquet(path: Path) -> tuple[list[dict], list[str]]:
    import pyarrow.parquet as pq  # local import: only parquet users pay for it

    try:
        table = pq.read_table(path)
    except Exception as err:  # pyarrow raises several types for corrupt files
        raise DataError(f"'{path.name}' is not a readable Parquet file: {err}", field="dataset") from None
    return table.to_pylist(), list(table.column_names)


def load_labelled_data(dataset: str, text_column: str = "text", label_column: str = "label") -> LabelledData:
    """Load and clean a labelled text data set.

    Args:
        dataset: ``"demo"``, a path to ``.jsonl``/``.csv``/``.tsv``/``.parquet``, or ``"hf:NAME[:CONFIG]"``
            (a Hugging Face data set from the hub or the local cache; all its splits, see
            :func:`engine.data.hub.read_hub_dataset`).
        text_column: the column holding the text.
        label_column: the column holding the class label (any type; kept as its string form).

    Returns:
        LabelledData with empty texts, per-label duplicate texts and texts found under two different
        labels dropped (counted in ``warnings``). Texts compare with whitespace collapsed and case folded,
        so no text can be in both the support and the query set of an episode.

    Raises:
        DataError: missing file, empty file, non-UTF-8 bytes, malformed rows, missing columns (the
            message lists the columns found), or a missing label in some row.
    """
    hub = dataset.startswith(HUB_PREFIX)  # hf:NAME[:CONFIG], a Hugging Face `datasets` data set
    path = Path(dataset) if hub else resolve_dataset_path(dataset)
    data = b"" if hub else path.read_bytes()
    fingerprint = hashlib.sha256(data).hexdigest()
    suffix = "" if hub else path.suffix.lower()
    if hub:
        from engine.data.hub import read_hub_dataset

        rows, columns, fingerprint = read_hub_dataset(dataset)
    elif suffix == ".parquet":
        rows, columns = _read_parquet(path)
    else:
        try:
            raw = data.decode("utf-8-sig")
        except UnicodeDecodeError as err:
            raise DataError(f"'{path.name}' is not UTF-8 text (bad byte at offset {err.start}).", field="dataset",
                            hint="Re-save the file as UTF-8.") from None
        rows, columns = _read_jsonl(raw, path) if suffix in (".jsonl", ".json") else _read_csv(raw, path)
    if not rows:
        raise DataError(f"'{path.name}' holds no rows.", field="dataset", hint="Pick a file with labelled examples.")
    for col, key in ((text_column, "text_column"), (label_column, "label_column")):
        if col not in columns and not all(col in r for r in rows[:50]):
            found = ", ".join(repr(c) for c in columns) or "none"
            raise DataError(f"column '{col}' not found in '{path.name}' (columns found: {found}).", field=key,
                            hint=f"Set {key} to one of the columns found.")

    has_split = any("split" in r for r in rows[:50]) and "split" not in (text_column, label_column)
    texts: list[str] = []
    labels: list[str] = []
    splits: list[str] | None = [] if has_split else None
    display: dict[str, str] = {}
    variants: dict[str, set[str]] = {}
    seen: set[tuple[str, str]] = set()
    empty = dup = missing = 0
    for i, row in enumerate(rows):
        label = _as_text(row.get(label_column))
        if label is None or not label.strip():
            missing += 1
            if missing == 1:
                first_missing = i + 1
            continue
        text = _as_text(row.get(text_column)) or ""
        text = text.strip()
        if not text:
            empty += 1
            continue
        key = normalise_label(label)
        display.setdefault(key, _WS.sub(" ", label).strip())
        variants.setdefault(key, set()).add(label)
        ident = (key, _WS.sub(" ", text).casefold())
        if ident in seen:
            dup += 1
            continue
        seen.add(ident)
        texts.append(text)
        labels.append(display[key])
        if splits is not None:
            splits.append(str(row.get("split", "")).strip().lower())

    # A text under two different labels is contradictory, and an episode holding both labels would put
    # it in the support set as one class and in the query set as another: every copy of it is dropped.
    text_labels: dict[str, set[str]] = {}
    for text, label in zip(texts, labels, strict=True):
        text_labels.setdefault(_WS.sub(" ", text).casefold(), set()).add(label)
    conflicting = {t: sorted(labs) for t, labs in text_labels.items() if len(labs) > 1}
    conflict_rows = 0
    if conflicting:
        keep = [i for i, text in enumerate(texts) if _WS.sub(" ", text).casefold() not in conflicting]
        conflict_rows = len(texts) - len(keep)
        texts = [texts[i] for i in keep]
        labels = [labels[i] for i in keep]
        if splits is not None:
            splits = [splits[i] for i in keep]

    warnings: list[str] = []
    if conflicting:
        example, labs = next(iter(conflicting.items()))
        warnings.append(f"{len(conflicting)} text(s) appear under more than one label and were dropped "
                        f"({conflict_rows} rows), e.g. {example!r} ({' / '.join(labs)}).")
    if missing:
        warnings.append(f"{missing} row(s) without a label were skipped (first: row {first_missing}).")
    if empty:
        warnings.append(f"{empty} row(s) with an empty or whitespace-only text were skipped.")
    if dup:
        warnings.append(f"{dup} duplicate text(s) within the same label were dropped.")
    merged = {k: v for k, v in variants.items() if len(v) > 1}
    if merged:
        examples = "; ".join(" = ".join(sorted(repr(x) for x in v)) for v in list(merged.values())[:5])
        warnings.append(f"{len(merged)} label(s) differing only by case or spaces were merged: {examples}.")
    if not texts:
        raise DataError(f"'{path.name}' has no row with both a text and a label.", field="dataset")
    return LabelledData(texts, labels, splits, "demo" if dataset == "demo" else str(path), fingerprint, warnings)
