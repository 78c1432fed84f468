"""What every meta-learning algorithm shares: tasks, step metrics and the :class:`MetaLearner` API.

An algorithm sees a model (any ``nn.Module`` mapping inputs to predictions), the names of the
parameters its outer loop trains (``meta_names``) and of those its inner loop adapts
(``adapted_names``). It never copies the module: fast weights are dicts of tensors passed to
``torch.func.functional_call``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

Inputs = torch.Tensor | dict[str, torch.Tensor]


@dataclass
class HeadInputs:
    """Embeddings (B, D) already computed by the model's body: only the head runs on them."""

    features: torch.Tensor


@dataclass
class Task:
    """One episode, on the training device.

    Attributes:
        support_x: inputs of the support set: features (N*K, D), a tokenised batch, or (N*K, 1) for regression.
        support_y: targets (N*K,) int64 class indices in [0, N), or float (N*K, 1) for regression.
        query_x, query_y: the same for the query set (N*Q rows).
    """

    support_x: Inputs
    support_y: torch.Tensor
    query_x: Inputs
    query_y: torch.Tensor


@dataclass
class StepMetrics:
    """What one outer-loop step measured, averaged over the tasks of the meta-batch.

    ``outer_loss``: query loss after adaptation (nats for classification, MSE for regression).
    ``inner_loss_pre`` / ``inner_loss_post``: support loss before the first and after the last
    adaptation step (None for algorithms without an inner loop). ``query_accuracy``: fraction in
    [0, 1] (None for regression).
    """

    outer_loss: float
    inner_loss_pre: float | None = None
    inner_loss_post: float | None = None
    query_accuracy: float | None = None

    def as_dict(self) -> dict[str, float]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def classification_loss(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of logits (B, N) against class indices (B,)."""
    return F.cross_entropy(pred, y)


def regression_loss(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean squared error of predictions (B, 1) against targets (B, 1)."""
    return F.mse_loss(pred, y)


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of rows whose arg-max logit is the target."""
    return (logits.argmax(-1) == y).float().mean().item()


class MetaLearner(ABC):
    """Base class: owns the outer-loop optimiser over ``meta_names`` and evaluation plumbing.

    Args:
        model: the network; its parameters named in ``meta_names`` are the meta-parameters.
        meta_names: parameter names the outer loop trains (must require grad).
        adapted_names: parameter names the inner loop adapts per task.
        inner_steps, inner_lr: adaptation steps and their SGD step size.
        outer_lr: Adam learning rate of the outer loop.
        task_type: ``"classification"`` (cross-entropy, accuracy) or ``"regression"`` (MSE).
    """

    name: ClassVar[str] = ""
    has_inner_loop: ClassVar[bool] = True

    def __init__(self, model: nn.Module, *, meta_names: Sequence[str], adapted_names: Sequence[str],
                 inner_steps: int, inner_lr: float, outer_lr: float,
                 task_type: str = "classification") -> None:
        self.model = model
        params = dict(model.named_parameters())
        missing = [n for n in [*meta_names, *adapted_names] if n not in params]
        if missing:
            raise ValueError(f"unknown parameter names: {missing[:5]}")
        self.meta_names = list(meta_names)
        self.adapted_names = list(adapted_names)
        self.inner_steps = inner_steps
        self.inner_lr = inner_lr
        self.outer_lr = outer_lr
        self.task_type = task_type
        self.loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = (
            classification_loss if task_type == "classification" else regression_loss)
        self.optimizer = torch.optim.Adam(self.meta_parameters(), lr=outer_lr)

    @classmethod
    def config_kwargs(cls, config: Any) -> dict[str, Any]:
        """Constructor arguments this algorithm takes from an :class:`~engine.config.ExperimentConfig`
        besides the common ones (e.g. ``first_order``); none by default."""
        del config
        return {}

    # ---- parameters -------------------------------------------------------------------------
    def meta_parameters(self) -> list[nn.Parameter]:
        """The tensors the outer loop updates (the model's and any the algorithm adds)."""
        params = dict(self.model.named_parameters())
        return [params[n] for n in self.meta_names]

    def extra_state(self) -> dict[str, torch.Tensor]:
        """Algorithm-owned meta-parameters (e.g. Meta-SGD's learning rates) to checkpoint."""
        return {}

    def load_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`extra_state` returned (nothing to restore by default)."""
        del state

    def _fn(self, params: dict[str, torch.Tensor], x: Inputs) -> torch.Tensor:
        if self._head_only and isinstance(x, HeadInputs):
            return functional_call(self.model.head, {n[5:]: w for n, w in params.items()}, (x.features,))
        return functional_call(self.model, params, (x,))

    @property
    def _head_only(self) -> bool:
        """True when the inner loop adapts only ``head.*`` of a model with ``embed`` + ``head``."""
        return bool(self.adapted_names) and all(n.startswith("head.") for n in self.adapted_names) \
            and hasattr(self.model, "embed") and hasattr(self.model, "head")

    def body_inputs(self, x: Inputs) -> Inputs:
        """Inputs for the inner loop: with a head-only inner loop, the embedding is computed once
        per task (still differentiable w.r.t. trained encoder layers) instead of once per step."""
        if self._head_only:
            return HeadInputs(self.model.embed(x))
        return x

    def _metric(self, pred: torch.Tensor, y: torch.Tensor) -> float | None:
        return accuracy(pred, y) if self.task_type == "classification" else None

    # ---- the two loops ------------------------------------------------------------------------
    @abstractmethod
    def outer_step(self, tasks: Sequence[Task]) -> StepMetrics:
        """One outer-loop update from a meta-batch of tasks; returns what it measured."""

    @abstractmethod
    def predict_query(self, task: Task, steps: int | None = None) -> torch.Tensor:
        """Adapt to ``task``'s support set (without touching meta-parameters) and return query predictions.

        ``steps`` overrides the number of adaptation steps (evaluation after 1/5/10 steps).
        """

    def evaluate(self, task: Task, steps: int | None = None) -> tuple[float, float | None]:
        """(query loss, query accuracy or None) after adaptation; model in eval mode, nothing changes."""
        was_training = self.model.training
        self.model.eval()
        try:
            pred = self.predict_query(task, steps)
            with torch.no_grad():
                return self.loss_fn(pred, task.query_y).item(), self._metric(pred, task.query_y)
        finally:
            self.model.train(was_training)

    def state(self) -> dict[str, Any]:
        """Optimizer state for checkpoints."""
        return {"optimizer": self.optimizer.state_dict()}
