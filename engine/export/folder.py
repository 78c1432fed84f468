"""Export a run as a Hugging Face style folder, and load such a folder back as a classifier.

Layout of an export folder::

    config.json, model.safetensors, tokenizer files   the encoder (meta-trained layers merged in);
                                                      loads with AutoModel.from_pretrained(folder)
    metastudio_head.safetensors                       head init, embedding scale, LoRA adapters, and
                                                      algorithm state (e.g. Meta-SGD learning rates)
    metastudio.json                                   experiment config, data fingerprint, label
                                                      split, evaluations, run summary
    README.md                                         model card

The folder is written into a temporary sibling folder and renamed into place, so a crash never
leaves a half-written export.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from engine._files import follow_umask
from engine.config import check_stored_paths, validate_config
from engine.errors import MetaStudioError, ModelLoadError, StoreError
from engine.export.classifier import FewShotClassifier
from engine.export.model_card import render_model_card
from engine.models.device import resolve_device
from engine.store.runstore import RunStore, now_iso
from engine.training.checkpoint import load_tensors, save_tensors_atomic

FORMAT = "metastudio-export/1"
HEAD_FILE = "metastudio_head.safetensors"
META_FILE = "metastudio.json"


def _encoder_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The HF model's weights without LoRA adapters, under their original names (``base_layer`` unwrapped)."""
    out = {}
    for k, v in model.state_dict().items():
        if ".lora_" in k:
            continue
        out[k.replace(".base_layer.", ".")] = v.detach().cpu().contiguous().clone()
    return out


def _non_encoder_state(trainer) -> dict[str, torch.Tensor]:
    """Meta-state entries that do not live in the encoder's own weights (head, scale, adapters, learner.*)."""
    return {k: v for k, v in trainer.meta_state().items()
            if not k.startswith("encoder.") or ".lora_" in k}


def _check_target(out_dir: Path, overwrite: bool) -> Path:
    """The resolved target folder; refuses a file, and a non-empty folder unless ``overwrite`` is set and
    the folder is a previous MetaStudio export (holds ``metastudio.json``): ``overwrite`` never deletes
    unrelated files."""
    out = out_dir.expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise MetaStudioError(f"'{out}' exists and is a file.", field="OUT_DIR", hint="Pick a folder path.")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise MetaStudioError(f"'{out}' is not empty.", field="OUT_DIR",
                                  hint="Pick an empty or new folder, or pass --overwrite to replace a "
                                       "previous export.")
        if not (out / META_FILE).is_file():
            shown = ", ".join(sorted(p.name for p in out.iterdir())[:3])
            raise MetaStudioError(f"'{out}' is not empty and is not a MetaStudio export (no {META_FILE}; it "
                                  f"holds {shown}...); --overwrite only replaces a previous export.",
                                  field="OUT_DIR", hint="Pick an empty or new folder; nothing was changed.")
    return out


def export_trainer(trainer, out_dir: str | Path, run: dict[str, Any], evaluations: list[dict],
                   *, overwrite: bool = False) -> Path:
    """Write ``trainer``'s model (meta-state already loaded) as an export folder at ``out_dir``.

    ``overwrite`` replaces a previous export (a folder holding ``metastudio.json``) as a whole; any other
    non-empty folder is refused. Files and folders get the usual modes (0644 / 0755 with umask 022).

    Raises:
        MetaStudioError: ``out_dir`` is a file, or non-empty without ``overwrite``, or non-empty and not a
            previous export.
        StoreError: the disk is full or the folder is not writable (nothing is left behind).
    """
    out = _check_target(Path(out_dir), overwrite)
    if trainer.config.dataset == "sinusoid":
        raise MetaStudioError("sinusoid runs have no text encoder to export.", field="RUN_ID",
                              hint="Export a text-classification run.")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        enc = trainer.model.encoder
        enc.model.save_pretrained(tmp, state_dict=_encoder_state_dict(enc.model), safe_serialization=True)
        enc.tokenizer.save_pretrained(tmp)
        save_tensors_atomic(_non_encoder_state(trainer), tmp / HEAD_FILE, {"format": FORMAT})
        meta = {
            "format": FORMAT, "created_at": now_iso(), "run_id": run.get("id"), "name": run.get("name"),
            "status": run.get("status"), "iterations": run.get("iterations"),
            "best_val_accuracy": run.get("best_val_accuracy"), "config": trainer.config.to_dict(),
            "base_model": trainer.config.model, "pooling": enc.pooling, "max_length": enc.max_length,
            "hidden_size": enc.info.hidden_size, "data_fingerprint": run.get("data_fingerprint"),
            "label_split": run.get("label_split"), "evaluations": evaluations,
        }
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")
        (tmp / "README.md").write_text(render_model_card(meta), encoding="utf-8")
        follow_umask(tmp)  # mkdtemp / the atomic tensor writer create private (0700 / 0600) entries
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / out.name)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise StoreError(f"cannot write the export to '{out}': {err.strerror or err}.", field="OUT_DIR",
                         hint="Free disk space or pick a writable folder; nothing was left behind.") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def restore_run(store: RunStore, run_id: int, *, device: str | None = None,
                status: Callable[[str], None] | None = None, with_data: bool = True):
    """Rebuild a stored run's trainer (data, model, algorithm) with its final meta-parameters loaded.

    Args:
        with_data: also load the data set and episode features (``MetaTrainer.prepare``). False builds
            only the model and the algorithm (``MetaTrainer.build_model``): enough to export or to
            classify, and works after the data file moved; ``trainer.tasks`` is then None.

    Returns:
        ``(run_row, trainer)``.

    Raises:
        MetaStudioError: no such run or no final checkpoint; the errors of ``MetaTrainer.prepare``
            (``build_model`` with ``with_data=False``); a relative stored path that does not exist from
            here (see :func:`engine.config.check_stored_paths`).
    """
    from engine.training.trainer import MetaTrainer

    try:
        run = store.get_run(run_id)
    except KeyError:
        raise MetaStudioError(f"no run with id {run_id} in {store.path}.", field="RUN_ID",
                              hint="List runs with: metastudio runs") from None
    finals = [r for r in store.list_checkpoints(run_id) if r["kind"] == "final"]
    if not finals:
        raise MetaStudioError(f"run {run_id} ({run['status']}) has no final checkpoint.", field="RUN_ID",
                              hint="Export or evaluate a completed or stopped run.")
    cfg = dict(run["config"])
    check_stored_paths(cfg, run_id, store.path, data=with_data)
    if device is not None:
        cfg["device"] = device
    trainer = MetaTrainer(validate_config(cfg), status=status)
    if with_data or trainer.config.dataset == "sinusoid":
        trainer.prepare()
    else:
        trainer.device = resolve_device(trainer.config.device)
        trainer.build_model()
    trainer.load_meta_state(load_tensors(finals[-1]["path"]))
    trainer.model.eval()
    return run, trainer


def export_run(store: RunStore, run_id: int, out_dir: str | Path, *, overwrite: bool = False,
               device: str | None = "cpu", status: Callable[[str], None] | None = None) -> Path:
    """Export a finished or stopped run to ``out_dir`` (see the module docstring for the layout).

    The data set is not read: the model, head and label split come from the run's checkpoint and row,
    so a run exports after its data file moved.

    Raises:
        MetaStudioError: no such run, no checkpoint, a sinusoid run, or a non-empty target that is not a
            previous export (see :func:`export_trainer`).
    """
    _check_target(Path(out_dir), overwrite)
    run, trainer = restore_run(store, run_id, device=device, status=status, with_data=False)
    evaluations = [e["result"] for e in store.list_evaluations(run_id)] if hasattr(store, "list_evaluations") else []
    return export_trainer(trainer, out_dir, run, evaluations, overwrite=overwrite)


def classifier_from_trainer(trainer) -> FewShotClassifier:
    """A :class:`FewShotClassifier` over a prepared trainer's model and algorithm."""
    c = trainer.config
    frozen = c.adapt_layers == 0 and c.algorithm != "lora_maml"
    return FewShotClassifier(trainer.model, trainer.learner, c, trainer.device, frozen)


def load_checkpoint(folder: str | Path, device: str = "auto") -> FewShotClassifier:
    """Load an export folder as a few-shot classifier (``adapt(texts, labels)``, ``predict(texts)``).

    Raises:
        ModelLoadError: the folder is missing or is not a MetaStudio export.
    """
    from engine.training.trainer import MetaTrainer

    root = Path(folder).expanduser().resolve()
    meta_path = root / META_FILE
    if not root.exists():
        raise ModelLoadError(f"export folder '{root}' does not exist.", field="folder",
                             hint="Check the path, or export a run first with 'metastudio export RUN_ID FOLDER'.")
    if not root.is_dir():
        raise ModelLoadError(f"'{root}' is a file, not an export folder.", field="folder",
                             hint="Pick the folder written by 'metastudio export' or the Export dialog.")
    if not meta_path.is_file():
        raise ModelLoadError(f"'{root}' is not a MetaStudio export (no {META_FILE}).", field="folder",
                             hint="Pick a folder written by 'metastudio export' or the Export dialog.")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    cfg = dict(meta["config"])
    cfg.update(model=str(root), device=device)
    trainer = MetaTrainer(validate_config(cfg))
    trainer.device = resolve_device(device)
    trainer.build_model()
    state = load_tensors(root / HEAD_FILE)
    params = dict(trainer.model.named_parameters())
    with torch.no_grad():
        for k, v in state.items():
            if k in params:
                params[k].copy_(v.to(params[k].device, params[k].dtype))
    trainer.learner.load_extra_state({k[len("learner."):]: v for k, v in state.items() if k.startswith("learner.")})
    trainer.model.eval()
    return classifier_from_trainer(trainer)
