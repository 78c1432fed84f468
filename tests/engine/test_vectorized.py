"""Vectorised meta-batches give the same meta-gradients (and updates) as the per-task loops."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from engine import ExperimentConfig, MetaTrainer
from engine.algorithms import ANIL, FOMAML, MAML, MetaSGD, ProtoNet, Reptile
from engine.algorithms.base import Task
from engine.algorithms.vectorized import (
    BatchedForward,
    vectorized_outer_step,
    vectorized_protonet_step,
    vectorized_reptile_step,
)
from engine.data.sinusoid import SinusoidSampler
from engine.models.sinusoid import SinusoidMLP

ATOL = 1e-5


# small tensors: one intra-op thread for the whole module (see conftest.one_thread)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def sine_tasks() -> list[Task]:
    eps = SinusoidSampler(10, 10, seed=3).sample_batch(6)
    return [Task(e.support_x, e.support_y, e.query_x, e.query_y) for e in eps]


def sine_learner(cls, **kw):
    torch.manual_seed(0)
    model = SinusoidMLP()
    names = [n for n, _ in model.named_parameters()]
    adapted = [n for n in names if n.startswith("head.")] if cls is ANIL else names
    return cls(model, meta_names=names, adapted_names=adapted, inner_steps=2, inner_lr=0.02, outer_lr=0.0,
               task_type="regression", **kw)


def grads_of(learner) -> list[torch.Tensor]:
    return [p.grad.detach().clone() for p in learner.meta_parameters()]


@pytest.mark.parametrize(("cls", "kw"), [(MAML, {}), (FOMAML, {}), (ANIL, {}), (ANIL, {"first_order": True}),
                                         (MetaSGD, {}), (MetaSGD, {"first_order": True})])
@pytest.mark.parametrize("force_vmap", [False, True])
def test_vectorised_meta_gradient_equals_per_task_loop(sine_tasks, cls, kw, force_vmap):
    loop = sine_learner(cls, **kw)
    loop.vectorize = False
    m_loop = loop.outer_step(sine_tasks)
    vec = sine_learner(cls, **kw)
    m_vec = vectorized_outer_step(vec, sine_tasks, force_vmap=force_vmap)
    assert m_vec is not None
    g_loop, g_vec = grads_of(loop), grads_of(vec)
    assert len(g_loop) == len(g_vec) >= 2
    for a, b in zip(g_loop, g_vec, strict=True):
        assert a.abs().sum() > 0
        assert torch.allclose(a, b, atol=ATOL, rtol=1e-4)
    assert m_vec.outer_loss == pytest.approx(m_loop.outer_loss, rel=1e-5)
    assert m_vec.inner_loss_pre == pytest.approx(m_loop.inner_loss_pre, rel=1e-5)
    assert m_vec.inner_loss_post == pytest.approx(m_loop.inner_loss_post, rel=1e-5)
    assert m_vec.inner_loss_post < m_vec.inner_loss_pre  # the batched inner loop adapts every task


def test_second_and_first_order_differ_in_the_vectorised_path(sine_tasks):
    so, fo = sine_learner(MAML), sine_learner(FOMAML)
    vectorized_outer_step(so, sine_tasks)
    vectorized_outer_step(fo, sine_tasks)
    diff = sum((a - b).norm() for a, b in zip(grads_of(so), grads_of(fo), strict=True))
    assert diff > 1e-4  # the Hessian term is really there: no silent first-order shortcut


@pytest.mark.parametrize("force_vmap", [False, True])
def test_vectorised_reptile_update_equals_per_task_loop(sine_tasks, force_vmap):
    loop = sine_learner(Reptile)
    loop.outer_lr = 0.5
    loop.vectorize = False
    before = [p.detach().clone() for p in loop.model.parameters()]
    loop.outer_step(sine_tasks)
    vec = sine_learner(Reptile)
    vec.outer_lr = 0.5
    assert vectorized_reptile_step(vec, sine_tasks, force_vmap=force_vmap) is not None
    for a, b, p0 in zip(loop.model.parameters(), vec.model.parameters(), before, strict=True):
        assert not torch.equal(a, p0)
        assert torch.allclose(a, b, atol=ATOL)


def test_batched_forward_picks_hand_batching_or_vmap():
    class Odd(nn.Module):  # a reshape in forward: not a plain chain, so vmap must handle it
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 6)

        def forward(self, x):
            return self.lin(x).view(x.shape[0], 3, 2).sum(-1)

    torch.manual_seed(0)
    assert BatchedForward(nn.Linear(3, 2)).mode == "linear"
    assert BatchedForward(SinusoidMLP()).mode == "graph"
    odd = Odd()
    fwd = BatchedForward(odd)
    assert fwd.mode == "vmap"
    w = torch.randn(5, 6, 4)
    x = torch.randn(5, 7, 4)
    out = fwd({"lin.weight": w}, x)
    for t in range(5):
        ref = torch.func.functional_call(odd, {"lin.weight": w[t]}, (x[t],))
        assert torch.allclose(out[t], ref, atol=1e-6)


def text_trainer(model_path, **over) -> MetaTrainer:
    base = dict(model=str(model_path), dataset="demo", n_way=3, k_shot=2, q_query=2, meta_batch_size=3,
                inner_steps=2, inner_lr=0.5, device="cpu", val_episodes=2)
    t = MetaTrainer(ExperimentConfig(**{**base, **over}))
    t.prepare()
    for group in t.learner.optimizer.param_groups:  # read gradients without moving the parameters
        group["lr"] = 0.0
    t.model.eval()  # no dropout: both paths see the same function
    with torch.no_grad():
        t.model.head.weight.normal_(0, 0.1, generator=torch.Generator().manual_seed(0))
    return t


@pytest.mark.parametrize(("algorithm", "train_layers"), [("maml", 0), ("fomaml", 0), ("maml", 1), ("protonet", 1)])
def test_text_meta_batches_vectorise_with_the_same_gradient(tiny_bert, algorithm, train_layers):
    """Cached embeddings (train_layers=0) and tokenised batches through a trained top layer with a
    head-only inner loop (one encoder pass for the whole meta-batch) match the per-task loop."""
    trainer = text_trainer(tiny_bert, algorithm=algorithm, train_layers=train_layers)
    learner = trainer.learner
    assert trainer.features.mode == ("pooled" if train_layers == 0 else "hidden")
    tasks = [trainer.task(ep) for ep in trainer.train_sampler.sample_batch(3)]

    def run(vectorise: bool) -> tuple[list[torch.Tensor], object]:
        for p in learner.meta_parameters():
            p.grad = None
        if vectorise:
            step = vectorized_protonet_step if isinstance(learner, ProtoNet) else vectorized_outer_step
            m = step(learner, tasks)
            assert m is not None
        else:
            learner.vectorize = False
            m = learner.outer_step(tasks)
            learner.vectorize = True
        return [p.grad.detach().clone() for p in learner.meta_parameters()], m

    g_loop, m_loop = run(False)
    g_vec, m_vec = run(True)
    assert len(g_loop) == (3 if algorithm != "protonet" else 1) + 16 * train_layers
    for a, b in zip(g_loop, g_vec, strict=True):
        assert torch.allclose(a, b, atol=ATOL, rtol=1e-4)
    assert any(a.abs().sum() > 0 for a in g_loop[-2:])
    assert m_vec.outer_loss == pytest.approx(m_loop.outer_loss, rel=1e-5)
    assert m_vec.query_accuracy == pytest.approx(m_loop.query_accuracy)


@pytest.mark.parametrize("algorithm", ["maml", "anil", "metasgd", "reptile", "protonet"])
def test_batched_evaluation_equals_per_task_evaluation(tiny_bert, algorithm):
    from engine.algorithms.vectorized import evaluate_tasks

    trainer = text_trainer(tiny_bert, algorithm=algorithm)
    trainer.model.train()  # evaluation must switch to eval mode itself and restore train mode
    tasks = [trainer.task(ep) for ep in trainer.val_episodes[:2] + trainer.train_sampler.sample_batch(3)]
    state = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    batched = evaluate_tasks(trainer.learner, tasks, chunk=4)
    single = [trainer.learner.evaluate(t) for t in tasks]
    assert len(batched) == len(single) == 5
    for (lb, ab), (ls, as_) in zip(batched, single, strict=True):
        assert lb == pytest.approx(ls, rel=1e-5, abs=1e-6) and ab == pytest.approx(as_)
    assert trainer.model.training
    assert all(torch.equal(v, state[k]) for k, v in trainer.model.state_dict().items())


def test_sinusoid_evaluation_after_k_steps_matches(sine_tasks):
    from engine.algorithms.vectorized import evaluate_tasks

    learner = sine_learner(MAML)
    for steps in (0, 1, 5):
        batched = evaluate_tasks(learner, sine_tasks, steps)
        single = [learner.evaluate(t, steps) for t in sine_tasks]
        assert [a for _, a in batched] == [None] * len(sine_tasks)
        assert [b[0] for b in batched] == pytest.approx([s[0] for s in single], rel=1e-5)
    before = sum(loss for loss, _ in evaluate_tasks(learner, sine_tasks, 0))
    assert sum(loss for loss, _ in batched) < before  # 5 adaptation steps lower the mean query MSE
