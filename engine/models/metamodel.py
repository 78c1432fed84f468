"""The network that meta-learning adapts: a pooled text encoder, a feature scale and an N-way head.

``MetaModel.forward(x)`` accepts either precomputed pooled embeddings (float (B, D), used when the
encoder is frozen so every text is encoded once per run) or a tokenised batch (dict of int64 (B, T)),
and returns logits (B, N). Everything is a plain ``nn.Module`` so the algorithms can run it with
``torch.func.functional_call`` and swapped-in fast weights.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from engine.models.backbone import TextEncoder


class MetaModel(nn.Module):
    """Encoder + L2-normalised embedding x learnable scale + linear N-way head.

    Args:
        encoder: the pooled transformer.
        n_way: head outputs (N).
        init_scale: initial multiplier of the unit-norm embedding (a learned temperature).

    Parameter groups (names relative to this module): ``head.*`` (the classification head),
    ``log_scale`` and ``encoder.model.<layers>.<i>.*`` (see :meth:`TextEncoder.layer_parameter_names`).
    """

    def __init__(self, encoder: TextEncoder, n_way: int, init_scale: float = 10.0) -> None:
        super().__init__()
        self.encoder = encoder
        dim = encoder.info.hidden_size
        self.log_scale = nn.Parameter(torch.tensor(math.log(init_scale)))
        self.head = nn.Linear(dim, n_way)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def embed(self, x: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
        """Scaled unit-norm embeddings (B, D) from features (B, D) or a tokenised batch."""
        feats = x if isinstance(x, torch.Tensor) else self.encoder(x)
        return F.normalize(feats.float(), dim=-1) * self.log_scale.exp()

    def forward(self, x: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(self.embed(x))

    def encoder_param_names(self, top: int) -> list[str]:
        """Full names of the top ``top`` encoder layers' parameters (for adapt/train layer sets)."""
        return [f"encoder.{n}" for n in self.encoder.layer_parameter_names(top)]
