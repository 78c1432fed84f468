"""Model-Agnostic Meta-Learning, second and first order.

Finn, Abbeel & Levine, "Model-Agnostic Meta-Learning for Fast Adaptation of Deep Networks",
ICML 2017 (arXiv:1703.03400), Algorithm 2. First-order MAML (FOMAML) is the approximation of
Section 5.2 that drops the second derivatives.

Per meta-iteration, for each task T_i of the meta-batch::

    θ'_i = θ − α ∇_θ L_support(f_θ)          (repeated inner_steps times; the inner loop)
    θ ← θ − β ∇_θ Σ_i L_query(f_θ'_i)        (the outer loop; Adam with step β = outer_lr)

The inner loop is functional: fast weights are a dict of tensors fed to ``functional_call``. With
``first_order=False`` the inner gradients are built with ``create_graph=True`` so the outer gradient
flows through them (true second order); with ``first_order=True`` they are constants.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from engine.algorithms.base import Inputs, MetaLearner, StepMetrics, Task
from engine.algorithms.vectorized import vectorized_outer_step


class MAML(MetaLearner):
    """MAML (Finn et al. 2017). See the module docstring for the update rule.

    Args:
        first_order: drop second derivatives (FOMAML). Everything else as :class:`MetaLearner`.
    """

    name = "maml"
    vectorize = True  # run stackable meta-batches as one batched computation (False: always per task)

    def __init__(self, model, *, first_order: bool = False, **kwargs) -> None:
        super().__init__(model, **kwargs)
        self.first_order = first_order

    def _initial_fast_weights(self, track: bool) -> dict[str, torch.Tensor]:
        """Adapted parameters as the inner loop's starting point.

        Meta-trained ones stay the live parameters (so the outer gradient reaches them); adapted but
        not meta-trained ones become detached leaves that only the inner loop differentiates.
        """
        params = dict(self.model.named_parameters())
        meta = set(self.meta_names) if track else set()
        return {n: params[n] if n in meta else params[n].detach().requires_grad_(True)
                for n in self.adapted_names}

    def inner_loop(self, fast: dict[str, torch.Tensor], x: Inputs, y: torch.Tensor, steps: int,
                   create_graph: bool) -> tuple[dict[str, torch.Tensor], float | None]:
        """Run ``steps`` SGD steps on the support loss; returns (fast weights, loss before step 1)."""
        pre = None
        for _ in range(steps):
            loss = self.loss_fn(self._fn(fast, x), y)
            if pre is None:
                pre = loss.item()
            grads = torch.autograd.grad(loss, list(fast.values()), create_graph=create_graph)
            fast = {n: w - self.lr_for(n) * g for (n, w), g in zip(fast.items(), grads, strict=True)}
        return fast, pre

    def lr_for(self, name: str) -> float | torch.Tensor:
        """Inner learning rate of parameter ``name`` (a scalar here; Meta-SGD learns a tensor)."""
        return self.inner_lr

    def outer_step(self, tasks: Sequence[Task]) -> StepMetrics:
        # Tasks whose inputs stack (cached embeddings, sinusoid points) run as one batched computation
        # (engine.algorithms.vectorized); the per-task loop below is the general path.
        metrics = vectorized_outer_step(self, tasks)
        if metrics is not None:
            return metrics
        self.optimizer.zero_grad(set_to_none=True)
        outer = pre = post = acc = 0.0
        for task in tasks:
            sx, qx = self.body_inputs(task.support_x), self.body_inputs(task.query_x)
            fast = self._initial_fast_weights(track=True)
            fast, p0 = self.inner_loop(fast, sx, task.support_y, self.inner_steps,
                                       create_graph=not self.first_order)
            with torch.no_grad():
                post += self.loss_fn(self._fn(fast, sx), task.support_y).item()
            pred = self._fn(fast, qx)
            loss = self.loss_fn(pred, task.query_y)
            (loss / len(tasks)).backward()
            outer += loss.item()
            pre += p0 if p0 is not None else post
            m = self._metric(pred.detach(), task.query_y)
            acc += m if m is not None else 0.0
        self.optimizer.step()
        n = len(tasks)
        return StepMetrics(outer / n, pre / n, post / n, acc / n if self.task_type == "classification" else None)

    def adapted_weights(self, support_x: Inputs, support_y: torch.Tensor,
                        steps: int | None = None) -> dict[str, torch.Tensor]:
        """The inner loop's result on a support set: ``{adapted name: detached tensor}``.

        Meta-parameters are untouched; ``functional_call(model, weights, (x,))`` is the adapted model.
        ``steps`` overrides ``inner_steps``.
        """
        steps = self.inner_steps if steps is None else steps
        with torch.no_grad():
            sx = self.body_inputs(support_x)
        with torch.enable_grad():
            fast = self._initial_fast_weights(track=False)
            fast, _ = self.inner_loop(fast, sx, support_y, steps, create_graph=False)
        return {n: w.detach() for n, w in fast.items()}

    def predict_adapted(self, weights: dict[str, torch.Tensor], query_x: Inputs) -> torch.Tensor:
        """Query logits (Q, N) of the model with ``weights`` from :meth:`adapted_weights` (no grad)."""
        with torch.no_grad():
            return self._fn(weights, self.body_inputs(query_x))

    def predict_query(self, task: Task, steps: int | None = None) -> torch.Tensor:
        return self.predict_adapted(self.adapted_weights(task.support_x, task.support_y, steps), task.query_x)


class FOMAML(MAML):
    """First-order MAML (Finn et al. 2017, Section 5.2): MAML without second derivatives."""

    name = "fomaml"

    def __init__(self, model, **kwargs) -> None:
        kwargs["first_order"] = True
        super().__init__(model, **kwargs)
