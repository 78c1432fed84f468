"""The experiment config: one validated pydantic model that the form, the CLI and the store share.

A config loads from YAML or JSON (:func:`load_config`), takes ``KEY=VALUE`` overrides
(:func:`apply_overrides`) and serialises back to a plain dict for SQLite.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from engine.errors import ConfigError

Algorithm = Literal["maml", "fomaml", "protonet"]
ALGORITHMS: tuple[str, ...] = ("maml", "fomaml", "protonet")
DeviceName = Literal["auto", "cpu", "cuda", "mps"]


class ExperimentConfig(BaseModel):
    """Everything that defines one meta-training run.

    Units: learning rates are plain step sizes; ``meta_iterations``, ``val_interval`` and
    ``checkpoint_interval`` count outer-loop iterations; ``max_length`` counts tokens.

    Raises:
        pydantic.ValidationError: on construction with an invalid value; use :func:`validate_config`
            to get a :class:`~engine.errors.ConfigError` naming the field instead.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    name: str = Field("", description="Run name; empty = generated from the algorithm and data set.")
    # --- base model -------------------------------------------------------------------------
    model: str = Field("bundled", description="'bundled', a local model folder, or a cached Hugging Face id.")
    max_length: int = Field(64, ge=8, le=4096, description="Tokens per text; longer texts are truncated.")
    pooling: Literal["auto", "mean", "cls", "last"] = Field(
        "auto", description="auto = mean for encoders, last non-pad token for decoder LLMs."
    )
    adapt_layers: int = Field(0, ge=0, description="Top encoder layers the inner loop adapts (plus the head).")
    train_layers: int = Field(0, ge=0, description="Top encoder layers the outer loop trains (0 = frozen).")
    trust_remote_code: bool = Field(False, description="Allow a model's own Python code (off by default).")
    # --- tasks ------------------------------------------------------------------------------
    dataset: str = Field("demo", description="'demo' or a path to a .jsonl / .csv / .parquet file.")
    text_column: str = "text"
    label_column: str = "label"
    split_seed: int = Field(0, description="Seed of the class-disjoint meta-train/val/test label split.")
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    drop_small_labels: bool = Field(False, description="Drop labels with fewer than k_shot + q_query examples.")
    n_way: int = Field(5, ge=2, description="Classes per episode (N).")
    k_shot: int = Field(5, ge=1, description="Support examples per class (K).")
    q_query: int = Field(5, ge=1, description="Query examples per class (Q).")
    # --- algorithm --------------------------------------------------------------------------
    algorithm: Algorithm = "maml"
    meta_batch_size: int = Field(4, ge=1, description="Episodes (tasks) per outer-loop update.")
    inner_steps: int = Field(5, ge=0, description="Adaptation steps on the support set.")
    inner_lr: float = Field(0.5, gt=0.0, description="Inner-loop SGD learning rate.")
    outer_lr: float = Field(1e-3, gt=0.0, description="Outer-loop (Adam) learning rate.")
    meta_iterations: int = Field(300, ge=1, description="Outer-loop updates.")
    val_interval: int = Field(25, ge=1, description="Meta-validate every this many iterations.")
    val_episodes: int = Field(50, ge=1, description="Episodes per meta-validation.")
    # --- stop condition: smoothed outer-loss plateau ----------------------------------------
    plateau_threshold: float = Field(0.0, ge=0.0, description="Stop when the smoothed outer loss changes less than this (0 = off).")
    plateau_patience: int = Field(50, ge=1, description="... for this many consecutive iterations.")
    # --- run --------------------------------------------------------------------------------
    seed: int = 0
    device: DeviceName = "auto"

    @model_validator(mode="after")
    def _check_consistency(self) -> ExperimentConfig:
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError("val_fraction + test_fraction must leave at least 10% of labels for meta-train")
        if self.algorithm == "protonet" and self.adapt_layers:
            raise ValueError("ProtoNet has no inner loop, so adapt_layers must be 0")
        return self

    @property
    def display_name(self) -> str:
        """The run name, or ``"<algorithm> <dataset> <N>w<K>s"`` when none is set."""
        if self.name:
            return self.name
        data = Path(self.dataset).stem if self.dataset not in ("demo",) else "demo"
        return f"{self.algorithm} {data} {self.n_way}w{self.k_shot}s"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict of every field (the form that SQLite stores)."""
        return self.model_dump(mode="json")


def _format_validation_error(err: ValidationError) -> ConfigError:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or None
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        known = ", ".join(sorted(ExperimentConfig.model_fields))
        return ConfigError(f"unknown config key '{loc}'.", field=loc, hint=f"Known keys: {known}.")
    if first["type"] == "literal_error":
        return ConfigError(f"{msg} (got {first.get('input')!r}).", field=loc)
    return ConfigError(f"{msg} (got {first.get('input')!r}).", field=loc)


def validate_config(data: dict[str, Any]) -> ExperimentConfig:
    """Build an :class:`ExperimentConfig` from a dict.

    Raises:
        ConfigError: naming the first invalid field and what it got.
    """
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as err:
        raise _format_validation_error(err) from None


def load_config(path: str | Path) -> ExperimentConfig:
    """Read a YAML (``.yaml``/``.yml``) or JSON config file.

    Raises:
        ConfigError: the file is missing, not parseable, not a mapping, or holds an invalid value.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file '{p}' does not exist.", field="config", hint="Check the path.")
    text = p.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if p.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"cannot parse '{p}': {err}", field="config") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"'{p}' must hold a mapping of config keys, not {type(data).__name__}.", field="config")
    return validate_config(data)


def apply_overrides(config: ExperimentConfig, overrides: list[str]) -> ExperimentConfig:
    """Apply ``KEY=VALUE`` strings (values parsed as YAML scalars) to a config.

    Raises:
        ConfigError: an override without ``=``, an unknown key or an invalid value.
    """
    data = config.to_dict()
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not KEY=VALUE.", field="--set", hint="Example: --set k_shot=5")
        key, raw = item.split("=", 1)
        key = key.strip()
        value = yaml.safe_load(raw) if raw.strip() else ""
        if key in ("model", "dataset", "name", "text_column", "label_column"):
            value = raw  # keep paths and names as typed
        data[key] = value
    return validate_config(data)
