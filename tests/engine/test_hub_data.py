"""Data sets from Parquet files and from Hugging Face `datasets` (``hf:NAME[:CONFIG]``), offline."""

from __future__ import annotations

import pandas as pd
import pytest

from engine import DataError
from engine.data import load_labelled_data, split_labels


@pytest.fixture()
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_parquet_file_loads_like_jsonl(tmp_path):
    df = pd.DataFrame({"utterance": ["play jazz", "turn it up", "book a table", "play jazz"],
                       "intent": ["music", "volume", "restaurant", "music"]})
    path = tmp_path / "d.parquet"
    df.to_parquet(path)
    data = load_labelled_data(str(path), text_column="utterance", label_column="intent")
    assert data.texts == ["play jazz", "turn it up", "book a table"] and data.labels == ["music", "volume", "restaurant"]
    assert any("duplicate" in w for w in data.warnings)


def test_hf_local_folder_with_class_labels(tmp_path, offline):
    from datasets import ClassLabel, Dataset, Features, Value

    features = Features({"text": Value("string"), "label": ClassLabel(names=["greet", "leave", "thank"])})
    folder = tmp_path / "hfset"
    folder.mkdir()
    rows = {"text": ["hi", "bye", "thanks", "hello", "see you", "cheers"], "label": [0, 1, 2, 0, 1, 2]}
    Dataset.from_dict({k: v[:3] for k, v in rows.items()}, features=features).to_parquet(folder / "train.parquet")
    Dataset.from_dict({k: v[3:] for k, v in rows.items()}, features=features).to_parquet(folder / "test.parquet")
    data = load_labelled_data(f"hf:{folder}")
    assert sorted(zip(data.texts, data.labels, strict=True)) == sorted(
        [("hi", "greet"), ("bye", "leave"), ("thanks", "thank"), ("hello", "greet"), ("see you", "leave"),
         ("cheers", "thank")])  # ClassLabel ids became their names
    assert sorted(set(data.splits)) == ["test", "train"] and data.source == f"hf:{folder}"
    split = split_labels(data, seed=0)  # per-example splits: the label set is split instead, with a warning
    assert split.origin == "seeded" and any("splits examples" in w for w in data.warnings)


def test_hf_name_not_cached_offline_is_a_clear_error(offline):
    with pytest.raises(DataError) as err:
        load_labelled_data("hf:nobody/no-such-data-set-xyz")
    e = err.value
    assert e.field == "dataset" and "not in the local cache" in e.message and "offline" in e.message
    assert "load_dataset" in e.hint


def test_hf_name_from_the_cache(monkeypatch, offline):
    import datasets

    calls = []

    def fake_load(name, config=None, **kw):
        calls.append((name, config, datasets.config.HF_HUB_OFFLINE))
        return datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": ["a b", "c d"], "label": ["x", "y"]})})

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    data = load_labelled_data("hf:org/intents:small")
    assert data.texts == ["a b", "c d"] and data.labels == ["x", "y"]
    assert calls == [("org/intents", "small", True)]  # the cache is read with the hub switched off
    assert datasets.config.HF_HUB_OFFLINE is False  # and the flag is put back afterwards
