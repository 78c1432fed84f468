"""Meta-SGD: learned per-parameter inner learning rates.

Li, Zhou, Chen & Li, "Meta-SGD: Learning to Learn Quickly for Few-Shot Learning", arXiv:1707.09835
(2017), Algorithm 1. MAML's inner step with a learned vector α of the same shape as θ::

    θ'_i = θ − α ⊙ ∇_θ L_support(f_θ)
    (θ, α) ← (θ, α) − β ∇_(θ, α) Σ_i L_query(f_θ'_i)       (Adam, β = outer_lr)

α is initialised to ``inner_lr`` everywhere and is meta-trained with the initialisation. Even with
``first_order`` (the inner gradients taken as constants) α receives a gradient, −∇L_support ⊙ ∇L_query,
because it multiplies the inner gradient inside the graph.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from engine.algorithms.maml import MAML


class MetaSGD(MAML):
    """Meta-SGD (Li et al. 2017).

    Attributes:
        lrs: adapted parameter name -> learned learning rates, a tensor of that parameter's shape.
    """

    name = "metasgd"

    def __init__(self, model: nn.Module, *, adapted_names: Sequence[str], inner_lr: float,
                 first_order: bool = False, **kwargs) -> None:
        params = dict(model.named_parameters())
        self.lrs: dict[str, torch.Tensor] = {
            n: torch.full_like(params[n].detach(), inner_lr).requires_grad_(True) for n in adapted_names}
        super().__init__(model, adapted_names=adapted_names, inner_lr=inner_lr, first_order=first_order, **kwargs)

    @classmethod
    def config_kwargs(cls, config) -> dict:
        return {"first_order": config.first_order}

    def meta_parameters(self) -> list[torch.Tensor]:
        """The model's meta-parameters followed by the learned learning rates."""
        return [*super().meta_parameters(), *self.lrs.values()]

    def lr_for(self, name: str) -> torch.Tensor:
        return self.lrs[name]

    def extra_state(self) -> dict[str, torch.Tensor]:
        """``{"inner_lr.<parameter name>": α}`` (live tensors; copy to keep)."""
        return {f"inner_lr.{n}": t for n, t in self.lrs.items()}

    def load_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        """Copy saved learning rates in place (shapes must match).

        Raises:
            KeyError: a learning rate is missing from ``state``.
        """
        with torch.no_grad():
            for n, t in self.lrs.items():
                t.copy_(state[f"inner_lr.{n}"].to(t.device, t.dtype))
