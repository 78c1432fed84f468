"""What the training loop yields per meta-iteration (no torch here: the window imports it at start-up)."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["METRICS", "StepRecord"]

METRICS = ("outer_loss", "inner_loss_pre", "inner_loss_post", "query_accuracy", "val_accuracy", "val_loss")


@dataclass
class StepRecord:
    """What one meta-iteration produced.

    Attributes:
        step: the iteration number, 1-based.
        total: the iteration budget (``meta_iterations``).
        elapsed_s: seconds of training so far (excluding set-up and pauses).
        metrics: metric name -> value (see ``METRICS``); ``val_*`` only on validation steps.
    """

    step: int
    total: int
    elapsed_s: float
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def eta_s(self) -> float:
        """Seconds left at the current pace."""
        return self.elapsed_s / max(self.step, 1) * (self.total - self.step)
