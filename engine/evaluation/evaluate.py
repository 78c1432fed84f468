"""Honest meta-test evaluation: the run's meta-learned model against two baselines, same episodes.

For text classification every method sees the *same* seeded N-way K-shot episodes drawn from the
meta-test classes (never seen in meta-training or meta-validation):

* ``meta`` — the run's meta-learned model, adapted to each support set by its own algorithm
  (``inner_steps`` steps, or prototypes for ProtoNet) and scored on the query set;
* ``nearest_centroid`` — no meta-training: the *pretrained* base model's frozen pooled embeddings,
  L2-normalised, each query assigned to the nearest class mean of the support embeddings
  (squared Euclidean distance on unit vectors, i.e. cosine similarity);
* ``finetune_head`` — no meta-training: a fresh zero-initialised linear head on the same pretrained
  embeddings (unit-norm × 10, the initial scale of :class:`~engine.models.metamodel.MetaModel`), trained on the
  support set with plain SGD for the run's ``inner_steps`` steps of size ``inner_lr``.

Each method's score is the mean query accuracy over the episodes with a 95% confidence interval
1.96·s/√n (s the sample standard deviation over episodes, n the episode count). **meta-gain** is
``meta − finetune_head`` computed per episode (paired differences on identical episodes), with the CI
of those differences: positive means meta-learning beat fine-tuning a fresh head with the same budget.

For sinusoid regression the score is the query MSE after adaptation, reported as mean ± CI plus the
median and the number of tasks whose adaptation diverged (MSE not finite or above :data:`DIVERGED_MSE`;
a NaN MSE counts as +inf; a single such task turns the mean into inf while the median stays meaningful). The baseline
``finetune_head`` is a freshly initialised MLP (same seed as the run's starting point) adapted in the
same way (same parameters, steps and step size); ``nearest_centroid`` does not apply. meta-gain for
regression is ``finetune_head MSE − meta MSE`` per task (positive = meta better), over tasks where
both are finite.

Evaluation runs with the model in eval mode (no dropout), changes no parameter or buffer, and gives
identical numbers when repeated with the same seed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from engine.algorithms.maml import MAML
from engine.algorithms.protonet import prototype_logits
from engine.algorithms.vectorized import evaluate_tasks
from engine.errors import DataError, MetaStudioError
from engine.training.checkpoint import load_tensors
from engine.training.threads import loop_thread_count, loop_threads

CHUNK = 25  # episodes evaluated together
DIVERGED_MSE = 100.0  # 4x the MSE of predicting 0 for the largest amplitude (A = 5: mean A² sin² = 12.5)
BASELINE_SCALE = 10.0  # MetaModel's initial embedding scale


def mean_ci(values: Sequence[float]) -> tuple[float, float]:
    """(mean, 1.96·s/√n) of ``values`` (s: sample standard deviation; CI 0 for a single value).

    Non-finite values propagate into the mean (inf/NaN), as they should.
    """
    v = np.asarray(values, dtype=np.float64)
    if len(v) == 0:
        return float("nan"), float("nan")
    mean = float(v.mean())
    if len(v) < 2 or not np.isfinite(v).all():
        return mean, (0.0 if len(v) < 2 else float("nan"))
    return mean, float(1.96 * v.std(ddof=1) / math.sqrt(len(v)))


def finetune_head_accuracy(support: torch.Tensor, support_y: torch.Tensor, query: torch.Tensor,
                           query_y: torch.Tensor, n_way: int, steps: int, lr: float) -> torch.Tensor:
    """Query accuracy per episode of a zero-initialised linear head trained on each episode's support set.

    Args:
        support: support embeddings (E, S, D) of E episodes; support_y: (E, S) class indices.
        query: (E, Q, D); query_y: (E, Q).
        steps, lr: plain SGD steps of size ``lr`` on the mean cross-entropy of unit-norm embeddings × 10.

    Returns:
        Accuracies (E,), fractions in [0, 1]. Each episode's head is trained independently.
    """
    zs = F.normalize(support.float(), dim=-1) * BASELINE_SCALE
    zq = F.normalize(query.float(), dim=-1) * BASELINE_SCALE
    e, _, d = zs.shape
    w = torch.zeros(e, n_way, d, device=zs.device, requires_grad=True)
    b = torch.zeros(e, n_way, device=zs.device, requires_grad=True)
    with torch.enable_grad():
        for _ in range(steps):
            logits = torch.baddbmm(b[:, None, :], zs, w.transpose(1, 2))  # (E, S, N)
            # sum over episodes of each episode's mean loss: every head gets its own episode's gradient
            loss = F.cross_entropy(logits.reshape(-1, n_way), support_y.reshape(-1), reduction="none")
            loss = loss.view(e, -1).mean(1).sum()
            gw, gb = torch.autograd.grad(loss, [w, b])
            w = (w - lr * gw).detach().requires_grad_(True)
            b = (b - lr * gb).detach().requires_grad_(True)
    with torch.no_grad():
        logits = torch.baddbmm(b[:, None, :], zq, w.transpose(1, 2))
        return (logits.argmax(-1) == query_y).float().mean(1)


def nearest_centroid_accuracy(support: torch.Tensor, support_y: torch.Tensor, query: torch.Tensor,
                              query_y: torch.Tensor, n_way: int) -> torch.Tensor:
    """Query accuracy per episode of the nearest class mean of L2-normalised support embeddings.

    Shapes as :func:`finetune_head_accuracy`; returns (E,).
    """
    s = F.normalize(support.float(), dim=-1)
    q = F.normalize(query.float(), dim=-1)
    return torch.stack([(prototype_logits(s[i], support_y[i], q[i], n_way).argmax(-1) == query_y[i]).float().mean()
                        for i in range(s.shape[0])])


def _pretrained_features(trainer) -> Callable[[torch.Tensor], torch.Tensor]:
    """Row indices -> pooled embeddings (B, D) of the *pretrained* base model (never meta-trained)."""
    from engine.models.backbone import load_encoder
    from engine.training.features import FeatureSource

    if trainer.features.table is not None:  # frozen run: its table is exactly the pretrained embeddings
        return trainer.features
    c = trainer.config
    encoder = load_encoder(c.model, max_length=c.max_length, pooling=c.pooling,
                           trust_remote_code=c.trust_remote_code).to(trainer.device)
    from engine.data.episodes import class_rows

    rows = np.concatenate(list(class_rows(trainer.tasks.data, trainer.tasks.split.test).values()))
    return FeatureSource(encoder, trainer.tasks.data.texts, trainer.device, True, rows)


def _summary(values: list[float], key: str, regression: bool) -> dict[str, Any]:
    if regression:  # a NaN MSE comes from a diverged adaptation: count it as infinitely bad, not missing
        values = [math.inf if math.isnan(v) else v for v in values]
    mean, ci = mean_ci(values)
    out: dict[str, Any] = {key: mean, "ci95": ci}
    if regression:
        arr = np.asarray(values, dtype=np.float64)
        out["median"] = float(np.median(arr)) if len(arr) else float("nan")
        out["diverged"] = int(np.sum(~np.isfinite(arr) | (arr > DIVERGED_MSE)))
    return out


@torch.no_grad()
def _model_snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def evaluate_trainer(trainer, episodes: int = 600, seed: int = 0, steps: int | None = None,
                     methods: Sequence[str] | None = None) -> dict[str, Any]:
    """Meta-test a prepared :class:`~engine.training.trainer.MetaTrainer` (its current meta-parameters).

    Args:
        trainer: prepared (and usually trained or loaded from a checkpoint).
        episodes: meta-test episodes (tasks), the same for every method.
        seed: the episode seed (the same seed gives the same episodes and the same numbers).
        steps: adaptation steps for ``meta`` and ``finetune_head`` (default: the run's ``inner_steps``).
        methods: a subset of ``("meta", "nearest_centroid", "finetune_head")``; default all that apply.

    Returns:
        ``{"episodes", "seed", "methods": {name: {"accuracy" | "mse", "ci95", ...}}, "meta_gain": {"value",
        "ci95"}}``; accuracies are fractions in [0, 1]. ``meta_gain`` is absent if ``meta`` or
        ``finetune_head`` was not evaluated.

    Raises:
        ValueError: ``episodes`` < 1 or an unknown method name.
    """
    if episodes < 1:
        raise ValueError("episodes must be >= 1")
    c = trainer.config
    regression = c.task_type == "regression"
    applicable = ("meta", "finetune_head") if regression else ("meta", "nearest_centroid", "finetune_head")
    methods = tuple(methods or applicable)
    unknown = [m for m in methods if m not in applicable]
    if unknown:
        raise ValueError(f"unknown or inapplicable evaluation method(s) {unknown}; use {applicable}")
    steps = c.inner_steps if steps is None else steps
    eps = trainer.test_sampler(seed).sample_batch(episodes)
    model = trainer.model
    was_training = model.training
    model.eval()
    scores: dict[str, list[float]] = {m: [] for m in methods}
    # Small tensors unless the encoder runs per episode: one CPU thread is fastest (engine.training.threads).
    encoder_in_loop = getattr(trainer.features, "mode", None) not in (None, "pooled")
    baselines = {"nearest_centroid", "finetune_head"} & set(methods)
    feats = _pretrained_features(trainer) if baselines and not regression else None
    fresh = _regression_baseline(trainer, steps) if baselines and regression else None
    try:
        with loop_threads(loop_thread_count(trainer.device, encoder_in_loop)):
            for start in range(0, len(eps), CHUNK):
                part = eps[start:start + CHUNK]
                if "meta" in methods:  # batched where the algorithm allows; the same values as one by one
                    for loss, acc in evaluate_tasks(trainer.learner, [trainer.task(ep) for ep in part], steps,
                                                    chunk=CHUNK):
                        scores["meta"].append(loss if regression else float(acc))
                if fresh is not None:
                    scores["finetune_head"].extend(
                        loss for loss, _ in evaluate_tasks(fresh, [trainer.task(ep) for ep in part], steps, chunk=CHUNK))
                if feats is not None:
                    s = torch.stack([feats(ep.support_idx) for ep in part])
                    q = torch.stack([feats(ep.query_idx) for ep in part])
                    sy = torch.stack([ep.support_y for ep in part]).to(s.device)
                    qy = torch.stack([ep.query_y for ep in part]).to(s.device)
                    if "nearest_centroid" in methods:
                        scores["nearest_centroid"].extend(nearest_centroid_accuracy(s, sy, q, qy, c.n_way).tolist())
                    if "finetune_head" in methods:
                        scores["finetune_head"].extend(
                            finetune_head_accuracy(s, sy, q, qy, c.n_way, steps, c.inner_lr).tolist())
    finally:
        model.train(was_training)
    key = "mse" if regression else "accuracy"
    result: dict[str, Any] = {"episodes": episodes, "seed": seed,
                              "methods": {m: _summary(scores[m], key, regression) for m in methods}}
    if "meta" in methods and "finetune_head" in methods:
        meta, base = np.asarray(scores["meta"]), np.asarray(scores["finetune_head"])
        diff = base - meta if regression else meta - base
        if regression:
            diff = diff[np.isfinite(diff)]
        value, ci = mean_ci(diff)
        result["meta_gain"] = {"value": value, "ci95": ci}
    return result


def _regression_baseline(trainer, steps: int) -> MAML:
    """A learner on a fresh MLP (the run's seeded initialisation, no meta-training) that adapts the same
    parameters as the run's algorithm with plain SGD of ``inner_lr``."""
    from engine.models.sinusoid import SinusoidMLP

    c = trainer.config
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(c.seed)
        fresh = SinusoidMLP().to(trainer.device).eval()
    finally:
        torch.random.set_rng_state(state)
    adapted = list(trainer.learner.adapted_names)
    return MAML(fresh, meta_names=adapted, adapted_names=adapted, inner_steps=steps, inner_lr=c.inner_lr,
                outer_lr=c.outer_lr, task_type="regression")


def _final_checkpoint(store, run_id: int, status: str) -> str:
    finals = [r for r in store.list_checkpoints(run_id) if r["kind"] == "final"]
    if not finals:
        raise MetaStudioError(f"run {run_id} has no final checkpoint (status: {status}), so there is no "
                              "meta-learned model to evaluate.", field="RUN_ID",
                              hint="Evaluate a completed or stopped run (see: metastudio runs).")
    return finals[-1]["path"]


def evaluate_run(store, run_id: int, episodes: int = 600, seed: int = 0, *, device: str | None = None,
                 save: bool = True, status: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Rebuild a stored run from its config, load its final checkpoint and meta-test it (see the module doc).

    Args:
        store: an open :class:`~engine.store.RunStore`.
        run_id: the run.
        episodes, seed: as :func:`evaluate_trainer`.
        device: override the run's ``device`` (e.g. ``"cpu"`` on a machine without its GPU).
        save: add the result to the ``evaluations`` table.
        status: receives progress text.

    Returns:
        The result of :func:`evaluate_trainer` with ``"run_id"`` first.

    Raises:
        MetaStudioError: no such run, or no final checkpoint.
        DataError: the data set changed since training (its label split differs from the stored one).
        ConfigError, ModelLoadError, DeviceError: rebuilding the run failed.
    """
    from engine.config import check_stored_paths, validate_config
    from engine.training.trainer import MetaTrainer

    say = status or (lambda _m: None)
    try:
        run = store.get_run(run_id)
    except KeyError:
        raise MetaStudioError(f"no run with id {run_id} in {store.path}.", field="RUN_ID",
                              hint="List runs with: metastudio runs") from None
    path = _final_checkpoint(store, run_id, run["status"])
    cfg = run["config"]
    check_stored_paths(cfg, run_id, store.path)
    if device is not None:
        cfg = {**cfg, "device": device}
    config = validate_config(cfg)
    trainer = MetaTrainer(config, status=say)
    trainer.prepare()
    stored_split = run.get("label_split")
    if stored_split and trainer.tasks is not None and trainer.tasks.split.to_dict() != stored_split:
        raise DataError(f"the data set '{config.dataset}' changed since run {run_id} was trained: its "
                        "meta-train/val/test label split differs, so meta-test classes could leak.",
                        field="dataset", hint="Evaluate with the data file the run was trained on.")
    say(f"loading {path}")
    trainer.load_meta_state(load_tensors(path))
    say(f"meta-testing on {episodes} episodes")
    result = {"run_id": run_id, **evaluate_trainer(trainer, episodes=episodes, seed=seed)}
    if save:
        store.add_evaluation(run_id, episodes=episodes, seed=seed, split="test", result=result)
    return result
