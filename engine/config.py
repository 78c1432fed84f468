"""The experiment config: one validated pydantic model that the form, the CLI and the store share.

A config loads from YAML or JSON (:func:`load_config`), takes ``KEY=VALUE`` overrides
(:func:`apply_overrides`) and serialises back to a plain dict for SQLite.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from engine.errors import ConfigError, DataError, ModelLoadError

Algorithm = Literal["maml", "fomaml", "reptile", "anil", "metasgd", "protonet", "lora_maml"]
ALGORITHMS: tuple[str, ...] = ("maml", "fomaml", "reptile", "anil", "metasgd", "protonet", "lora_maml")
# Task families that are not text files: ``dataset: sinusoid`` is the MAML paper's regression family.
SYNTHETIC_DATASETS: tuple[str, ...] = ("sinusoid",)
# Algorithm-specific keys -> the algorithms that use them. Setting one of these keys to a non-default
# value for another algorithm is refused (ConfigError naming the key); the form shows them only there.
ALGORITHM_KEYS: dict[str, tuple[str, ...]] = {
    "first_order": ("anil", "metasgd", "lora_maml"),
    "lora_r": ("lora_maml",),
    "lora_alpha": ("lora_maml",),
    "lora_dropout": ("lora_maml",),
    "lora_target_modules": ("lora_maml",),
    "lora_layers": ("lora_maml",),
    "adapt_layers": ("maml", "fomaml", "reptile", "metasgd"),
    "train_layers": ("maml", "fomaml", "reptile", "anil", "metasgd", "protonet"),
}


class _FieldError(ValueError):
    """A cross-field rule broken by one named key (turned into ``ConfigError(field=key)``)."""

    def __init__(self, field: str, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.field, self.message, self.hint = field, message, hint


def second_order_through_encoder(config: ExperimentConfig) -> bool:
    """True when second derivatives flow through transformer layers (the inner loop adapts encoder
    weights or LoRA adapters and keeps the graph of its gradients). Such runs need eager attention
    (fused SDPA kernels have no double backward) and cannot use gradient checkpointing."""
    second = config.algorithm == "maml" or (config.algorithm in ("metasgd", "lora_maml") and not config.first_order)
    return second and (config.adapt_layers > 0 or config.algorithm == "lora_maml")


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
    dataset: str = Field("demo", description="'demo', 'sinusoid' (regression), a path to a .jsonl / .csv / "
                                             ".parquet file, or hf:NAME[:CONFIG] (a Hugging Face data set).")
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
    checkpoint_interval: int = Field(
        50, ge=0, description="Save a resumable checkpoint every this many iterations (0 = only when the run "
                              "is paused, stopped or ends).")
    # --- stop condition: smoothed outer-loss plateau ----------------------------------------
    plateau_threshold: float = Field(0.0, ge=0.0, description="Stop when the smoothed outer loss changes less than this (0 = off).")
    plateau_patience: int = Field(50, ge=1, description="... for this many consecutive iterations.")
    # --- stop conditions: early stopping on meta-val, time budget ------------------------------
    early_stopping_patience: int = Field(
        0, ge=0, description="Stop after this many validations without a better meta-val score and restore "
                             "the best meta-parameters (0 = off).")
    max_minutes: float = Field(0.0, ge=0.0, description="Training-time budget in minutes (0 = off).")
    # --- algorithm-specific keys (see ALGORITHM_KEYS) -------------------------------------------
    first_order: bool = Field(False, description="anil / metasgd / lora_maml: first-order meta-gradient "
                                                 "(no second derivatives).")
    lora_r: int = Field(8, ge=1, description="lora_maml: rank of the LoRA adapters.")
    lora_alpha: float = Field(16.0, gt=0.0, description="lora_maml: LoRA scale numerator (updates scale by alpha / r).")
    lora_dropout: float = Field(0.0, ge=0.0, lt=1.0, description="lora_maml: dropout on the LoRA branch.")
    lora_target_modules: str = Field("", description="lora_maml: comma-separated module names to adapt "
                                                     "(empty = the architecture's attention and MLP weights).")
    lora_layers: int = Field(0, ge=0, description="lora_maml: adapters only in the top this-many transformer layers "
                                                  "(0 = every layer); the frozen layers below run once per text "
                                                  "and are cached, so each episode is cheaper.")
    gradient_checkpointing: bool = Field(
        False, description="Recompute encoder activations in the backward pass (less memory, more time); refused "
                           "where second derivatives flow through the encoder.")
    # --- run --------------------------------------------------------------------------------
    seed: int = 0
    device: DeviceName = "auto"

    @field_validator("lora_target_modules", mode="before")
    @classmethod
    def _join_module_list(cls, value: Any) -> Any:
        """Accept a YAML list of module names as well as a comma-separated string."""
        return ",".join(str(v).strip() for v in value) if isinstance(value, list | tuple) else value

    @property
    def task_type(self) -> str:
        """``"regression"`` for ``dataset: sinusoid``, else ``"classification"``."""
        return "regression" if self.dataset == "sinusoid" else "classification"

    @model_validator(mode="after")
    def _check_consistency(self) -> ExperimentConfig:
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError("val_fraction + test_fraction must leave at least 10% of labels for meta-train")
        algo = self.algorithm
        if self.dataset == "sinusoid":
            if algo in ("protonet", "lora_maml"):
                why = "ProtoNet needs classes to build prototypes" if algo == "protonet" else \
                    "LoRA-MAML adapts transformer weights and the sinusoid MLP has none"
                raise _FieldError("algorithm", f"{algo} cannot run on dataset 'sinusoid' (regression): {why}.",
                                  "Use maml, fomaml, reptile, anil or metasgd.")
            for key in ("adapt_layers", "train_layers"):
                if getattr(self, key):
                    raise _FieldError(key, f"{key} must be 0 with dataset 'sinusoid': its MLP has no "
                                           "transformer layers (every weight is meta-trained).")
        reasons = {("adapt_layers", "protonet"): "ProtoNet has no inner loop, so adapt_layers must be 0.",
                   ("adapt_layers", "anil"): "ANIL's inner loop adapts only the head, so adapt_layers must be 0.",
                   ("adapt_layers", "lora_maml"): "LoRA-MAML adapts LoRA adapters, never base weights, so "
                                                  "adapt_layers must be 0.",
                   ("train_layers", "lora_maml"): "LoRA-MAML keeps the base weights frozen, so train_layers must "
                                                  "be 0 (the outer loop trains the adapters' initialisation)."}
        for key, users in ALGORITHM_KEYS.items():
            if algo not in users and getattr(self, key) != type(self).model_fields[key].default:
                msg = reasons.get((key, algo), f"applies only to {', '.join(users)}, not to algorithm {algo}.")
                raise _FieldError(key, msg, f"Reset {key} to its default "
                                            f"({type(self).model_fields[key].default!r}) or change the algorithm.")
        if self.gradient_checkpointing:
            # The inner loop's fast weights exist only while the forward pass runs (functional_call); a
            # checkpointed layer recomputed during backward would silently use the stored weights instead,
            # and second order would need double backward through the recomputation. So checkpointing
            # is only allowed where the inner loop adapts no encoder weight.
            if second_order_through_encoder(self):
                raise _FieldError(
                    "gradient_checkpointing", f"cannot combine with second-order {algo} "
                    "through encoder layers: it would need double backward through recomputed activations.",
                    "Use adapt_layers=0 (a head-only inner loop), or turn gradient_checkpointing off.")
            if self.adapt_layers > 0 or algo == "lora_maml" or (algo == "reptile" and self.train_layers > 0):
                raise _FieldError(
                    "gradient_checkpointing", f"cannot combine with {algo} adapting encoder weights in the inner "
                    "loop: a recomputed layer would use the stored weights, not the task's fast weights.",
                    "Use adapt_layers=0 with maml, fomaml, anil, metasgd or protonet, or turn "
                    "gradient_checkpointing off.")
            if self.train_layers == 0:
                raise _FieldError(
                    "gradient_checkpointing", "would have no effect: no encoder layer is "
                    "trained (train_layers = 0), so no activations are kept for a backward pass.",
                    "Set train_layers > 0, or turn gradient_checkpointing off.")
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
    cause = (first.get("ctx") or {}).get("error")
    if isinstance(cause, _FieldError):
        return ConfigError(cause.message, field=cause.field, hint=cause.hint)
    if first["type"] == "extra_forbidden":
        close = difflib.get_close_matches(str(loc), list(ExperimentConfig.model_fields), n=1, cutoff=0.6)
        if close:
            return ConfigError(f"unknown config key '{loc}'; did you mean {close[0]}?", field=loc,
                               hint=f"Use {close[0]}.")
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
    return absolute_paths(validate_config(data), base=p.resolve().parent)


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


# ---- local paths ------------------------------------------------------------------------------------
# Config values that name no file: data-set and model keywords (``hf:NAME`` and hub ids are kept too).
PATH_KEYWORDS: frozenset[str] = frozenset({"demo", "bundled", *SYNTHETIC_DATASETS})
REPO_ROOT = Path(__file__).resolve().parents[1]


def is_local_path(key: str, value: str, base: str | Path | None = None) -> bool:
    """Whether config ``key`` (``"dataset"`` or ``"model"``) holds a local file/folder path.

    ``dataset``: anything but a keyword (``demo``, ``sinusoid``) or ``hf:NAME`` is a file path.
    ``model``: a folder that exists (relative to ``base``, default the working folder) or a value that
    looks like a path (starts with ``.``, ``/`` or ``~``, has a backslash or more than one ``/``); a
    Hugging Face id such as ``org/name`` is not a path. The same rule as
    :func:`engine.models.backbone.resolve_model_source`.
    """
    if not value or value in PATH_KEYWORDS or value.startswith("hf:"):
        return False
    if key == "dataset":
        return True
    if key != "model":
        return False
    folder = Path(base) if base is not None else Path.cwd()
    return (value.startswith((".", "/", "~")) or "\\" in value or value.count("/") > 1
            or (folder / Path(value).expanduser()).exists())


def absolute_paths(config: ExperimentConfig, base: str | Path | None = None) -> ExperimentConfig:
    """``config`` with relative local ``dataset`` / ``model`` paths made absolute (``~`` expanded).

    Args:
        base: the folder relative paths are resolved against (default: the current working folder);
            :func:`load_config` passes the config file's folder.

    Keywords (``demo``, ``bundled``, ``sinusoid``), ``hf:NAME`` data sets and hub model ids are kept as
    they are. Stored runs thus keep working from any folder (``eval``, ``export``, ``resume``).
    """
    root = Path(base) if base is not None else Path.cwd()
    changes = {}
    for key in ("dataset", "model"):
        value = getattr(config, key)
        if is_local_path(key, value, root):
            p = Path(value).expanduser()
            absolute = os.path.normpath(p if p.is_absolute() else root / p)
            if absolute != value:
                changes[key] = absolute
    return config.model_copy(update=changes) if changes else config


def check_stored_paths(config: Mapping[str, Any], run_id: int, db_path: str | Path | None = None, *,
                       data: bool = True) -> None:
    """Explain a missing relative path in a stored run's config (runs created before paths were made
    absolute stored them as typed, relative to the folder the run was started from).

    Looks for the path relative to the database's folder, its parents and the MetaStudio repository,
    and names the folder where it exists. Absolute and existing paths pass silently (a missing
    absolute path is reported by the data/model loaders as usual).

    Args:
        data: also check ``dataset`` (False: only ``model``, e.g. for an export, which needs no data).

    Raises:
        DataError: ``dataset`` is a relative path that does not exist from the working folder.
        ModelLoadError: the same for a ``model`` folder.
    """
    for key in ("dataset", "model") if data else ("model",):
        value = str(config.get(key) or "")
        if not is_local_path(key, value) or value.startswith(("/", "~")) or Path(value).exists():
            continue
        candidates = [REPO_ROOT, REPO_ROOT.parent]
        if db_path is not None:
            db_folder = Path(db_path).expanduser().resolve().parent
            candidates = [db_folder, *list(db_folder.parents)[:3], *candidates]
        found = next((c for c in dict.fromkeys(candidates) if (c / value).exists()), None)
        where = (f"It exists relative to '{found}': run the command from there (cd {found}), or"
                 if found is not None else "Run the command from the folder the run was started in, or")
        what = "data file" if key == "dataset" else "model folder"
        message = (f"run {run_id} stored the relative {what} path '{value}' (runs made before paths were "
                   f"stored as absolute paths keep them as typed), and it does not exist from '{Path.cwd()}'.")
        hint = f"{where} start a new run with an absolute path."
        raise (DataError if key == "dataset" else ModelLoadError)(message, field=key, hint=hint)


# Hyperparameters that fit a task family better than the global defaults (which suit text heads).
_RECOMMENDED: dict[str, dict[str, Any]] = {
    # Finn et al. 2017, sinusoid regression (see benchmarks/sinusoid.py, resources/presets/maml_sinusoid.yaml)
    "sinusoid": {"inner_lr": 0.01, "outer_lr": 1e-3, "k_shot": 5, "q_query": 5, "meta_batch_size": 25,
                 "inner_steps": 1},
}


# algorithm -> values it wants on text data sets instead of the defaults
_RECOMMENDED_FOR_ALGORITHM: dict[str, dict[str, Any]] = {
    # SGD steps of 0.5 on LoRA adapters (their update is scaled by lora_alpha / lora_r) overshoot:
    # on CLINC150 5-way 5-shot the support loss after adaptation ends above the loss before it
    "lora_maml": {"inner_lr": 0.1},
}


def recommended_overrides(dataset: str, algorithm: str = "") -> dict[str, Any]:
    """Config values recommended for ``dataset`` (and ``algorithm``) instead of the global defaults (a
    new dict; empty when the defaults fit).

    ``sinusoid`` gets the MAML paper's settings (inner_lr 0.01 etc.): the default inner_lr 0.5 suits
    text heads and makes the sinusoid MLP diverge. ``lora_maml`` on text gets inner_lr 0.1. A UI can
    apply these when the user picks the data set or algorithm.
    """
    out = dict(_RECOMMENDED.get(dataset, {}))
    if dataset not in SYNTHETIC_DATASETS:
        out.update(_RECOMMENDED_FOR_ALGORITHM.get(algorithm, {}))
    return out
