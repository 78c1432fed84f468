"""The sinusoid task family (Finn et al. 2017, Section 5.1): sampler, network, training from the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from engine import ExperimentConfig, MetaTrainer, RunStore
from engine.cli import main
from engine.data.sinusoid import SinusoidSampler
from engine.models.sinusoid import SinusoidMLP


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_sampler_follows_the_maml_protocol():
    eps = SinusoidSampler(5, 7, seed=1).sample_batch(400)
    amps = np.array([e.amplitude for e in eps])
    phases = np.array([e.phase for e in eps])
    xs = torch.cat([torch.cat([e.support_x, e.query_x]) for e in eps])
    assert amps.min() >= 0.1 and amps.max() <= 5.0 and abs(amps.mean() - 2.55) < 0.25
    assert phases.min() >= 0.0 and phases.max() <= math.pi and abs(phases.mean() - math.pi / 2) < 0.2
    assert xs.min() >= -5.0 and xs.max() <= 5.0 and abs(xs.mean().item()) < 0.2
    e = eps[0]
    assert e.support_x.shape == (5, 1) and e.query_x.shape == (7, 1) and e.support_x.dtype == torch.float32
    assert torch.allclose(e.support_y, e.amplitude * torch.sin(e.support_x - e.phase), atol=1e-5)
    again = SinusoidSampler(5, 7, seed=1).sample()
    assert torch.equal(again.query_y, e.query_y)  # seeded: the same task stream


def test_mlp_shape_and_head():
    net = SinusoidMLP()
    sizes = [tuple(p.shape) for p in net.parameters()]
    assert sizes == [(40, 1), (40,), (40, 40), (40,), (1, 40), (1,)]
    x = torch.zeros(3, 1)
    assert net(x).shape == (3, 1) and torch.allclose(net.head(net.embed(x)), net(x))


@pytest.mark.parametrize("algorithm", ["maml", "fomaml", "reptile", "anil", "metasgd"])
def test_each_algorithm_learns_sinusoid_from_the_cli(tmp_path, capsys, algorithm):
    db = tmp_path / "s.db"
    # Reptile: ε = outer_lr = 1 (the step goes all the way to the adapted weights) and several inner steps
    outer_lr = {"reptile": "1.0", "anil": "0.01"}.get(algorithm, "0.005")
    steps, inner_lr = ("5", "0.02") if algorithm == "reptile" else ("1", "0.01")
    args = ["train", "--db", str(db), "--json", "--set", "dataset=sinusoid", "--set", f"algorithm={algorithm}",
            "--set", "meta_iterations=300", "--set", "val_interval=100", "--set", "val_episodes=50",
            "--set", "meta_batch_size=10", "--set", f"inner_lr={inner_lr}", "--set", f"inner_steps={steps}",
            "--set", f"outer_lr={outer_lr}", "--set", "device=cpu", "--set", "seed=2"]
    assert main(args) == 0
    res = last_json(capsys.readouterr().out)
    assert res["status"] == "completed" and res["iterations"] == 300
    assert "val_accuracy" not in res["final"] and "query_accuracy" not in res["final"]
    val = RunStore(db).get_metrics(res["run_id"], ["val_loss"])["val_loss"]
    first, last = val[0][1], val[-1][1]
    # fixed validation tasks: the meta-learned initialisation adapts to a far lower MSE than the random one
    assert last < 0.7 * first, (first, last)
    row = RunStore(db).get_run(res["run_id"])
    assert row["label_split"] is None and row["best_val_accuracy"] is None


@pytest.mark.parametrize("algorithm", ["protonet", "lora_maml"])
def test_sinusoid_refuses_algorithms_without_a_meaning_there(algorithm, capsys):
    assert main(["train", "--set", "dataset=sinusoid", "--set", f"algorithm={algorithm}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "algorithm" in err[0] and "sinusoid" in err[0]


def test_anil_on_sinusoid_adapts_only_the_last_layer():
    t = MetaTrainer(ExperimentConfig(dataset="sinusoid", algorithm="anil", device="cpu", val_episodes=2))
    t.prepare()
    assert t.learner.adapted_names == ["head.weight", "head.bias"]
    assert len(t.learner.meta_names) == 6  # the whole MLP is meta-trained
