"""Confidence intervals, in one place: every stored figure says which estimator made it.

All intervals are two-sided 95%. The estimators, by the name they record in
:attr:`~configspec.config.Estimate.estimator`:

* ``student_t`` — mean of repeated timings (profiling sweeps, power samples): Student's t
  with n-1 degrees of freedom (:func:`student_t_mean`, :func:`student_t_half_width`);
* ``normal`` — mean of many per-round values (validation): the normal 1.96
  (:func:`normal_mean`);
* ``bootstrap_ratio`` — a ratio of sums over rounds (goodput, acceptance, tokens per joule
  of a run): percentile bootstrap resampling rounds (:func:`bootstrap_ratio`);
* ``bootstrap_median`` — the median of per-round values (the runtime's overhead):
  percentile bootstrap of the median (:func:`bootstrap_median`);
* ``bootstrap_ratio_of_medians`` — the ratio of the medians of two independent samples
  (a contention probe over its baseline probe): percentile bootstrap resampling each
  sample on its own (:func:`bootstrap_ratio_of_medians`);
* ``bootstrap_prompts`` — pooled acceptance over prompts: percentile bootstrap resampling
  prompts (:func:`bootstrap_interval` on the resampled statistics). A *confidence*
  interval of the profile's pooled figure: it shrinks as more prompts are profiled.
* ``cluster_bootstrap_prompts`` — a *prediction* interval for a run of n prompts (E(K) and
  goodput of one user's run): a two-stage cluster bootstrap over the profiled prompts
  (:func:`cluster_bootstrap_ratios`, :func:`prediction_interval`). It holds the
  between-prompt variance of acceptance (which does not shrink with more profiled
  prompts, only with more prompts in the run) plus the profile's own sampling error.

Pure: numbers in, :class:`~configspec.config.Estimate` out; seeded, so reproducible.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from configspec.config import Estimate, Source

LEVEL = 0.95
"""Confidence level of every interval."""
Z975 = 1.96
"""Two-sided 95% normal quantile."""
BOOTSTRAP_SAMPLES = 2000
"""Resamples of the round-level bootstraps."""
PREDICTION_LEVELS = (0.90, 0.95)
"""Nominal coverage of the prediction intervals a validation reports."""
CLUSTER_BOOTSTRAP_PROMPTS = "cluster_bootstrap_prompts"
"""Estimator name of the prediction intervals for a run of n prompts."""

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
    return Z975 if df > 120 else _T975[best]


def student_t_half_width(n: int, variance: float) -> float:
    """95% CI half-width of a mean of ``n`` samples with sample ``variance`` (inf, n < 2)."""
    if n < 2:
        return math.inf
    return t975(n - 1) * math.sqrt(max(variance, 0.0) / n)


def half_width(samples: Sequence[float]) -> float:
    """95% Student-t CI half-width of the mean of ``samples`` (inf with fewer than two)."""
    n = len(samples)
    if n < 2:
        return math.inf
    mean = sum(samples) / n
    return student_t_half_width(n, sum((x - mean) ** 2 for x in samples) / (n - 1))


def relative_half_width(samples: Sequence[float]) -> float:
    """Half-width divided by the mean (inf when the mean is 0 or there are < 2 samples)."""
    if not samples:
        return math.inf
    mean = sum(samples) / len(samples)
    return half_width(samples) / abs(mean) if mean else math.inf


def student_t_mean(
    samples: Sequence[float], source: Source = "measured", *, nonnegative: bool = True
) -> Estimate:
    """Mean of ``samples`` with its Student-t 95% CI (no interval for a single sample).

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
    return Estimate(
        mean=mean, ci_low=low, ci_high=mean + hw, n=n, source=source, estimator="student_t"
    )


def normal_mean(values: Sequence[float]) -> Estimate:
    """Mean of ``values`` with a normal (1.96) 95% CI (no interval for a single value)."""
    m = statistics.fmean(values)
    if len(values) < 2:
        return Estimate(mean=m, n=len(values))
    half = Z975 * statistics.stdev(values) / math.sqrt(len(values))
    return Estimate(mean=m, ci_low=m - half, ci_high=m + half, n=len(values), estimator="normal")


def bootstrap_interval(
    point: float, boot: npt.ArrayLike, level: float = LEVEL
) -> tuple[float, float]:
    """Percentile interval of the bootstrap statistics ``boot``, widened to hold ``point``
    (``(point, point)`` when there are none)."""
    b = np.asarray(boot, dtype=np.float64)
    b = b[np.isfinite(b)]
    if b.size == 0:
        return point, point
    lo_q, hi_q = (1.0 - level) / 2.0, 1.0 - (1.0 - level) / 2.0
    lo, hi = np.quantile(b, [lo_q, hi_q])
    return min(float(lo), point), max(float(hi), point)


def bootstrap_ratio_draws(
    num: npt.NDArray[np.float64],
    den: npt.NDArray[np.float64],
    scale: float,
    *,
    n_boot: int = BOOTSTRAP_SAMPLES,
    seed: int = 0,
) -> npt.NDArray[np.float64]:
    """The ``n_boot`` resampled statistics behind :func:`bootstrap_ratio`:
    sum(num)/sum(den)·scale over rows drawn with replacement (NaN where a draw's den sums
    to 0). For figures built from several such ratios (e.g. the regret of a recommended K
    among measured runs), whose interval :func:`bootstrap_interval` then takes."""
    n = len(num)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    dens = den[idx].sum(axis=1)
    return np.asarray(num[idx].sum(axis=1) / np.where(dens > 0, dens, np.nan) * scale)


def bootstrap_ratio(
    num: npt.NDArray[np.float64], den: npt.NDArray[np.float64], scale: float, seed: int = 0
) -> Estimate:
    """sum(num)/sum(den)·scale with a 95% bootstrap CI resampling rows (measured)."""
    mean = float(num.sum() / den.sum() * scale) if den.sum() > 0 else 0.0
    n = len(num)
    if n < 2 or den.sum() <= 0:
        return Estimate(mean=mean, n=n, source="measured")
    ratios = bootstrap_ratio_draws(num, den, scale, seed=seed)
    lo, hi = np.nanpercentile(ratios, [2.5, 97.5])
    return Estimate(
        mean=mean,
        ci_low=min(float(lo), mean),
        ci_high=max(float(hi), mean),
        n=n,
        estimator="bootstrap_ratio",
    )


def bootstrap_median(
    values: npt.ArrayLike, *, n_boot: int = 1000, seed: int = 0, floor: float | None = None
) -> Estimate:
    """Median of ``values`` with a 95% percentile-bootstrap CI (measured).

    ``floor`` clips the median and both bounds from below (e.g. 0 for a duration that
    noise can push negative).
    """
    x = np.asarray(values, dtype=np.float64)
    med = float(np.median(x))
    rng = np.random.default_rng(seed)
    boots = np.median(rng.choice(x, size=(n_boot, x.size)), axis=1)
    lo, hi = (float(v) for v in np.percentile(boots, [2.5, 97.5]))
    low, high = min(lo, med), max(hi, med)
    if floor is not None:
        med, low, high = max(med, floor), max(low, floor), max(high, med, floor)
    return Estimate(mean=med, ci_low=low, ci_high=high, n=int(x.size), estimator="bootstrap_median")


def bootstrap_ratio_of_medians(
    num: npt.ArrayLike, den: npt.ArrayLike, *, n_boot: int = BOOTSTRAP_SAMPLES, seed: int = 0
) -> Estimate:
    """median(num) / median(den) with a 95% percentile-bootstrap CI (measured).

    ``num`` and ``den`` are independent samples of one quantity (e.g. latencies in ms
    timed now and at a baseline, same method): each is resampled on its own, so the
    interval holds the spread of both. Raises ValueError when either is empty or
    median(den) is not positive; a single sample on either side gives no interval.
    """
    x = np.asarray(num, dtype=np.float64).ravel()
    y = np.asarray(den, dtype=np.float64).ravel()
    if x.size == 0 or y.size == 0:
        raise ValueError(f"a ratio of medians needs samples on both sides ({x.size}, {y.size})")
    med_y = float(np.median(y))
    if not med_y > 0:
        raise ValueError(f"the denominator's median is {med_y}; it must be positive")
    point = float(np.median(x)) / med_y
    if x.size < 2 or y.size < 2:
        return Estimate(mean=point, n=int(min(x.size, y.size)), source="measured")
    rng = np.random.default_rng(seed)
    boot_x = np.median(rng.choice(x, size=(n_boot, x.size)), axis=1)
    boot_y = np.median(rng.choice(y, size=(n_boot, y.size)), axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.where(boot_y > 0, boot_x / np.where(boot_y > 0, boot_y, 1.0), np.nan)
    lo, hi = bootstrap_interval(point, ratios)
    return Estimate(
        mean=point,
        ci_low=lo,
        ci_high=hi,
        n=int(min(x.size, y.size)),
        estimator="bootstrap_ratio_of_medians",
    )


def cluster_bootstrap_ratios(
    num: npt.ArrayLike,
    den: npt.ArrayLike,
    n_run: int,
    *,
    n_boot: int = BOOTSTRAP_SAMPLES,
    seed: int = 0,
) -> npt.NDArray[np.float64]:
    """Ratio-of-sums statistics Σnum/Σden of simulated runs of ``n_run`` clusters (prompts).

    ``num``/``den`` have shape ``(m, ...)``: one row per profiled cluster (e.g. a prompt's
    accepted tokens and rounds per K). Each of the ``n_boot`` draws resamples the m
    clusters (the profile's own sampling error), then draws the run's ``n_run`` clusters
    from that resample (the between-cluster variance a run of ``n_run`` sees), and pools
    them: the spread of the result is that of a future run's figure around the profile's
    pooled one, Var ≈ σ²_between·(1/n_run + 1/m). Vectorised (no loop over draws).

    Returns shape ``(n_boot, ...)``; NaN where a draw's pooled ``den`` is 0. Raises
    ValueError for ``n_run`` < 1, no clusters or mismatched shapes.
    """
    x = np.asarray(num, dtype=np.float64)
    y = np.asarray(den, dtype=np.float64)
    if x.shape != y.shape or x.ndim < 1 or x.shape[0] == 0:
        raise ValueError(f"num {x.shape} and den {y.shape} must be equal, non-empty (m, ...)")
    if n_run < 1:
        raise ValueError(f"a run has {n_run} prompts; it needs at least 1")
    m = x.shape[0]
    rng = np.random.default_rng(seed)
    population = rng.integers(0, m, size=(n_boot, m))
    picked = np.take_along_axis(population, rng.integers(0, m, size=(n_boot, n_run)), axis=1)
    flat = (picked + m * np.arange(n_boot)[:, None]).ravel()
    weights = np.bincount(flat, minlength=n_boot * m).reshape(n_boot, m).astype(np.float64)
    sum_x = weights @ x.reshape(m, -1)
    sum_y = weights @ y.reshape(m, -1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(sum_y > 0, sum_x / np.where(sum_y > 0, sum_y, 1.0), np.nan)
    return np.asarray(ratio.reshape((n_boot, *x.shape[1:])))


def prediction_interval(
    point: float, draws: npt.ArrayLike, levels: Sequence[float] = PREDICTION_LEVELS
) -> dict[float, tuple[float, float]]:
    """Percentile prediction interval of the bootstrap ``draws`` at each of ``levels``
    (each widened to hold ``point``; ``(point, point)`` without finite draws)."""
    return {level: bootstrap_interval(point, draws, level) for level in levels}


def prediction_estimate(point: float, bounds: tuple[float, float], n_clusters: int) -> Estimate:
    """The 95% prediction interval as a stored :class:`Estimate` (source ``modelled``,
    estimator ``cluster_bootstrap_prompts``, ``n`` = profiled clusters)."""
    return Estimate(
        mean=point,
        ci_low=min(bounds[0], point),
        ci_high=max(bounds[1], point),
        n=n_clusters,
        source="modelled",
        estimator=CLUSTER_BOOTSTRAP_PROMPTS,
    )
