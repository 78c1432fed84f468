"""The on-disk embedding cache: hits, misses, invalidation, size bound, safe concurrent writes, and the
cached bottom-layer hidden states of partially trained encoders."""

from __future__ import annotations

import json
import os
import threading
import time

import numpy as np
import pytest
import torch

from engine.models.backbone import load_encoder
from engine.models.embedding_cache import EmbeddingCache, text_keys, weight_digest
from engine.training import features as features_mod
from engine.training.features import FeatureSource

# small tensors: one intra-op thread for the whole module (see conftest.one_thread)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def texts(clinc_subset) -> list[str]:
    rows = [json.loads(line) for line in clinc_subset.open(encoding="utf-8")]
    return [r["text"] for r in rows[:120]]


@pytest.fixture(scope="module")
def encoder(tiny_bert):
    return load_encoder(str(tiny_bert), max_length=32)


def source(encoder, texts, cache, **kw) -> FeatureSource:
    features_mod._TABLE_CACHE.clear()  # the in-process table cache would hide the disk cache
    return FeatureSource(encoder, texts, torch.device("cpu"), frozen=kw.pop("frozen", True), cache=cache, **kw)


def test_store_and_lookup_round_trip(tmp_path):
    cache = EmbeddingCache(tmp_path)
    keys = text_keys(["a", "b", "c"])
    rows = [torch.randn(1, 4), torch.randn(3, 4), torch.randn(2, 4)]
    cache.store("ns", keys, rows)
    hit, found = cache.lookup("ns", [keys[2], text_keys(["zzz"])[0], keys[0], keys[2]])
    assert hit.tolist() == [True, False, True, True]
    assert found[1] is None
    assert torch.equal(found[0], rows[2]) and torch.equal(found[2], rows[0]) and torch.equal(found[3], rows[2])
    assert not cache.lookup("other-namespace", keys)[0].any()


def test_second_run_reuses_every_embedding(tmp_path, encoder, texts):
    cache = EmbeddingCache(tmp_path)
    cold = source(encoder, texts, cache)
    n_unique = len(set(texts))
    assert (cold.cache_hits, cold.cache_misses, cold.encoded_count) == (0, n_unique, n_unique)
    direct = encoder.encode(texts, torch.device("cpu"))
    assert torch.allclose(cold.table, direct, atol=1e-5)
    warm = source(encoder, texts, cache)
    assert (warm.cache_hits, warm.cache_misses, warm.encoded_count) == (n_unique, 0, 0)
    assert torch.equal(warm.table, cold.table)
    assert warm.summary() == f"embedding cache: reused {n_unique:,} of {n_unique:,} texts, encoded 0"
    # a data set sharing half its texts: only the new half is encoded
    mixed = texts[:60] + [t + " please" for t in texts[60:]]
    part = source(encoder, mixed, cache)
    assert part.cache_hits == len(set(texts[:60])) and part.cache_misses == len(set(mixed[60:]))
    assert torch.allclose(part.table[:60], cold.table[:60], atol=0)


def test_changed_max_length_or_weights_invalidate(tmp_path, tiny_bert, texts):
    cache = EmbeddingCache(tmp_path)
    enc = load_encoder(str(tiny_bert), max_length=32)
    source(enc, texts, cache)
    short = load_encoder(str(tiny_bert), max_length=8)
    assert source(short, texts, cache).cache_hits == 0
    assert source(enc, texts, cache).cache_misses == 0  # the first one is still there
    before = weight_digest(enc)
    with torch.no_grad():  # a retrained model in the same folder, same config
        enc.model.encoder.layer[0].output.dense.weight.add_(0.01)
    assert weight_digest(enc) != before
    changed = source(enc, texts, cache)
    assert changed.cache_hits == 0 and changed.cache_misses == len(set(texts))
    with torch.no_grad():
        enc.model.encoder.layer[0].output.dense.weight.sub_(0.01)


def test_cache_off_and_unwritable_folder_still_encode(tmp_path, encoder, texts):
    off = source(encoder, texts[:10], None)
    assert off.cache_misses == 10 and off.summary().endswith("(disk cache off)")
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    bad = source(encoder, texts[:10], EmbeddingCache(blocker / "cache"))
    assert bad.encoded_count == 10 and bad.stats.errors and "cannot write" in bad.stats.errors[0]


def test_size_bound_evicts_least_recently_used(tmp_path):
    cache = EmbeddingCache(tmp_path, max_bytes=10**9)
    paths = []
    for i in range(4):
        paths.append(cache.store("ns", text_keys([f"t{i}"]), [torch.zeros(256, 64)]))
        old = time.time() - 100 + i
        os.utime(paths[-1], (old, old))
    shard = paths[0].stat().st_size
    cache.lookup("ns", text_keys(["t0"]))  # a hit makes t0 the most recently used
    cache.max_bytes = 2 * shard + 100
    cache.evict()
    assert cache.size_bytes() <= cache.max_bytes
    assert [p.exists() for p in paths] == [True, False, False, True]


def test_concurrent_writers_and_a_damaged_shard(tmp_path):
    cache = EmbeddingCache(tmp_path)
    keys = text_keys([f"text {i}" for i in range(64)])
    rows = [torch.full((1, 8), float(i)) for i in range(64)]

    def writer(part: int) -> None:
        for start in range(part * 16, part * 16 + 16, 4):
            cache.store("ns", keys[start:start + 4], rows[start:start + 4])

    threads = [threading.Thread(target=writer, args=(p,)) for p in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not list((tmp_path / "ns").glob(".tmp-*"))  # no temp file left behind
    hit, found = cache.lookup("ns", keys)
    assert hit.all() and all(float(found[i][0, 0]) == i for i in range(64))
    victim = sorted((tmp_path / "ns").glob("*.safetensors"))[0]
    victim.write_bytes(b"garbage")
    hit, _ = cache.lookup("ns", keys)
    assert hit.sum() == 60 and not victim.exists()  # its 4 texts are misses; the shard is dropped


def test_bottom_layer_cache_matches_full_forward(tmp_path, encoder, texts):
    cache = EmbeddingCache(tmp_path)
    src = source(encoder, texts, cache, frozen=False, top_layers=1)
    assert src.mode == "hidden" and src.bottom.n_bottom == 1 and src.cache_misses == len(set(texts))
    idx = torch.tensor([3, 17, 5, 90, 44])
    encoder.eval()
    with torch.no_grad():
        cached = encoder(src(idx))
        full = encoder(encoder.tokenize([texts[i] for i in idx.tolist()]))
    assert torch.allclose(cached, full, atol=1e-5)
    again = source(encoder, texts, cache, frozen=False, top_layers=1)
    assert again.mode == "hidden" and again.cache_hits == len(set(texts)) and again.encoded_count == 0
    with torch.no_grad():
        assert torch.allclose(encoder(again(idx)), full, atol=1e-5)
    # the trained top layer's weights are not part of the key: training them keeps the cache valid
    with torch.no_grad():
        encoder.model.encoder.layer[1].output.dense.weight.add_(0.01)
    try:
        assert source(encoder, texts, cache, frozen=False, top_layers=1).cache_hits == len(set(texts))
    finally:
        with torch.no_grad():
            encoder.model.encoder.layer[1].output.dense.weight.sub_(0.01)


def test_bottom_layer_gradient_reaches_the_top_layer_only(tmp_path, encoder, texts):
    src = source(encoder, texts, EmbeddingCache(tmp_path), frozen=False, top_layers=1)
    top = encoder.model.encoder.layer[1].attention.self.query.weight
    bottom = encoder.model.encoder.layer[0].attention.self.query.weight
    encoder.requires_grad_(True)
    try:
        encoder(src(torch.arange(8))).pow(2).sum().backward()
        assert top.grad is not None and top.grad.abs().sum() > 0
        assert bottom.grad is None  # the bottom layer never ran
    finally:
        encoder.requires_grad_(False)
        encoder.zero_grad(set_to_none=True)


def test_trainer_records_what_the_cache_reused(clinc_subset, db_path):
    from engine import ExperimentConfig, RunStore, TrainingSession

    cfg = ExperimentConfig(algorithm="protonet", dataset=str(clinc_subset), meta_iterations=3, val_interval=3,
                           val_episodes=2, device="cpu")
    first = TrainingSession(cfg, db_path)
    list(first.run())
    features_mod._TABLE_CACHE.clear()
    second = TrainingSession(cfg, db_path)
    list(second.run())
    n = len(set(second.trainer.tasks.data.texts))
    assert second.trainer.features.cache_hits == n and second.trainer.features.encoded_count == 0
    row = RunStore(db_path).get_run(second.run_id)
    assert f"embedding cache: reused {n:,} of {n:,} texts, encoded 0" in row["warnings"]
    assert np.isfinite(second.final_metrics["outer_loss"])


def test_bad_size_and_thread_settings_name_the_variable(monkeypatch):
    from engine.errors import ConfigError
    from engine.models.embedding_cache import default_max_bytes
    from engine.training.threads import loop_thread_count

    monkeypatch.setenv("METASTUDIO_CACHE_MAX_GB", "0.5")
    assert default_max_bytes() == 512 * 1024**2
    monkeypatch.setenv("METASTUDIO_CACHE_MAX_GB", "lots")
    with pytest.raises(ConfigError) as err:
        default_max_bytes()
    assert err.value.field == "METASTUDIO_CACHE_MAX_GB" and err.value.hint
    cpu = torch.device("cpu")
    assert loop_thread_count(cpu, encoder_in_loop=False) == 1
    assert loop_thread_count(cpu, encoder_in_loop=True) is None
    monkeypatch.setenv("METASTUDIO_LOOP_THREADS", "two")
    with pytest.raises(ConfigError) as err:
        loop_thread_count(cpu, encoder_in_loop=False)
    assert err.value.field == "METASTUDIO_LOOP_THREADS"
