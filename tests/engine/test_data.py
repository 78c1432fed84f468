"""Loading, label normalisation, class-disjoint splits and the episode sampler."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine.data import load_labelled_data, prepare_tasks, split_labels
from engine.data.episodes import EpisodeSampler, class_rows
from engine.errors import DataError


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_demo_set_has_enough_labels_and_examples():
    data = load_labelled_data("demo")
    counts = {lab: data.labels.count(lab) for lab in data.label_names}
    assert len(counts) >= 24
    assert min(counts.values()) >= 20
    assert len(set(t.casefold() for t in data.texts)) == len(data.texts)


def test_labels_stay_strings_in_csv(tmp_path):
    p = tmp_path / "d.csv"
    lines = ["text,label"] + [f"example {lab} {i},{lab}" for lab in ("NA", "None", "null", "nan", "0", "1")
                              for i in range(3)]
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    data = load_labelled_data(str(p))
    assert data.label_names == sorted(["NA", "None", "null", "nan", "0", "1"])
    assert all(isinstance(x, str) for x in data.labels)


def test_case_and_space_variants_merge_with_warning(tmp_path):
    rows = [{"text": f"a{i}", "label": "Set Alarm"} for i in range(3)]
    rows += [{"text": f"b{i}", "label": " set  alarm "} for i in range(3)]
    rows += [{"text": f"c{i}", "label": "other"} for i in range(3)]
    data = load_labelled_data(str(write_jsonl(tmp_path / "d.jsonl", rows)))
    assert data.label_names == ["Set Alarm", "other"]
    assert any("merged" in w for w in data.warnings)


def test_missing_column_names_columns_found(tmp_path):
    p = write_jsonl(tmp_path / "d.jsonl", [{"utterance": "hi", "intent": "greet"}])
    with pytest.raises(DataError) as e:
        load_labelled_data(str(p))
    assert "'utterance'" in str(e.value) and "'intent'" in str(e.value)
    assert e.value.field == "text_column"


def test_split_is_class_disjoint_and_seeded(clinc_subset):
    data = load_labelled_data(str(clinc_subset))
    s1 = split_labels(data, seed=3)
    s2 = split_labels(data, seed=3)
    s3 = split_labels(data, seed=4)
    assert s1 == s2 and s1 != s3
    tr, va, te = map(set, (s1.train, s1.val, s1.test))
    assert not (tr & va) and not (tr & te) and not (va & te)
    assert tr | va | te == set(data.label_names)
    assert (len(tr), len(va), len(te)) == (24, 8, 8)


def test_file_split_column_used_when_class_level(tmp_path):
    rows = []
    for i, lab in enumerate("abcdefghij"):
        split = "train" if i < 6 else "val" if i < 8 else "test"
        rows += [{"text": f"{lab} text {j}", "label": lab, "split": split} for j in range(4)]
    data = load_labelled_data(str(write_jsonl(tmp_path / "d.jsonl", rows)))
    s = split_labels(data, seed=0)
    assert s.origin == "file" and s.test == ("i", "j") and s.val == ("g", "h")


def test_example_level_split_column_is_ignored_with_warning():
    from tests.conftest import CLINC

    # CLINC150 marks examples train/val/test with every label in each: the label set is split instead.
    rows = [json.loads(line) for _, line in zip(range(3000), CLINC.open(encoding="utf-8"), strict=False)]
    labels = {r["label"] for r in rows}
    assert len(labels) >= 3
    data = load_labelled_data(str(CLINC))
    s = split_labels(data, seed=0)
    assert s.origin == "seeded"
    assert any("splits examples, not labels" in w for w in data.warnings)


def test_sampler_invariants(clinc_subset):
    data = load_labelled_data(str(clinc_subset))
    split = split_labels(data)
    tasks = prepare_tasks(data, split, n_way=5, k_shot=3, q_query=4)
    sampler = tasks.sampler("train", 5, 3, 4, seed=0)
    allowed = set(split.train)
    for _ in range(50):
        ep = sampler.sample()
        assert ep.support_idx.shape == (15,) and ep.query_idx.shape == (20,)
        assert set(ep.support_idx.tolist()).isdisjoint(ep.query_idx.tolist())
        assert len(set(ep.classes)) == 5 and set(ep.classes) <= allowed
        for idx, y in ((ep.support_idx, ep.support_y), (ep.query_idx, ep.query_y)):
            assert [data.labels[i] for i in idx.tolist()] == [ep.classes[j] for j in y.tolist()]


def test_sampler_is_reproducible(clinc_subset):
    data = load_labelled_data(str(clinc_subset))
    rows = class_rows(data, split_labels(data).train)
    a = EpisodeSampler(rows, 5, 2, 2, seed=7).sample()
    b = EpisodeSampler(rows, 5, 2, 2, seed=7).sample()
    assert np.array_equal(a.support_idx, b.support_idx) and a.classes == b.classes


def test_too_few_examples_names_labels(tmp_path):
    rows = [{"text": f"{lab} {j}", "label": lab} for lab in "abcdefghijklmnopqrst" for j in range(6)]
    rows += [{"text": f"z {j}", "label": "zz"} for j in range(2)]
    data = load_labelled_data(str(write_jsonl(tmp_path / "d.jsonl", rows)))
    split = split_labels(data, seed=0)
    with pytest.raises(DataError) as e:
        prepare_tasks(data, split, n_way=2, k_shot=2, q_query=2)
    assert "'zz' (2)" in str(e.value) and e.value.field == "k_shot"
    tasks = prepare_tasks(data, split, n_way=2, k_shot=2, q_query=2, drop_small_labels=True)
    assert tasks.dropped_labels == ("zz",)


def test_split_with_fewer_than_n_labels_is_an_error():
    data = load_labelled_data("demo")
    split = split_labels(data)
    with pytest.raises(DataError) as e:
        prepare_tasks(data, split, n_way=len(split.val) + 1, k_shot=2, q_query=2)
    assert e.value.field == "n_way" and "meta-val" in str(e.value)
