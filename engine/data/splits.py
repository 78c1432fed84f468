"""Class-disjoint meta-train / meta-val / meta-test splits of a label set.

Meta-learning evaluates on *classes* never seen in meta-training, so the label set is split, not the
examples. Rule for a file with a ``split`` column:

* If its values (``train``/``val``/``test``) already partition the *labels* (no label appears under
  two values), that partition is used as is: the file's authors chose the meta-test holdout.
* Otherwise (per-example splits such as CLINC150's, where every label appears in every split) the
  column is ignored for class assignment, every example of a label is used, and the label set is
  split with ``split_seed`` like a file without the column. A warning says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.data.loading import LabelledData
from engine.errors import DataError

SPLIT_NAMES = ("train", "val", "test")
_ALIASES = {"train": "train", "training": "train", "meta-train": "train", "val": "val", "valid": "val",
            "validation": "val", "dev": "val", "meta-val": "val", "test": "test", "meta-test": "test"}


@dataclass(frozen=True)
class LabelSplit:
    """Disjoint label lists per meta-split, plus where they came from (``"seeded"`` or ``"file"``)."""

    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]
    origin: str = "seeded"

    def labels(self, split: str) -> tuple[str, ...]:
        """The labels of ``split`` (``"train"``, ``"val"`` or ``"test"``)."""
        return {"train": self.train, "val": self.val, "test": self.test}[split]

    def to_dict(self) -> dict[str, list[str] | str]:
        return {"train": list(self.train), "val": list(self.val), "test": list(self.test), "origin": self.origin}


def _file_split(data: LabelledData) -> LabelSplit | None:
    if data.splits is None:
        return None
    by_label: dict[str, set[str]] = {}
    for label, split in zip(data.labels, data.splits, strict=True):
        by_label.setdefault(label, set()).add(_ALIASES.get(split, split))
    if any(len(s) != 1 for s in by_label.values()):
        return None
    groups: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for label, s in by_label.items():
        name = next(iter(s))
        if name not in groups:
            return None
        groups[name].append(label)
    if not groups["train"] or not groups["test"]:
        return None
    return LabelSplit(tuple(sorted(groups["train"])), tuple(sorted(groups["val"])),
                      tuple(sorted(groups["test"])), origin="file")


def split_labels(data: LabelledData, *, val_fraction: float = 0.2, test_fraction: float = 0.2,
                 seed: int = 0) -> LabelSplit:
    """Split the label set of ``data`` into disjoint meta-train/val/test label lists.

    Args:
        data: the cleaned rows (labels already normalised, so case/space variants cannot leak).
        val_fraction, test_fraction: shares of labels for meta-val and meta-test (rounded, at least 1 each).
        seed: the permutation seed (``split_seed`` in the config).

    Raises:
        DataError: fewer than 3 labels, so no three non-empty splits exist.
    """
    file_split = _file_split(data)
    if file_split is not None:
        return file_split
    if data.splits is not None:
        note = ("the file's 'split' column splits examples, not labels; MetaStudio splits the label set "
                "itself (split_seed) and uses every example of each label.")
        if note not in data.warnings:
            data.warnings.append(note)
    labels = sorted(set(data.labels))
    if len(labels) < 3:
        raise DataError(f"only {len(labels)} distinct label(s) found; meta-learning needs at least 3 "
                        "(one per meta-train/val/test split) and usually many more.", field="dataset")
    order = np.random.default_rng(seed).permutation(len(labels))
    shuffled = [labels[i] for i in order]
    n_val = max(1, round(len(labels) * val_fraction))
    n_test = max(1, round(len(labels) * test_fraction))
    n_train = len(labels) - n_val - n_test
    if n_train < 1:
        raise DataError("no labels left for meta-train after the val/test fractions.", field="val_fraction")
    return LabelSplit(tuple(sorted(shuffled[:n_train])), tuple(sorted(shuffled[n_train:n_train + n_val])),
                      tuple(sorted(shuffled[n_train + n_val:])), origin="seeded")
