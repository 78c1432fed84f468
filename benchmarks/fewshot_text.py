"""Few-shot intent classification on CLINC150 and BANKING77: every algorithm and two baselines.

Data: ``../shared/data/{clinc150,banking77}/data.jsonl`` (all examples of each label; the files'
per-example train/val/test column is ignored). Labels are split into disjoint meta-train / meta-val /
meta-test classes with ``split_seed = 0`` and 60/20/20 % of the labels: CLINC150 90 / 30 / 30 intents,
BANKING77 47 / 15 / 15. Base model: the bundled all-MiniLM-L6-v2, **frozen** for every algorithm except
LoRA-MAML (a frozen encoder is what fits 2 CPU cores: each text is encoded once per data set and cached);
with it the meta-learned parameters are the head initialisation and the embedding scale, so ANIL and
MAML do the same computation here. LoRA-MAML (first order, rank 4 on every attention and MLP weight)
runs the encoder inside the inner loop and is trained and tested on a smaller budget (see the table);
``lora_maml@top2`` puts the adapters in the top 2 of the 6 layers only (``lora_layers = 2``), so the
bottom 4 layers come from the bottom-layer cache.

Episodes: 5-way 1-shot and 5-way 5-shot with 5 queries per class; meta-training 300 iterations of 4
episodes, inner loop 5 SGD steps of 0.5 (MAML family; LoRA-MAML 0.1), outer Adam 1e-3 (Reptile: ε = 0.1). Meta-test:
600 episodes from the meta-test classes, the same episodes for every method (seed 0); accuracy ± 95% CI
(1.96·s/√episodes); meta-gain = meta − finetune_head on the same episodes (paired) ± CI.
Baselines (no meta-training, pretrained encoder): nearest_centroid (cosine nearest class mean) and
finetune_head (a zero-initialised linear head trained on the support set, 5 steps of 0.5).
A BANKING77 5-way 10-shot row gives the baselines in the setting of the IsoIntentBERT reference.

Published reference points (different encoders and protocols; for orientation, not like-for-like):
  CLINC150 5-way 5-shot, ProtoNet with BERT-base: 92.20 % (MGIMN, NAACL 2022)
  BANKING77 5-way 10-shot, frozen BERT + logistic regression: 84.30 % (IsoIntentBERT, NAACL 2022)

Run:  python benchmarks/fewshot_text.py [--quick] [--json] [--iterations N] [--episodes N]
          [--lora-iterations N] [--lora-episodes N] [--threads N] [--only NAME,...] [--data NAME,...]
          [--shots 1,5]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
from _common import ROOT, emit_json, machine, parser, print_table

from engine import ExperimentConfig, MetaTrainer
from engine.evaluation import evaluate_trainer

DATA = {"clinc150": ROOT.parent / "shared" / "data" / "clinc150" / "data.jsonl",
        "banking77": ROOT.parent / "shared" / "data" / "banking77" / "data.jsonl"}
FROZEN = ("maml", "fomaml", "reptile", "anil", "metasgd", "protonet")
REFERENCE = {("clinc150", 5): ("ProtoNet, BERT-base (MGIMN, NAACL 2022)", 92.20),
             ("banking77", 10): ("frozen BERT + logistic regression (IsoIntentBERT, NAACL 2022)", 84.30)}


def config(dataset: str, k: int, algorithm: str, iterations: int, **over) -> ExperimentConfig:
    base = dict(model="bundled", dataset=str(DATA[dataset]), algorithm=algorithm, n_way=5, k_shot=k, q_query=5,
                meta_batch_size=4, inner_steps=5, inner_lr=0.5, outer_lr=1e-3, meta_iterations=iterations,
                val_interval=max(iterations // 4, 1), val_episodes=50, split_seed=0, seed=0, device="cpu")
    if algorithm == "reptile":
        base["outer_lr"] = 0.1
    if algorithm.startswith("lora_maml"):  # the encoder runs in the inner loop: a CPU-sized budget
        # inner lr 0.1: SGD steps of 0.5 on the adapters (scaled by alpha / r = 4) overshoot
        base.update(algorithm="lora_maml", first_order=True, lora_r=4, meta_batch_size=2, inner_lr=0.1,
                    val_episodes=10, val_interval=iterations, lora_layers=2 if algorithm.endswith("@top2") else 0)
    return ExperimentConfig(**{**base, **over})


def log(msg: str) -> None:
    sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] {msg}\n")
    sys.stderr.flush()


def run_one(cfg: ExperimentConfig, episodes: int, methods: list[str]) -> tuple[dict, float, int, MetaTrainer]:
    """Prepare, meta-train (when ``meta`` is evaluated) and meta-test one configuration."""
    t0 = time.perf_counter()
    trainer = MetaTrainer(cfg, status=lambda m: log(f"  {m}") if "encoding" not in m else None)
    trainer.prepare()
    t1 = time.perf_counter()
    records = list(trainer.run()) if "meta" in methods else []
    t2 = time.perf_counter()
    res = evaluate_trainer(trainer, episodes=episodes, seed=0, methods=methods)
    accs = ", ".join(f"{m} {pct(r)}" for m, r in res["methods"].items())
    log(f"{cfg.algorithm} {Path(cfg.dataset).parent.name} {cfg.n_way}w{cfg.k_shot}s: set-up {t1 - t0:.1f} s, "
        f"training {t2 - t1:.1f} s, meta-test {time.perf_counter() - t2:.1f} s; {accs}")
    return res, t2 - t0, (records[-1].step if records else 0), trainer


def pct(m: dict) -> str:
    return f"{100 * m['accuracy']:.2f} ± {100 * m['ci95']:.2f}"


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--iterations", type=int, help="meta-iterations of the frozen-encoder algorithms (300)")
    p.add_argument("--episodes", type=int, help="meta-test episodes (600)")
    p.add_argument("--lora-iterations", type=int, help="LoRA-MAML meta-iterations (20)")
    p.add_argument("--lora-episodes", type=int, help="LoRA-MAML meta-test episodes (100)")
    p.add_argument("--no-lora", action="store_true", help="skip LoRA-MAML")
    p.add_argument("--only", help="comma-separated methods to run (e.g. protonet,lora_maml@top2; the baselines "
                                  "are named nearest_centroid,finetune_head)")
    p.add_argument("--data", help="comma-separated data sets (clinc150,banking77)")
    p.add_argument("--shots", default="1,5", help="comma-separated K of the 5-way settings (1,5)")
    p.add_argument("--threads", type=int, help="torch threads (default: the engine's choice, one thread in loops "
                                            "without an encoder)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    iterations = args.iterations or (30 if args.quick else 300)
    episodes = args.episodes or (100 if args.quick else 600)
    lora_its = args.lora_iterations or (3 if args.quick else 20)
    lora_eps = args.lora_episodes or (10 if args.quick else 100)
    only = set(args.only.split(",")) if args.only else None
    wanted = lambda name: only is None or name in only  # noqa: E731
    datasets = args.data.split(",") if args.data else list(DATA)
    rows, results = [], []
    for dataset in datasets:
        for k in map(int, args.shots.split(",")):
            setting = f"5w{k}s"
            res, _, _, trainer = run_one(config(dataset, k, "maml", iterations), episodes,
                                         ["nearest_centroid", "finetune_head"])
            split = trainer.tasks.split
            note = f"{len(split.train)}/{len(split.val)}/{len(split.test)} labels"
            for name in filter(wanted, ("nearest_centroid", "finetune_head")):
                m = res["methods"][name]
                rows.append([dataset, setting, name, 0, None, episodes, pct(m), None])
                results.append({"dataset": dataset, "setting": setting, "method": name, "iterations": 0,
                                "episodes": episodes, **m, "labels": note})
            for algo in filter(wanted, (*FROZEN, *(() if args.no_lora else ("lora_maml", "lora_maml@top2")))):
                lora = algo.startswith("lora_maml")
                cfg = config(dataset, k, algo, lora_its if lora else iterations)
                n_eps = lora_eps if lora else episodes
                res, train_s, its, _ = run_one(cfg, n_eps, ["meta", "finetune_head"])
                m, gain = res["methods"]["meta"], res["meta_gain"]
                rows.append([dataset, setting, algo, its, round(train_s, 1), n_eps, pct(m),
                             f"{100 * gain['value']:+.2f} ± {100 * gain['ci95']:.2f}"])
                results.append({"dataset": dataset, "setting": setting, "method": algo, "iterations": its,
                                "train_s": train_s, "episodes": n_eps, **m, "meta_gain": gain, "labels": note})
            if (dataset, k) in REFERENCE and only is None:
                ref, value = REFERENCE[(dataset, k)]
                rows.append([dataset, setting, f"published: {ref}", None, None, None, f"{value:.2f}", None])
    # BANKING77 5-way 10-shot: the baselines in the IsoIntentBERT reference's setting
    if "banking77" not in datasets or not (wanted("nearest_centroid") or wanted("finetune_head")):
        return finish(args, rows, results)
    res, _, _, _ = run_one(config("banking77", 10, "maml", iterations), episodes, ["nearest_centroid", "finetune_head"])
    for name in ("nearest_centroid", "finetune_head"):
        m = res["methods"][name]
        rows.append(["banking77", "5w10s", name, 0, None, episodes, pct(m), None])
        results.append({"dataset": "banking77", "setting": "5w10s", "method": name, "iterations": 0,
                        "episodes": episodes, **m})
    ref, value = REFERENCE[("banking77", 10)]
    rows.append(["banking77", "5w10s", f"published: {ref}", None, None, None, f"{value:.2f}", None])
    finish(args, rows, results)


def finish(args, rows: list, results: list) -> None:
    """Print the table (and the JSON line with ``--json``)."""
    print_table("Few-shot intent classification, meta-test classes, accuracy % ± 95% CI",
                ["data", "setting", "method", "iterations", "train s", "episodes", "accuracy %",
                 "meta-gain (points)"], rows,
                notes=["bundled all-MiniLM-L6-v2; frozen encoder except lora_maml; split_seed 0, 60/20/20 % of labels",
                       "meta-gain = meta − finetune_head on the same episodes (paired)", f"machine: {machine()}"])
    if args.json:
        emit_json({"benchmark": "fewshot_text", "results": results, "machine": machine(),
                   "published": {"clinc150 5w5s": 92.20, "banking77 5w10s": 84.30}})


if __name__ == "__main__":
    main()
