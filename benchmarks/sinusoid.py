"""The MAML paper's sinusoid regression benchmark for MAML, FOMAML, Reptile and Meta-SGD.

Protocol (Finn, Abbeel & Levine, ICML 2017, Section 5.1 and Appendix C): tasks y = A·sin(x − φ),
A ~ U[0.1, 5], φ ~ U[0, π], x ~ U[−5, 5]; an MLP 1-40-40-1 with ReLU; MSE loss; K = 5 support points
per task; meta-batch 25 tasks; one inner SGD step of size α = 0.01 during meta-training; outer Adam
with β = 0.001. Meta-test: the same 600 held-out tasks for every method, each adapted on K = 5 points
with 1, 5 and 10 SGD steps of size 0.01, MSE on 100 query points per task (the paper does not fix the
query count; more points only lower the noise), mean ± 95% CI (1.96·s/√600).

Published (MAML paper, Appendix C, Table 2, K = 5, after 70,000 meta-iterations): MAML 0.67 / 0.38 /
0.35 after 1 / 5 / 10 steps.

Rows:
  maml, fomaml, metasgd   the protocol above (Meta-SGD learns per-parameter α, initialised at 0.01)
  reptile (1 step)        the protocol above with Reptile's update, ε = 1; with one inner step Reptile's
                          update is a joint-training SGD step (Nichol et al. 2018, Section 5), shown for
                          completeness
  reptile (5 steps)       Reptile as its paper runs it: 5 inner steps of 0.01 per task, ε = 1
  no meta-training        the same network at its random initialisation, adapted the same way (a floor)

Run:  python benchmarks/sinusoid.py [--quick] [--full] [--iterations N] [--json]
      (default: 10,000 meta-iterations per method, minutes on 2 CPU cores; --full: the paper's 70,000;
      --quick: 1,000 iterations and 100 test tasks)
"""

from __future__ import annotations

import time

import numpy as np
import torch
from _common import emit_json, machine, parser, print_table

from engine import ExperimentConfig, MetaTrainer
from engine.algorithms.base import Task
from engine.algorithms.vectorized import evaluate_tasks
from engine.data.sinusoid import SinusoidSampler
from engine.evaluation import DIVERGED_MSE, mean_ci
from engine.training.threads import loop_thread_count, loop_threads

PAPER = {"maml": (0.67, 0.38, 0.35)}
STEPS = (1, 5, 10)
TEST_SEED = 20_170_703  # a stream no training or validation run uses
TEST_QUERY = 100


def methods(iterations: int) -> list[tuple[str, dict]]:
    base = dict(dataset="sinusoid", k_shot=5, q_query=5, meta_batch_size=25, inner_steps=1, inner_lr=0.01,
                outer_lr=1e-3, meta_iterations=iterations, val_interval=max(iterations // 10, 1), val_episodes=100,
                device="cpu", seed=0)
    return [("maml", {**base, "algorithm": "maml"}),
            ("fomaml", {**base, "algorithm": "fomaml"}),
            ("metasgd", {**base, "algorithm": "metasgd"}),
            ("reptile (1 step)", {**base, "algorithm": "reptile", "outer_lr": 1.0}),
            ("reptile (5 steps)", {**base, "algorithm": "reptile", "outer_lr": 1.0, "inner_steps": 5})]


def test_tasks(n: int) -> list[Task]:
    eps = SinusoidSampler(5, TEST_QUERY, seed=TEST_SEED).sample_batch(n)
    return [Task(e.support_x, e.support_y, e.query_x, e.query_y) for e in eps]


def score(trainer: MetaTrainer, tasks: list[Task]) -> dict[int, dict]:
    """MSE after 1/5/10 steps on every test task: mean, CI, median, diverged count."""
    out = {}
    for steps in STEPS:
        with loop_threads(loop_thread_count(trainer.device, encoder_in_loop=False)):
            mse = [loss for loss, _ in evaluate_tasks(trainer.learner, tasks, steps)]
        mse = [float("inf") if m != m else m for m in mse]
        mean, ci = mean_ci(mse)
        arr = np.asarray(mse)
        out[steps] = {"mse": mean, "ci95": ci, "median": float(np.median(arr)),
                      "diverged": int(np.sum(~np.isfinite(arr) | (arr > DIVERGED_MSE)))}
    return out


def finite(value):
    """Non-finite floats as the strings "inf" / "-inf" / "nan" (strict JSON)."""
    if isinstance(value, float) and value != value:
        return "nan"
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    return value


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--full", action="store_true", help="the paper's 70,000 meta-iterations")
    p.add_argument("--iterations", type=int, help="meta-iterations per method (overrides the size flags)")
    p.add_argument("--threads", type=int, help="torch threads (default: the engine's choice, one thread in loops "
                                            "without an encoder)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    iterations = args.iterations or (70_000 if args.full else 1_000 if args.quick else 10_000)
    n_test = 100 if args.quick else 600
    tasks = test_tasks(n_test)
    rows, results = [], {}
    for label, cfg in [*methods(iterations), ("no meta-training", None)]:
        t0 = time.perf_counter()
        if cfg is None:  # the seeded initialisation every method starts from, adapted like MAML
            trainer = MetaTrainer(ExperimentConfig(**{**methods(1)[0][1], "meta_iterations": 1}))
            trainer.prepare()
            iters = 0
        else:
            trainer = MetaTrainer(ExperimentConfig(**cfg))
            records = list(trainer.run())
            iters = records[-1].step
        train_s = time.perf_counter() - t0
        res = score(trainer, tasks)
        results[label] = {"iterations": iters, "train_s": train_s, "after_steps": res}
        rows.append([label, iters, round(train_s, 1),
                     *(f"{res[s]['mse']:.3f} ± {res[s]['ci95']:.3f}" for s in STEPS),
                     f"{res[10]['median']:.3g}", res[10]["diverged"]])
    for name, vals in PAPER.items():
        rows.append([f"{name} (paper, Table 2)", 70_000, None, *(f"{v:.2f}" for v in vals), None, None])
    print_table(f"Sinusoid regression, K = 5, {n_test} test tasks x {TEST_QUERY} query points: MSE ± 95% CI",
                ["method", "iterations", "train s", "1 step", "5 steps", "10 steps", "median@10", "diverged@10"],
                rows, notes=["meta-batch 25, inner lr 0.01 (1 training step; reptile (5 steps): 5), outer Adam "
                             "1e-3 (reptile: ε = 1)", f"machine: {machine()}"])
    if args.json:
        emit_json({"benchmark": "sinusoid", "test_tasks": n_test, "query_points": TEST_QUERY, "results": finite(results),
                   "paper": {k: dict(zip(("1", "5", "10"), v, strict=True)) for k, v in PAPER.items()},
                   "machine": machine()})


if __name__ == "__main__":
    main()
