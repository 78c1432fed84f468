"""Reptile.

Nichol, Achiam & Schulman, "On First-Order Meta-Learning Algorithms", arXiv:1803.02999 (2018),
Algorithm 2 (the batched version). Per meta-iteration, for a meta-batch of n tasks::

    for each task T_i:
        W_i = SGD(L_support(T_i), start = a copy of θ, inner_steps steps of size inner_lr)
    θ ← θ + ε · (1/n) Σ_i (W_i − θ)            (ε = outer_lr; a plain step, no Adam)

Reptile needs no query set and no second derivatives: the outer update moves the initialisation
toward the task-adapted weights. The inner loop adapts every meta-parameter (head, embedding scale,
trained encoder layers) plus any adapted-only layers; the query set is used only to report the
outer loss and accuracy of the adapted weights. With ``inner_steps = 1`` Reptile reduces to joint
training on the expected loss (the paper's Section 5), so it needs ``inner_steps ≥ 2`` to meta-learn.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from engine.algorithms.base import StepMetrics, Task
from engine.algorithms.maml import MAML
from engine.algorithms.vectorized import vectorized_reptile_step


class Reptile(MAML):
    """Reptile (Nichol et al. 2018); the outer step size ε is ``outer_lr`` (typical values 0.1 to 1).

    Args: as :class:`~engine.algorithms.maml.MAML` (``first_order`` is implied). ``adapted_names`` is
    widened to include every name in ``meta_names``: a meta-parameter the inner loop did not move
    would never be updated.
    """

    name = "reptile"

    def __init__(self, model, *, meta_names: Sequence[str], adapted_names: Sequence[str], **kwargs) -> None:
        kwargs.pop("first_order", None)
        adapted = list(dict.fromkeys([*adapted_names, *meta_names]))
        super().__init__(model, meta_names=meta_names, adapted_names=adapted, first_order=True, **kwargs)

    @property
    def epsilon(self) -> float:
        """The outer step size ε (= ``outer_lr``)."""
        return self.outer_lr

    def adapt(self, task: Task, initial: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], float | None]:
        """Run the inner SGD loop on ``task``'s support set from a fresh copy of ``initial``.

        Returns (adapted weights, detached; support loss before the first step).
        """
        fast = {n: w.clone().requires_grad_(True) for n, w in initial.items()}
        with torch.no_grad():
            sx = self.body_inputs(task.support_x)
        with torch.enable_grad():
            fast, pre = self.inner_loop(fast, sx, task.support_y, self.inner_steps, create_graph=False)
        return {n: w.detach() for n, w in fast.items()}, pre

    def outer_step(self, tasks: Sequence[Task]) -> StepMetrics:
        # Stackable meta-batches adapt all tasks at once (engine.algorithms.vectorized); else per task.
        metrics = vectorized_reptile_step(self, tasks)
        if metrics is not None:
            return metrics
        params = dict(self.model.named_parameters())
        # θ as it is now: a copy, never a live reference (else θ̃ − θ would read as 0 after the update).
        initial = {n: params[n].detach().clone() for n in self.adapted_names}
        delta = {n: torch.zeros_like(initial[n]) for n in self.meta_names}
        outer = pre = post = acc = 0.0
        for task in tasks:
            fast, p0 = self.adapt(task, initial)
            for n in self.meta_names:
                delta[n] += fast[n] - initial[n]
            with torch.no_grad():
                sx, qx = self.body_inputs(task.support_x), self.body_inputs(task.query_x)
                post_loss = self.loss_fn(self._fn(fast, sx), task.support_y).item()
                pred = self._fn(fast, qx)
                outer += self.loss_fn(pred, task.query_y).item()
            post += post_loss
            pre += p0 if p0 is not None else post_loss
            m = self._metric(pred, task.query_y)
            acc += m if m is not None else 0.0
        n = len(tasks)
        with torch.no_grad():
            for name in self.meta_names:
                params[name].add_(delta[name], alpha=self.epsilon / n)
        return StepMetrics(outer / n, pre / n, post / n, acc / n if self.task_type == "classification" else None)
