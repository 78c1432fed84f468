"""MAML / FOMAML / ProtoNet defining properties on a tiny random BERT (no downloads)."""

from __future__ import annotations

import copy

import pytest
import torch

from engine import ExperimentConfig, MetaTrainer
from engine.algorithms import FOMAML, MAML
from engine.algorithms.protonet import prototype_logits


def make_trainer(model_path, **over) -> MetaTrainer:
    base = dict(model=str(model_path), dataset="demo", n_way=3, k_shot=2, q_query=2, meta_batch_size=2,
                inner_steps=2, inner_lr=0.5, adapt_layers=1, train_layers=2, device="cpu", val_episodes=2)
    cfg = ExperimentConfig(**{**base, **over})
    t = MetaTrainer(cfg)
    t.prepare()
    return t


def meta_grads(trainer: MetaTrainer, cls, tasks, inner_lr: float = 0.5) -> dict[str, torch.Tensor]:
    learner = cls(trainer.model, meta_names=trainer.learner.meta_names,
                  adapted_names=trainer.learner.adapted_names, inner_steps=2, inner_lr=inner_lr, outer_lr=0.0)
    learner.optimizer.zero_grad()
    # replicate outer_step without the optimiser step so gradients can be read
    for task in tasks:
        fast = learner._initial_fast_weights(track=True)
        fast, _ = learner.inner_loop(fast, task.support_x, task.support_y, 2, create_graph=not learner.first_order)
        learner.loss_fn(learner._fn(fast, task.query_x), task.query_y).backward()
    params = dict(trainer.model.named_parameters())
    return {n: params[n].grad.detach().clone() for n in learner.meta_names}


@pytest.mark.parametrize("cls", [MAML, FOMAML])
def test_meta_gradient_reaches_every_trainable_parameter(tiny_bert, cls):
    trainer = make_trainer(tiny_bert)
    trainer.model.eval()  # no dropout noise between the two orders
    torch.manual_seed(0)
    with torch.no_grad():  # non-zero head init so every path carries gradient
        trainer.model.head.weight.normal_(0, 0.1)
    tasks = [trainer.task(ep) for ep in trainer.train_sampler.sample_batch(2)]
    grads = meta_grads(trainer, cls, tasks)
    assert len(grads) == len(trainer.learner.meta_names) > 10
    for name, g in grads.items():
        assert torch.isfinite(g).all(), name
        assert g.abs().sum() > 0, f"no meta-gradient reached {name}"


def test_first_and_second_order_gradients_differ(tiny_bert):
    trainer = make_trainer(tiny_bert)
    trainer.model.eval()
    with torch.no_grad():
        trainer.model.head.weight.normal_(0, 0.1)
    tasks = [trainer.task(ep) for ep in trainer.train_sampler.sample_batch(2)]

    def rel_diff(lr: float) -> float:
        so = torch.cat([g.flatten() for g in meta_grads(trainer, MAML, tasks, lr).values()])
        fo = torch.cat([g.flatten() for g in meta_grads(trainer, FOMAML, tasks, lr).values()])
        return ((so - fo).norm() / fo.norm()).item()

    # MAML's gradient is (I - a*H) grad L_query(theta'): the Hessian term FOMAML drops grows with a.
    big, small = rel_diff(0.5), rel_diff(1e-4)
    assert big > 1e-2
    assert small < 1e-2 and small < big / 100


def test_maml_outer_step_changes_meta_parameters_not_frozen_ones(tiny_bert):
    trainer = make_trainer(tiny_bert, outer_lr=1e-2, inner_lr=0.05)
    with torch.no_grad():
        trainer.model.head.weight.normal_(0, 0.1)
    before = copy.deepcopy({n: p.detach().clone() for n, p in trainer.model.named_parameters()})
    tasks = [trainer.task(ep) for ep in trainer.train_sampler.sample_batch(2)]
    m = trainer.learner.outer_step(tasks)
    assert m.inner_loss_post < m.inner_loss_pre  # the inner loop adapted on the support set
    after = dict(trainer.model.named_parameters())
    meta = set(trainer.learner.meta_names)
    for name, p in after.items():
        changed = not torch.equal(p.detach(), before[name])
        assert changed == (name in meta), name


def test_evaluation_leaves_parameters_and_mode_unchanged(tiny_bert):
    trainer = make_trainer(tiny_bert)
    trainer.model.train()
    state = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    ep = trainer.val_episodes[0]
    r1 = trainer.learner.evaluate(trainer.task(ep))
    r2 = trainer.learner.evaluate(trainer.task(ep))
    assert r1 == r2  # eval mode: no dropout, repeatable
    assert trainer.model.training
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_prototype_logits_match_definition():
    s = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0], [0.0, 2.0]])
    y = torch.tensor([0, 0, 1, 1])
    q = torch.tensor([[1.0, 0.0], [0.0, 3.0]])
    logits = prototype_logits(s, y, q, 2)
    # prototypes (1, 0) and (0, 3)
    expected = -torch.tensor([[0.0, 10.0], [10.0, 0.0]])
    assert torch.allclose(logits, expected)
