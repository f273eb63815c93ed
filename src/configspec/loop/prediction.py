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

from dataclasses import dataclass

import numpy as np

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
    records = entry.per_prompt or []
    if len(records) < 2 or n_run_prompts < 1 or not 1 <= k <= min(len(r.rounds) for r in records):
        return None
    j = k - 1
    num = np.array([[r.tokens[j], r.accepted[j]] for r in records], dtype=np.float64)
    den = np.array([[r.rounds[j], r.drafted[j]] for r in records], dtype=np.float64)
    pooled = num.sum(axis=0) / np.where(den.sum(axis=0) > 0, den.sum(axis=0), np.nan)
    draws = cluster_bootstrap_ratios(num, den, n_run_prompts, n_boot=n_boot, seed=seed)
    if not np.all(np.isfinite(pooled)):
        return None
    point = float(tokens_per_round_from_measured(k, np.clip(pooled[1], 0, 1), pooled[0]))
    frac = np.clip(np.nan_to_num(draws[:, 1], nan=0.0), 0.0, 1.0)
    e_k = tokens_per_round_from_measured(k, frac, draws[:, 0])
    return RunInterval(
        k=k,
        n_run_prompts=n_run_prompts,
        n_profiled_prompts=len(records),
        point=point,
        bounds=prediction_interval(point, e_k, levels),
    )
