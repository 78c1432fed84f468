"""Target A: MetaStudio's MAML against peers on the MAML paper's sinusoid configuration.

Finn, Abbeel & Levine, ICML 2017 (arXiv:1703.03400), Section 5.1: a 1-40-40-1 ReLU MLP, K = 10
support (and 10 query) points per task, meta-batch of 25 tasks, 1 inner SGD step (α = 0.01), Adam
outer loop (β = 0.001), mean squared error. Second order (MAML) and first order (FOMAML).

Every implementation starts from the same weights, sees the same pre-sampled tasks and runs the same
number of iterations (each a full outer step: inner loop, meta-gradient, Adam update). The runs are
interleaved in rounds so that a change in machine load hits all of them alike. Before timing, the first
meta-gradient of every implementation is checked against ours (max |difference| ≤ 1e-5).

Implementations:
  ours             engine MAML/FOMAML ``outer_step`` (vectorised over tasks; hand-batched for this MLP)
  ours (vmap)      the engine's general vectorised path (``torch.func.vmap`` over ``functional_call``),
                   what any other model gets
  ours (per task)  the engine's per-task loop (``vectorize = False``)
  higher           ``higher.innerloop_ctx`` per task (PyPI ``higher``; install with ``pip install -e .[bench]``)
  torch.func loop  a naive per-task loop with ``torch.func.grad`` + ``functional_call``
  torch.func vmap  the torch.func tutorial recipe: ``vmap`` over a per-task ``grad``-based loss
  hand-batched     hand-written ``torch.baddbmm`` over tasks (a reference ceiling, not a general method)

Run:  python benchmarks/peers.py [--quick] [--json] [--iterations N]
"""

from __future__ import annotations

import time

import _common  # noqa: F401  (first: process settings before torch loads)
import torch
import torch.nn.functional as F
from _common import machine, parser, print_table, report_end
from torch.func import functional_call, grad, vmap

from engine.algorithms import FOMAML, MAML
from engine.algorithms.base import Task
from engine.algorithms.vectorized import vectorized_outer_step
from engine.data.sinusoid import SinusoidSampler
from engine.models.sinusoid import SinusoidMLP

K, META_BATCH, INNER_LR, OUTER_LR = 10, 25, 0.01, 1e-3


class Batch(tuple):
    """One meta-batch in both forms, built before timing: stacked tensors (T, K, 1) x 4 (``batch``
    itself, what the stand-alone implementations take) and ``tasks``, the engine's list of
    :class:`~engine.algorithms.base.Task` (what ``MetaTrainer`` hands ``outer_step``)."""

    tasks: list[Task]


def make_tasks(n_iter: int, seed: int = 0) -> list[Batch]:
    """``n_iter`` meta-batches of ``META_BATCH`` sinusoid tasks."""
    sampler = SinusoidSampler(K, K, seed=seed)
    out = []
    for _ in range(n_iter):
        eps = sampler.sample_batch(META_BATCH)
        b = Batch(torch.stack([getattr(e, f) for e in eps]) for f in ("support_x", "support_y", "query_x", "query_y"))
        b.tasks = [Task(e.support_x, e.support_y, e.query_x, e.query_y) for e in eps]
        out.append(b)
    return out


# ---- implementations: each is (init state) -> (step(batch), params) ------------------------------------
def engine_impl(state, first_order: bool, mode: str):
    model = SinusoidMLP()
    model.load_state_dict(state)
    names = [n for n, _ in model.named_parameters()]
    cls = FOMAML if first_order else MAML
    learner = cls(model, meta_names=names, adapted_names=names, inner_steps=1, inner_lr=INNER_LR,
                  outer_lr=OUTER_LR, task_type="regression")
    if mode == "per_task":
        learner.vectorize = False

    def step(batch):
        tasks = batch.tasks
        if mode == "vmap":
            vectorized_outer_step(learner, tasks, force_vmap=True)
        else:
            learner.outer_step(tasks)

    return step, learner.meta_parameters(), learner.optimizer


def higher_impl(state, first_order: bool):
    import higher

    model = SinusoidMLP()
    model.load_state_dict(state)
    opt = torch.optim.Adam(model.parameters(), lr=OUTER_LR)
    inner_opt = torch.optim.SGD(model.parameters(), lr=INNER_LR)
    params = list(model.parameters())

    def step(batch):
        sx, sy, qx, qy = batch
        n = sx.shape[0]
        opt.zero_grad()
        for t in range(n):
            with higher.innerloop_ctx(model, inner_opt, copy_initial_weights=False,
                                      track_higher_grads=not first_order) as (fmodel, diffopt):
                diffopt.step(F.mse_loss(fmodel(sx[t]), sy[t]))
                qloss = F.mse_loss(fmodel(qx[t]), qy[t]) / n
                if first_order:  # FOMAML with higher: the query gradient at the adapted weights
                    for p, g in zip(params, torch.autograd.grad(qloss, list(fmodel.parameters())), strict=True):
                        p.grad = g if p.grad is None else p.grad + g
                else:
                    qloss.backward()
        opt.step()

    return step, params, opt


def func_loop_impl(state, first_order: bool):
    model = SinusoidMLP()
    model.load_state_dict(state)
    params = dict(model.named_parameters())
    opt = torch.optim.Adam(params.values(), lr=OUTER_LR)

    def support_loss(p, x, y):
        return F.mse_loss(functional_call(model, p, (x,)), y)

    def step(batch):
        sx, sy, qx, qy = batch
        n = sx.shape[0]
        opt.zero_grad()
        for t in range(n):
            g = grad(support_loss)(params, sx[t], sy[t])
            fast = {k: w - INNER_LR * (g[k].detach() if first_order else g[k]) for k, w in params.items()}
            (F.mse_loss(functional_call(model, fast, (qx[t],)), qy[t]) / n).backward()
        opt.step()

    return step, list(params.values()), opt


def func_vmap_impl(state, first_order: bool):
    model = SinusoidMLP()
    model.load_state_dict(state)
    params = dict(model.named_parameters())
    opt = torch.optim.Adam(params.values(), lr=OUTER_LR)

    def task_loss(p, sx, sy, qx, qy):
        g = grad(lambda f: F.mse_loss(functional_call(model, f, (sx,)), sy))(p)
        fast = {k: p[k] - INNER_LR * (g[k].detach() if first_order else g[k]) for k in p}
        return F.mse_loss(functional_call(model, fast, (qx,)), qy)

    batched = vmap(task_loss, in_dims=(None, 0, 0, 0, 0))

    def step(batch):
        opt.zero_grad()
        batched(params, *batch).mean().backward()
        opt.step()

    return step, list(params.values()), opt


def hand_impl(state, first_order: bool):
    model = SinusoidMLP()
    model.load_state_dict(state)
    params = dict(model.named_parameters())
    opt = torch.optim.Adam(params.values(), lr=OUTER_LR)
    layers = ("body.0", "body.2", "head")

    def fwd(f, x):
        for i, name in enumerate(layers):
            x = torch.baddbmm(f[f"{name}.bias"].unsqueeze(1), x, f[f"{name}.weight"].transpose(1, 2))
            if i < 2:
                x = x.relu()
        return x

    def step(batch):
        sx, sy, qx, qy = batch
        n = sx.shape[0]
        opt.zero_grad()
        fast = {k: w.expand(n, *w.shape) for k, w in params.items()}
        loss = (fwd(fast, sx) - sy).pow(2).mean((1, 2)).sum()
        gs = torch.autograd.grad(loss, list(fast.values()), create_graph=not first_order)
        fast = {k: w - INNER_LR * g for (k, w), g in zip(fast.items(), gs, strict=True)}
        (fwd(fast, qx) - qy).pow(2).mean((1, 2)).mean().backward()
        opt.step()

    return step, list(params.values()), opt


def implementations(has_higher: bool) -> dict:
    impls = {
        "ours": lambda s, fo: engine_impl(s, fo, "auto"),
        "ours (vmap)": lambda s, fo: engine_impl(s, fo, "vmap"),
        "ours (per task)": lambda s, fo: engine_impl(s, fo, "per_task"),
        "torch.func loop": func_loop_impl,
        "torch.func vmap": func_vmap_impl,
        "hand-batched": hand_impl,
    }
    if has_higher:
        impls["higher"] = higher_impl
    return impls


def first_gradient(factory, state, first_order: bool, batch) -> list[torch.Tensor]:
    """The meta-gradient of the first outer step (the optimiser's learning rate set to 0 meanwhile)."""
    step, params, opt = factory(state, first_order)
    for g in opt.param_groups:
        g["lr"] = 0.0
    step(batch)
    return [p.grad.detach().clone() for p in params]


def run(order: str, n_iter: int, rounds: int, has_higher: bool) -> dict:
    first_order = order == "first"
    torch.manual_seed(0)
    state = {k: v.clone() for k, v in SinusoidMLP().state_dict().items()}
    impls = implementations(has_higher)
    batches = make_tasks(n_iter)
    ref = first_gradient(impls["ours"], state, first_order, batches[0])
    agree = {}
    for name, factory in impls.items():
        g = first_gradient(factory, state, first_order, batches[0])
        agree[name] = max((a - b).abs().max().item() for a, b in zip(g, ref, strict=True))
    steppers = {name: factory(state, first_order)[0] for name, factory in impls.items()}
    for step in steppers.values():  # warm-up (fx trace, vmap wrappers, allocator)
        step(batches[0])
    seconds = dict.fromkeys(impls, 0.0)
    per_round = max(1, n_iter // rounds)
    names = list(impls)
    for r in range(rounds):
        chunk = batches[r * per_round:(r + 1) * per_round]
        for name in names[r % len(names):] + names[:r % len(names)]:  # rotate the order
            t0 = time.perf_counter()
            for batch in chunk:
                steppers[name](batch)
            seconds[name] += time.perf_counter() - t0
    done = per_round * rounds
    its = {name: done / s for name, s in seconds.items()}
    base = its.get("higher")
    return {"iterations": done, "it_per_s": its, "max_grad_diff_vs_ours": agree,
            "ratio_vs_higher": {k: v / base for k, v in its.items()} if base else None}


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--iterations", type=int, default=None, help="outer iterations per implementation")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads for every implementation (default 1)")
    args = p.parse_args(argv)
    n_iter = args.iterations or (40 if args.quick else 300)
    # Every implementation runs with the thread count the engine uses for loops without an encoder
    # (engine/training/threads.py): one intra-op thread; --threads changes it for all of them alike.
    torch.set_num_threads(args.threads)
    rounds = 4 if args.quick else 10
    try:
        import higher  # noqa: F401
        has_higher = True
    except ImportError:
        has_higher = False
        print("higher is not installed (pip install -e '.[bench]'); its column is left out.")
    result = {"benchmark": "peers", "quick": args.quick, "machine": machine(),
              "config": {"model": "MLP 1-40-40-1 ReLU", "k_shot": K, "meta_batch": META_BATCH, "inner_steps": 1,
                         "inner_lr": INNER_LR, "outer_lr": OUTER_LR, "iterations": n_iter, "rounds": rounds,
                         "torch_threads": args.threads}}
    ok = True
    for order in ("second", "first"):
        res = run(order, n_iter, rounds, has_higher)
        result[f"{order}_order"] = res
        rows = []
        for name, its in sorted(res["it_per_s"].items(), key=lambda kv: -kv[1]):
            ratio = res["ratio_vs_higher"][name] if res["ratio_vs_higher"] else None
            rows.append((name, its, ratio, f"{res['max_grad_diff_vs_ours'][name]:.1e}"))
        print_table(f"MAML sinusoid, {order} order: {res['iterations']} outer iterations each "
                    f"(meta-batch {META_BATCH}, K={K}, 1 inner step)",
                    ("implementation", "it/s", "ratio vs higher", "max |grad - ours|"), rows)
        bad = {k: v for k, v in res["max_grad_diff_vs_ours"].items() if v > 1e-5}
        if bad:
            ok = False
            print(f"  first meta-gradients disagree beyond 1e-5: {bad}")
        else:
            print("  first meta-gradients agree to 1e-5 across all implementations")
    summary = {}
    for order in ("second", "first"):
        r = result[f"{order}_order"]
        if r["ratio_vs_higher"]:
            summary[f"{order}_order_ratio_ours_vs_higher"] = r["ratio_vs_higher"]["ours"]
            summary[f"{order}_order_ratio_ours_vmap_vs_higher"] = r["ratio_vs_higher"]["ours (vmap)"]
        summary[f"{order}_order_ratio_ours_vs_hand_batched"] = r["it_per_s"]["ours"] / r["it_per_s"]["hand-batched"]
        summary[f"{order}_order_ratio_ours_vmap_vs_torch_func_vmap"] = (
            r["it_per_s"]["ours (vmap)"] / r["it_per_s"]["torch.func vmap"])
    result["summary"] = summary
    result["gradients_agree"] = ok
    report_end(result, args.json)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
