"""Vectorised meta-batches: every task of a meta-batch in one batched computation.

The per-task loop of :class:`~engine.algorithms.maml.MAML` runs the inner loop once per task: many
small tensor operations, each paying Python and dispatch overhead. When the tasks' inputs are tensors
of equal shape (cached embeddings, sinusoid points), the meta-batch is stacked along a leading task
dimension ``T`` and each task gets its own slice of a batched copy of the fast weights::

    fast[n] = θ[n].expand(T, *θ[n].shape)                       (no module copies)
    L_t     = loss(f(fast[t], X_support[t]), Y_support[t])      for all t at once
    g       = ∂(Σ_t L_t)/∂fast  →  g[t] = ∇L_t(fast[t])          (tasks are independent)
    fast    = fast − α ⊙ g                                        (create_graph for second order)

so one ``torch.autograd.grad`` call gives every task's inner gradient, and the query loss's
``.backward()`` sums the meta-gradient over tasks through the ``expand``, exactly as the per-task loop
does (Finn et al. 2017, Algorithm 2; the same holds for FOMAML, ANIL, Meta-SGD and Reptile).

The batched forward ``f(fast (T, ...), X (T, B, ...))`` is built once per module by
:class:`BatchedForward`: ``torch.func.vmap`` over ``torch.func.functional_call`` for any module, and
hand-batched matrix products (``torch.baddbmm``) where the module is a linear layer or a graph of
linear layers and element-wise activations (checked with ``torch.fx``), which is about twice as fast.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from engine.algorithms.base import MetaLearner, StepMetrics, Task, classification_loss, regression_loss

if TYPE_CHECKING:
    from engine.algorithms.maml import MAML

# Parameter-free modules that act element-wise, so they run unchanged on a (T, B, ...) batch.
ELEMENTWISE = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.GELU, nn.SiLU, nn.Mish, nn.Tanh,
               nn.Sigmoid, nn.Softplus, nn.Hardtanh, nn.Identity, nn.Dropout)


def vectorize_enabled() -> bool:
    """False when ``$METASTUDIO_VECTORIZE`` is ``0``/``off`` (forces the per-task loops, for debugging)."""
    return os.environ.get("METASTUDIO_VECTORIZE", "1").strip().lower() not in ("0", "off", "false", "no")


def stack_tasks(tasks: Sequence[Task]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """Stack a meta-batch into (X_s (T, S, ...), Y_s (T, S, ...), X_q (T, Q, ...), Y_q (T, Q, ...)).

    Returns None when the tasks cannot be stacked: an input is not a tensor (a tokenised batch) or the
    shapes differ between tasks.
    """
    if not tasks:
        return None
    first = tasks[0]
    fields = (first.support_x, first.support_y, first.query_x, first.query_y)
    if not all(isinstance(f, torch.Tensor) for f in fields):
        return None
    for t in tasks[1:]:
        other = (t.support_x, t.support_y, t.query_x, t.query_y)
        if not all(isinstance(o, torch.Tensor) and o.shape == f.shape for o, f in zip(other, fields, strict=True)):
            return None
    return (torch.stack([t.support_x for t in tasks]), torch.stack([t.support_y for t in tasks]),
            torch.stack([t.query_x for t in tasks]), torch.stack([t.query_y for t in tasks]))


def concat_token_batches(batches: Sequence[dict], pad_id: int = 0) -> dict:
    """One tokenised batch from several: rows concatenated, each tensor right-padded to the longest T.

    ``input_ids`` are padded with ``pad_id``, masks and ``token_type_ids`` with 0, cached bottom hidden
    states (B, T, D) with zeros; non-tensor entries (e.g. the bottom-layer spec) are taken from the first.
    Padded positions are masked, so every row's output is what its own batch would give.
    """
    width = max(b["attention_mask"].shape[1] for b in batches)
    out: dict = {}
    for key, first in batches[0].items():
        if not isinstance(first, torch.Tensor):
            out[key] = first
            continue
        value = pad_id if key == "input_ids" else 0
        parts = []
        for b in batches:
            t = b[key]
            extra = width - t.shape[1]
            if extra:
                pad = [0, 0] * (t.dim() - 2) + [0, extra]
                t = F.pad(t, pad, value=value)
            parts.append(t)
        out[key] = torch.cat(parts)
    return out


def embed_tasks(model: nn.Module, tasks: Sequence[Task], pad_id: int = 0
                ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``model.embed`` of every task's support and query inputs in one pass: ((T, S, D), (T, Q, D)).

    Valid when the embedding is shared by all tasks (a head-only inner loop, or ProtoNet) and computed
    row by row. Inputs may be tensors (cached features, points) or tokenised batches (concatenated with
    :func:`concat_token_batches`). None when the tasks' support (or query) sizes differ or the input
    kinds are mixed.
    """
    xs = [t.support_x for t in tasks]
    xq = [t.query_x for t in tasks]
    parts = xs + xq
    if all(isinstance(p, torch.Tensor) for p in parts):
        if any(p.shape != xs[0].shape for p in xs) or any(p.shape != xq[0].shape for p in xq):
            return None
        big = torch.cat(parts)
    elif all(isinstance(p, dict) for p in parts):
        big = concat_token_batches(parts, pad_id)
    else:
        return None
    sizes = [(p.shape[0] if isinstance(p, torch.Tensor) else p["attention_mask"].shape[0]) for p in parts]
    n = len(tasks)
    if len(set(sizes[:n])) != 1 or len(set(sizes[n:])) != 1:
        return None
    emb = model.embed(big)
    s_rows = sizes[0] * n
    return emb[:s_rows].view(n, sizes[0], *emb.shape[1:]), emb[s_rows:].view(n, sizes[n], *emb.shape[1:])


def _stack_targets(tasks: Sequence[Task]) -> tuple[torch.Tensor, torch.Tensor] | None:
    ys, yq = [t.support_y for t in tasks], [t.query_y for t in tasks]
    if any(y.shape != ys[0].shape for y in ys) or any(y.shape != yq[0].shape for y in yq):
        return None
    return torch.stack(ys), torch.stack(yq)


def _pad_id(model: nn.Module) -> int:
    tok = getattr(getattr(model, "encoder", None), "tokenizer", None)
    pad = getattr(tok, "pad_token_id", None)
    return int(pad) if pad is not None else 0


def _batched_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x (T, B, in) with weight (T, out, in) or (out, in) and bias (T, out), (out,) or None -> (T, B, out)."""
    if weight.dim() == 2:
        out = x @ weight.transpose(-1, -2)
    elif bias is not None:
        return torch.baddbmm(bias.unsqueeze(-2) if bias.dim() == 2 else bias, x, weight.transpose(-1, -2))
    else:
        out = torch.bmm(x, weight.transpose(-1, -2))
    if bias is not None:
        out = out + (bias.unsqueeze(-2) if bias.dim() == 2 else bias)
    return out


class BatchedForward:
    """``f(params, x)`` for a batch of tasks: params name -> (T, *shape), x (T, B, ...) -> (T, B, ...).

    Args:
        module: the network (or the part of it the inner loop runs, e.g. a head).
        force_vmap: always use ``vmap(functional_call)`` (for tests and benchmarks).

    Parameters absent from ``params`` are the module's own (shared by every task). :attr:`mode` is
    ``"linear"`` (one ``nn.Linear``), ``"graph"`` (an fx graph of linear layers and element-wise
    activations, hand-batched) or ``"vmap"`` (any module).
    """

    def __init__(self, module: nn.Module, force_vmap: bool = False) -> None:
        self.module = module
        self.steps: list[tuple[str, nn.Module]] | None = None
        if force_vmap:
            self.mode = "vmap"
        elif isinstance(module, nn.Linear):
            self.mode = "linear"
        else:
            self.steps = _linear_chain(module)
            self.mode = "graph" if self.steps is not None else "vmap"
        if self.mode == "vmap":
            self._vmapped = vmap(lambda p, x: functional_call(module, p, (x,)), in_dims=(0, 0),
                                 randomness="different")

    def __call__(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        if self.mode == "linear":
            m = self.module
            return _batched_linear(x, params.get("weight", m.weight), params.get("bias", m.bias))
        if self.mode == "graph":
            for name, sub in self.steps:  # type: ignore[union-attr]
                if isinstance(sub, nn.Linear):
                    x = _batched_linear(x, params.get(f"{name}.weight", sub.weight),
                                        params.get(f"{name}.bias", sub.bias))
                else:
                    x = sub(x)
            return x
        return self._vmapped(params, x)


def _linear_chain(module: nn.Module) -> list[tuple[str, nn.Module]] | None:
    """The module's forward as an ordered list of (name, Linear or element-wise module), or None.

    Traced with ``torch.fx``; any other operation (a reshape, a function call, a branch on data, a
    module type not listed in :data:`ELEMENTWISE`) makes the module fall back to ``vmap``.
    """
    try:
        graph = torch.fx.symbolic_trace(module).graph
    except Exception:
        return None
    steps: list[tuple[str, nn.Module]] = []
    current = None
    for node in graph.nodes:
        if node.op == "placeholder":
            if current is not None:
                return None
            current = node
        elif node.op == "call_module":
            sub = module.get_submodule(node.target)
            if not isinstance(sub, (nn.Linear, *ELEMENTWISE)) or node.args != (current,) or node.kwargs:
                return None
            steps.append((node.target, sub))
            current = node
        elif node.op == "output":
            if node.args != (current,):
                return None
        else:
            return None
    return steps or None


def batched_loss(loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], pred: torch.Tensor,
                 y: torch.Tensor) -> torch.Tensor:
    """Per-task mean loss (T,) of predictions (T, B, ...) against targets (T, B, ...)."""
    if loss_fn is classification_loss:
        t = pred.shape[0]
        return F.cross_entropy(pred.flatten(0, 1), y.flatten(), reduction="none").view(t, -1).mean(1)
    if loss_fn is regression_loss:
        return (pred - y).pow(2).flatten(1).mean(1)
    return vmap(loss_fn)(pred, y)


def can_vectorize(learner: MAML, tasks: Sequence[Task]) -> bool:
    """Whether :func:`vectorized_outer_step` reproduces ``learner``'s per-task loop on ``tasks``.

    True when vectorising is on (:attr:`MAML.vectorize` and ``$METASTUDIO_VECTORIZE``), the learner
    keeps MAML's inner loop and forward (a subclass may change ``lr_for`` — Meta-SGD — or the
    parameter sets — ANIL — but not the update rule), the model has no batch-norm layer (its
    statistics would mix tasks) and the inputs are tensors, or tokenised batches with a head-only
    inner loop (the encoder, shared by all tasks, then runs once on the whole meta-batch).
    """
    from engine.algorithms.maml import MAML

    cls = type(learner)
    if not (getattr(learner, "vectorize", False) and vectorize_enabled()):
        return False
    if cls.inner_loop is not MAML.inner_loop or cls._fn is not MetaLearner._fn:
        return False
    if not learner.adapted_names:
        return False
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in learner.model.modules()):
        return False
    first = tasks[0] if tasks else None
    # Tokenised inputs vectorise only when the encoder is shared by all tasks (head-only inner loop).
    return first is not None and (isinstance(first.support_x, torch.Tensor) or learner._head_only)


class VectorizedInner:
    """The inner loop of MAML-style learners for a stacked meta-batch.

    Args:
        learner: the MAML (or subclass) whose parameters, ``lr_for`` and loss are used.
        force_vmap: use ``vmap`` for the batched forward even where hand-batching applies.
    """

    def __init__(self, learner: MAML, force_vmap: bool = False) -> None:
        self.learner = learner
        model = learner.model
        self.head_only = learner._head_only
        self.prefix = "head." if self.head_only else ""
        self.forward = BatchedForward(model.head if self.head_only else model, force_vmap=force_vmap)

    def prepare(self, tasks: Sequence[Task]) -> tuple[torch.Tensor, ...] | None:
        """(X_s, Y_s, X_q, Y_q) stacked over tasks, X as the batched forward takes it: embeddings
        (T, B, D') with a head-only inner loop (one encoder pass for the whole meta-batch), else the
        raw inputs (T, B, ...). None when the tasks do not stack."""
        targets = _stack_targets(tasks)
        if targets is None:
            return None
        if self.head_only:
            emb = embed_tasks(self.learner.model, tasks, _pad_id(self.learner.model))
            if emb is None:
                return None
            return emb[0], targets[0], emb[1], targets[1]
        stacked = stack_tasks(tasks)
        return stacked

    def initial(self, n_tasks: int, track: bool) -> dict[str, torch.Tensor]:
        """Fast weights (T, *shape): views of the live meta-parameters (``track``) or detached copies."""
        params = dict(self.learner.model.named_parameters())
        meta = set(self.learner.meta_names) if track else set()
        out = {}
        for n in self.learner.adapted_names:
            p = params[n]
            if n in meta:
                out[n] = p.expand(n_tasks, *p.shape)
            else:
                out[n] = p.detach().unsqueeze(0).repeat(n_tasks, *([1] * p.dim())).requires_grad_(True)
        return out

    def run(self, fast: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """Batched predictions (T, B, ...) with fast weights named as the model's parameters."""
        k = len(self.prefix)
        return self.forward({n[k:]: w for n, w in fast.items()}, x)

    def adapt(self, fast: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor, steps: int,
              create_graph: bool) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        """``steps`` SGD steps on every task's support loss; returns (fast weights, losses (T,) before step 1)."""
        learner = self.learner
        pre = None
        for _ in range(steps):
            losses = batched_loss(learner.loss_fn, self.run(fast, x), y)
            if pre is None:
                pre = losses.detach()
            grads = torch.autograd.grad(losses.sum(), list(fast.values()), create_graph=create_graph)
            fast = {n: w - learner.lr_for(n) * g for (n, w), g in zip(fast.items(), grads, strict=True)}
        return fast, pre


def vectorized_outer_step(learner: MAML, tasks: Sequence[Task], force_vmap: bool = False) -> StepMetrics | None:
    """One MAML outer step over a stacked meta-batch; None when :func:`can_vectorize` says no.

    Gives the same meta-gradient as the per-task loop (up to float rounding) and the same metrics
    (means over tasks). The optimiser step is the learner's.
    """
    if not can_vectorize(learner, tasks):
        return None
    inner = _inner_for(learner, force_vmap)
    learner.optimizer.zero_grad(set_to_none=True)
    prepared = inner.prepare(tasks)
    if prepared is None:
        return None
    xs, sy, xq, qy = prepared
    fast = inner.initial(len(tasks), track=True)
    fast, pre = inner.adapt(fast, xs, sy, learner.inner_steps, create_graph=not learner.first_order)
    # Query predictions and the support fit after adaptation in one forward call (rows are independent).
    both = inner.run(fast, torch.cat([xq, xs], 1))
    pred, post_pred = both[:, :xq.shape[1]], both[:, xq.shape[1]:].detach()
    losses = batched_loss(learner.loss_fn, pred, qy)
    losses.mean().backward()
    with torch.no_grad():
        post = batched_loss(learner.loss_fn, post_pred, sy).mean().item()
    learner.optimizer.step()
    acc = None
    if learner.task_type == "classification":
        acc = (pred.detach().argmax(-1) == qy).float().mean().item()
    return StepMetrics(losses.detach().mean().item(), pre.mean().item() if pre is not None else post, post, acc)


def vectorized_reptile_step(learner: MAML, tasks: Sequence[Task], force_vmap: bool = False) -> StepMetrics | None:
    """One Reptile outer step (Nichol et al. 2018, Algorithm 2) over a stacked meta-batch.

    Every task adapts a copy of θ for ``inner_steps`` first-order SGD steps at once; then
    ``θ ← θ + ε · mean_t(W_t − θ)`` with ε = ``learner.epsilon``. Returns None when
    :func:`can_vectorize` says no (the caller runs its per-task loop).
    """
    if not can_vectorize(learner, tasks):
        return None
    inner = _inner_for(learner, force_vmap)
    params = dict(learner.model.named_parameters())
    n_tasks = len(tasks)
    with torch.no_grad():
        prepared = inner.prepare(tasks)
        if prepared is None:
            return None
        xs, sy, xq, qy = prepared
        initial = {n: params[n].detach().clone() for n in learner.adapted_names}
    fast = {n: w.unsqueeze(0).repeat(n_tasks, *([1] * w.dim())).requires_grad_(True) for n, w in initial.items()}
    with torch.enable_grad():
        fast, pre = inner.adapt(fast, xs, sy, learner.inner_steps, create_graph=False)
    with torch.no_grad():
        fast = {n: w.detach() for n, w in fast.items()}
        post = batched_loss(learner.loss_fn, inner.run(fast, xs), sy).mean().item()
        pred = inner.run(fast, xq)
        outer = batched_loss(learner.loss_fn, pred, qy).mean().item()
        for name in learner.meta_names:
            params[name].add_((fast[name] - initial[name]).mean(0), alpha=learner.epsilon)
    acc = None
    if learner.task_type == "classification":
        acc = (pred.argmax(-1) == qy).float().mean().item()
    return StepMetrics(outer, pre.mean().item() if pre is not None else post, post, acc)


def batched_prototype_logits(support: torch.Tensor, support_y: torch.Tensor, query: torch.Tensor,
                             n_way: int) -> torch.Tensor:
    """Logits (T, Q, N) = −‖query − prototype‖² per task, for support (T, S, D), support_y (T, S) int64
    and query (T, Q, D); a prototype is the mean of its class's support rows (Snell et al. 2017, Eq. 1)."""
    onehot = F.one_hot(support_y, n_way).to(support.dtype)  # (T, S, N)
    protos = onehot.transpose(1, 2) @ support / onehot.sum(1).clamp(min=1).unsqueeze(-1)  # (T, N, D)
    return -torch.cdist(query, protos).pow(2)


def vectorized_protonet_step(learner: MetaLearner, tasks: Sequence[Task]) -> StepMetrics | None:
    """One ProtoNet outer step (Snell et al. 2017, Algorithm 1) over a stacked meta-batch.

    Same loss and gradient as the per-task loop of :class:`~engine.algorithms.protonet.ProtoNet`
    (mean over tasks of the query cross-entropy); None when the tasks do not stack or vectorising is off.
    """
    if not (getattr(learner, "vectorize", False) and vectorize_enabled()):
        return None
    targets = _stack_targets(tasks)
    if targets is None:
        return None
    sy, qy = targets
    model = learner.model
    learner.optimizer.zero_grad(set_to_none=True)
    emb = embed_tasks(model, tasks, _pad_id(model))  # one encoder pass for the whole meta-batch
    if emb is None:
        return None
    s, q = emb
    n_way = int(sy.max().item()) + 1
    logits = batched_prototype_logits(s, sy, q, n_way) / model.log_scale.exp()
    losses = batched_loss(classification_loss, logits, qy)
    losses.mean().backward()
    learner.optimizer.step()
    acc = (logits.detach().argmax(-1) == qy).float().mean().item()
    return StepMetrics(losses.detach().mean().item(), query_accuracy=acc)


def evaluate_tasks(learner: MetaLearner, tasks: Sequence[Task], steps: int | None = None,
                   chunk: int = 25) -> list[tuple[float, float | None]]:
    """``[learner.evaluate(t, steps) for t in tasks]``, batched ``chunk`` tasks at a time where possible.

    Same values as the per-task calls up to float rounding: each task adapts its own copy of the
    weights (model in eval mode, nothing changes). Falls back to per-task calls for learners or inputs
    the batched path does not cover.
    """
    out: list[tuple[float, float | None]] = []
    for start in range(0, len(tasks), chunk):
        part = tasks[start:start + chunk]
        res = vectorized_evaluate(learner, part, steps)
        out.extend(res if res is not None else [learner.evaluate(t, steps) for t in part])
    return out


def vectorized_evaluate(learner: MetaLearner, tasks: Sequence[Task],
                        steps: int | None = None) -> list[tuple[float, float | None]] | None:
    """Per-task (query loss, accuracy or None) after adaptation, for a stacked batch of tasks.

    Covers MAML-family learners that keep MAML's ``predict_query`` (see :func:`can_vectorize`) and
    ProtoNet; None otherwise (the caller evaluates task by task).
    """
    from engine.algorithms.maml import MAML
    from engine.algorithms.protonet import ProtoNet

    cls = type(learner)
    if not tasks or cls.evaluate is not MetaLearner.evaluate:
        return None
    model = learner.model
    classification = learner.task_type == "classification"
    if isinstance(learner, MAML):
        if cls.predict_query is not MAML.predict_query or not can_vectorize(learner, tasks):
            return None
        steps = learner.inner_steps if steps is None else steps
        inner = _inner_for(learner, False)
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                prepared = inner.prepare(tasks)
            if prepared is None:
                return None
            xs, sy, xq, qy = prepared
            with torch.enable_grad():
                fast = inner.initial(len(tasks), track=False)
                fast, _ = inner.adapt(fast, xs, sy, steps, create_graph=False)
            with torch.no_grad():
                pred = inner.run({n: w.detach() for n, w in fast.items()}, xq)
        finally:
            model.train(was_training)
    elif isinstance(learner, ProtoNet):
        if cls.predict_query is not ProtoNet.predict_query or not (learner.vectorize and vectorize_enabled()):
            return None
        targets = _stack_targets(tasks)
        if targets is None:
            return None
        sy, qy = targets
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                emb = embed_tasks(model, tasks, _pad_id(model))
                if emb is None:
                    return None
                n_way = int(sy.max().item()) + 1
                pred = batched_prototype_logits(emb[0], sy, emb[1], n_way) / model.log_scale.exp()
        finally:
            model.train(was_training)
    else:
        return None
    with torch.no_grad():
        losses = batched_loss(learner.loss_fn, pred, qy).tolist()
        accs = (pred.argmax(-1) == qy).float().mean(1).tolist() if classification else [None] * len(losses)
    return list(zip(losses, accs, strict=True))


def _inner_for(learner: MAML, force_vmap: bool) -> VectorizedInner:
    """The learner's :class:`VectorizedInner`, built once (the fx trace and vmap wrapper are reused)."""
    key = "_vectorized_inner_vmap" if force_vmap else "_vectorized_inner"
    inner = learner.__dict__.get(key)
    if inner is None:
        inner = VectorizedInner(learner, force_vmap=force_vmap)
        learner.__dict__[key] = inner
    return inner
