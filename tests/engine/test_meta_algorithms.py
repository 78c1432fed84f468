"""Defining properties of Reptile, ANIL, Meta-SGD and LoRA-MAML on a tiny random BERT (no downloads)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from engine import ConfigError, ExperimentConfig, MetaTrainer, validate_config
from engine.algorithms import ANIL, LoRAMAML, MetaSGD, Reptile


def make_trainer(model_path, **over) -> MetaTrainer:
    base = dict(model=str(model_path), dataset="demo", n_way=3, k_shot=2, q_query=2, meta_batch_size=2,
                inner_steps=2, inner_lr=0.5, device="cpu", val_episodes=2, seed=0)
    t = MetaTrainer(ExperimentConfig(**{**base, **over}))
    t.prepare()
    return t


def no_dropout(model: nn.Module) -> None:
    """Train mode without randomness, so two passes over the same tasks are comparable."""
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


# ---- Reptile ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("vectorize", ["1", "0"])
def test_reptile_update_is_epsilon_times_adapted_minus_initial(tiny_bert, monkeypatch, vectorize):
    monkeypatch.setenv("METASTUDIO_VECTORIZE", vectorize)
    trainer = make_trainer(tiny_bert, algorithm="reptile", train_layers=1, outer_lr=0.3, inner_lr=0.2, inner_steps=3)
    model, learner = trainer.model, trainer.learner
    assert isinstance(learner, Reptile) and learner.epsilon == 0.3
    assert set(learner.meta_names) <= set(learner.adapted_names)  # the inner loop moves every meta-parameter
    model.eval()
    torch.manual_seed(0)
    with torch.no_grad():
        model.head.weight.normal_(0, 0.1)
    tasks = [trainer.task(ep) for ep in trainer.train_sampler.sample_batch(2)]
    before = snapshot(model)

    # Independent reference: adapt a deep copy with torch.optim.SGD, one task at a time.
    adapted = []
    for task in tasks:
        clone = copy.deepcopy(model)
        params = dict(clone.named_parameters())
        opt = torch.optim.SGD([params[n] for n in learner.adapted_names], lr=0.2)
        for _ in range(3):
            opt.zero_grad()
            nn.functional.cross_entropy(clone(task.support_x), task.support_y).backward()
            opt.step()
        adapted.append({n: params[n].detach().clone() for n in learner.meta_names})

    seen_initial = {}
    orig_adapt = learner.adapt

    def spy(task, initial):
        seen_initial.update(initial)
        return orig_adapt(task, initial)

    learner.adapt = spy
    learner.outer_step(tasks)
    after = snapshot(model)
    total = 0.0
    for n in learner.meta_names:
        expected = 0.3 * sum(a[n] - before[n] for a in adapted) / len(tasks)
        assert torch.allclose(after[n] - before[n], expected, atol=1e-6, rtol=1e-4), n
        total += expected.abs().sum().item()
        if seen_initial:  # per-task path: the snapshot it started from is a copy, still θ before the update
            assert torch.equal(seen_initial[n], before[n]) and seen_initial[n].data_ptr() != dict(
                model.named_parameters())[n].data_ptr(), n
    assert bool(seen_initial) == (vectorize == "0") or vectorize == "1"
    assert total > 1e-3  # a real, non-zero move
    for n, p in before.items():
        if n not in learner.meta_names:
            assert torch.equal(after[n], p), n


def test_reptile_needs_an_inner_loop_to_adapt(tiny_bert):
    trainer = make_trainer(tiny_bert, algorithm="reptile", inner_steps=1)
    # the query set is not used by the update but its loss is reported
    m = trainer.learner.outer_step([trainer.task(ep) for ep in trainer.train_sampler.sample_batch(2)])
    assert m.inner_loss_post < m.inner_loss_pre and m.outer_loss > 0


# ---- ANIL -------------------------------------------------------------------------------------------
def test_anil_inner_loop_touches_only_the_head(tiny_bert, monkeypatch):
    trainer = make_trainer(tiny_bert, algorithm="anil", train_layers=2, inner_steps=4)
    learner = trainer.learner
    assert isinstance(learner, ANIL) and learner.adapted_names == ["head.weight", "head.bias"]
    trainer.model.eval()
    with torch.no_grad():
        trainer.model.head.weight.normal_(0, 0.1)
    head_shapes = {tuple(trainer.model.head.weight.shape), tuple(trainer.model.head.bias.shape)}
    differentiated = []
    orig_grad = torch.autograd.grad

    def spy_grad(outputs, inputs, *a, **k):  # the inner loop's gradients: with respect to what?
        differentiated.extend(tuple(t.shape) for t in inputs)
        return orig_grad(outputs, inputs, *a, **k)

    monkeypatch.setattr(torch.autograd, "grad", spy_grad)
    calls = []
    hook = trainer.model.encoder.register_forward_hook(lambda *_: calls.append(1))
    tasks = [trainer.task(ep) for ep in trainer.train_sampler.sample_batch(2)]
    before = snapshot(trainer.model)
    encoder_runs = []
    for steps in (4, 1):
        learner.inner_steps = steps
        calls.clear()
        learner.outer_step(tasks)
        encoder_runs.append(len(calls))
    hook.remove()
    # the encoder runs a fixed number of times per meta-batch (support + query), whatever the inner steps
    assert encoder_runs[0] == encoder_runs[1] <= 2 * len(tasks)
    # every inner gradient is taken with respect to head tensors only (per task or stacked per task)
    assert differentiated and all(s in head_shapes or s[1:] in head_shapes for s in differentiated)
    after = snapshot(trainer.model)
    enc = trainer.model.encoder_param_names(2)
    assert any(not torch.equal(after[n], before[n]) for n in enc)  # the outer loop trains the encoder


def test_anil_refuses_adapted_encoder_layers(tiny_bert):
    with pytest.raises(ConfigError) as err:
        validate_config({"algorithm": "anil", "adapt_layers": 1})
    assert err.value.field == "adapt_layers" and "only the head" in str(err.value)
    trainer = make_trainer(tiny_bert, algorithm="fomaml", adapt_layers=1, train_layers=1)
    with pytest.raises(ValueError, match="only head"):
        ANIL(trainer.model, meta_names=trainer.learner.meta_names, adapted_names=trainer.learner.adapted_names,
             inner_steps=1, inner_lr=0.1, outer_lr=0.1)


# ---- Meta-SGD ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("first_order", [False, True])
def test_metasgd_learning_rates_receive_gradients_and_train(tiny_bert, first_order):
    trainer = make_trainer(tiny_bert, algorithm="metasgd", adapt_layers=1, train_layers=1, inner_lr=0.1,
                           outer_lr=0.01, first_order=first_order)
    learner = trainer.learner
    assert isinstance(learner, MetaSGD) and set(learner.lrs) == set(learner.adapted_names)
    trainer.model.eval()
    with torch.no_grad():
        trainer.model.head.weight.normal_(0, 0.1)
    lrs_before = {n: t.detach().clone() for n, t in learner.lrs.items()}
    assert all(torch.all(t == 0.1) for t in lrs_before.values())
    tasks = [trainer.task(ep) for ep in trainer.train_sampler.sample_batch(2)]
    orig_step = learner.optimizer.step
    grads = {}

    def capture(*a, **k):
        grads.update({n: t.grad.detach().clone() for n, t in learner.lrs.items()})
        return orig_step(*a, **k)

    learner.optimizer.step = capture
    learner.outer_step(tasks)
    assert set(grads) == set(learner.lrs)
    for n, g in grads.items():
        assert torch.isfinite(g).all(), n
        if n.endswith("key.bias"):  # softmax is invariant to a shift shared by all keys: zero gradient
            continue
        assert g.abs().max() > 0, f"no gradient reached the lr of {n}"
    for n in ("head.weight", "head.bias"):  # and Adam moved them
        assert grads[n].abs().sum() > 1e-4 and not torch.equal(learner.lrs[n].detach(), lrs_before[n]), n
    state = trainer.meta_state()
    assert {f"learner.inner_lr.{n}" for n in learner.lrs} <= set(state)
    saved = {k: v.detach().clone() for k, v in state.items()}
    with torch.no_grad():
        for t in learner.lrs.values():
            t.fill_(7.0)
    trainer.load_meta_state(saved)
    assert all(torch.equal(learner.lrs[n], saved[f"learner.inner_lr.{n}"]) for n in learner.lrs)


# ---- LoRA-MAML --------------------------------------------------------------------------------------
def test_lora_maml_changes_only_adapters_and_head(tiny_bert):
    trainer = make_trainer(tiny_bert, algorithm="lora_maml", lora_r=2, outer_lr=0.01, inner_lr=0.1)
    learner = trainer.learner
    assert isinstance(learner, LoRAMAML)
    lora = [n for n in learner.adapted_names if ".lora_" in n]
    # the default BERT targets: query/key/value and the dense layers of both blocks (never the pooler)
    assert len(lora) == 2 * 2 * 6 and not any("pooler" in n for n in lora)
    assert trainer.features.table is None  # the encoder runs inside the inner loop
    assert trainer.model.encoder.model.config._attn_implementation == "eager"  # second order through attention
    before = snapshot(trainer.model)
    for _ in range(2):
        m = learner.outer_step([trainer.task(ep) for ep in trainer.train_sampler.sample_batch(2)])
    assert all(v == v and abs(v) < 1e3 for v in m.as_dict().values())
    after = snapshot(trainer.model)
    allowed = set(learner.meta_names)
    for n, p in before.items():
        changed = not torch.equal(after[n], p)
        if n not in allowed:
            assert not changed, f"base weight {n} changed"
    assert all(not torch.equal(after[n], before[n]) for n in lora if ".lora_B." in n)
    assert not torch.equal(after["head.weight"], before["head.weight"])


def test_lora_maml_first_and_second_order_meta_gradients_differ(tiny_bert):
    trainer = make_trainer(tiny_bert, algorithm="lora_maml", lora_r=2, inner_lr=0.5)
    model = trainer.model
    no_dropout(model)
    torch.manual_seed(0)
    with torch.no_grad():
        model.head.weight.normal_(0, 0.1)
        for n, p in model.named_parameters():
            if ".lora_B." in n:
                p.normal_(0, 0.05)
    tasks = [trainer.task(ep) for ep in trainer.train_sampler.sample_batch(2)]

    def grads(first_order: bool) -> torch.Tensor:
        learner = LoRAMAML(model, meta_names=trainer.learner.meta_names, adapted_names=trainer.learner.adapted_names,
                           inner_steps=2, inner_lr=0.5, outer_lr=0.0, first_order=first_order)
        learner.optimizer.zero_grad()
        for task in tasks:
            fast = learner._initial_fast_weights(track=True)
            fast, _ = learner.inner_loop(fast, task.support_x, task.support_y, 2, create_graph=not first_order)
            learner.loss_fn(learner._fn(fast, task.query_x), task.query_y).backward()
        return torch.cat([p.grad.flatten() for p in learner.meta_parameters()])

    so, fo = grads(False), grads(True)
    assert torch.isfinite(so).all() and fo.norm() > 0
    assert ((so - fo).norm() / fo.norm()).item() > 1e-2


def test_lora_layers_adapts_only_the_top_layers_from_the_bottom_layer_cache(tiny_bert, monkeypatch):
    def first_step(hidden_cache: bool) -> tuple[MetaTrainer, dict[str, float]]:
        monkeypatch.setenv("METASTUDIO_HIDDEN_CACHE_MAX_GB", "4" if hidden_cache else "0")
        trainer = make_trainer(tiny_bert, algorithm="lora_maml", lora_r=2, lora_layers=1, first_order=True,
                               inner_lr=0.5)
        no_dropout(trainer.model)
        tasks = [trainer.task(ep) for ep in trainer.train_sampler.sample_batch(2)]
        return trainer, trainer.learner.outer_step(tasks).as_dict()

    cached, m_cached = first_step(True)
    lora = [n for n in cached.learner.adapted_names if ".lora_" in n]
    assert len(lora) == 1 * 2 * 6 and all(".layer.1." in n for n in lora)  # top block only
    assert cached.features.mode == "hidden" and cached.features.bottom.n_bottom == 1
    full, m_full = first_step(False)
    assert full.features.mode == "tokens"  # the whole encoder per episode
    for key, value in m_full.items():  # same numbers, whichever way the bottom layer is computed
        assert m_cached[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    with pytest.raises(ConfigError, match="lora_layers"):
        make_trainer(tiny_bert, algorithm="lora_maml", lora_layers=3)
    with pytest.raises(ConfigError, match="lora_layers"):
        validate_config({"algorithm": "maml", "lora_layers": 1})


def test_lora_maml_refuses_base_weight_training():
    for key in ("train_layers", "adapt_layers"):
        with pytest.raises(Exception, match=key):
            ExperimentConfig(algorithm="lora_maml", **{key: 1})


# ---- gradient checkpointing ---------------------------------------------------------------------------
@pytest.mark.parametrize("algorithm", ["maml", "fomaml"])
def test_gradient_checkpointing_recomputes_and_keeps_the_meta_gradient(tiny_bert, algorithm):
    def meta_grads(checkpointing: bool) -> tuple[torch.Tensor, int]:
        trainer = make_trainer(tiny_bert, algorithm=algorithm, train_layers=2, gradient_checkpointing=checkpointing)
        model = trainer.model
        no_dropout(model)
        model.train()
        torch.manual_seed(0)
        with torch.no_grad():
            model.head.weight.normal_(0, 0.1)
        calls = []
        inside = model.encoder.model.encoder.layer[1].attention  # the checkpoint recomputes the layer's forward
        hook = inside.register_forward_hook(lambda *_: calls.append(1))
        learner = trainer.learner
        learner.optimizer.zero_grad()
        task = trainer.task(trainer.train_sampler.sample())
        sx, qx = learner.body_inputs(task.support_x), learner.body_inputs(task.query_x)
        n_forward = len(calls)
        fast = learner._initial_fast_weights(track=True)
        fast, _ = learner.inner_loop(fast, sx, task.support_y, 2, create_graph=not learner.first_order)
        learner.loss_fn(learner._fn(fast, qx), task.query_y).backward()
        hook.remove()
        return torch.cat([p.grad.flatten() for p in learner.meta_parameters()]), len(calls) - n_forward

    plain, plain_recomputed = meta_grads(False)
    ckpt, ckpt_recomputed = meta_grads(True)
    # the checkpointed layer ran again in backward: for the query set, and (second order only) the support set
    assert plain_recomputed == 0 and ckpt_recomputed == (2 if algorithm == "maml" else 1)
    assert plain.abs().sum() > 0 and torch.allclose(plain, ckpt, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("over", [dict(algorithm="fomaml", adapt_layers=1, train_layers=1),
                                  dict(algorithm="maml", adapt_layers=1, train_layers=1),
                                  dict(algorithm="lora_maml", first_order=True),
                                  dict(algorithm="reptile", train_layers=1),
                                  dict(algorithm="maml", train_layers=0)])
def test_gradient_checkpointing_refused_where_it_would_be_wrong_or_useless(over):
    with pytest.raises(ConfigError) as err:
        validate_config({**over, "gradient_checkpointing": True})
    assert err.value.field == "gradient_checkpointing" and err.value.hint
