"""How sure a figure is: percentiles, confidence intervals that resample messages, medians of
repeats, and the rule that calls a difference "not significant".

Why messages and not deliveries: in a broadcast one message reaches 500 receivers at nearly
the same moment, and its 500 latencies rise and fall together (a GC pause, a busy tick of
the server). Treating them as 500 independent samples would claim a p99 resting on 200,000
deliveries when it rests on a few hundred messages. :func:`bootstrap` therefore resamples
whole messages (a cluster bootstrap): each resample draws messages with replacement, keeps
all of each drawn message's deliveries, and recomputes the percentile.

With repeats, the figure is the median of the repeats' figures, and each resample draws
messages within every repeat and takes the median of the repeats' percentiles, so the
interval describes the same statistic as the figure. Percentiles here are HdrHistogram's
("the smallest value with at least p % of the samples at or below it": numpy's
``inverted_cdf``), so raw arrays and histograms agree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = [
    "CONFIDENCE",
    "RESAMPLES",
    "bootstrap",
    "fit_line",
    "median",
    "overlaps",
    "percentile",
]

RESAMPLES = 1000
CONFIDENCE = 0.95
SEED = 20261130
"""Fixed: ``wirewise summarize`` run twice on the same files gives the same intervals."""
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
         9: 2.262, 10: 2.228, 12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042}  # fmt: skip
"""Student's t, two-sided 95 %, by degrees of freedom (for a fit's slope over a few points)."""


def percentile(values: np.ndarray, p: float) -> float | None:
    """The p-th percentile (0-100) the way HdrHistogram reads it; None for no values."""
    if len(values) == 0:
        return None
    return float(np.percentile(values, p, method="inverted_cdf"))


def median(values: Sequence[float | None]) -> float | None:
    """The median of the values that exist (a repeat that measured nothing has None)."""
    present = sorted(v for v in values if v is not None)
    if not present:
        return None
    middle = len(present) // 2
    return present[middle] if len(present) % 2 else (present[middle - 1] + present[middle]) / 2


def _weighted_percentile(sorted_values: np.ndarray, weights: np.ndarray, p: float) -> float:
    cumulative = np.cumsum(weights)
    total = cumulative[-1]
    if total == 0:
        return math.nan
    index = int(np.searchsorted(cumulative, p / 100 * total, side="left"))
    return float(sorted_values[min(index, len(sorted_values) - 1)])


def bootstrap(
    repeats: Sequence[tuple[np.ndarray, np.ndarray]],
    percentiles: Sequence[float] = (50.0, 99.0),
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
) -> dict[float, tuple[float, float] | None]:
    """Interval of the median-over-repeats of each percentile, resampling messages.

    ``repeats`` holds, per repeat, ``(values, message_of)``: each delivery's value and the
    index of its message. A percentile gets None when any repeat has no values.
    """
    usable = [(v, m) for v, m in repeats if len(v)]
    if not usable or len(usable) < len(repeats):
        return {p: None for p in percentiles}
    rng = np.random.default_rng(SEED)
    prepared = []
    for values, message_of in usable:
        order = np.argsort(values, kind="stable")
        _, messages = np.unique(message_of, return_inverse=True)
        prepared.append(
            (values[order].astype(np.float64), messages[order], int(messages.max()) + 1)
        )
    draws = {p: np.empty(resamples) for p in percentiles}
    per_repeat = {p: np.empty(len(prepared)) for p in percentiles}
    for b in range(resamples):
        for r, (values, messages, count) in enumerate(prepared):
            picked = np.bincount(rng.integers(0, count, count), minlength=count)
            weights = picked[messages]
            for p in percentiles:
                per_repeat[p][r] = _weighted_percentile(values, weights, p)
        for p in percentiles:
            draws[p][b] = np.median(per_repeat[p])
    tail = (1 - confidence) / 2 * 100
    out: dict[float, tuple[float, float] | None] = {}
    for p in percentiles:
        finite = draws[p][np.isfinite(draws[p])]
        out[p] = (
            (float(np.percentile(finite, tail)), float(np.percentile(finite, 100 - tail)))
            if len(finite)
            else None
        )
    return out


def overlaps(a: tuple[float, float] | None, b: tuple[float, float] | None) -> bool | None:
    """Do two intervals overlap? (Then their difference is "not significant".) None: unknown."""
    if a is None or b is None:
        return None
    return a[0] <= b[1] and b[0] <= a[1]


def fit_line(xs: Sequence[float], ys: Sequence[float]) -> dict[str, float]:
    """Least squares: slope, intercept, r2 and the slope's 95 % interval (Student's t).

    The closed form on centred data with ``math.fsum`` (stable for x in the thousands and y
    in the gigabytes). With every y equal, the horizontal line fits exactly (r2 1.0).
    """
    if len(xs) != len(ys):
        raise ValueError(f"xs and ys differ in length: {len(xs)} != {len(ys)}")
    if len(set(xs)) < 2:
        raise ValueError("a line needs at least 2 distinct x values")
    n = len(xs)
    mx, my = math.fsum(xs) / n, math.fsum(ys) / n
    sxx = math.fsum((x - mx) ** 2 for x in xs)
    sxy = math.fsum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    slope = sxy / sxx
    intercept = my - slope * mx
    residual = math.fsum((y - (slope * x + intercept)) ** 2 for x, y in zip(xs, ys, strict=True))
    total = math.fsum((y - my) ** 2 for y in ys)
    r2 = 1.0 - residual / total if total > 0 else 1.0
    out = {"slope": slope, "intercept": intercept, "r2": r2}
    if n > 2:
        half = t975(n - 2) * math.sqrt(residual / (n - 2) / sxx)
        out["slope_low"], out["slope_high"] = slope - half, slope + half
    return out


def power_law_at(points: Sequence[tuple[float, float]], x: float) -> float:
    """y at ``x`` from ``y = a * x ** b`` fitted to positive ``points`` in log-log space (b
    below 1: a cost per unit that falls as the load rises, as a load generator's does; a line
    would overstate it). b is held at 0 or more; one distinct x: y scales with x."""
    if not points:
        raise ValueError("a power law needs at least one point")
    if len({px for px, _ in points}) < 2:
        px, py = points[-1]
        return py * x / px
    logs = [(math.log(px), math.log(py)) for px, py in points]
    exponent = max(fit_line(*zip(*logs, strict=True))["slope"], 0.0)
    level = math.fsum(ly - exponent * lx for lx, ly in logs) / len(logs)  # best a for that b
    return math.exp(level + exponent * math.log(x))


def t975(df: int) -> float:
    """Student's t quantile for a two-sided 95 % interval (1.96 past 30 degrees of freedom)."""
    if df > 30:
        return 1.96
    known = max(k for k in _T975 if k <= df)
    return _T975[known]
