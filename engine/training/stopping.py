"""Stop conditions of a meta-training run, besides the iteration budget and a user's Stop."""

from __future__ import annotations

import math


class SmoothedPlateau:
    """Stop when the smoothed outer loss stops moving.

    The outer loss is smoothed by an exponential moving average with bias correction
    (``ema_t = β·ema_{t-1} + (1-β)·loss_t``, reported as ``ema_t / (1 - β^t)``). When
    ``|smoothed_t − smoothed_{t−1}|`` stays below ``threshold`` for ``patience`` consecutive
    iterations, :meth:`update` returns True. ``threshold = 0`` turns the condition off.
    """

    def __init__(self, threshold: float, patience: int, beta: float = 0.98) -> None:
        self.threshold, self.patience, self.beta = threshold, patience, beta
        self._ema = 0.0
        self._t = 0
        self._prev: float | None = None
        self.quiet = 0
        self.value: float | None = None

    def update(self, loss: float) -> bool:
        """Feed one outer loss; True when the plateau condition is met."""
        if not math.isfinite(loss):
            return False
        self._t += 1
        self._ema = self.beta * self._ema + (1 - self.beta) * loss
        self.value = self._ema / (1 - self.beta ** self._t)
        if self._prev is not None and self.threshold > 0:
            self.quiet = self.quiet + 1 if abs(self.value - self._prev) < self.threshold else 0
        self._prev = self.value
        return self.threshold > 0 and self.quiet >= self.patience
