"""The meta-training loop, its controls and the stored session that drives it."""

from engine.training.control import RunControl
from engine.training.session import TrainingSession
from engine.training.trainer import METRICS, MetaTrainer, StepRecord

__all__ = ["METRICS", "MetaTrainer", "RunControl", "StepRecord", "TrainingSession"]
