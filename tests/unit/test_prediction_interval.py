"""Prediction intervals for a run of n prompts: the two-stage cluster bootstrap (stats) and
E(K) through the model's formula from an entry's per-prompt records (loop.prediction)."""

from __future__ import annotations

import numpy as np
import pytest

from configspec.config import AlignmentEntry, AlignmentProfile, PromptAcceptance
from configspec.loop.prediction import (
    alignment_entry,
    tokens_per_round_interval,
    within_probability,
)
from configspec.profiling.acceptance import prompt_stats, summarize
from configspec.profiling.alignment import entry_from_summary, prompt_record
from configspec.stats import (
    CLUSTER_BOOTSTRAP_PROMPTS,
    bootstrap_interval,
    cluster_bootstrap_ratios,
    prediction_estimate,
    prediction_interval,
)

ROUNDS = 40.0  # rounds per synthetic prompt at K=1


def _prompts(rng: np.random.Generator, m: int, sd: float) -> tuple[np.ndarray, np.ndarray]:
    """(accepted, rounds) of ``m`` prompts at K=1 whose acceptance varies between prompts
    (logit-normal around 0.5 with spread ``sd``) and within them (binomial)."""
    p = 1.0 / (1.0 + np.exp(-rng.normal(0.0, sd, size=m)))
    return rng.binomial(int(ROUNDS), p).astype(np.float64), np.full(m, ROUNDS)


def _coverage(sd: float, m: int, n_run: int, level: float, reps: int, pooled_ci: bool) -> float:
    """Fraction of fresh runs of ``n_run`` prompts whose acceptance falls inside the
    interval built from ``m`` profiled prompts (prediction interval, or the pooled
    figure's confidence interval when ``pooled_ci``)."""
    rng = np.random.default_rng(7)
    inside = 0
    for rep in range(reps):
        acc, rounds = _prompts(rng, m, sd)
        point = acc.sum() / rounds.sum()
        if pooled_ci:  # resample m prompts: the sampling error of the pooled mean only
            w = rng.multinomial(m, np.full(m, 1.0 / m), size=1000)
            draws = (w @ acc) / (w @ rounds)
        else:
            draws = cluster_bootstrap_ratios(acc, rounds, n_run, n_boot=1000, seed=rep)
        lo, hi = bootstrap_interval(point, draws, level)
        run_acc, run_rounds = _prompts(rng, n_run, sd)
        inside += lo <= run_acc.sum() / run_rounds.sum() <= hi
    return inside / reps


def test_prediction_interval_covers_runs_with_between_prompt_variance() -> None:
    # strong between-prompt variance (sd 1.0 on the logit scale: acceptance 0.2..0.8)
    cov90 = _coverage(1.0, m=30, n_run=2, level=0.90, reps=300, pooled_ci=False)
    cov95 = _coverage(1.0, m=30, n_run=2, level=0.95, reps=300, pooled_ci=False)
    assert 0.82 <= cov90 <= 0.97
    assert 0.88 <= cov95 <= 0.995
    # the confidence interval of the pooled figure is far too narrow for one run
    assert _coverage(1.0, m=30, n_run=2, level=0.95, reps=300, pooled_ci=True) < 0.6


def test_interval_narrows_with_more_run_prompts() -> None:
    rng = np.random.default_rng(1)
    acc, rounds = _prompts(rng, 20, 1.0)
    point = acc.sum() / rounds.sum()
    widths = []
    for n in (1, 4, 32):
        lo, hi = prediction_interval(point, cluster_bootstrap_ratios(acc, rounds, n))[0.95]
        widths.append(hi - lo)
    assert widths[0] > widths[1] > widths[2] > 0


def test_cluster_bootstrap_shapes_and_errors() -> None:
    num = np.ones((5, 3, 2))
    out = cluster_bootstrap_ratios(num, 2 * num, 3, n_boot=50)
    assert out.shape == (50, 3, 2) and np.allclose(out, 0.5)
    zero = cluster_bootstrap_ratios(np.zeros(4), np.zeros(4), 2, n_boot=10)
    assert np.isnan(zero).all()  # no rounds: no ratio
    with pytest.raises(ValueError, match="at least 1"):
        cluster_bootstrap_ratios(num, num, 0)
    with pytest.raises(ValueError, match="must be equal"):
        cluster_bootstrap_ratios(np.ones(3), np.ones(4), 1)
    est = prediction_estimate(2.0, (1.5, 2.5), 12)
    assert (est.estimator, est.source, est.n) == (CLUSTER_BOOTSTRAP_PROMPTS, "modelled", 12)


def _entry(matrices: list[np.ndarray], k_max: int = 4) -> AlignmentEntry:
    stats = [prompt_stats(b, k_max, 1) for b in matrices]
    records = [prompt_record(f"p{i}", "d", s) for i, s in enumerate(stats)]
    return entry_from_summary("drafter", "all", 0.0, summarize(stats, n_boot=20), records)


def test_interval_is_centred_on_the_profiles_e_k() -> None:
    rng = np.random.default_rng(3)
    mats = [(rng.random((48, 4)) < p).astype(float) for p in (0.2, 0.5, 0.8, 0.6, 0.3)]
    entry = _entry(mats)
    assert entry.by_k is not None and entry.by_k[2].tokens_per_round is not None
    iv = tokens_per_round_interval(entry, 3, 2)
    assert iv is not None and iv.n_profiled_prompts == 5
    assert iv.point == pytest.approx(entry.by_k[2].tokens_per_round.mean)
    lo90, hi90 = iv.bounds[0.90]
    lo95, hi95 = iv.bounds[0.95]
    assert lo95 <= lo90 < iv.point < hi90 <= hi95
    # far wider than the pooled figure's confidence interval
    ci = entry.by_k[2].tokens_per_round
    assert hi95 - lo95 > ci.high - ci.low
    assert tokens_per_round_interval(entry, 9, 2) is None  # K beyond the profile


def test_degenerate_cases() -> None:
    ones, zeros = np.ones((40, 4)), np.zeros((40, 4))
    one_prompt = _entry([ones * 0.0 + (np.random.default_rng(0).random((40, 4)) < 0.5)])
    assert tokens_per_round_interval(one_prompt, 2, 1) is None  # no between-prompt variance
    all_accepted = tokens_per_round_interval(_entry([ones, ones, ones]), 4, 1)
    assert all_accepted is not None
    assert all_accepted.point == pytest.approx(5.0)  # alpha = 1: E(K) = K + 1
    assert all_accepted.bounds[0.95] == pytest.approx((5.0, 5.0))
    none_accepted = tokens_per_round_interval(_entry([zeros, zeros]), 4, 3)
    assert none_accepted is not None
    assert none_accepted.point == pytest.approx(1.0)  # alpha = 0: E(K) = 1
    assert none_accepted.bounds[0.90] == pytest.approx((1.0, 1.0))
    old = AlignmentEntry(drafter="d", alpha={"mean": 0.5})  # a profile without per_prompt
    assert tokens_per_round_interval(old, 1, 2) is None


def test_within_probability_agrees_with_the_interval_and_grows_with_the_run() -> None:
    rng = np.random.default_rng(5)
    mats = [(rng.random((48, 4)) < p).astype(float) for p in (0.2, 0.5, 0.8, 0.6, 0.3, 0.7)]
    entry = _entry(mats)
    iv = tokens_per_round_interval(entry, 4, 3)
    assert iv is not None
    lo, hi = iv.relative(0.90)
    # a tolerance as wide as the 90% interval's wider side holds at least 90% of runs
    assert within_probability(entry, 4, 3, max(hi - 1, 1 - lo)) >= 0.90 - 1e-9
    probs = [within_probability(entry, 4, n, 0.05) for n in (1, 4, 64)]
    assert all(p is not None for p in probs)
    assert probs[0] < probs[1] < probs[2] <= 1.0
    assert within_probability(entry, 4, 3, 0.0) < 0.2  # never exactly on the point
    assert within_probability(entry, 9, 3, 0.1) is None  # K beyond the profile
    ones = np.ones((40, 4))
    assert within_probability(_entry([ones, ones]), 4, 1, 0.0) == 1.0  # no variance at all


def test_per_prompt_records_round_trip_and_old_profiles_load() -> None:
    entry = _entry([np.ones((10, 2)), np.zeros((10, 2))], k_max=2)
    assert entry.per_prompt is not None and [r.prompt_id for r in entry.per_prompt] == ["p0", "p1"]
    prof = AlignmentProfile.model_validate(
        {
            "target": "t",
            "target_family": "f",
            "entries": [entry.model_dump(), {"drafter": "old", "alpha": {"mean": 0.4}}],
            "provenance": {"source": "measured"},
        }
    )
    assert prof.entries[0] == entry and prof.entries[1].per_prompt is None
    assert alignment_entry([prof], "t", "drafter", "all", 0.0) == entry
    assert alignment_entry([prof], "t", "missing", "all", 0.0) is None
    with pytest.raises(ValueError, match="tokens has 1 values"):
        PromptAcceptance(
            prompt_id="x", n_positions=1, rounds=[1, 2], drafted=[1, 2], accepted=[0, 1],
            tokens=[1],
        )  # fmt: skip
