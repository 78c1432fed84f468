"""Target B: meta-training throughput on CLINC150 with the bundled encoder, cold and warm cache.

For ProtoNet, ANIL and FOMAML (adapt_layers = 0: head-only inner loop; adapt_layers = 2: the top two
encoder layers adapted per task) on 5-way 5-shot 5-query episodes, one run with an empty embedding
cache (cold) and one with the cache it left (warm), each through :class:`engine.MetaTrainer`
(``prepare()`` then ``run()``: data loading, model loading, encoding or cache reading, episode
sampling, the algorithm's outer steps). Printed next to the cost floor: one forward pass of the
encoder per unique text (``TextEncoder.encode`` on exactly the texts a run encodes).

Columns:
  setup s        ``prepare()``: read and split the data, load the model, encode (cold) or read the cache (warm)
  train ep/s     meta-training episodes per second of ``run()`` (meta_iterations x meta_batch_size episodes;
                 the two meta-validations at the first and last step, 4 episodes each, are in the time)
  total ep/s     episodes / (setup + training)
  encode s       inside the cold ``prepare()``: the encoder's forward passes over the texts it had to encode
  cold / encode  (cold setup + cold training) / encode s: the whole first run against the forward passes it
                 contains (measured in the same run, so a change in machine load cannot skew it)
  cold / floor   (cold setup + cold training) / floor, the floor measured separately before the runs

Run:  python benchmarks/throughput.py [--quick] [--json] [--data PATH] [--meta-batch N]
"""

from __future__ import annotations

import json
import os
import random
import tempfile
import time
from pathlib import Path

import _common  # noqa: F401  (first: process settings before torch loads)
from _common import ROOT, machine, parser, print_table, report_end

CLINC = ROOT.parent / "shared" / "data" / "clinc150" / "data.jsonl"


def quick_subset(src: Path, folder: Path, labels: int = 30, per_label: int = 15) -> Path:
    """A CLINC150 subset in a temp file (``labels`` x ``per_label`` texts): the --quick data set."""
    rows: dict[str, list[str]] = {}
    for line in src.open(encoding="utf-8"):
        r = json.loads(line)
        rows.setdefault(r["label"], []).append(r["text"])
    names = sorted(rows)
    random.Random(0).shuffle(names)
    out = folder / "clinc_quick.jsonl"
    with out.open("w", encoding="utf-8") as f:
        for lab in names[:labels]:
            for text in rows[lab][:per_label]:
                f.write(json.dumps({"text": text, "label": lab}) + "\n")
    return out


def run_once(cfg, cache_dir: Path) -> dict:
    """prepare() + run() of one config with the embedding cache in ``cache_dir``."""
    from engine import MetaTrainer
    from engine.training import features

    os.environ["METASTUDIO_CACHE"] = str(cache_dir)
    features._TABLE_CACHE.clear()  # measure the disk cache, not the in-process table of an earlier run
    t0 = time.perf_counter()
    trainer = MetaTrainer(cfg)
    trainer.prepare()
    t1 = time.perf_counter()
    steps = sum(1 for _ in trainer.run())
    t2 = time.perf_counter()
    f = trainer.features
    return {"setup_s": t1 - t0, "train_s": t2 - t1, "episodes": steps * cfg.meta_batch_size, "mode": f.mode,
            "encoded": f.encoded_count, "cache_hits": f.cache_hits, "cache_misses": f.cache_misses,
            "encode_s": f.stats.encode_s}


def partial_encoder(base: dict, tmp: Path, iterations: int) -> dict:
    """Seconds per outer iteration of MAML with train_layers=1 on the demo set, before and after the
    bottom-layer cache and the vectorised head-only step (warm cache; the same episodes; set-up excluded)."""
    from engine import ExperimentConfig

    cfg = ExperimentConfig(**{**base, "dataset": "demo", "algorithm": "maml", "train_layers": 1,
                              "meta_batch_size": 4, "meta_iterations": iterations, "val_episodes": 1})
    cache = tmp / "cache-partial"
    out = {}
    for name, env in (("after", {}), ("before", {"METASTUDIO_HIDDEN_CACHE_MAX_GB": "0", "METASTUDIO_VECTORIZE": "0"})):
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            if name == "after":
                run_once(cfg, cache)  # fills the cache: the timed run below is warm
            r = run_once(cfg, cache)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        out[f"{name}_s_per_it"] = r["train_s"] / iterations
        out[f"{name}_mode"] = r["mode"]
    out["ratio_after_vs_before"] = out["before_s_per_it"] / out["after_s_per_it"]
    return out


def encoding_floor(dataset: str, cfg) -> tuple[float, int]:
    """Seconds of one forward pass per unique text the run encodes (model already loaded), and the count."""
    import numpy as np
    import torch

    from engine import MetaTrainer
    from engine.data.episodes import class_rows
    from engine.models.backbone import load_encoder

    t = MetaTrainer(cfg)
    tasks = t.prepare_data()
    rows = np.concatenate(list(class_rows(tasks.data, [*tasks.split.train, *tasks.split.val,
                                                        *tasks.split.test]).values()))
    texts = list(dict.fromkeys(tasks.data.texts[i] for i in rows))
    enc = load_encoder(cfg.model, max_length=cfg.max_length, pooling=cfg.pooling)
    enc.encode(texts[:64], torch.device("cpu"))  # warm-up
    t0 = time.perf_counter()
    enc.encode(texts, torch.device("cpu"), batch_size=128)
    return time.perf_counter() - t0, len(texts)


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--data", default=str(CLINC), help="the JSONL data set (default: ../shared/data/clinc150)")
    p.add_argument("--meta-batch", type=int, default=16, help="episodes per outer step (default 16)")
    p.add_argument("--iterations", type=int, default=None, help="outer steps of the frozen-encoder runs")
    args = p.parse_args(argv)

    import torch  # noqa: F401  (imported before timing: the import is not part of any figure)
    import transformers  # noqa: F401

    from engine import ExperimentConfig

    tmp = Path(tempfile.mkdtemp(prefix="metastudio-throughput-"))
    data = quick_subset(Path(args.data), tmp) if args.quick else Path(args.data)
    iters = args.iterations or (40 if args.quick else 300)
    slow_iters = 2 if args.quick else 6  # adapt_layers=2 runs two encoder layers per inner step: ~1 episode/s
    base = dict(model="bundled", dataset=str(data), n_way=5, k_shot=5, q_query=5, meta_batch_size=args.meta_batch,
                inner_steps=5, inner_lr=0.5, val_interval=10**6, val_episodes=4, device="cpu", seed=0)
    configs = [
        ("protonet", dict(algorithm="protonet", meta_iterations=iters)),
        ("anil (5 steps)", dict(algorithm="anil", meta_iterations=iters)),
        ("fomaml adapt_layers=0", dict(algorithm="fomaml", meta_iterations=iters)),
        ("fomaml adapt_layers=2", dict(algorithm="fomaml", adapt_layers=2, meta_iterations=slow_iters,
                                       meta_batch_size=4, val_episodes=1)),
    ]
    floor_s, n_texts = encoding_floor(str(data), ExperimentConfig(**base))
    rows, results = [], {}
    for name, over in configs:
        cfg = ExperimentConfig(**{**base, **over})
        cache_dir = tmp / f"cache-{len(results)}"  # empty: a cold start for each config
        cold = run_once(cfg, cache_dir)
        warm = run_once(cfg, cache_dir)
        r = {"cold": cold, "warm": warm, "iterations": cfg.meta_iterations,
             "cold_train_ep_s": cold["episodes"] / cold["train_s"],
             "warm_train_ep_s": warm["episodes"] / warm["train_s"],
             "cold_total_ep_s": cold["episodes"] / (cold["setup_s"] + cold["train_s"]),
             "warm_total_ep_s": warm["episodes"] / (warm["setup_s"] + warm["train_s"]),
             "ratio_cold_total_vs_floor": (cold["setup_s"] + cold["train_s"]) / floor_s,
             "ratio_cold_total_vs_own_encoding": (cold["setup_s"] + cold["train_s"]) / cold["encode_s"],
             "ratio_cold_setup_vs_floor": cold["setup_s"] / floor_s,
             "ratio_warm_vs_cold_train": (warm["episodes"] / warm["train_s"]) / (cold["episodes"] / cold["train_s"])}
        results[name] = r
        rows.append((name, f"{cfg.meta_iterations}x{cfg.meta_batch_size}", cold["mode"], cold["setup_s"],
                     cold["encode_s"], r["cold_train_ep_s"], warm["setup_s"], r["warm_train_ep_s"],
                     r["warm_total_ep_s"], f"{cold['encoded']}/{warm['encoded']}",
                     r["ratio_cold_total_vs_own_encoding"], r["ratio_cold_total_vs_floor"]))
    print_table(
        f"Throughput on {data.name} ({n_texts:,} unique texts), bundled all-MiniLM-L6-v2, 5-way 5-shot 5-query, "
        f"meta-batch {args.meta_batch}, CPU",
        ("config", "iters x batch", "features", "cold setup s", "encode s", "cold train ep/s", "warm setup s",
         "warm train ep/s", "warm total ep/s", "encoded cold/warm", "cold / encode", "cold / floor"), rows,
        notes=[f"floor: one forward pass per unique text = {floor_s:.2f} s ({n_texts / floor_s:,.0f} texts/s)",
               "features: pooled = cached embeddings; hidden = cached bottom-layer states, top layers per episode"])
    partial = partial_encoder(base, tmp, 1 if args.quick else 4)
    print_table(
        "Partially trained encoder: MAML, train_layers=1 (head-only inner loop, 5 steps), meta-batch 4, demo data",
        ("path", "s / iteration", "speed-up"),
        [("before: whole encoder per episode, per-task loop", partial["before_s_per_it"], 1.0),
         ("after: cached bottom 5 layers, one top-layer pass per meta-batch", partial["after_s_per_it"],
          partial["ratio_after_vs_before"])],
        notes=["before = METASTUDIO_HIDDEN_CACHE_MAX_GB=0 and METASTUDIO_VECTORIZE=0 (the engine before this change)"])
    out = {"benchmark": "throughput", "quick": args.quick, "machine": machine(), "data": str(data),
           "unique_texts": n_texts, "meta_batch": args.meta_batch, "floor_s": floor_s, "results": results,
           "partial_encoder": partial}
    report_end(out, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
