"""Resumable training state: everything a run needs to go on exactly where a checkpoint left it.

A resume checkpoint is one safetensors file, ``run-<id>/resume-<step>.safetensors`` beside the run
database, written atomically (temp file + ``os.replace``). Its tensors are the meta-parameters
(``meta/<name>``), the outer optimizer's state tensors (``optim/...``), the torch (and CUDA) RNG
states (``rng/...``) and any tensors held by stop conditions (``stop/...``). The rest is JSON in the
file's metadata (``state``): the iteration, training seconds so far (the ``max_minutes`` budget goes
on from there), the optimizer's non-tensor state and parameter groups, the episode sampler's numpy
bit-generator state, Python's ``random`` state, the trainer's progress (best meta-val score and step,
early stopping's counters and its copy of the best meta-state, under ``trainer/...``) and the stop
conditions' counters. Nothing is pickled, so loading a checkpoint cannot run code.

The meta-validation episodes are not stored: they are fixed by the config's seed and rebuilt
identically by :meth:`~engine.training.trainer.MetaTrainer.prepare`. A run resumed from the
checkpoint of iteration ``s`` therefore yields the same metrics for iterations ``s+1 ...`` as the
uninterrupted run (on the same device and software).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open

from engine.errors import StoreError
from engine.training.checkpoint import save_tensors_atomic

FORMAT = "metastudio-resume/1"
RESUME_KIND = "periodic"
"""The ``checkpoints.kind`` of resume checkpoints (the final one is ``final``: meta-parameters only)."""
KEEP_RESUME = 2
"""Resume checkpoints kept per run (older ones are deleted once a newer one is written)."""
_TENSOR = "__tensor__"


def resume_path(folder: str | Path, step: int) -> Path:
    """The file name of the resume checkpoint of ``step`` in a run's checkpoint folder."""
    return Path(folder) / f"resume-{step:08d}.safetensors"


# ---- nested structures with tensors <-> (JSON, flat tensor dict) --------------------------------
def _split(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Replace every tensor in a nested dict/list by ``{"__tensor__": key}`` and collect it in ``tensors``."""
    if torch.is_tensor(obj):
        tensors[prefix] = obj
        return {_TENSOR: prefix}
    if isinstance(obj, dict):
        return {str(k): _split(v, f"{prefix}/{k}", tensors) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_split(v, f"{prefix}/{i}", tensors) for i, v in enumerate(obj)]
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise TypeError(f"cannot store a {type(obj).__name__} at '{prefix}' in a checkpoint")


def _join(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`_split`."""
    if isinstance(obj, dict):
        if set(obj) == {_TENSOR}:
            return tensors[obj[_TENSOR]]
        return {k: _join(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_join(v, tensors) for v in obj]
    return obj


def _stop_conditions(trainer) -> dict[str, Any]:
    """The trainer's stop-condition objects (instances of classes from ``engine.training.stopping``)."""
    return {attr: obj for attr, obj in vars(trainer).items()
            if type(obj).__module__ == "engine.training.stopping"}


def _plain_state(obj: Any) -> dict[str, Any]:
    """The data attributes of a stop condition (numbers, strings, None, tensors and containers of them)."""
    out = {}
    for k, v in vars(obj).items():
        if callable(v):
            continue
        out[k] = v
    return out


# Trainer attributes that are configuration or set-up results, never training progress.
_NOT_STATE = {"config", "control", "prepared", "stop_reason", "device", "tasks", "model", "learner", "features",
              "train_sampler", "val_episodes", "plateau", "start_elapsed_s"}


def _trainer_progress(trainer, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The trainer's own plain-data attributes that training changes (best meta-val score and step,
    early stopping's counters and its copy of the best meta-state, ...), split for storage.

    Taken generically (every attribute made of numbers, strings, tensors and containers of them) so
    that state a later stop condition adds is checkpointed without changes here.
    """
    out = {}
    for attr, value in vars(trainer).items():
        if attr in _NOT_STATE or callable(value) or type(value).__module__ == "engine.training.stopping":
            continue
        part: dict[str, torch.Tensor] = {}
        try:
            out[attr] = _split(value, f"trainer/{attr}", part)
        except TypeError:
            continue  # an object (a sampler, a cache): rebuilt by prepare(), not training progress
        tensors.update(part)
    return out


def _int_keys(d: dict[str, Any]) -> dict[Any, Any]:
    return {int(k) if k.lstrip("-").isdigit() else k: v for k, v in d.items()}


# ---- capture / restore ---------------------------------------------------------------------------
def capture_state(trainer, step: int, elapsed_s: float) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Snapshot a :class:`~engine.training.trainer.MetaTrainer` between iterations.

    Args:
        trainer: a prepared trainer whose iteration ``step`` has finished (and whose next one has not begun).
        step: the last finished iteration (1-based).
        elapsed_s: training seconds up to and including ``step``.

    Returns:
        ``(tensors, state)``: name -> tensor (values copied when written) and a JSON-safe dict.

    Raises:
        TypeError: a stop condition holds a value that cannot be stored (not a number, string, tensor).
    """
    tensors: dict[str, torch.Tensor] = {}
    for name, value in trainer.meta_state().items():
        tensors[f"meta/{name}"] = value
    optimizer = getattr(trainer.learner, "optimizer", None)
    opt = _split(optimizer.state_dict(), "optim", tensors) if optimizer is not None else None
    tensors["rng/torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng/cuda/{i}"] = s
    rng = getattr(trainer.train_sampler, "rng", None)
    if isinstance(rng, np.random.Generator):
        sampler_rng: Any = {"numpy": rng.bit_generator.state}
    elif isinstance(rng, torch.Generator):
        tensors["rng/sampler"] = rng.get_state()
        sampler_rng = {"torch": "rng/sampler"}
    else:
        sampler_rng = None
    stopping = {attr: _split(_plain_state(obj), f"stop/{attr}", tensors)
                for attr, obj in _stop_conditions(trainer).items()}
    state = {
        "format": FORMAT, "step": int(step), "elapsed_s": float(elapsed_s), "optimizer": opt,
        "sampler_rng": sampler_rng, "python_rng": _split(random.getstate(), "py", {}),
        "trainer": _trainer_progress(trainer, tensors),
        "stopping": stopping,
    }
    return tensors, state


def restore_state(trainer, tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> tuple[int, float]:
    """Put a prepared trainer back into the state :func:`capture_state` saw.

    Everything is checked before anything changes: on error the trainer is as :meth:`prepare` left it.

    Returns:
        ``(step, elapsed_s)``: the last finished iteration and the training seconds up to it.

    Raises:
        StoreError: (field ``checkpoint``) an unknown format, or meta-parameters whose names or
            shapes differ from the model's (the checkpoint belongs to another config or code version).
    """
    if state.get("format") != FORMAT:
        raise StoreError(f"unknown checkpoint format {state.get('format')!r}.", field="checkpoint")
    live = trainer.meta_state()
    saved = {k[len("meta/"):]: v for k, v in tensors.items() if k.startswith("meta/")}
    if set(saved) != set(live):
        diff = sorted(set(saved) ^ set(live))[:5]
        raise StoreError(f"the checkpoint's meta-parameters differ from the model's ({', '.join(diff)}).",
                         field="checkpoint", hint="Resume with the code version and config that wrote it.")
    bad = [n for n, v in saved.items() if tuple(v.shape) != tuple(live[n].shape)]
    if bad:
        raise StoreError(f"meta-parameter shapes differ from the model's: {', '.join(bad[:5])}.",
                         field="checkpoint", hint="Resume with the code version and config that wrote it.")
    optimizer = getattr(trainer.learner, "optimizer", None)
    opt_state = None
    if optimizer is not None and state.get("optimizer") is not None:
        opt_state = _join(state["optimizer"], tensors)
        opt_state["state"] = _int_keys(opt_state["state"])
    # -- validated: apply (the optimizer first: load_state_dict checks its groups before changing anything)
    if opt_state is not None:
        optimizer.load_state_dict(opt_state)
    extra = {}
    with torch.no_grad():
        for name, value in saved.items():
            if name.startswith("learner."):
                extra[name[len("learner."):]] = value
            else:
                live[name].copy_(value.to(device=live[name].device, dtype=live[name].dtype))
    if extra:
        device = next(iter(live.values())).device
        trainer.learner.load_extra_state({k: v.to(device) for k, v in extra.items()})
    torch.set_rng_state(tensors["rng/torch"])
    cuda_states = [tensors[k] for k in sorted(tensors) if k.startswith("rng/cuda/")]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states[:torch.cuda.device_count()])
    srng = state.get("sampler_rng")
    rng = getattr(trainer.train_sampler, "rng", None)
    if srng and "numpy" in srng and isinstance(rng, np.random.Generator):
        rng.bit_generator.state = srng["numpy"]
    elif srng and "torch" in srng and isinstance(rng, torch.Generator):
        rng.set_state(tensors[srng["torch"]])
    py = state.get("python_rng")
    if py:
        random.setstate((py[0], tuple(py[1]), py[2]))
    device = getattr(trainer, "device", None)
    for attr, value in (state.get("trainer") or {}).items():
        value = _join(value, tensors)
        if isinstance(value, dict) and device is not None:
            value = {k: v.to(device) if torch.is_tensor(v) else v for k, v in value.items()}
        elif torch.is_tensor(value) and device is not None:
            value = value.to(device)
        setattr(trainer, attr, tuple(value) if attr == "best_val" and value is not None else value)
    trainer.start_elapsed_s = float(state["elapsed_s"])  # run(start_step) continues the training time
    conditions = _stop_conditions(trainer)
    for attr, values in (state.get("stopping") or {}).items():
        if attr in conditions:
            for k, v in _join(values, tensors).items():
                setattr(conditions[attr], k, v)
    return int(state["step"]), float(state["elapsed_s"])


# ---- files ---------------------------------------------------------------------------------------
def save_resume_checkpoint(trainer, folder: str | Path, step: int, elapsed_s: float) -> Path:
    """Write the resume checkpoint of ``step`` into ``folder`` atomically; returns its path.

    Raises:
        StoreError: the folder is not writable or the disk is full (no partial file is left; earlier
            checkpoints are untouched).
    """
    tensors, state = capture_state(trainer, step, elapsed_s)
    path = resume_path(folder, step)
    try:
        return save_tensors_atomic(tensors, path, {"format": FORMAT, "state": json.dumps(state)})
    except OSError as err:
        raise StoreError(f"cannot write the checkpoint '{path}': {err.strerror or err}.", field="checkpoint",
                         hint="Free disk space or make the database folder writable; the last complete "
                              "checkpoint is kept.") from None


def load_resume_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a resume checkpoint (safetensors only, onto the CPU).

    Raises:
        OSError: the file is missing or unreadable.
        StoreError: the file is not a MetaStudio resume checkpoint, or is damaged.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint '{path}' is missing")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
        state = json.loads(meta.get("state", "null"))
    except (ValueError, RuntimeError, json.JSONDecodeError) as err:  # SafetensorError subclasses Exception
        raise StoreError(f"checkpoint '{path.name}' is damaged: {err}.", field="checkpoint") from None
    except Exception as err:  # safetensors raises its own SafetensorError for a truncated header
        if type(err).__name__ == "SafetensorError":
            raise StoreError(f"checkpoint '{path.name}' is damaged: {err}.", field="checkpoint") from None
        raise
    if meta.get("format") != FORMAT or not isinstance(state, dict):
        raise StoreError(f"'{path.name}' is not a MetaStudio resume checkpoint.", field="checkpoint")
    return tensors, state
