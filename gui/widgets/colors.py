"""The colour of a run, the same everywhere in the window (run list swatch, compare plots, legends)."""

from __future__ import annotations

import colorsys
from functools import lru_cache

# Tableau 10 (matplotlib's default cycle) for runs 1-10: distinguishable on white, and for most
# colour-blind viewers the neighbours differ in lightness too.
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
           "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
_GOLDEN = 0.618033988749895  # hue step (turns) that spreads consecutive hues evenly round the circle
# The first generated hue and the lightness cycle: chosen (by a search over ids 1-310) so that any two
# runs at most 20 ids apart differ by CIELAB ΔE > 12, i.e. are told apart side by side.
_HUE0 = 0.075
_LIGHTNESS = (0.40, 0.50, 0.30)  # HLS lightness, cycled with the hue
_SATURATION = 0.7
_MAX_LUMINANCE = 0.45  # relative luminance cap (CIELAB L* ~73, like Tableau's olive): readable on white


def _srgb_to_linear(c: float) -> float:
    return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4


def _linear_to_srgb(c: float) -> float:
    return 12.92 * c if c <= 0.0031308 else 1.055 * c ** (1 / 2.4) - 0.055


@lru_cache(maxsize=4096)
def run_color(run_id: int) -> str:
    """The colour of run ``run_id`` as ``"#rrggbb"``: a pure function of the id (no state).

    Runs 1-10 get :data:`PALETTE` (Tableau 10). Later ids step the hue by the golden ratio and cycle
    the lightness, so runs 10 (or any few) ids apart differ clearly and no colour repeats within the
    first several hundred ids; bright hues (yellow, cyan) are darkened to stay readable on white.
    Works for any integer (zero and negative ids included), so callers never need to special-case.
    """
    rid = int(run_id)
    if 1 <= rid <= len(PALETTE):
        return PALETTE[rid - 1]
    n = rid - len(PALETTE) - 1 if rid > len(PALETTE) else 7919 - rid  # >= 0; ids < 1 off the main sequence
    hue = (_HUE0 + n * _GOLDEN) % 1.0
    rgb = [_srgb_to_linear(c) for c in colorsys.hls_to_rgb(hue, _LIGHTNESS[n % len(_LIGHTNESS)], _SATURATION)]
    luminance = 0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2]
    if luminance > _MAX_LUMINANCE:  # same hue and saturation, less light
        rgb = [c * _MAX_LUMINANCE / luminance for c in rgb]
    return "#{:02x}{:02x}{:02x}".format(*(round(255 * _linear_to_srgb(c)) for c in rgb))
