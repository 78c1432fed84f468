"""The colour of a run, the same everywhere in the window (run list swatch, compare plots, legends)."""

from __future__ import annotations

# Tableau 10 (matplotlib's default cycle): distinguishable on white, and for most colour-blind viewers
# the neighbours differ in lightness too.
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
           "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


def run_color(run_id: int) -> str:
    """The colour of run ``run_id`` as ``"#rrggbb"``: a pure function of the id (no state).

    Consecutive ids get different colours; ids 10 apart share one. Works for any integer
    (negative ids included), so callers never need to special-case.
    """
    return PALETTE[(int(run_id) - 1) % len(PALETTE)]
