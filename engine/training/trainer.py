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
from dataclasses import dataclass, field

import numpy as np
import torch

from engine.algorithms import REGISTRY, MetaLearner, Task
from engine.config import ExperimentConfig
from engine.data import Episode, TaskData, load_labelled_data, prepare_tasks, split_labels
from engine.data.episodes import class_rows
from engine.errors import ConfigError, DivergenceError
from engine.models.backbone import TextEncoder, load_encoder
from engine.models.device import resolve_device
from engine.models.metamodel import MetaModel
from engine.training.control import RunControl
from engine.training.features import FeatureSource
from engine.training.stopping import SmoothedPlateau

SECOND_ORDER = {"maml"}
METRICS = ("outer_loss", "inner_loss_pre", "inner_loss_post", "query_accuracy", "val_accuracy", "val_loss")


@dataclass
class StepRecord:
    """What one meta-iteration produced.

    Attributes:
        step: the iteration number, 1-based.
        total: the iteration budget (``meta_iterations``).
        elapsed_s: seconds of training so far (excluding set-up and pauses).
        metrics: metric name -> value (see ``METRICS``); ``val_*`` only on validation steps.
    """

    step: int
    total: int
    elapsed_s: float
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def eta_s(self) -> float:
        """Seconds left at the current pace."""
        return self.elapsed_s / max(self.step, 1) * (self.total - self.step)


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
        self.prepared = False

    # ---- set-up ---------------------------------------------------------------------------------
    def prepare_data(self) -> TaskData:
        """Load, clean and split the data set; check every split can supply episodes.

        Raises:
            DataError: see :func:`~engine.data.load_labelled_data` and :func:`~engine.data.prepare_tasks`.
        """
        c = self.config
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
        self._status(f"loading the base model '{c.model}'")
        # Fused attention kernels have no double backward: second order through encoder layers needs eager.
        second_order = c.algorithm in SECOND_ORDER and c.adapt_layers > 0
        encoder: TextEncoder = load_encoder(c.model, max_length=c.max_length, pooling=c.pooling,
                                            trust_remote_code=c.trust_remote_code,
                                            attn_implementation="eager" if second_order else None)
        for key, value in (("adapt_layers", c.adapt_layers), ("train_layers", c.train_layers)):
            if value > encoder.num_layers:
                raise ConfigError(f"{value} exceeds the model's {encoder.num_layers} transformer layers.",
                                  field=key, hint=f"Use a value from 0 to {encoder.num_layers}.")
        self.model = MetaModel(encoder, c.n_way).to(self.device)
        self.model.requires_grad_(False)
        train_names = ["head.weight", "head.bias", "log_scale", *self.model.encoder_param_names(c.train_layers)]
        adapted = ["head.weight", "head.bias", *self.model.encoder_param_names(c.adapt_layers)]
        if c.algorithm == "protonet":
            train_names = [n for n in train_names if not n.startswith("head.")]
            adapted = []
        params = dict(self.model.named_parameters())
        for n in train_names:
            params[n].requires_grad_(True)
        frozen = c.train_layers == 0 and c.adapt_layers == 0
        rows = np.concatenate([v for v in class_rows(self.tasks.data, [
            *self.tasks.split.train, *self.tasks.split.val, *self.tasks.split.test]).values()])
        n_rows = len(rows)
        self._status(f"encoding {n_rows} texts once (frozen encoder)" if frozen else "preparing the encoder")
        self.features = FeatureSource(
            encoder, self.tasks.data.texts, self.device, frozen, rows,
            progress=lambda d, t: self._status(f"encoding texts {d}/{t} (frozen encoder)"))
        self.learner: MetaLearner = build_learner(c, self.model, train_names, adapted)
        self.plateau = SmoothedPlateau(c.plateau_threshold, c.plateau_patience)
        self.prepared = True

    # ---- loop -----------------------------------------------------------------------------------------
    def task(self, ep: Episode) -> Task:
        """Episode (row indices) -> Task (inputs on the device)."""
        d = self.device
        return Task(self.features(ep.support_idx), ep.support_y.to(d), self.features(ep.query_idx),
                    ep.query_y.to(d))

    def validate(self) -> tuple[float, float] | None:
        """Mean (query loss, accuracy) over the fixed meta-val episodes; None if a stop came first."""
        losses, accs = [], []
        for ep in self.val_episodes:
            if self.control.stop_requested:
                return None
            loss, acc = self.learner.evaluate(self.task(ep))
            losses.append(loss)
            accs.append(acc or 0.0)
        return float(np.mean(losses)), float(np.mean(accs))

    def run(self, start_step: int = 1) -> Iterator[StepRecord]:
        """Iterate the outer loop from ``start_step`` to ``meta_iterations``, one record per iteration.

        Sets :attr:`stop_reason` to ``"max_iterations"``, ``"plateau"`` or ``"user"`` when it ends.

        Raises:
            DivergenceError: a loss became NaN/inf (the record of that step is yielded first).
        """
        if not self.prepared:
            self.prepare()
        c = self.config
        self.model.train(c.train_layers > 0)
        elapsed = 0.0
        for step in range(start_step, c.meta_iterations + 1):
            if self.control.checkpoint():
                self.stop_reason = "user"
                return
            t0 = time.perf_counter()
            tasks = [self.task(ep) for ep in self.train_sampler.sample_batch(c.meta_batch_size)]
            metrics = self.learner.outer_step(tasks).as_dict()
            bad = [k for k, v in metrics.items() if not math.isfinite(v)]
            if not bad and (step % c.val_interval == 0 or step == c.meta_iterations or step == start_step):
                val = self.validate()
                if val is not None:
                    metrics["val_loss"], metrics["val_accuracy"] = val
                    if self.best_val is None or val[1] > self.best_val[0]:
                        self.best_val = (val[1], step)
            elapsed += time.perf_counter() - t0
            yield StepRecord(step, c.meta_iterations, elapsed, metrics)
            if bad:
                raise DivergenceError(
                    f"diverged at iteration {step}: {', '.join(bad)} = {metrics[bad[0]]} (inner lr too high?).",
                    field="inner_lr", hint="Lower inner_lr or outer_lr, or use fewer inner steps.")
            if self.plateau.update(metrics["outer_loss"]):
                self.stop_reason = "plateau"
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
               inner_lr=config.inner_lr, outer_lr=config.outer_lr, task_type=task_type)
