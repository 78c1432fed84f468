"""Meta-learning algorithms, one file each, registered by their config name."""

from __future__ import annotations

from engine.algorithms.base import MetaLearner, StepMetrics, Task
from engine.algorithms.maml import FOMAML, MAML
from engine.algorithms.protonet import ProtoNet

REGISTRY: dict[str, type[MetaLearner]] = {"maml": MAML, "fomaml": FOMAML, "protonet": ProtoNet}

__all__ = ["FOMAML", "MAML", "REGISTRY", "MetaLearner", "ProtoNet", "StepMetrics", "Task"]
