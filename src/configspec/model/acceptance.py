"""Expected tokens per verification round, E(K), including the target's bonus token.

Three forms, all vectorised:

* per-position conditional acceptance a_1..a_n (a_i = P(draft i accepted | drafts 1..i-1
  accepted)): E(K) = 1 + Σ_{k=1..K} Π_{i≤k} a_i (cumulative products);
* one acceptance rate α (i.i.d. positions): E(K) = (1 − α^{K+1}) / (1 − α), K+1 at α = 1;
* measured figures per K: the measured mean tokens per round when present, else
  K·α(K) + 1 with α(K) the mean fraction of the K drafted tokens accepted.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from configspec.errors import InvalidInput

FloatArray = NDArray[np.float64]


def _check_probability(values: FloatArray, what: str) -> None:
    bad = ~((values >= 0.0) & (values <= 1.0))
    if np.any(bad):
        value = float(np.asarray(values)[bad].flat[0])
        raise InvalidInput(
            f"{what} {value} is outside [0, 1]; acceptance rates are probabilities "
            "(fix the alignment profile)"
        )


def tokens_per_round_from_alpha(alpha: ArrayLike, k: ArrayLike) -> FloatArray:
    """E(K) = (1 − α^{K+1}) / (1 − α) tokens per round for acceptance rate ``alpha``.

    ``alpha`` and ``k`` broadcast against each other. The limit α → 1 (E = K + 1) is
    computed without cancellation via ``expm1``/``log1p``. Raises
    :class:`~configspec.errors.InvalidInput` for α outside [0, 1] or K < 0.
    """
    a = np.asarray(alpha, dtype=np.float64)
    kk = np.asarray(k, dtype=np.float64)
    _check_probability(a, "acceptance rate")
    if np.any(kk < 0):
        raise InvalidInput(f"K={float(kk.min()):g} is negative; K counts drafted tokens (K ≥ 0)")
    a, kk = np.broadcast_arrays(a, kk)
    one_minus = 1.0 - a
    with np.errstate(divide="ignore", invalid="ignore"):
        # 1 − α^{K+1} = −expm1((K+1)·log α), accurate when α is close to 1.
        numer = -np.expm1((kk + 1.0) * np.log1p(-one_minus))
        out = numer / one_minus
    return np.where(one_minus <= 0.0, kk + 1.0, np.where(a <= 0.0, 1.0, out))


def tokens_per_round_from_positions(per_position: ArrayLike) -> FloatArray:
    """E(K) for K = 0..n from conditional per-position acceptance ``a_1..a_n``.

    ``per_position`` has shape ``(..., n)``; the result has shape ``(..., n + 1)`` with
    index K holding E(K) = 1 + Σ_{k≤K} Π_{i≤k} a_i (index 0 is E(0) = 1).
    """
    a = np.asarray(per_position, dtype=np.float64)
    _check_probability(a, "per-position acceptance")
    survive = np.cumprod(a, axis=-1)
    zeros = np.zeros((*a.shape[:-1], 1))
    return 1.0 + np.concatenate([zeros, np.cumsum(survive, axis=-1)], axis=-1)


def tokens_per_round_from_measured(
    k: ArrayLike,
    accepted_fraction: ArrayLike,
    measured_tokens_per_round: ArrayLike | None = None,
) -> FloatArray:
    """Tokens per round from figures measured at each K.

    Uses ``measured_tokens_per_round`` where it is given and finite, else K·α(K) + 1 with
    α(K) = ``accepted_fraction`` (the mean fraction of the K drafted tokens accepted).
    """
    kk = np.asarray(k, dtype=np.float64)
    frac = np.asarray(accepted_fraction, dtype=np.float64)
    _check_probability(frac, "accepted fraction")
    formula = kk * frac + 1.0
    if measured_tokens_per_round is None:
        return formula
    measured = np.asarray(measured_tokens_per_round, dtype=np.float64)
    return np.where(np.isfinite(measured), measured, formula)


def drafted_length_distribution(drafted: ArrayLike) -> FloatArray:
    """P(a round drafts j tokens) at each K, from the mean drafted per round at K = 0..n.

    ``drafted`` has shape ``(..., n + 1)``: index K holds the mean number of tokens drafted
    per round when K are asked for (K itself for a model drafter; fewer for a model-free,
    n-gram drafter, which proposes only as far as its match goes). The result has shape
    ``(..., n + 1, n + 1)``: ``[..., K, j]`` is the chance that a round at K drafts j
    tokens (zero for j > K; each row sums to 1).

    A drafter that stops where its match ends drafts min(D, K) for a length D of its own,
    so E[min(D, K)] − E[min(D, K − 1)] = P(D ≥ K): the differences of the means are the
    chances of reaching each position. They are clipped into [0, 1] and made
    non-increasing (a noisy profile may say otherwise), and a step with no finite figure
    counts as certain to be reached (as for a model drafter); a model drafter (``drafted`` = K)
    gets all its weight at j = K. Verification is not linear in the positions verified
    (on the CPU verifier here 1 → 2 positions cost nothing and 2 → 3 about 5 ms), and an
    n-gram drafter's rounds mostly draft 0 or K: its verification time is the mean over
    this distribution, not the time at the mean width (in the kept T = 0.8 runs at K = 4:
    49.0 ms over the distribution, 44.8 at the mean width, 50.9 measured).
    """
    d = np.asarray(drafted, dtype=np.float64)
    n = d.shape[-1] - 1
    step = np.diff(d, axis=-1)
    step = np.where(np.isfinite(step), step, 1.0)  # no figure at K: as a model drafter
    reach = np.minimum.accumulate(np.clip(step, 0.0, 1.0), axis=-1)  # P(D >= j), j = 1..n
    edge = np.ones((*reach.shape[:-1], 1))
    reach = np.concatenate([edge, reach, 0.0 * edge], axis=-1)  # P(D >= j), j = 0..n + 1
    exact = reach[..., :-1] - reach[..., 1:]  # P(D = j), j = 0..n
    # row K: P(D = j) below j = K, P(D >= K) at j = K, nothing above
    below = np.tri(n + 1, k=-1)
    out = below * exact[..., None, :] + np.eye(n + 1) * reach[..., None, :-1]
    return np.asarray(out, dtype=np.float64)


def alpha_from_tokens_per_round(tokens_per_round: ArrayLike, k: ArrayLike) -> FloatArray:
    """The single rate α whose closed form gives ``tokens_per_round`` at ``k`` (bisection).

    Used by the breakeven analysis to express a required E(K) as an acceptance rate.
    Values below 1 map to 0 and values above K+1 map to 1.
    """
    target = np.asarray(tokens_per_round, dtype=np.float64)
    kk = np.asarray(k, dtype=np.float64)
    target, kk = np.broadcast_arrays(target, kk)
    lo = np.zeros(target.shape)
    hi = np.ones(target.shape)
    for _ in range(60):  # fixed iterations: precision 2^-60, fully vectorised
        mid = 0.5 * (lo + hi)
        below = tokens_per_round_from_alpha(mid, kk) < target
        lo = np.where(below, mid, lo)
        hi = np.where(below, hi, mid)
    return np.asarray(0.5 * (lo + hi))


acceptance_from_speedup_inputs = alpha_from_tokens_per_round
"""Deprecated alias of :func:`alpha_from_tokens_per_round` (first committed name)."""
