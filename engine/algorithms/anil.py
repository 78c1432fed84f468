"""ANIL: Almost No Inner Loop.

Raghu, Raghu, Bengio & Vinyals, "Rapid Learning or Feature Reuse? Towards Understanding the
Effectiveness of MAML", ICLR 2020 (arXiv:1909.09157), Section 4. MAML whose inner loop adapts only
the network's head; the outer loop still meta-trains the body (here: the top ``train_layers`` encoder
layers and the embedding scale) together with the head initialisation::

    head'_i = head − α ∇_head L_support(f_{body, head})     (inner_steps times; the body is fixed)
    (body, head) ← (body, head) − β ∇ Σ_i L_query(f_{body, head'_i})

Because the body is not adapted, its output is computed once per task and the inner loop runs the
head alone. ``first_order`` drops the second derivatives through the head's inner gradients.
"""

from __future__ import annotations

from collections.abc import Sequence

from engine.algorithms.maml import MAML


class ANIL(MAML):
    """ANIL (Raghu et al. 2020): MAML with a head-only inner loop.

    Args:
        adapted_names: must all be ``head.*`` parameters.
        first_order: drop second derivatives (default False: second order through the head).

    Raises:
        ValueError: an adapted parameter outside the head.
    """

    name = "anil"

    def __init__(self, model, *, adapted_names: Sequence[str], first_order: bool = False, **kwargs) -> None:
        outside = [n for n in adapted_names if not n.startswith("head.")]
        if outside or not adapted_names:
            raise ValueError(f"ANIL adapts only head parameters; got {outside[:3] or 'none'}")
        super().__init__(model, adapted_names=adapted_names, first_order=first_order, **kwargs)

    @classmethod
    def config_kwargs(cls, config) -> dict:
        return {"first_order": config.first_order}
