"""A bounded on-disk cache of what a frozen encoder computes per text.

With a frozen encoder (ProtoNet, ANIL, head-only MAML) every text's pooled embedding is the same in
every run on the same model, so it is computed once and kept here; a second run on the same data and
model starts meta-training without encoding anything. Partially trained encoders keep the hidden
states of their frozen bottom layers here (one row per token), so only the top layers run per episode.

Layout: ``<root>/<namespace>/<shard>.safetensors``. A *namespace* is one way of encoding: a hash of
(model fingerprint, weight digest, max length, pooling, what is stored, precision); see
:func:`namespace_key`. A *shard* holds many texts: ``keys`` uint8 (n, 16) (the first 16 bytes of the
SHA-256 of each text), ``lengths`` int32 (n,) (rows per text: 1 for pooled embeddings, the token count
for hidden states) and ``data`` float32 (sum(lengths), D).

Safety: shards are written to a temporary file and renamed (``os.replace``), so readers in other
processes never see half a file and two writers never clash (shard names are random). Any unreadable
shard counts as a miss and is removed. Deleting the folder at any time is safe. The cache is bounded:
after each write the least recently used shards (by file modification time, which a hit refreshes)
are removed until the total is under ``max_bytes``.

Location: ``$METASTUDIO_CACHE`` if set (``off`` / ``0`` / ``none`` disables caching), else
``platformdirs.user_cache_path("MetaStudio") / "embeddings"``. Size bound: ``$METASTUDIO_CACHE_MAX_GB``
(default 2).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from engine.errors import ConfigError

FORMAT_VERSION = 1
KEY_BYTES = 16
DEFAULT_MAX_BYTES = 2 * 1024**3
ENV_DIR = "METASTUDIO_CACHE"
ENV_MAX_GB = "METASTUDIO_CACHE_MAX_GB"
_OFF = {"off", "0", "none", "false", "no"}


def default_cache_dir() -> Path | None:
    """The cache folder: ``$METASTUDIO_CACHE``, or the user cache folder; None when caching is off."""
    env = os.environ.get(ENV_DIR)
    if env is not None and env.strip().lower() in _OFF:
        return None
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_path

    return user_cache_path("MetaStudio", appauthor=False) / "embeddings"


def env_gib(name: str, default: float) -> float:
    """A size in GiB from the environment variable ``name`` (``default`` when unset or empty).

    Raises:
        ConfigError: the value is not a number >= 0 (field = the variable's name).
    """
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise ConfigError(f"{raw!r} is not a size in GB.", field=name, hint="Use a number such as 2 or 0.5 (0 = off).")
    return value


def default_max_bytes() -> int:
    """The size bound in bytes: ``$METASTUDIO_CACHE_MAX_GB`` (GiB, see :func:`env_gib`) or 2 GiB.

    Raises:
        ConfigError: the variable holds no valid size.
    """
    return int(env_gib(ENV_MAX_GB, DEFAULT_MAX_BYTES / 1024**3) * 1024**3)


def text_keys(texts: Iterable[str]) -> list[bytes]:
    """The cache key of each text: the first 16 bytes of SHA-256 of its UTF-8 encoding."""
    return [hashlib.sha256(t.encode("utf-8")).digest()[:KEY_BYTES] for t in texts]


def weight_digest(module: nn.Module, exclude: Iterable[str] = (), samples: int = 64) -> str:
    """A cheap content digest of a module's weights: names, shapes and ``samples`` strided values each.

    It changes when the weights do (a retrained model saved into the same folder), while costing
    microseconds per tensor instead of hashing every byte. Parameters named in ``exclude`` (those a run
    trains) are left out, so a digest of the frozen part stays valid while the rest is trained.
    """
    skip = set(exclude)
    h = hashlib.sha256()
    with torch.no_grad():
        for name, t in sorted(module.state_dict().items()):
            if name in skip or not isinstance(t, torch.Tensor):
                continue
            flat = t.detach().reshape(-1)
            step = max(1, flat.numel() // samples)
            sample = flat[::step][:samples].to("cpu", torch.float64).numpy()
            h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
            h.update(sample.tobytes())
    return h.hexdigest()[:16]


def namespace_key(fingerprint: str, weights: str, max_length: int, pooling: str, kind: str,
                  precision: str) -> str:
    """The folder name of one way of encoding texts.

    Args:
        fingerprint: :attr:`~engine.models.backbone.EncoderInfo.fingerprint` (source + config).
        weights: :func:`weight_digest` of the frozen weights.
        max_length: tokens per text (truncation changes the result).
        pooling: ``mean`` / ``cls`` / ``last`` (or ``none`` for hidden states).
        kind: what is stored, e.g. ``pooled`` or ``hidden@4`` (hidden states after 4 layers).
        precision: ``fp32`` or ``bf16`` (CUDA autocast results differ from CPU float32).
    """
    blob = json.dumps({"v": FORMAT_VERSION, "fingerprint": fingerprint, "weights": weights,
                       "max_length": max_length, "pooling": pooling, "kind": kind, "precision": precision},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


@dataclass
class CacheStats:
    """What one lookup-and-fill found: ``hits`` and ``misses`` count unique texts; bytes are on disk;
    ``encode_s`` is the wall time spent in the encoder's forward passes for the misses (seconds)."""

    hits: int = 0
    misses: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    encode_s: float = 0.0
    errors: list[str] = field(default_factory=list)

    @property
    def reused_fraction(self) -> float:
        """hits / (hits + misses), 0 when nothing was looked up."""
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


class EmbeddingCache:
    """A folder of namespaces of shards (see the module docstring).

    Args:
        root: the cache folder (created on first write); None = :func:`default_cache_dir`.
        max_bytes: the size bound; None = :func:`default_max_bytes`.

    Never raises for I/O problems after construction: an unreadable shard is a miss, an unwritable
    folder just means nothing is kept (the reason lands in :attr:`CacheStats.errors`).
    """

    def __init__(self, root: str | Path, max_bytes: int | None = None) -> None:
        self.root = Path(root).expanduser()
        self.max_bytes = default_max_bytes() if max_bytes is None else int(max_bytes)

    @classmethod
    def from_env(cls) -> EmbeddingCache | None:
        """The cache at the default location, or None when ``$METASTUDIO_CACHE`` turns it off."""
        root = default_cache_dir()
        return None if root is None else cls(root)

    # ---- reading ------------------------------------------------------------------------------
    def _shards(self, namespace: str) -> list[Path]:
        folder = self.root / namespace
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.glob("*.safetensors") if not p.name.startswith(".tmp-"))

    def lookup(self, namespace: str, keys: Sequence[bytes],
               stats: CacheStats | None = None) -> tuple[np.ndarray, list[torch.Tensor | None]]:
        """Find ``keys`` in a namespace.

        Returns:
            ``(hit, rows)``: ``hit`` bool (len(keys),); ``rows[i]`` float32 (L_i, D) on the CPU for a hit,
            None for a miss. Duplicate keys are all served.
        """
        from safetensors import safe_open

        want: dict[bytes, list[int]] = {}
        for i, k in enumerate(keys):
            want.setdefault(k, []).append(i)
        rows: list[torch.Tensor | None] = [None] * len(keys)
        hit = np.zeros(len(keys), dtype=bool)
        for path in self._shards(namespace):
            if not want:
                break
            try:
                with safe_open(str(path), framework="pt") as f:
                    skeys = f.get_tensor("keys").numpy()
                    found = [(j, want[bytes(k)]) for j, k in enumerate(skeys) if bytes(k) in want]
                    if not found:
                        continue
                    lengths = f.get_tensor("lengths").to(torch.int64)
                    data = f.get_tensor("data")
                size = path.stat().st_size
                os.utime(path)  # a hit refreshes the shard's place in the LRU order
            except Exception as err:  # a shard deleted meanwhile, or damaged: a miss; drop a damaged one
                if path.exists():
                    if stats is not None:
                        stats.errors.append(f"unreadable cache shard {path.name} removed: {err}")
                    path.unlink(missing_ok=True)
                continue
            if stats is not None:
                stats.bytes_read += size
            offsets = torch.zeros(len(lengths) + 1, dtype=torch.int64)
            torch.cumsum(lengths, 0, out=offsets[1:])
            for j, idxs in found:
                row = data[offsets[j]:offsets[j + 1]]
                for i in idxs:
                    rows[i] = row
                    hit[i] = True
                want.pop(bytes(skeys[j]), None)
        return hit, rows

    # ---- writing ------------------------------------------------------------------------------
    def store(self, namespace: str, keys: Sequence[bytes], rows: Sequence[torch.Tensor] | torch.Tensor,
              stats: CacheStats | None = None, info: dict | None = None) -> Path | None:
        """Write one shard under ``keys``, then enforce the size bound.

        Args:
            rows: one float (L_i, D) tensor per key, or one (n, D) tensor (one row per key).

        Returns the shard's path, or None when nothing could be written (the reason goes to ``stats``).
        """
        if not len(keys) or self.max_bytes <= 0:
            return None
        from safetensors.torch import save_file

        folder = self.root / namespace
        if isinstance(rows, torch.Tensor):
            lengths = torch.ones(rows.shape[0], dtype=torch.int32)
            data = rows.detach().to("cpu", torch.float32).contiguous()
        else:
            lengths = torch.tensor([r.shape[0] for r in rows], dtype=torch.int32)
            data = torch.cat([r.detach().to("cpu", torch.float32) for r in rows]).contiguous()
        key_arr = torch.from_numpy(np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), KEY_BYTES).copy())
        tmp = None
        try:
            folder.mkdir(parents=True, exist_ok=True)
            info_path = folder / "namespace.json"
            if info and not info_path.exists():
                _write_text_atomic(info_path, json.dumps(info, indent=1, sort_keys=True))
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".safetensors", dir=folder)
            os.close(fd)
            save_file({"keys": key_arr, "lengths": lengths, "data": data}, tmp,
                      metadata={"format": str(FORMAT_VERSION), "namespace": namespace})
            path = folder / f"{uuid.uuid4().hex}.safetensors"
            os.replace(tmp, path)
            tmp = None
            if stats is not None:
                stats.bytes_written += path.stat().st_size
        except OSError as err:
            if stats is not None:
                stats.errors.append(f"cannot write the embedding cache in {folder}: {err}")
            return None
        finally:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
        self.evict()
        return path

    # ---- size ---------------------------------------------------------------------------------
    def shard_files(self) -> list[Path]:
        """Every shard of every namespace."""
        if not self.root.is_dir():
            return []
        return [p for p in self.root.glob("*/*.safetensors") if not p.name.startswith(".tmp-")]

    def size_bytes(self) -> int:
        """Bytes the shards take on disk now."""
        total = 0
        for p in self.shard_files():
            try:
                total += p.stat().st_size
            except OSError:
                pass
        return total

    def evict(self, max_bytes: int | None = None) -> int:
        """Remove least recently used shards until the total is at most ``max_bytes``; returns bytes freed."""
        limit = self.max_bytes if max_bytes is None else max_bytes
        files = []
        for p in self.shard_files():
            try:
                st = p.stat()
            except OSError:
                continue
            files.append((st.st_mtime_ns, st.st_size, p))
        total = sum(s for _m, s, _p in files)
        freed = 0
        for _mtime, size, p in sorted(files, key=lambda x: x[0]):
            if total <= limit:
                break
            try:
                p.unlink()
            except OSError:
                continue
            total -= size
            freed += size
        return freed

    def clear(self) -> None:
        """Remove every shard (the folders stay)."""
        self.evict(0)


def _write_text_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
