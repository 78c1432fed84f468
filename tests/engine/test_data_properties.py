"""Property tests (hypothesis) of the data loader and the episode sampler on messy generated files.

The oracle is written independently of the loader: a row survives iff it has a non-blank text and
label, it is the first of its (normalised label, normalised text) pair, and its normalised text is
not found under any other label. Every episode then has distinct texts, none in both support and query.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.data import load_labelled_data, prepare_tasks, split_labels
from engine.data.episodes import EpisodeSampler, class_rows
from engine.errors import DataError

BASE_LABELS = ["Set Alarm", "set  alarm", " SET ALARM ", "NA", "None", "null", "nan", "0", "1", "weather",
               "Weather", "book_flight", "pay bill", "pay  Bill", "transfer", "greet", "bye", "ünïcödé", ""]
WORDS = ["hello", "Hello", "book", "a", "flight", "to", "paris", "what's", "the", "weather", "pay", "my",
         "bill", "  ", "\t", "café", "日本"]


def norm(s: str) -> str:
    return re.sub(r"\s+", " ", s).strip().casefold()


texts = st.lists(st.sampled_from(WORDS), min_size=0, max_size=4).map(" ".join)
label_values = st.one_of(st.sampled_from(BASE_LABELS), st.sampled_from([0, 1]), st.none())
rows_strategy = st.lists(st.tuples(texts, label_values), min_size=0, max_size=120)


def write_rows(folder: Path, rows) -> Path:
    path = folder / "d.jsonl"
    with path.open("w", encoding="utf-8") as f:
        for text, label in rows:
            f.write(json.dumps({"text": text, "label": label}, ensure_ascii=False) + "\n")
    return path


def expected(rows) -> set[tuple[str, str]]:
    """(normalised label, normalised text) of every row the loader must keep."""
    seen: set[tuple[str, str]] = set()
    for text, label in rows:
        if label is None or not str(label).strip() or not text.strip():
            continue
        seen.add((norm(str(label)), norm(text)))
    labels_of: dict[str, set[str]] = {}
    for lab, txt in seen:
        labels_of.setdefault(txt, set()).add(lab)
    return {(lab, txt) for lab, txt in seen if len(labels_of[txt]) == 1}


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=rows_strategy)
def test_loader_keeps_exactly_the_clean_rows(rows):
    with tempfile.TemporaryDirectory() as tmp:
        path = write_rows(Path(tmp), rows)
        want = expected(rows)
        if not rows:
            with pytest.raises(DataError, match="holds no rows"):
                load_labelled_data(str(path))
            return
        if not want:
            with pytest.raises(DataError) as e:
                load_labelled_data(str(path))
            assert e.value.field == "dataset"
            return
        data = load_labelled_data(str(path))
    got = [(norm(lab), norm(txt)) for lab, txt in zip(data.labels, data.texts, strict=True)]
    assert len(got) == len(set(got)) and set(got) == want
    # labels stay strings, and one display form per normalised label (variants merged before any split)
    assert all(type(lab) is str and lab.strip() for lab in data.labels)
    forms: dict[str, set[str]] = {}
    for lab in data.labels:
        forms.setdefault(norm(lab), set()).add(lab)
    assert all(len(v) == 1 for v in forms.values())
    # every text is unique across the whole table: no text can sit in two classes or twice in one episode
    assert len({norm(t) for t in data.texts}) == len(data.texts)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=rows_strategy, n=st.integers(2, 4), k=st.integers(1, 3), q=st.integers(1, 3), seed=st.integers(0, 99))
def test_sampler_episodes_never_share_a_text_between_support_and_query(rows, n, k, q, seed):
    # many rows per label so that some draws can supply episodes
    rows = rows + [(f"{w} {i}", lab) for i, (w, lab) in enumerate(zip(WORDS * 3, BASE_LABELS * 3, strict=False))]
    with tempfile.TemporaryDirectory() as tmp:
        data = load_labelled_data(str(write_rows(Path(tmp), rows)))
    groups = class_rows(data, data.label_names)
    eligible = {lab: idx for lab, idx in groups.items() if len(idx) >= k + q}
    if len(eligible) < n:
        with pytest.raises(DataError) as e:
            EpisodeSampler(groups, n, k, q, seed=seed)
        assert e.value.field in ("k_shot", "n_way")
        return
    sampler = EpisodeSampler(eligible, n, k, q, seed=seed)
    again = EpisodeSampler(eligible, n, k, q, seed=seed)
    for _ in range(5):
        ep = sampler.sample()
        twin = again.sample()
        assert ep.classes == twin.classes and ep.support_idx.tolist() == twin.support_idx.tolist()
        assert ep.support_idx.shape == (n * k,) and ep.query_idx.shape == (n * q,)
        assert len(set(ep.classes)) == n
        support = {norm(data.texts[i]) for i in ep.support_idx.tolist()}
        query = {norm(data.texts[i]) for i in ep.query_idx.tolist()}
        assert len(support) == n * k and len(query) == n * q and not (support & query)
        for idx, y in ((ep.support_idx, ep.support_y), (ep.query_idx, ep.query_y)):
            assert [data.labels[i] for i in idx.tolist()] == [ep.classes[j] for j in y.tolist()]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=rows_strategy, n=st.integers(2, 3), seed=st.integers(0, 20))
def test_split_and_prepare_either_refuse_with_a_named_field_or_give_disjoint_splits(rows, n, seed):
    rows = rows + [(f"extra {lab} {j}", lab) for lab in ("alpha", "beta", "gamma", "delta", "epsilon", "zeta",
                                                         "eta", "theta") for j in range(3)]
    with tempfile.TemporaryDirectory() as tmp:
        data = load_labelled_data(str(write_rows(Path(tmp), rows)))
    try:
        split = split_labels(data, seed=seed)
        tasks = prepare_tasks(data, split, n_way=n, k_shot=1, q_query=1, drop_small_labels=True)
    except DataError as err:
        assert err.field in ("n_way", "k_shot", "dataset", "val_fraction")
        assert err.hint or err.field == "dataset"
        return
    parts = [set(tasks.split.train), set(tasks.split.val), set(tasks.split.test)]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    for name in ("train", "val", "test"):
        ep = tasks.sampler(name, n, 1, 1, seed=seed).sample()
        assert set(ep.classes) <= set(tasks.split.labels(name))
        texts_in = [norm(data.texts[i]) for i in [*ep.support_idx.tolist(), *ep.query_idx.tolist()]]
        assert len(set(texts_in)) == len(texts_in)
