"""Turn episode row indices into model inputs on the training device.

Three modes (:attr:`FeatureSource.mode`):

- ``pooled`` — a frozen encoder (no adapted and no trained encoder layers): every text the run can
  sample is encoded once, up front, and episodes index that table; the encoder never runs inside the
  loops. Embeddings come from the on-disk :class:`~engine.models.embedding_cache.EmbeddingCache`
  when an earlier run computed them, so a second run on the same data and model encodes nothing.
- ``hidden`` — only the top ``top_layers`` layers are trained or adapted: the frozen bottom layers'
  hidden states are computed once per text (and cached on disk the same way), and each episode runs
  only the top layers on them (:mod:`engine.models.partial_forward`).
- ``tokens`` — anything else (LoRA in every layer, a model the partial forward cannot verify): each
  episode's texts are tokenised and the whole encoder runs with the fast weights.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from engine.algorithms.base import Inputs
from engine.models.backbone import TextEncoder
from engine.models.embedding_cache import (
    CacheStats,
    EmbeddingCache,
    env_gib,
    namespace_key,
    text_keys,
    weight_digest,
)
from engine.models.partial_forward import (
    BOTTOM_HIDDEN,
    BOTTOM_LAYERS,
    BottomSpec,
    check_partial_forward,
    encode_hidden,
)

ENV_HIDDEN_MAX_GB = "METASTUDIO_HIDDEN_CACHE_MAX_GB"

# The last frozen-encoder table computed in this process, keyed by (model, weights, data, settings).
_TABLE_CACHE: dict[tuple, torch.Tensor] = {}


class FeatureSource:
    """Row indices (int64 (B,)) -> model inputs: embeddings (B, D) or a tokenised batch (B, T).

    Args:
        encoder: the base model.
        texts: every row's text (the :class:`~engine.data.LabelledData` table).
        device: where inputs are placed.
        frozen: precompute pooled embeddings for ``rows`` (True) or tokenise per call (False).
        rows: the row indices that episodes may use (those of the split labels); None = all.
        progress: called with (done, total) while precomputing: first (0, total) when ``total`` texts
            are about to be encoded (never when every text comes from a cache).
        cache_key: identifies the frozen encoder and the texts (see ``MetaTrainer``); when given, the
            last table computed in this process with the same key is reused (read-only) and
            ``encoded_count`` stays 0.
        top_layers: with ``frozen=False``, how many top layers are trained or adapted; ``0 < top_layers
            < layers`` turns on the ``hidden`` mode (0 = unknown: ``tokens`` mode).
        cache: the on-disk cache: True = :meth:`EmbeddingCache.from_env`, None/False = none.

    After construction: :attr:`mode`, :attr:`encoded_count` (texts encoded now), :attr:`stats`
    (:class:`~engine.models.embedding_cache.CacheStats`: unique texts found in / missing from the
    cache), :attr:`cache_hits`, :attr:`cache_misses`, :meth:`summary` and :attr:`notes`.
    """

    def __init__(self, encoder: TextEncoder, texts: list[str], device: torch.device, frozen: bool,
                 rows: np.ndarray | None = None, progress: Callable[[int, int], None] | None = None,
                 batch_size: int = 128, cache_key: tuple | None = None, *, top_layers: int = 0,
                 cache: EmbeddingCache | bool | None = True) -> None:
        self.encoder, self.texts, self.device, self.frozen = encoder, texts, device, frozen
        self.table: torch.Tensor | None = None
        self.encoded_count = 0
        self.mode = "pooled" if frozen else "tokens"
        self.stats = CacheStats()
        self.notes: list[str] = []
        self.cache = EmbeddingCache.from_env() if cache is True else (cache or None)
        self.bottom: BottomSpec | None = None
        self.in_memory_hit = False
        if frozen and cache_key is not None:
            # The same frozen encoder on the same texts (e.g. several algorithms in one benchmark, or
            # training then evaluation in one process): reuse the table instead of encoding again.
            rows_arr = np.arange(len(texts)) if rows is None else np.asarray(rows)
            cache_key = (*cache_key, len(texts), hashlib.sha256(rows_arr.tobytes()).hexdigest(), str(device))
            hit = _TABLE_CACHE.get(cache_key)
            if hit is not None:
                self.table, self.encoded_count = hit, 0
                self.stats.hits, self.in_memory_hit = len(set(texts[i] for i in rows_arr)), True
                return
        rows = np.arange(len(texts)) if rows is None else np.asarray(rows)
        if frozen:
            self.table = self._pooled_table(rows, progress, batch_size)
            if cache_key is not None:
                _TABLE_CACHE.clear()  # one table at most: a large model's table can take GBs
                _TABLE_CACHE[cache_key] = self.table
        elif 0 < top_layers < encoder.num_layers:
            self._build_hidden(rows, encoder.num_layers - top_layers, progress, batch_size)

    # ---- set-up -------------------------------------------------------------------------------------
    @property
    def cache_hits(self) -> int:
        """Unique texts whose embedding (or bottom hidden states) came from a cache."""
        return self.stats.hits

    @property
    def cache_misses(self) -> int:
        """Unique texts that had to be encoded now."""
        return self.stats.misses

    def _unique(self, rows: np.ndarray) -> tuple[list[str], np.ndarray]:
        """Distinct texts of ``rows`` and, per row, the index of its text among them."""
        first: dict[str, int] = {}
        inverse = np.empty(len(rows), dtype=np.int64)
        for j, i in enumerate(rows):
            inverse[j] = first.setdefault(self.texts[i], len(first))
        return list(first), inverse

    def _namespace(self, kind: str, exclude: list[str] | None = None) -> tuple[str, dict]:
        enc = self.encoder
        precision = "bf16" if self.device.type == "cuda" else "fp32"
        digest = weight_digest(enc, exclude or [])
        pooling = enc.pooling if kind == "pooled" else "none"
        info = {"model": enc.info.source, "fingerprint": enc.info.fingerprint, "weights": digest,
                "max_length": enc.max_length, "pooling": pooling, "kind": kind, "precision": precision}
        return namespace_key(enc.info.fingerprint, digest, enc.max_length, pooling, kind, precision), info

    def _cached_or_encoded(self, uniq: list[str], ns: str, info: dict,
                           encode: Callable[[list[str]], torch.Tensor | list[torch.Tensor]],
                           progress, batch_size: int) -> list[torch.Tensor]:
        """One tensor per text of ``uniq``, from the cache namespace ``ns`` where present, else from
        ``encode`` (called on chunks of texts sorted by length, each chunk stored in the cache at once so
        an interrupted run keeps it). Sets :attr:`stats` and :attr:`encoded_count`; ``progress(done,
        total)`` is called only when something is encoded."""
        dev = self.device
        keys = text_keys(uniq)
        out: list[torch.Tensor | None] = [None] * len(uniq)
        hit = np.zeros(len(uniq), dtype=bool)
        if self.cache is not None:
            hit, found = self.cache.lookup(ns, keys, self.stats)
            for i in np.flatnonzero(hit):
                out[i] = found[i].to(dev)
        missing = sorted(np.flatnonzero(~hit).tolist(), key=lambda i: len(uniq[i]))
        self.stats.hits, self.stats.misses = int(hit.sum()), len(missing)
        if progress and missing:  # (0, total): encoding starts (nothing is announced on a full cache hit)
            progress(0, len(missing))
        chunk = max(batch_size * 8, 1024)
        for start in range(0, len(missing), chunk):
            part = missing[start:start + chunk]
            t0 = time.perf_counter()
            encoded = encode([uniq[i] for i in part])
            self.stats.encode_s += time.perf_counter() - t0
            for i, row in zip(part, encoded, strict=True):
                out[i] = row
            if self.cache is not None:
                self.cache.store(ns, [keys[i] for i in part], encoded, self.stats, info)
            if progress:
                progress(min(start + chunk, len(missing)), len(missing))
        self.encoded_count = len(missing)
        return out  # type: ignore[return-value]

    def _pooled_table(self, rows: np.ndarray, progress, batch_size: int) -> torch.Tensor:
        """Embeddings (len(texts), D) with ``rows`` filled: cached ones read, the rest encoded and stored."""
        enc, dev = self.encoder, self.device
        uniq, inverse = self._unique(rows)
        ns, info = self._namespace("pooled") if self.cache is not None else ("", {})
        found = self._cached_or_encoded(
            uniq, ns, info, lambda texts: enc.encode(texts, dev, batch_size=batch_size), progress, batch_size)
        # a cached row is (1, D), a freshly encoded one (D,)
        emb = torch.stack([r.reshape(-1) for r in found]) if found else torch.zeros(0, enc.info.hidden_size, device=dev)
        table = torch.zeros(len(self.texts), enc.info.hidden_size, device=dev)
        table[torch.from_numpy(rows).to(dev)] = emb[torch.from_numpy(inverse).to(dev)]
        return table

    def _build_hidden(self, rows: np.ndarray, n_bottom: int, progress, batch_size: int) -> None:
        """Hidden states after the frozen bottom ``n_bottom`` layers for ``rows`` (``hidden`` mode).

        Falls back to ``tokens`` mode, with a note, when the model's partial forward does not match a
        full forward or the states would exceed ``$METASTUDIO_HIDDEN_CACHE_MAX_GB`` (default 4) of memory.
        """
        enc, dev = self.encoder, self.device
        uniq, inverse = self._unique(rows)
        lengths = [len(ids) for ids in enc.tokenizer(uniq, truncation=True, max_length=enc.max_length)["input_ids"]]
        need = sum(lengths) * enc.info.hidden_size * 4
        limit = env_gib(ENV_HIDDEN_MAX_GB, 4.0) * 1024**3
        if need > limit:
            self.notes.append(f"bottom-layer cache off: {need / 1024**3:.1f} GB of hidden states exceed "
                              f"{ENV_HIDDEN_MAX_GB}={limit / 1024**3:g}; the whole encoder runs per episode.")
            return
        probe = uniq[:4]
        try:
            probe_rows, kind = encode_hidden(enc, probe, dev, n_bottom)
            err = check_partial_forward(enc, probe, probe_rows, n_bottom, kind, dev,
                                        atol=5e-2 if dev.type == "cuda" else 1e-4)
        except Exception as exc:  # an architecture whose layers cannot be skipped this way
            err, kind = float("inf"), f"error: {exc}"
        if not err <= (5e-2 if dev.type == "cuda" else 1e-4):
            self.notes.append(f"bottom-layer cache off: the {enc.info.model_type} model's partial forward does "
                              f"not match a full one ({kind}, max diff {err:.2g}); the whole encoder runs per episode.")
            return
        top_names = enc.layer_parameter_names(enc.num_layers - n_bottom)
        ns, info = self._namespace(f"hidden@{n_bottom}:{kind}", exclude=top_names)
        states = self._cached_or_encoded(
            uniq, ns, info, lambda texts: encode_hidden(enc, texts, dev, n_bottom, batch_size=batch_size)[0],
            progress, batch_size)
        lens = torch.tensor([s.shape[0] for s in states], dtype=torch.int64, device=dev)  # type: ignore[union-attr]
        self._flat = torch.cat(states).to(dev)  # type: ignore[arg-type]
        self._lengths = lens
        self._offsets = torch.cumsum(lens, 0) - lens
        row_uniq = torch.full((len(self.texts),), -1, dtype=torch.int64)
        row_uniq[torch.from_numpy(rows)] = torch.from_numpy(inverse)
        self._row_uniq = row_uniq.to(dev)
        self.bottom = BottomSpec(n_bottom, kind)
        self.mode = "hidden"

    def summary(self) -> str | None:
        """One line on what the cache saved, e.g. ``"embedding cache: reused 22,500 of 22,500 texts"``;
        None in ``tokens`` mode."""
        if self.mode == "tokens":
            return None
        what = "embedding cache" if self.mode == "pooled" else \
            f"bottom-layer cache ({self.bottom.n_bottom} of {self.encoder.num_layers} layers)"  # type: ignore[union-attr]
        total = self.stats.hits + self.stats.misses
        where = " (in memory)" if self.in_memory_hit else ""
        line = f"{what}: reused {self.stats.hits:,} of {total:,} texts{where}, encoded {self.encoded_count:,}"
        if self.cache is None:
            line += " (disk cache off)"
        return line

    # ---- lookup ---------------------------------------------------------------------------------------
    def __call__(self, idx: torch.Tensor) -> Inputs:
        """Inputs for rows ``idx`` (B,): embeddings (B, D), or a tokenised batch (B, T) — with the cached
        bottom hidden states (B, T, D) in ``hidden`` mode."""
        if self.table is not None:
            return self.table[idx.to(self.device)]
        batch = self.encoder.tokenize([self.texts[i] for i in idx.tolist()], self.device)
        if self.bottom is not None:
            u = self._row_uniq[idx.to(self.device)]
            lens = self._lengths[u.clamp(min=0)]
            width = batch["attention_mask"].shape[1]
            # Rows outside the precomputed ones (u < 0) or a length mismatch: the full forward runs.
            if bool((u >= 0).all()) and int(lens.max()) == width:
                pos = torch.arange(width, device=self.device)
                valid = pos[None, :] < lens[:, None]
                gather = (self._offsets[u][:, None] + pos[None, :]).clamp(max=self._flat.shape[0] - 1)
                batch[BOTTOM_HIDDEN] = F.embedding(gather, self._flat) * valid[..., None]
                batch[BOTTOM_LAYERS] = self.bottom
        return batch
