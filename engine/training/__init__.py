"""The meta-training loop, its controls and the stored session that drives it.

Names load on first use (PEP 562), so ``from engine.training.records import StepRecord`` or
``engine.RunControl`` do not import torch; ``MetaTrainer`` and ``TrainingSession`` do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine._lazy import lazy_attributes

_LAZY = {
    "METRICS": "engine.training.records",
    "StepRecord": "engine.training.records",
    "RunControl": "engine.training.control",
    "MetaTrainer": "engine.training.trainer",
    "TrainingSession": "engine.training.session",
}
__all__ = ["METRICS", "MetaTrainer", "RunControl", "StepRecord", "TrainingSession"]

if TYPE_CHECKING:
    from engine.training.control import RunControl
    from engine.training.records import METRICS, StepRecord
    from engine.training.session import TrainingSession
    from engine.training.trainer import MetaTrainer

__getattr__, __dir__ = lazy_attributes(__name__, globals(), _LAZY)
