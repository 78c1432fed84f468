"""Sinusoid regression tasks (Finn, Abbeel & Levine, ICML 2017, arXiv:1703.03400, Section 5.1).

Each task is y = A·sin(x − φ) with amplitude A ~ U[0.1, 5.0] and phase φ ~ U[0, π]; inputs are
x ~ U[−5, 5]. A task gives K support points (``k_shot``) and Q query points (``q_query``), drawn
independently. ``n_way`` does not apply. There are no classes to hold out: meta-train, meta-val and
meta-test tasks are independent draws from separate seeded streams.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np
import torch

AMPLITUDE = (0.1, 5.0)
PHASE = (0.0, math.pi)
X_RANGE = (-5.0, 5.0)
# A stable identifier of this task family (stored as the run's data fingerprint).
FINGERPRINT = hashlib.sha256(f"sinusoid A{AMPLITUDE} phase{PHASE} x{X_RANGE}".encode()).hexdigest()


@dataclass
class SinusoidEpisode:
    """One regression task.

    Attributes:
        amplitude, phase: the task's A and φ.
        support_x, support_y: float32 tensors of shape (K, 1).
        query_x, query_y: float32 tensors of shape (Q, 1).
    """

    amplitude: float
    phase: float
    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor


class SinusoidSampler:
    """Seeded stream of sinusoid tasks with K support and Q query points.

    Args:
        k_shot: support points per task (K >= 1).
        q_query: query points per task (Q >= 1).
        seed: the same seed gives the same task sequence.

    Raises:
        ValueError: K or Q below 1.
    """

    def __init__(self, k_shot: int, q_query: int, seed: int = 0) -> None:
        if k_shot < 1 or q_query < 1:
            raise ValueError("k_shot and q_query must be >= 1")
        self.k_shot, self.q_query = k_shot, q_query
        self.rng = np.random.default_rng(seed)

    def sample(self) -> SinusoidEpisode:
        """Draw one task (see :class:`SinusoidEpisode` for shapes)."""
        amp = self.rng.uniform(*AMPLITUDE)
        phase = self.rng.uniform(*PHASE)
        x = self.rng.uniform(*X_RANGE, size=(self.k_shot + self.q_query, 1))
        y = amp * np.sin(x - phase)
        xt = torch.from_numpy(x.astype(np.float32))
        yt = torch.from_numpy(y.astype(np.float32))
        k = self.k_shot
        return SinusoidEpisode(float(amp), float(phase), xt[:k], yt[:k], xt[k:], yt[k:])

    def sample_batch(self, size: int) -> list[SinusoidEpisode]:
        """Draw ``size`` tasks (one meta-batch)."""
        return [self.sample() for _ in range(size)]
