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
            fit = min(len(r) for r in self.class_rows.values()) - q_query
            raise DataError(
                f"{_count(len(small), 'label')} in the {split_name} split {'has' if len(small) == 1 else 'have'} "
                f"fewer than k_shot + q_query = {need} examples: {_few(small)}.", field="k_shot",
                hint=f"Use k_shot ≤ {fit} with q_query = {q_query}." if fit >= 1 else "Lower q_query.")
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


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _few(items: Sequence[str], shown: int = 3) -> str:
    """The first ``shown`` items, then how many more (messages stay readable under a form field)."""
    more = len(items) - shown
    return ", ".join(items[:shown]) + (f" and {more} more" if more > 0 else "")


def largest_k_shot(counts: dict[str, int], split: LabelSplit, n_way: int, q_query: int,
                   drop_small_labels: bool) -> int:
    """The largest K for which every meta-split can supply N-way K-shot episodes with ``q_query`` queries.

    Without ``drop_small_labels`` every label of the split must hold K + Q examples; with it, only the
    ``n_way`` largest labels of each split must. Returns 0 or less when no K fits (then Q or N is the
    problem); ``counts`` maps each label to its number of examples.
    """
    fits = []
    for name in ("train", "val", "test"):
        sizes = sorted((counts.get(lab, 0) for lab in split.labels(name)), reverse=True)
        if len(sizes) < n_way:
            return 0
        fits.append((sizes[n_way - 1] if drop_small_labels else sizes[-1]) - q_query)
    return min(fits)


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
    split_before = split
    if drop_small_labels:
        dropped = sorted(lab for lab, c in counts.items() if c < need)
        keep = lambda labs: tuple(x for x in labs if counts.get(x, 0) >= need)  # noqa: E731
        split = LabelSplit(keep(split.train), keep(split.val), keep(split.test), split.origin)
        if dropped:
            data.warnings.append(f"dropped {_count(len(dropped), 'label')} with fewer than {need} examples: "
                                 f"{_few(dropped, 10)}.")
    small = {name: [lab for lab in split.labels(name) if counts.get(lab, 0) < need] for name in ("train", "val", "test")}
    n_small = sum(len(v) for v in small.values())
    if n_small:
        named = sorted((lab for labs in small.values() for lab in labs), key=lambda lab: (counts.get(lab, 0), lab))
        per_split = ", ".join(f"meta-{name} {len(labs)} of {len(split.labels(name))}"
                              for name, labs in small.items() if labs)
        fit = largest_k_shot(counts, split, n_way, q_query, drop_small_labels=False)
        hints = [f"Use k_shot ≤ {fit} (with q_query = {q_query}, every label has enough examples)" if fit >= 1
                 else f"No k_shot fits every label with q_query = {q_query}; lower q_query"]
        if all(len(split.labels(name)) - len(small[name]) >= n_way for name in small):
            hints.append(f"or set drop_small_labels=true to drop these {_count(n_small, 'label')}")
        else:
            fit_drop = largest_k_shot(counts, split, n_way, q_query, drop_small_labels=True)
            if fit_drop > fit:
                hints.append(f"or use k_shot ≤ {fit_drop} with drop_small_labels=true (keeps at least "
                             f"n_way = {n_way} labels per split)")
        raise DataError(f"{_count(n_small, 'label')} {'has' if n_small == 1 else 'have'} fewer than k_shot + "
                        f"q_query = {need} examples ({per_split}): "
                        f"{_few([f'{lab!r} ({counts.get(lab, 0)})' for lab in named])}.",
                        field="k_shot", hint=", ".join(hints) + ".")
    for name in ("train", "val", "test"):
        labs = split.labels(name)
        if len(labs) < n_way:
            dropped_note = ""
            if dropped:
                fit_drop = largest_k_shot(counts, split_before, n_way, q_query, drop_small_labels=True)
                dropped_note = (f" after drop_small_labels dropped {_count(len(dropped), 'label')} with fewer than "
                                f"{need} examples" + (f"; the largest k_shot that keeps {n_way} labels in every "
                                                      f"split is {fit_drop}" if fit_drop >= 1 else ""))
            raise DataError(f"the meta-{name} split has {_count(len(labs), 'label')} but n_way = {n_way}"
                            f"{dropped_note} (the data set has {len(counts)} labels in all).", field="n_way",
                            hint="Lower n_way or k_shot, change val/test fractions, or use a data set with more "
                                 "labels." if dropped else
                                 "Lower n_way, change val/test fractions, or use a data set with more labels.")
    return TaskData(data, split, tuple(dropped))
