"""Prototypical Networks.

Snell, Swersky & Zemel, "Prototypical Networks for Few-shot Learning", NeurIPS 2017
(arXiv:1703.05175), Algorithm 1. Each class's prototype is the mean embedding of its support
examples; a query's logits are negative squared Euclidean distances to the prototypes. The outer loop
trains the embedding (the encoder layers in ``meta_names`` and the embedding scale); there is no
inner loop, so ``inner_steps`` and ``inner_lr`` are unused.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from engine.algorithms.base import MetaLearner, StepMetrics, Task
from engine.algorithms.vectorized import vectorized_protonet_step


def prototype_logits(support: torch.Tensor, support_y: torch.Tensor, query: torch.Tensor,
                     n_way: int) -> torch.Tensor:
    """Logits (Q, N) = −‖query − prototype‖² for support (S, D), support_y (S,), query (Q, D)."""
    protos = torch.zeros(n_way, support.shape[-1], dtype=support.dtype, device=support.device)
    protos = protos.index_add(0, support_y, support)
    counts = torch.bincount(support_y, minlength=n_way).clamp(min=1).to(support.dtype)
    protos = protos / counts[:, None]
    return -torch.cdist(query, protos).pow(2)


class ProtoNet(MetaLearner):
    """Prototypical Networks (Snell et al. 2017); needs a model with an ``embed(x) -> (B, D)`` method."""

    name = "protonet"
    has_inner_loop = False
    vectorize = True  # stack meta-batches of equal-shaped tasks (False: always per task)

    def _logits(self, task: Task) -> torch.Tensor:
        # embed() returns unit vectors times the learned scale s, so ‖a − b‖² = s²(2 − 2cos); dividing
        # by s keeps the logits' spread ~s·Δcos, a temperature the outer loop learns.
        return self.logits_from_embeddings(self.model.embed(task.support_x), task.support_y,
                                           self.model.embed(task.query_x))

    def logits_from_embeddings(self, support: torch.Tensor, support_y: torch.Tensor,
                               query: torch.Tensor) -> torch.Tensor:
        """Logits (Q, N) from support embeddings (S, D) with int64 labels (S,) and query embeddings (Q, D)
        (so a fixed support set is embedded once, e.g. by :class:`~engine.export.FewShotClassifier`)."""
        n_way = int(support_y.max().item()) + 1
        return prototype_logits(support, support_y, query, n_way) / self.model.log_scale.exp()

    def outer_step(self, tasks: Sequence[Task]) -> StepMetrics:
        # Stackable meta-batches (cached embeddings) run as one batched computation; else per task.
        metrics = vectorized_protonet_step(self, tasks)
        if metrics is not None:
            return metrics
        self.optimizer.zero_grad(set_to_none=True)
        outer = acc = 0.0
        for task in tasks:
            logits = self._logits(task)
            loss = self.loss_fn(logits, task.query_y)
            (loss / len(tasks)).backward()
            outer += loss.item()
            acc += self._metric(logits.detach(), task.query_y) or 0.0
        self.optimizer.step()
        return StepMetrics(outer / len(tasks), query_accuracy=acc / len(tasks))

    def predict_query(self, task: Task, steps: int | None = None) -> torch.Tensor:
        with torch.no_grad():
            return self._logits(task)
