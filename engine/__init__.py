"""MetaStudio's headless engine: config, data, models, algorithms, training, storage.

Nothing here imports Qt; the CLI and the window both use this public API.
"""

from engine import _env  # noqa: F401  (first: sets the OpenMP wait policy before torch loads)
from engine.config import ALGORITHMS, ExperimentConfig, apply_overrides, load_config, validate_config
from engine.errors import (
    ConfigError,
    DataError,
    DeviceError,
    DivergenceError,
    MemoryExhaustedError,
    MetaStudioError,
    ModelLoadError,
    StoreError,
)
from engine.export import FewShotClassifier, export_run, load_checkpoint
from engine.store import RunStore, default_db_path
from engine.training import METRICS, MetaTrainer, RunControl, StepRecord, TrainingSession

__all__ = [
    "ALGORITHMS", "METRICS", "FewShotClassifier", "export_run", "load_checkpoint", "ConfigError", "DataError", "DeviceError", "DivergenceError",
    "ExperimentConfig", "MemoryExhaustedError", "MetaStudioError", "MetaTrainer", "ModelLoadError", "RunControl", "RunStore",
    "StepRecord", "StoreError", "TrainingSession", "apply_overrides", "default_db_path", "load_config",
    "validate_config",
]
