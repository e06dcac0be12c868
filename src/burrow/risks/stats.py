"""Intervals for the report's figures: Wilson for proportions, percentile bootstrap for means and ratios."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

Z95 = 1.959963984540054


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float, float]:
    """(share, low, high): a proportion with its 95% Wilson score interval (n = 0: nan)."""
    if n <= 0:
        return float("nan"), float("nan"), float("nan")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low, high = centre - half, centre + half
    return p, 0.0 if low < 1e-12 else low, 1.0 if high > 1 - 1e-12 else high  # no -0.0 / 2.8e-17 from rounding


def bootstrap(values: np.ndarray, stat: Callable[[np.ndarray], float] | None = None, samples: int = 1000,
              seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """(point, low, high) of ``stat`` (default: the mean) over rows of ``values``, resampled with replacement."""
    values = np.asarray(values)
    fn = stat or (lambda v: float(np.mean(v)))
    if len(values) == 0:
        return float("nan"), float("nan"), float("nan")
    point = float(fn(values))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(values), size=(samples, len(values)))
    draws = np.array([fn(values[i]) for i in idx])
    lo, hi = np.nanquantile(draws, [(1 - level) / 2, (1 + level) / 2])
    return point, float(lo), float(hi)


def ratio_bootstrap(num: np.ndarray, den: np.ndarray, samples: int = 1000, seed: int = 0,
                    level: float = 0.95) -> tuple[float, float, float]:
    """(Σnum/Σden, low, high) resampling units (rows of both arrays together)."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    if len(num) == 0 or den.sum() <= 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(num), size=(samples, len(num)))
    draws = num[idx].sum(1) / np.maximum(den[idx].sum(1), 1e-12)
    lo, hi = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
    return float(num.sum() / den.sum()), float(lo), float(hi)
