"""MetaStudio's headless engine: config, data, models, algorithms, training, storage.

Nothing here imports Qt; the CLI and the window both use this public API.

Config and errors load with the package (light: pydantic); the rest loads on first use (PEP 562), so
``import engine`` costs no torch and the window can appear before the heavy libraries are in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine import _env  # noqa: F401  (first: sets the OpenMP wait policy before torch loads)
from engine._lazy import lazy_attributes
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

# name -> the module that defines it, imported when the name is first used
_LAZY = {
    "FewShotClassifier": "engine.export", "export_run": "engine.export", "load_checkpoint": "engine.export",
    "RunStore": "engine.store", "default_db_path": "engine.store", "write_metrics_csv": "engine.store",
    "METRICS": "engine.training.records", "StepRecord": "engine.training.records",
    "RunControl": "engine.training.control", "MetaTrainer": "engine.training.trainer",
    "TrainingSession": "engine.training.session",
}

if TYPE_CHECKING:
    from engine.export import FewShotClassifier, export_run, load_checkpoint
    from engine.store import RunStore, default_db_path, write_metrics_csv
    from engine.training.control import RunControl
    from engine.training.records import METRICS, StepRecord
    from engine.training.session import TrainingSession
    from engine.training.trainer import MetaTrainer

__all__ = [
    "ALGORITHMS", "ConfigError", "DataError", "DeviceError", "DivergenceError", "ExperimentConfig",
    "MemoryExhaustedError", "MetaStudioError", "ModelLoadError", "StoreError", "apply_overrides", "load_config",
    "validate_config",
    # loaded on first use (see _LAZY)
    "FewShotClassifier", "METRICS", "MetaTrainer", "RunControl", "RunStore", "StepRecord", "TrainingSession",
    "default_db_path", "export_run", "load_checkpoint", "write_metrics_csv",
]

__getattr__, __dir__ = lazy_attributes(__name__, globals(), _LAZY)
