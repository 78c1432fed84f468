"""N-way K-shot episodes drawn from one meta-split's classes.

An episode picks N classes, then K support and Q query examples per class without replacement, so no
example is in both its support and its query set. Class order inside an episode is random, so the
classification head can never memorise a class at a fixed output index.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from engine.data.loading import LabelledData
from engine.data.splits import LabelSplit
from engine.errors import DataError


@dataclass
class Episode:
    """One few-shot task as row indices into a :class:`LabelledData` table.

    Attributes:
        classes: the N label names; target ``j`` means ``classes[j]``.
        support_idx: int64 tensor of shape (N*K,), row indices of the support set.
        support_y: int64 tensor of shape (N*K,), targets in [0, N).
        query_idx: int64 tensor of shape (N*Q,).
        query_y: int64 tensor of shape (N*Q,).
    """

    classes: tuple[str, ...]
    support_idx: torch.Tensor
    support_y: torch.Tensor
    query_idx: torch.Tensor
    query_y: torch.Tensor


class EpisodeSampler:
    """Seeded sampler of N-way K-shot episodes over a fixed set of classes.

    Args:
        class_rows: label -> array of row indices of that label.
        n_way, k_shot, q_query: N, K and Q.
        seed: RNG seed; the same seed gives the same episode sequence.

    Raises:
        DataError: fewer than N classes, or a class with fewer than K+Q rows (all such classes named).
    """

    def __init__(self, class_rows: dict[str, np.ndarray], n_way: int, k_shot: int, q_query: int,
                 seed: int = 0, split_name: str = "meta-train") -> None:
        self.classes = sorted(class_rows)
        self.class_rows = {c: np.asarray(class_rows[c], dtype=np.int64) for c in self.classes}
        self.n_way, self.k_shot, self.q_query = n_way, k_shot, q_query
        need = k_shot + q_query
        small = [f"{c!r} ({len(self.class_rows[c])})" for c in self.classes if len(self.class_rows[c]) < need]
        if small:
            raise DataError(
                f"{len(small)} label(s) in the {split_name} split have fewer than k_shot + q_query = {need} "
                f"examples: {', '.join(small[:10])}{' ...' if len(small) > 10 else ''}.",
                field="k_shot", hint="Lower k_shot or q_query, or set drop_small_labels=true to drop them.")
        if len(self.classes) < n_way:
            raise DataError(f"the {split_name} split has {len(self.classes)} label(s) but n_way = {n_way}.",
                            field="n_way", hint="Lower n_way, or use a data set with more labels.")
        self.rng = np.random.default_rng(seed)

    def sample(self) -> Episode:
        """Draw one episode (see :class:`Episode` for shapes)."""
        n, k, q = self.n_way, self.k_shot, self.q_query
        chosen = self.rng.choice(len(self.classes), size=n, replace=False)
        s_idx, q_idx = [], []
        for c in chosen:
            rows = self.class_rows[self.classes[c]]
            pick = self.rng.choice(len(rows), size=k + q, replace=False)
            s_idx.append(rows[pick[:k]])
            q_idx.append(rows[pick[k:]])
        return Episode(
            classes=tuple(self.classes[c] for c in chosen),
            support_idx=torch.from_numpy(np.concatenate(s_idx)),
            support_y=torch.arange(n).repeat_interleave(k),
            query_idx=torch.from_numpy(np.concatenate(q_idx)),
            query_y=torch.arange(n).repeat_interleave(q),
        )

    def sample_batch(self, size: int) -> list[Episode]:
        """Draw ``size`` episodes (one meta-batch)."""
        return [self.sample() for _ in range(size)]


def class_rows(data: LabelledData, labels: Sequence[str]) -> dict[str, np.ndarray]:
    """Row indices of every label in ``labels``."""
    wanted = set(labels)
    out: dict[str, list[int]] = {lab: [] for lab in labels}
    for i, lab in enumerate(data.labels):
        if lab in wanted:
            out[lab].append(i)
    return {k: np.asarray(v, dtype=np.int64) for k, v in out.items()}


@dataclass
class TaskData:
    """A data set made ready for episodes: rows, label split and one sampler per meta-split."""

    data: LabelledData
    split: LabelSplit
    dropped_labels: tuple[str, ...]

    def sampler(self, split: str, n_way: int, k_shot: int, q_query: int, seed: int) -> EpisodeSampler:
        """An :class:`EpisodeSampler` over the classes of ``split`` (``train``/``val``/``test``)."""
        rows = class_rows(self.data, self.split.labels(split))
        return EpisodeSampler(rows, n_way, k_shot, q_query, seed=seed, split_name=f"meta-{split}")


def prepare_tasks(data: LabelledData, split: LabelSplit, n_way: int, k_shot: int, q_query: int,
                  drop_small_labels: bool = False) -> TaskData:
    """Check (before training) that every meta-split can supply N-way K+Q episodes.

    With ``drop_small_labels`` the labels with fewer than K+Q rows are removed from the split first.

    Raises:
        DataError: a label with too few examples (names them) or a split with fewer than N labels.
    """
    need = k_shot + q_query
    counts: dict[str, int] = {}
    for lab in data.labels:
        counts[lab] = counts.get(lab, 0) + 1
    dropped: list[str] = []
    if drop_small_labels:
        dropped = sorted(lab for lab, c in counts.items() if c < need)
        keep = lambda labs: tuple(x for x in labs if counts.get(x, 0) >= need)  # noqa: E731
        split = LabelSplit(keep(split.train), keep(split.val), keep(split.test), split.origin)
        if dropped:
            data.warnings.append(f"dropped {len(dropped)} label(s) with fewer than {need} examples: "
                                 f"{', '.join(dropped[:10])}{' ...' if len(dropped) > 10 else ''}.")
    problems = []
    for name in ("train", "val", "test"):
        labs = split.labels(name)
        small = [f"{lab!r} ({counts.get(lab, 0)})" for lab in labs if counts.get(lab, 0) < need]
        if small:
            problems.append(f"meta-{name}: {', '.join(small[:8])}{' ...' if len(small) > 8 else ''}")
    if problems:
        raise DataError(f"label(s) with fewer than k_shot + q_query = {need} examples — {'; '.join(problems)}.",
                        field="k_shot", hint="Lower k_shot or q_query, or set drop_small_labels=true to drop them.")
    for name in ("train", "val", "test"):
        labs = split.labels(name)
        if len(labs) < n_way:
            raise DataError(f"the meta-{name} split has {len(labs)} label(s) but n_way = {n_way} "
                            f"(the data set has {len(counts)} labels in all).", field="n_way",
                            hint="Lower n_way, change val/test fractions, or use a data set with more labels.")
    return TaskData(data, split, tuple(dropped))
