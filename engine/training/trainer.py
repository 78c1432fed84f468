"""The meta-training loop as a generator: one :class:`StepRecord` per outer-loop iteration.

``MetaTrainer.prepare()`` does everything that can fail on bad input (data, split, sampler checks,
model loading, device) before any training; ``MetaTrainer.run()`` then yields records and checks the
:class:`~engine.training.control.RunControl` between iterations. It never touches the database: the
caller (:class:`~engine.training.session.TrainingSession`) stores what it yields.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from engine.algorithms import REGISTRY, MetaLearner, Task
from engine.algorithms.lora_maml import add_lora
from engine.algorithms.vectorized import evaluate_tasks
from engine.config import ExperimentConfig, second_order_through_encoder
from engine.data import Episode, TaskData, load_labelled_data, prepare_tasks, split_labels
from engine.data.episodes import EpisodeSampler, class_rows
from engine.data.sinusoid import FINGERPRINT as SINUSOID_FINGERPRINT
from engine.data.sinusoid import SinusoidEpisode, SinusoidSampler
from engine.errors import ConfigError, DivergenceError
from engine.models.backbone import TextEncoder, count_truncated, load_encoder
from engine.models.device import resolve_device
from engine.models.metamodel import MetaModel
from engine.models.sinusoid import SinusoidMLP
from engine.training.control import RunControl
from engine.training.features import FeatureSource
from engine.training.records import StepRecord
from engine.training.stopping import SmoothedPlateau
from engine.training.threads import loop_thread_count, loop_threads

# Algorithms that can differentiate through their inner gradients (see config.second_order_through_encoder).
SECOND_ORDER = {"maml", "metasgd", "lora_maml"}
def seed_everything(seed: int) -> None:
    """Seed Python-side RNGs used by training (torch; numpy samplers carry their own seeds)."""
    torch.manual_seed(seed)


class MetaTrainer:
    """Build a run from its config and iterate the outer loop.

    Args:
        config: the experiment.
        control: stop/pause flags (a fresh one if None).
        status: optional callback receiving set-up progress text (e.g. "encoding 3000/9000 texts").
    """

    def __init__(self, config: ExperimentConfig, control: RunControl | None = None,
                 status: Callable[[str], None] | None = None) -> None:
        self.config = config
        self.control = control or RunControl()
        self._status = status or (lambda _msg: None)
        self.stop_reason: str | None = None
        self.best_val: tuple[float, int] | None = None
        self.best_step: int | None = None  # step of the best meta-val score (accuracy, or MSE for regression)
        self._best_score: float | None = None
        self._best_state: dict[str, torch.Tensor] | None = None
        self._rounds_without_gain = 0
        self.start_elapsed_s = 0.0  # training seconds before run(start_step > 1): set when a run resumes
        self.tasks: TaskData | None = None
        self.prepared = False

    # ---- set-up ---------------------------------------------------------------------------------
    def prepare_data(self) -> TaskData:
        """Load, clean and split the data set; check every split can supply episodes.

        Raises:
            DataError: see :func:`~engine.data.load_labelled_data` and :func:`~engine.data.prepare_tasks`.
        """
        c = self.config
        if c.dataset == "sinusoid":  # regression tasks: no file, no labels, fresh seeded task streams
            self.tasks = None
            self.train_sampler = SinusoidSampler(c.k_shot, c.q_query, seed=c.seed)
            self.val_episodes = SinusoidSampler(c.k_shot, c.q_query, seed=c.seed + 1_000_003).sample_batch(
                c.val_episodes)
            return None
        self._status("reading the data set")
        data = load_labelled_data(c.dataset, c.text_column, c.label_column)
        split = split_labels(data, val_fraction=c.val_fraction, test_fraction=c.test_fraction, seed=c.split_seed)
        self.tasks = prepare_tasks(data, split, c.n_way, c.k_shot, c.q_query, c.drop_small_labels)
        # Building the samplers re-checks N and K+Q per split and fixes the episode streams.
        self.train_sampler = self.tasks.sampler("train", c.n_way, c.k_shot, c.q_query, seed=c.seed)
        val_sampler = self.tasks.sampler("val", c.n_way, c.k_shot, c.q_query, seed=c.seed + 1_000_003)
        self.val_episodes: list[Episode] = val_sampler.sample_batch(c.val_episodes)
        return self.tasks

    def prepare(self) -> None:
        """Everything that can fail before training: data, device, model, algorithm.

        Raises:
            DataError, ModelLoadError, DeviceError, ConfigError: with a message naming the field.
        """
        c = self.config
        self.device = resolve_device(c.device)
        self.prepare_data()
        seed_everything(c.seed)
        if c.dataset == "sinusoid":
            self._prepare_regression()
        else:
            self._prepare_text()
        self.plateau = SmoothedPlateau(c.plateau_threshold, c.plateau_patience)
        self.prepared = True

    def _prepare_regression(self) -> None:
        """Sinusoid: the 1-40-40-1 MLP, every weight meta-trained; ANIL adapts only its last layer."""
        c = self.config
        self.model = SinusoidMLP().to(self.device)
        self.features = None
        names = [n for n, _ in self.model.named_parameters()]
        adapted = [n for n in names if n.startswith("head.")] if c.algorithm == "anil" else names
        self.learner: MetaLearner = build_learner(c, self.model, names, adapted, task_type="regression")

    def build_model(self) -> None:
        """Load the base encoder (+ LoRA adapters) and build the meta-model and the algorithm.

        Needs no data set: also used to load an exported folder (``config.model`` = the folder).
        Sets ``model``, ``learner``, ``second_order`` and ``lora_names``; ``device`` must be set.

        Raises:
            ModelLoadError, ConfigError: the model cannot be loaded, or has fewer layers than asked for.
        """
        c = self.config
        self._status(f"loading the base model '{c.model}'")
        # Fused attention kernels have no double backward: second order through encoder layers needs eager.
        self.second_order = second_order = second_order_through_encoder(c)
        encoder: TextEncoder = load_encoder(c.model, max_length=c.max_length, pooling=c.pooling,
                                            trust_remote_code=c.trust_remote_code,
                                            attn_implementation="eager" if second_order else None)
        for key, value in (("adapt_layers", c.adapt_layers), ("train_layers", c.train_layers)):
            if value > encoder.num_layers:
                raise ConfigError(f"{value} exceeds the model's {encoder.num_layers} transformer layers.",
                                  field=key, hint=f"Use a value from 0 to {encoder.num_layers}.")
        lora_names: list[str] = []
        if c.algorithm == "lora_maml":
            targets = [t for t in c.lora_target_modules.split(",") if t.strip()]
            lora_names = [f"encoder.{n}" for n in add_lora(encoder, r=c.lora_r, alpha=c.lora_alpha,
                                                           dropout=c.lora_dropout, targets=targets,
                                                           layers=c.lora_layers)]
        self.lora_names = lora_names
        if c.gradient_checkpointing:
            enable_gradient_checkpointing(encoder)
        self.model = MetaModel(encoder, c.n_way).to(self.device)
        self.model.requires_grad_(False)
        train_names = ["head.weight", "head.bias", "log_scale", *self.model.encoder_param_names(c.train_layers)]
        adapted = ["head.weight", "head.bias", *self.model.encoder_param_names(c.adapt_layers)]
        if c.algorithm == "protonet":
            train_names = [n for n in train_names if not n.startswith("head.")]
            adapted = []
        if c.algorithm == "lora_maml":  # base weights frozen: adapters (+ head) in both loops
            train_names = ["head.weight", "head.bias", "log_scale", *lora_names]
            adapted = ["head.weight", "head.bias", *lora_names]
        params = dict(self.model.named_parameters())
        for n in train_names:
            params[n].requires_grad_(True)
        self.learner = build_learner(c, self.model, train_names, adapted)

    def _prepare_text(self) -> None:
        """Text classification: the model (:meth:`build_model`), then the episode features."""
        c = self.config
        self.build_model()
        encoder = self.model.encoder
        second_order, lora_names = self.second_order, self.lora_names
        long_texts = count_truncated(encoder.tokenizer, self.tasks.data.texts, c.max_length)
        if long_texts:
            self.tasks.data.warnings.append(f"{long_texts} text(s) are longer than max_length = {c.max_length} "
                                            "tokens and are truncated.")
        frozen = c.train_layers == 0 and c.adapt_layers == 0 and not lora_names
        rows = np.concatenate([v for v in class_rows(self.tasks.data, [
            *self.tasks.split.train, *self.tasks.split.val, *self.tasks.split.test]).values()])
        n_rows = len(rows)
        self._status(f"preparing features of {n_rows} texts" + (" (frozen encoder)" if frozen else ""))
        cache_key = (encoder.info.fingerprint, _weights_stamp(encoder.info.source), self.tasks.data.fingerprint,
                     c.text_column, c.label_column, c.max_length, encoder.pooling, second_order)
        # Frozen encoder: pooled embeddings once per text; only the top layers trained/adapted: the frozen
        # bottom's hidden states once per text. Both come from the on-disk cache when a run made them before.
        top = c.lora_layers if lora_names else max(c.train_layers, c.adapt_layers)
        what = "frozen encoder" if frozen else f"bottom {encoder.num_layers - top} layers"
        self.features = FeatureSource(
            encoder, self.tasks.data.texts, self.device, frozen, rows,
            progress=lambda d, t: self._status(f"encoding {t} texts once ({what})" if d == 0
                                               else f"encoding texts {d}/{t} ({what})"), cache_key=cache_key,
            top_layers=top)
        self.cache_summary: str | None = self.features.summary()
        for note in [self.cache_summary, *self.features.notes, *self.features.stats.errors[:3]]:
            if note:
                self._status(note)

    def data_summary(self) -> dict:
        """What the run row records about its data: ``label_split``, ``data_fingerprint``, ``warnings``."""
        if self.tasks is None:  # sinusoid: no labels
            return {"label_split": None, "data_fingerprint": SINUSOID_FINGERPRINT, "warnings": []}
        # Plus what the embedding cache reused (an info line; the window shows it with the warnings).
        cache_notes = [n for n in [getattr(self, "cache_summary", None),
                                   *getattr(getattr(self, "features", None), "notes", [])] if n]
        return {"label_split": self.tasks.split.to_dict(), "data_fingerprint": self.tasks.data.fingerprint,
                "warnings": list(self.tasks.data.warnings) + cache_notes}

    def test_sampler(self, seed: int) -> EpisodeSampler | SinusoidSampler:
        """A seeded sampler of meta-test episodes: the held-out meta-test classes (text), or a task stream
        independent of the training and validation streams (sinusoid)."""
        c = self.config
        if c.dataset == "sinusoid":
            return SinusoidSampler(c.k_shot, c.q_query, seed=seed + 2_000_029)
        return self.tasks.sampler("test", c.n_way, c.k_shot, c.q_query, seed=seed)

    def load_meta_state(self, state: dict[str, torch.Tensor]) -> None:
        """Copy a :meth:`meta_state` (e.g. read from a checkpoint) into the model and the algorithm.

        Raises:
            KeyError: a name in ``state`` that this run's model has no parameter for, or a missing one.
        """
        params = dict(self.model.named_parameters())
        extra = {k[len("learner."):]: v for k, v in state.items() if k.startswith("learner.")}
        unknown = [k for k in state if not k.startswith("learner.") and k not in params]
        missing = [n for n in self.learner.meta_names if n not in state]
        if unknown or missing:
            raise KeyError(f"meta-state does not fit this model: unknown {unknown[:3]}, missing {missing[:3]}")
        with torch.no_grad():
            for k, v in state.items():
                if k in params:
                    params[k].copy_(v.to(params[k].device, params[k].dtype))
        self.learner.load_extra_state(extra)

    # ---- loop -----------------------------------------------------------------------------------------
    def task(self, ep: Episode | SinusoidEpisode) -> Task:
        """Episode (row indices, or a sinusoid task's points) -> Task (inputs on the device)."""
        d = self.device
        if isinstance(ep, SinusoidEpisode):
            return Task(ep.support_x.to(d), ep.support_y.to(d), ep.query_x.to(d), ep.query_y.to(d))
        return Task(self.features(ep.support_idx), ep.support_y.to(d), self.features(ep.query_idx),
                    ep.query_y.to(d))

    def validate(self) -> tuple[float, float | None] | None:
        """Mean (query loss, accuracy) over the fixed meta-val episodes (accuracy None for regression);
        None if a stop came first."""
        losses, accs = [], []
        chunk = 25  # episodes evaluated as one batch (engine.algorithms.vectorized); a stop is seen between chunks
        for start in range(0, len(self.val_episodes), chunk):
            if self.control.stop_requested:
                return None
            tasks = [self.task(ep) for ep in self.val_episodes[start:start + chunk]]
            for loss, acc in evaluate_tasks(self.learner, tasks, chunk=chunk):
                losses.append(loss)
                accs.append(acc or 0.0)
        return float(np.mean(losses)), (float(np.mean(accs)) if self.config.task_type == "classification" else None)

    def _track_best(self, step: int, val: tuple[float, float | None]) -> bool:
        """Record a validation result; True when early stopping's patience has run out.

        The score is meta-val accuracy (classification) or minus meta-val MSE (regression). With
        ``early_stopping_patience > 0`` a copy (not a live reference) of the meta-state is kept each
        time the score improves, so :meth:`restore_best` can put it back.
        """
        loss, acc = val
        if acc is not None and (self.best_val is None or acc > self.best_val[0]):
            self.best_val = (acc, step)
        score = acc if acc is not None else -loss
        if self._best_score is None or score > self._best_score:
            self._best_score, self.best_step, self._rounds_without_gain = score, step, 0
            if self.config.early_stopping_patience > 0:
                self._best_state = {k: v.detach().clone() for k, v in self.meta_state().items()}
            return False
        self._rounds_without_gain += 1
        patience = self.config.early_stopping_patience
        return patience > 0 and self._rounds_without_gain >= patience

    def restore_best(self) -> bool:
        """Put back the meta-state kept at the best validation (early stopping); False if none was kept."""
        if self._best_state is None:
            return False
        self.load_meta_state(self._best_state)
        return True

    def run(self, start_step: int = 1) -> Iterator[StepRecord]:
        """Iterate the outer loop from ``start_step`` to ``meta_iterations``, one record per iteration.

        Sets :attr:`stop_reason` to the condition that ended it: ``"max_iterations"``, ``"plateau"``
        (smoothed outer loss flat for ``plateau_patience`` iterations), ``"early_stopping"`` (no better
        meta-val score for ``early_stopping_patience`` validations; the best meta-parameters are
        restored first), ``"time_budget"`` (training time, pauses excluded, reached ``max_minutes``) or
        ``"user"``.

        Raises:
            DivergenceError: a loss became NaN/inf (the record of that step is yielded first).
        """
        if not self.prepared:
            self.prepare()
        # No encoder in the loop (cached embeddings, sinusoid): small tensors, one CPU thread (threads.py).
        mode = getattr(self.features, "mode", None)
        with loop_threads(loop_thread_count(self.device, encoder_in_loop=mode not in (None, "pooled"))):
            yield from self._steps(start_step)

    def _steps(self, start_step: int) -> Iterator[StepRecord]:
        """The loop of :meth:`run` (the model is prepared)."""
        c = self.config
        # LoRA-MAML trains (adapters) through every layer: train mode, so LoRA dropout and checkpointing act.
        self.model.train(c.train_layers > 0 or c.algorithm == "lora_maml")
        elapsed = self.start_elapsed_s if start_step > 1 else 0.0  # resumed: the time budget goes on
        for step in range(start_step, c.meta_iterations + 1):
            if self.control.checkpoint():
                self.stop_reason = "user"
                return
            t0 = time.perf_counter()
            early_stop = False
            tasks = [self.task(ep) for ep in self.train_sampler.sample_batch(c.meta_batch_size)]
            metrics = self.learner.outer_step(tasks).as_dict()
            bad = [k for k, v in metrics.items() if not math.isfinite(v)]
            if not bad and (step % c.val_interval == 0 or step == c.meta_iterations or step == 1):
                val = self.validate()
                if val is not None:
                    metrics["val_loss"] = val[0]
                    if val[1] is not None:
                        metrics["val_accuracy"] = val[1]
                    early_stop = self._track_best(step, val)
            elapsed += time.perf_counter() - t0
            yield StepRecord(step, c.meta_iterations, elapsed, metrics)
            if bad:
                hint = "Lower inner_lr or outer_lr, or use fewer inner steps."
                if c.dataset == "sinusoid" and c.inner_lr > 0.01:
                    hint = "use inner_lr 0.01 (see resources/presets/maml_sinusoid.yaml)."
                raise DivergenceError(
                    f"diverged at iteration {step} (inner lr too high?): {', '.join(bad)} = {metrics[bad[0]]}.",
                    field="inner_lr", hint=hint)
            if self.plateau.update(metrics["outer_loss"]):
                self.stop_reason = "plateau"
                return
            if early_stop:
                self.restore_best()
                self.stop_reason = "early_stopping"
                return
            if c.max_minutes > 0 and elapsed >= c.max_minutes * 60.0:
                self.stop_reason = "time_budget"
                return
        self.stop_reason = "max_iterations"

    def meta_state(self) -> dict[str, torch.Tensor]:
        """The meta-parameters (what the outer loop trained) as name -> tensor (live; copy to keep)."""
        params = dict(self.model.named_parameters())
        out = {n: params[n] for n in self.learner.meta_names}
        out.update({f"learner.{k}": v for k, v in self.learner.extra_state().items()})
        return out


def build_learner(config: ExperimentConfig, model: torch.nn.Module, meta_names: list[str],
                  adapted_names: list[str], task_type: str = "classification") -> MetaLearner:
    """Instantiate the algorithm named by ``config.algorithm``.

    Raises:
        ConfigError: unknown algorithm.
    """
    try:
        cls = REGISTRY[config.algorithm]
    except KeyError:
        raise ConfigError(f"unknown algorithm '{config.algorithm}'.", field="algorithm",
                          hint=f"Use one of {', '.join(REGISTRY)}.") from None
    return cls(model, meta_names=meta_names, adapted_names=adapted_names, inner_steps=config.inner_steps,
               inner_lr=config.inner_lr, outer_lr=config.outer_lr, task_type=task_type,
               **cls.config_kwargs(config))


def enable_gradient_checkpointing(encoder: TextEncoder) -> None:
    """Turn on the Hugging Face model's activation checkpointing (non-reentrant ``torch.utils.checkpoint``;
    active while the model is in train mode).

    Raises:
        ConfigError: the architecture does not support it.
    """
    if not getattr(encoder.model, "supports_gradient_checkpointing", False):
        raise ConfigError(f"the {encoder.info.model_type} model does not support gradient checkpointing.",
                          field="gradient_checkpointing", hint="Turn gradient_checkpointing off.")
    kwargs = {"use_reentrant": False}
    if hasattr(encoder.model, "activation_checkpointing_enable"):  # transformers >= 5
        encoder.model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        encoder.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def _weights_stamp(source: str) -> str:
    """Size and modification time of a local model folder's weight files ("" for a hub id): part of the
    frozen-feature cache key, so re-saved weights under the same path are encoded again."""
    folder = Path(source)
    if not folder.is_dir():
        return ""
    return ";".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in sorted(folder.glob("*.safetensors")))
