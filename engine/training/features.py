"""Turn episode row indices into model inputs on the training device.

With a frozen encoder (no adapted and no trained encoder layers) every text the run can sample is
encoded once, up front, and episodes index that table: the encoder never runs inside the loops.
Otherwise each episode's texts are tokenised and the encoder runs with the fast weights.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from engine.algorithms.base import Inputs
from engine.models.backbone import TextEncoder


class FeatureSource:
    """Row indices (int64 (B,)) -> model inputs: embeddings (B, D) or a tokenised batch (B, T).

    Args:
        encoder: the base model.
        texts: every row's text (the :class:`~engine.data.LabelledData` table).
        device: where inputs are placed.
        frozen: precompute pooled embeddings for ``rows`` (True) or tokenise per call (False).
        rows: the row indices that episodes may use (those of the split labels); None = all.
        progress: called with (done, total) while precomputing.
    """

    def __init__(self, encoder: TextEncoder, texts: list[str], device: torch.device, frozen: bool,
                 rows: np.ndarray | None = None, progress: Callable[[int, int], None] | None = None,
                 batch_size: int = 128) -> None:
        self.encoder, self.texts, self.device, self.frozen = encoder, texts, device, frozen
        self.table: torch.Tensor | None = None
        self.encoded_count = 0
        if frozen:
            rows = np.arange(len(texts)) if rows is None else np.asarray(rows)
            table = torch.zeros(len(texts), encoder.info.hidden_size, device=device)
            chunk = max(batch_size * 4, 512)
            for start in range(0, len(rows), chunk):
                part = rows[start:start + chunk]
                table[torch.from_numpy(part).to(device)] = encoder.encode([texts[i] for i in part], device,
                                                                          batch_size=batch_size)
                if progress:
                    progress(min(start + chunk, len(rows)), len(rows))
            self.table = table
            self.encoded_count = len(rows)

    def __call__(self, idx: torch.Tensor) -> Inputs:
        if self.table is not None:
            return self.table[idx.to(self.device)]
        return self.encoder.tokenize([self.texts[i] for i in idx.tolist()], self.device)
