"""Shared fixtures: paths to the shared data sets, a tiny random BERT folder, temp databases."""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import pytest

# As engine/_env.py does for the app: test modules import torch before engine, so set it here first.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
CLINC = SHARED_DATA / "clinc150" / "data.jsonl"
BANKING = SHARED_DATA / "banking77" / "data.jsonl"


@pytest.fixture(scope="session", autouse=True)
def embedding_cache_dir(tmp_path_factory) -> Path:
    """Every test run writes the on-disk embedding cache to a temp folder, never the user's cache."""
    folder = tmp_path_factory.mktemp("embedding_cache")
    previous = os.environ.get("METASTUDIO_CACHE")
    os.environ["METASTUDIO_CACHE"] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop("METASTUDIO_CACHE", None)
    else:
        os.environ["METASTUDIO_CACHE"] = previous


@pytest.fixture(scope="session")
def clinc_subset(tmp_path_factory) -> Path:
    """A real CLINC150 subset written to a temp file (never into the repo): 40 labels x 20 texts."""
    if not CLINC.exists():
        pytest.fail(f"{CLINC} is missing: the shared data sets must sit beside the repo (../shared/data)")
    rows: dict[str, list[str]] = {}
    for line in CLINC.open(encoding="utf-8"):
        r = json.loads(line)
        rows.setdefault(r["label"], []).append(r["text"])
    labels = sorted(rows)
    random.Random(0).shuffle(labels)
    out = tmp_path_factory.mktemp("clinc") / "clinc_subset.jsonl"
    with out.open("w", encoding="utf-8") as f:
        for lab in labels[:40]:
            for text in rows[lab][:20]:
                f.write(json.dumps({"text": text, "label": lab}) + "\n")
    return out


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """A 2-layer random BERT saved with save_pretrained (safetensors) plus the bundled tokenizer."""
    from transformers import BertConfig, BertModel

    from engine.models.backbone import bundled_model_path

    folder = tmp_path_factory.mktemp("tiny_bert")
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128)
    BertModel(cfg).save_pretrained(folder, safe_serialization=True)
    src = bundled_model_path()
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (src / name).exists():
            shutil.copy(src / name, folder / name)
    return folder


@pytest.fixture()
def db_path(tmp_path) -> Path:
    return tmp_path / "runs.db"


@pytest.fixture(scope="module")
def one_thread():
    """Small tensors: one intra-op thread (on a busy 2-core machine the thread pool's waits dominate)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
