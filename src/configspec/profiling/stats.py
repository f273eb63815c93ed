"""Repeat a timed measurement until its 95% confidence interval is tight enough.

One way to time a region everywhere in profiling: :func:`repeat_until` calls ``measure``
(which returns one sample, e.g. milliseconds) until the 95% CI half-width of the mean is
within ``rel_half_width`` of the mean (Student's t), or ``max_repeats`` or the time budget
is reached. Both the achieved half-width and whether the target was met are returned, so
profiles can report them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from configspec.config import Estimate, Source

# two-sided 95% Student-t quantiles (t_{0.975, df}); beyond the table the normal 1.96
_T975 = {
    1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
    9: 2.262, 10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120,
    17: 2.110, 18: 2.101, 19: 2.093, 20: 2.086, 22: 2.074, 25: 2.060, 30: 2.042, 40: 2.021,
    60: 2.000, 120: 1.980,
}  # fmt: skip


def t975(df: int) -> float:
    """Two-sided 95% Student-t quantile for ``df`` degrees of freedom (conservative between
    tabulated values: the next smaller df's quantile)."""
    if df < 1:
        return math.inf
    best = max(d for d in _T975 if d <= df)
    return 1.96 if df > 120 else _T975[best]


def half_width(samples: Sequence[float]) -> float:
    """95% CI half-width of the mean of ``samples`` (inf with fewer than two)."""
    n = len(samples)
    if n < 2:
        return math.inf
    mean = sum(samples) / n
    var = sum((x - mean) ** 2 for x in samples) / (n - 1)
    return t975(n - 1) * math.sqrt(var / n)


def relative_half_width(samples: Sequence[float]) -> float:
    """Half-width divided by the mean (inf when the mean is 0 or there are < 2 samples)."""
    if not samples:
        return math.inf
    mean = sum(samples) / len(samples)
    return half_width(samples) / abs(mean) if mean else math.inf


def estimate(
    samples: Sequence[float], source: Source = "measured", *, nonnegative: bool = True
) -> Estimate:
    """Mean of ``samples`` with its 95% CI (no interval for a single sample).

    With ``nonnegative`` (latencies, throughputs, powers) the interval is truncated at 0:
    a few noisy samples can put mean - half-width below zero, which no such quantity is.
    """
    n = len(samples)
    if n == 0:
        raise ValueError("no samples")
    mean = sum(samples) / n
    hw = half_width(samples)
    if not math.isfinite(hw):
        return Estimate(mean=mean, n=n, source=source)
    low = max(0.0, mean - hw) if nonnegative and mean >= 0 else mean - hw
    return Estimate(mean=mean, ci_low=low, ci_high=mean + hw, n=n, source=source)


@dataclass(frozen=True)
class Sampled:
    """Samples of one sweep point and how sampling stopped.

    ``converged`` is True when the 95% CI half-width reached the target; otherwise the
    time budget or ``max_repeats`` ran out first. ``rel_half_width`` is what was achieved.
    """

    samples: tuple[float, ...]
    converged: bool
    rel_half_width: float
    elapsed_s: float


def repeat_until(
    measure: Callable[[], float],
    *,
    rel_half_width: float = 0.05,
    min_repeats: int = 5,
    max_repeats: int = 200,
    budget_s: float = 10.0,
    clock: Callable[[], float] = time.perf_counter,
) -> Sampled:
    """Call ``measure`` (one sample each) until the 95% CI half-width ≤ ``rel_half_width``
    × mean, or ``max_repeats`` samples, or ``budget_s`` seconds; at least ``min_repeats``
    samples are always taken."""
    start = clock()
    samples: list[float] = []
    achieved = math.inf
    while True:
        samples.append(float(measure()))
        n = len(samples)
        if n >= min_repeats:
            achieved = relative_half_width(samples)
            if achieved <= rel_half_width:
                return Sampled(tuple(samples), True, achieved, clock() - start)
            if n >= max_repeats or clock() - start >= budget_s:
                return Sampled(tuple(samples), False, achieved, clock() - start)
