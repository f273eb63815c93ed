"""Prediction intervals for a run of n prompts: what a user's own run will see.

The alignment profile's pooled E(K) (and its ``bootstrap_prompts`` confidence interval)
describes the mean over the profiled prompts. A run decodes only a few prompts, and
acceptance varies a lot from prompt to prompt (an n-gram drafter on one math prompt can
accept 60% more than the pool), so a run's E(K) and goodput scatter around the pooled
figure by far more than that confidence interval. This module turns the per-prompt
records an alignment entry stores (:class:`~configspec.config.PromptAcceptance`) into a
*prediction* interval for a run of ``n`` prompts: a two-stage cluster bootstrap over the
profiled prompts (:func:`configspec.stats.cluster_bootstrap_ratios`) pooled through the
model's E(K) formula (:func:`configspec.model.acceptance.tokens_per_round_from_measured`,
the one the default model uses for measured ``by_k`` figures).

Assumptions (stated with every figure): the run's prompts are drawn like the profiled ones
(same mix of domains, about the profiled tokens per prompt); only acceptance varies (the
timing model's own error and host noise are not in the interval); the goodput interval is
the modelled goodput scaled by the E(K) interval (round time held at its modelled value).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from configspec.config import AlignmentEntry, AlignmentProfile
from configspec.model.acceptance import tokens_per_round_from_measured
from configspec.search.space import SearchSettings, pick_entry
from configspec.stats import (
    BOOTSTRAP_SAMPLES,
    CLUSTER_BOOTSTRAP_PROMPTS,
    PREDICTION_LEVELS,
    cluster_bootstrap_ratios,
    prediction_interval,
)

if TYPE_CHECKING:
    from configspec.loop.validate import ValidationRow


FloatArray = NDArray[np.float64]


def level_key(level: float) -> str:
    """The label of a nominal level in stored figures: 0.9 -> ``"90%"``."""
    return f"{level * 100:g}%"


@dataclass(frozen=True)
class RunInterval:
    """Prediction interval of tokens per round E(K) for a run of ``n_run_prompts`` prompts.

    ``point`` is E(K) pooled over the profiled prompts (the model's figure); ``bounds``
    maps a nominal level (0.90, 0.95) to the (low, high) E(K) a run of that many prompts
    falls in with that probability, as estimated by ``estimator``.
    """

    k: int
    n_run_prompts: int
    n_profiled_prompts: int
    point: float
    bounds: dict[float, tuple[float, float]]
    estimator: str = CLUSTER_BOOTSTRAP_PROMPTS

    def relative(self, level: float) -> tuple[float, float]:
        """(low, high) at ``level`` divided by the point (1, 1 for a zero point)."""
        lo, hi = self.bounds[level]
        if self.point <= 0:
            return 1.0, 1.0
        return lo / self.point, hi / self.point

    def scaled(self, value: float, levels: Sequence[float]) -> dict[str, list[float]]:
        """``value`` (a modelled E(K), or a figure proportional to it such as goodput)
        times the relative interval, keyed by :func:`level_key`: ``{"90%": [low, high]}``."""
        out = {}
        for level in levels:
            lo, hi = self.relative(level)
            out[level_key(level)] = [value * lo, value * hi]
        return out


def alignment_entry(
    alignments: list[AlignmentProfile],
    target: str,
    drafter: str,
    domain: str,
    temperature: float,
) -> AlignmentEntry | None:
    """The entry the model reads for (target, drafter, domain, temperature), chosen as
    :func:`~configspec.search.space.pick_entry` chooses it; None when there is none."""
    entries = [
        e for a in alignments if a.target == target for e in a.entries if e.drafter == drafter
    ]
    if not entries:
        return None
    return pick_entry(entries, SearchSettings(domain=domain, temperature=temperature))


def _run_draws(
    entry: AlignmentEntry, k: int, n_run_prompts: int, n_boot: int, seed: int
) -> tuple[float, FloatArray, int] | None:
    """(the entry's pooled E(``k``), bootstrap draws of a run's E(``k``) for
    ``n_run_prompts`` prompts, profiled prompts); None when the entry cannot give them
    (see :func:`tokens_per_round_interval`)."""
    records = entry.per_prompt or []
    if len(records) < 2 or n_run_prompts < 1 or not 1 <= k <= min(len(r.rounds) for r in records):
        return None
    j = k - 1
    num = np.array([[r.tokens[j], r.accepted[j]] for r in records], dtype=np.float64)
    den = np.array([[r.rounds[j], r.drafted[j]] for r in records], dtype=np.float64)
    pooled = num.sum(axis=0) / np.where(den.sum(axis=0) > 0, den.sum(axis=0), np.nan)
    if not np.all(np.isfinite(pooled)):
        return None
    draws = cluster_bootstrap_ratios(num, den, n_run_prompts, n_boot=n_boot, seed=seed)
    point = float(tokens_per_round_from_measured(k, np.clip(pooled[1], 0, 1), pooled[0]))
    frac = np.clip(np.nan_to_num(draws[:, 1], nan=0.0), 0.0, 1.0)
    return point, tokens_per_round_from_measured(k, frac, draws[:, 0]), len(records)


def tokens_per_round_interval(
    entry: AlignmentEntry,
    k: int,
    n_run_prompts: int,
    *,
    levels: tuple[float, ...] = PREDICTION_LEVELS,
    n_boot: int = BOOTSTRAP_SAMPLES,
    seed: int = 0,
) -> RunInterval | None:
    """Prediction interval of E(``k``) for a run of ``n_run_prompts`` prompts from the
    entry's per-prompt records; None when the entry has none (a profile written before
    they were stored), fewer than two (between-prompt variance cannot be estimated) or
    none reaching ``k``."""
    got = _run_draws(entry, k, n_run_prompts, n_boot, seed)
    if got is None:
        return None
    point, e_k, n_records = got
    return RunInterval(
        k=k,
        n_run_prompts=n_run_prompts,
        n_profiled_prompts=n_records,
        point=point,
        bounds=prediction_interval(point, e_k, levels),
    )


def within_probability(
    entry: AlignmentEntry,
    k: int,
    n_run_prompts: int,
    tolerance: float,
    *,
    n_boot: int = BOOTSTRAP_SAMPLES,
    seed: int = 0,
) -> float | None:
    """Probability that a run of ``n_run_prompts`` prompts measures E(``k``) within
    ``±tolerance`` (relative) of the entry's pooled figure, from the same cluster
    bootstrap as :func:`tokens_per_round_interval` (None where that gives no interval).

    This is the best a model exact in expectation can do on such a run: it bounds how
    often a per-run error target of ``tolerance`` can be met at all when only acceptance
    varies between prompts (timing noise lowers it further)."""
    got = _run_draws(entry, k, n_run_prompts, n_boot, seed)
    if got is None or got[0] <= 0:
        return None
    point, e_k, _ = got
    finite = e_k[np.isfinite(e_k)]
    if finite.size == 0:
        return None
    return float(np.mean(np.abs(finite / point - 1.0) <= tolerance))


@dataclass(frozen=True)
class RunPrediction:
    """A run's modelled E(K) and goodput with prediction intervals for a run of its many
    prompts, and whether the measured values fell inside.

    Intervals are keyed by nominal level (``"90%"``, ``"95%"``) as ``[low, high]``:
    ``tokens_per_round`` in tokens per round, ``goodput_tok_s`` in tokens per second (the
    modelled goodput scaled by the E(K) interval: acceptance variance only, round time at
    its modelled value). Estimator ``cluster_bootstrap_prompts`` over the
    ``n_profiled_prompts`` prompts of the alignment entry used.
    """

    n_run_prompts: int
    n_profiled_prompts: int
    estimator: str
    tokens_per_round: dict[str, list[float]]
    goodput_tok_s: dict[str, list[float]]
    tokens_per_round_inside: dict[str, bool]
    goodput_inside: dict[str, bool]


def _inside(value: float | None, bounds: list[float]) -> bool:
    """``value`` within ``bounds`` (inclusive, up to rounding: bootstrap bounds of a ratio
    of counts often equal a measured ratio exactly)."""
    tol = 1e-9 * max(abs(bounds[0]), abs(bounds[1]), 1.0)
    return value is not None and bounds[0] - tol <= value <= bounds[1] + tol


def run_prediction(
    entry: AlignmentEntry | None,
    k: int,
    n_run_prompts: int,
    modelled_tokens_per_round: float,
    modelled_goodput_tok_s: float,
    measured_tokens_per_round: float | None,
    measured_goodput_tok_s: float | None,
    levels: tuple[float, ...] = PREDICTION_LEVELS,
) -> RunPrediction | None:
    """The :class:`RunPrediction` of one run (None when the entry gives no interval, see
    :func:`tokens_per_round_interval`, or the modelled figures are not finite)."""
    if entry is None or not (
        math.isfinite(modelled_tokens_per_round) and math.isfinite(modelled_goodput_tok_s)
    ):
        return None
    iv = tokens_per_round_interval(entry, k, n_run_prompts, levels=levels)
    if iv is None:
        return None
    tpr = iv.scaled(modelled_tokens_per_round, levels)
    gp = iv.scaled(modelled_goodput_tok_s, levels)
    return RunPrediction(
        n_run_prompts=n_run_prompts,
        n_profiled_prompts=iv.n_profiled_prompts,
        estimator=iv.estimator,
        tokens_per_round=tpr,
        goodput_tok_s=gp,
        tokens_per_round_inside={
            k_: _inside(measured_tokens_per_round, b) for k_, b in tpr.items()
        },
        goodput_inside={k_: _inside(measured_goodput_tok_s, b) for k_, b in gp.items()},
    )


def coverage(
    predictions: Sequence[RunPrediction | None], what: str = "goodput"
) -> dict[str, tuple[int, int]]:
    """Per nominal level: (runs whose measured ``what`` — ``goodput`` or
    ``tokens_per_round`` — fell inside the prediction interval, runs with an interval)."""
    got = [p for p in predictions if p is not None]
    out: dict[str, tuple[int, int]] = {}
    for p in got:
        flags = p.goodput_inside if what == "goodput" else p.tokens_per_round_inside
        for key, inside in flags.items():
            n_in, n = out.get(key, (0, 0))
            out[key] = (n_in + int(inside), n + 1)
    return out


@dataclass(frozen=True)
class PooledFigure:
    """Every run of one configuration pooled, as averaging over a user's traffic would:
    measured goodput = Σ tokens / Σ time over the runs' steady-state rounds (tok/s);
    modelled = the same tokens over the time the model gives each run for them
    (Σ tokens / Σ tokens_i / modelled_i); ``interval`` the prediction interval for a run of
    all ``n_prompts`` prompts together (None without per-prompt records)."""

    drafter: str
    k: int
    added_rtt_ms: float
    temperature: float
    n_runs: int
    n_prompts: int
    measured_tok_s: float
    modelled_tok_s: float
    error: float
    """modelled / measured − 1."""
    interval: dict[str, list[float]] | None
    inside: dict[str, bool] | None
    measured_tokens_per_round: float = math.nan
    """Σ tokens / Σ rounds over the runs (measured E(K))."""
    modelled_tokens_per_round: float = math.nan
    """The runs' modelled E(K), weighted by their rounds."""
    tokens_per_round_error: float = math.nan
    """modelled / measured E(K) − 1."""
    tokens_per_round_inside: dict[str, bool] | None = None
    """Whether the measured E(K) fell inside the prediction interval for ``n_prompts``."""


def pooled_by_config(
    rows: Sequence[ValidationRow],
    alignments: list[AlignmentProfile] | None = None,
    levels: tuple[float, ...] = PREDICTION_LEVELS,
) -> list[PooledFigure]:
    """One :class:`PooledFigure` per (drafter, K, RTT, T) over ``rows``; the interval comes
    from ``alignments`` (the entry each row's acceptance came from) when given."""
    groups: dict[tuple[str, int, float, float], list[ValidationRow]] = defaultdict(list)
    for r in rows:
        g = r.objectives["goodput"]
        if r.tokens_per_round.measured and r.round_ms.measured and g.predicted:
            groups[(r.drafter, r.k, r.added_rtt_ms, r.temperature)].append(r)
    out = []
    for (drafter, k, rtt, temp), rs in sorted(groups.items()):
        tokens = np.array([r.rounds * (r.tokens_per_round.measured or 0.0) for r in rs])
        time_s = np.array([r.rounds * (r.round_ms.measured or 0.0) / 1e3 for r in rs])
        modelled = np.array([r.objectives["goodput"].predicted or np.nan for r in rs])
        measured = float(tokens.sum() / time_s.sum())
        predicted = float(tokens.sum() / np.sum(tokens / modelled))
        n_prompts = sum(r.n_prompts for r in rs)
        rounds = np.array([float(r.rounds) for r in rs])
        e_meas = float(tokens.sum() / rounds.sum())
        e_mod = float(
            np.sum(rounds * np.array([r.tokens_per_round.predicted or np.nan for r in rs]))
            / rounds.sum()
        )
        e_inside = None
        interval = inside = None
        first = rs[0]
        entry = (
            alignment_entry(alignments, first.target, drafter, first.acceptance_domain, temp)
            if alignments is not None
            else None
        )
        iv = tokens_per_round_interval(entry, k, n_prompts, levels=levels) if entry else None
        if iv is not None:
            interval = iv.scaled(predicted, levels)
            inside = {key: _inside(measured, b) for key, b in interval.items()}
            e_inside = {key: _inside(e_meas, b) for key, b in iv.scaled(e_mod, levels).items()}
        out.append(
            PooledFigure(
                drafter=drafter,
                k=k,
                added_rtt_ms=rtt,
                temperature=temp,
                n_runs=len(rs),
                n_prompts=n_prompts,
                measured_tok_s=measured,
                modelled_tok_s=predicted,
                error=predicted / measured - 1.0,
                interval=interval,
                inside=inside,
                measured_tokens_per_round=e_meas,
                modelled_tokens_per_round=e_mod,
                tokens_per_round_error=e_mod / e_meas - 1.0,
                tokens_per_round_inside=e_inside,
            )
        )
    return out
