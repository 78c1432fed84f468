"""Meta-test evaluation of stored runs against baselines on the same seeded episodes."""

from engine.evaluation.evaluate import DIVERGED_MSE, evaluate_run, evaluate_trainer, mean_ci

__all__ = ["DIVERGED_MSE", "evaluate_run", "evaluate_trainer", "mean_ci"]
