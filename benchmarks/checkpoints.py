"""What crash safety costs: resume-checkpoint size, write and restore time, and its share of a run.

For a few configurations of the bundled all-MiniLM-L6-v2 on the demo set, one prepared trainer is
timed writing its resume checkpoint (meta-parameters, Adam state, RNG states; atomic temp + rename +
fsync) and restoring it, next to the mean time of one meta-iteration. ``share @50`` is the training
time the default ``checkpoint_interval = 50`` adds: save time / (50 × iteration time).

    python benchmarks/checkpoints.py [--quick] [--json]
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from _common import emit_json, machine, parser, print_table

CONFIGS = [
    ("maml, frozen encoder", dict(algorithm="maml", inner_steps=1)),
    ("fomaml, train_layers=2", dict(algorithm="fomaml", inner_steps=1, train_layers=2)),
    ("fomaml, train_layers=6 (all)", dict(algorithm="fomaml", inner_steps=1, train_layers=6)),
]


def measure(name: str, overrides: dict, iterations: int, repeats: int) -> dict:
    from engine import ExperimentConfig, MetaTrainer
    from engine.training.resume import load_resume_checkpoint, restore_state, save_resume_checkpoint

    cfg = ExperimentConfig(dataset="demo", meta_batch_size=2, val_episodes=2, val_interval=10_000,
                           meta_iterations=iterations, device="cpu", **overrides)
    trainer = MetaTrainer(cfg)
    trainer.prepare()
    t0 = time.perf_counter()
    for _ in trainer.run():
        pass
    per_iter = (time.perf_counter() - t0) / iterations
    saves, loads = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeats):
            t = time.perf_counter()
            path = save_resume_checkpoint(trainer, Path(tmp), iterations + i, 1.0)
            saves.append(time.perf_counter() - t)
            t = time.perf_counter()
            tensors, state = load_resume_checkpoint(path)
            restore_state(trainer, tensors, state)
            loads.append(time.perf_counter() - t)
        size = path.stat().st_size
    save = statistics.median(saves)
    return {"config": name, "bytes": size, "save_ms": save * 1e3, "restore_ms": statistics.median(loads) * 1e3,
            "iter_ms": per_iter * 1e3, "share_at_50": save / (50 * per_iter)}


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    iterations, repeats = (5, 3) if args.quick else (20, 7)
    configs = CONFIGS[:2] if args.quick else CONFIGS
    rows = [measure(name, over, iterations, repeats) for name, over in configs]
    print_table("Resume checkpoints (median of repeats)",
                ["config", "file MB", "save ms", "restore ms", "iteration ms", "share @50"],
                [[r["config"], r["bytes"] / 1e6, r["save_ms"], r["restore_ms"], r["iter_ms"],
                  f"{100 * r['share_at_50']:.2f} %"] for r in rows],
                notes=[f"machine: {machine()}"])
    if args.json:
        emit_json({"rows": rows, "machine": machine()})


if __name__ == "__main__":
    main()
