"""Meta-learning algorithms, one file each, registered by their config name."""

from __future__ import annotations

from engine.algorithms.anil import ANIL
from engine.algorithms.base import MetaLearner, StepMetrics, Task
from engine.algorithms.lora_maml import LoRAMAML
from engine.algorithms.maml import FOMAML, MAML
from engine.algorithms.metasgd import MetaSGD
from engine.algorithms.protonet import ProtoNet
from engine.algorithms.reptile import Reptile

REGISTRY: dict[str, type[MetaLearner]] = {"maml": MAML, "fomaml": FOMAML, "reptile": Reptile, "anil": ANIL,
                                          "metasgd": MetaSGD, "protonet": ProtoNet, "lora_maml": LoRAMAML}

__all__ = ["ANIL", "FOMAML", "MAML", "REGISTRY", "LoRAMAML", "MetaLearner", "MetaSGD", "ProtoNet", "Reptile",
           "StepMetrics", "Task"]
