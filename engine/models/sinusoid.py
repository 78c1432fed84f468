"""The regression network of the MAML paper's sinusoid experiment.

Finn, Abbeel & Levine, ICML 2017 (arXiv:1703.03400), Section 5.1: "a neural network model with 2
hidden layers of size 40 with ReLU nonlinearities". Weights use PyTorch's default initialisation
(seeded by the run's ``seed``).
"""

from __future__ import annotations

import torch
from torch import nn


class SinusoidMLP(nn.Module):
    """MLP 1-40-40-1 with ReLU: x (B, 1) -> y (B, 1).

    The last layer is ``head`` and :meth:`embed` returns the last hidden layer (B, 40), so the
    algorithms' head-only paths (ANIL) treat it like the text model's head.
    """

    def __init__(self, hidden: int = 40) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(1, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, 1)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Last hidden layer (B, hidden) for inputs x (B, 1)."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))
