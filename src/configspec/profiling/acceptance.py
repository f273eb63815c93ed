"""Acceptance math for speculative decoding along a target's own trajectory (pure numpy).

The target produced a continuation ``y_0 .. y_{N-1}`` for a prompt (greedy, or sampled at
temperature T). A drafter is teacher-forced along the same trajectory: at every position
``i`` we know what it would propose after ``prompt + y_<i``. From that:

* greedy verification accepts draft token ``i`` iff it equals ``y_i`` (exact match);
* speculative sampling at temperature T accepts it with probability ``Σ_v min(p_i, q_i)``
  (target ``p``, drafter ``q``, both temperature-scaled).

These per-step acceptance probabilities form a matrix ``B[s, j]``: the probability that
draft step ``j`` of a round starting at position ``s`` is accepted, given steps ``< j``
were. For a teacher-forced model drafter ``B[s, j] = β_{s+j}``; a deterministic proposer
(n-gram) may propose a whole block from ``s``, giving a general ``B``.

:func:`simulate_rounds` then runs speculative rounds along the trajectory exactly as
speculative decoding does (a round drafts K, accepts the leading run, adds one
bonus/correction token and restarts after it) and returns expected sums of rounds,
drafted, accepted and produced tokens; for 0/1 entries (greedy) this *is* the
deterministic simulation. :func:`summarize` pools prompts and bootstraps confidence
intervals over prompts, with the fitted models' E(K) predictions (from
:mod:`configspec.model.acceptance`) so their error against the simulation can be shown.

Nothing here does I/O; arrays in, arrays out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from configspec.errors import InvalidInput
from configspec.model.acceptance import tokens_per_round_from_alpha, tokens_per_round_from_positions
from configspec.stats import bootstrap_interval

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


# --------------------------------------------------------------------------- distributions


def check_temperature(temperature: float) -> float:
    """Validate a sampling temperature (0 means greedy); return it as float."""
    t = float(temperature)
    if not np.isfinite(t) or t < 0:
        raise InvalidInput(
            f"temperature {temperature} is out of range; use 0 (greedy) or a positive value"
        )
    return t


def softmax_temperature(logits: npt.ArrayLike, temperature: float) -> FloatArray:
    """Probabilities from ``logits`` (..., vocab) at ``temperature``; 0 gives one-hot argmax."""
    t = check_temperature(temperature)
    x = np.asarray(logits, dtype=np.float64)
    if t == 0.0:
        out = np.zeros_like(x)
        np.put_along_axis(out, np.argmax(x, axis=-1)[..., None], 1.0, axis=-1)
        return out
    z = x / t
    z -= np.max(z, axis=-1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=-1, keepdims=True))


@dataclass(frozen=True)
class TopK:
    """A compressed distribution per position: ``ids``/``probs`` (n, k), ``remainder`` (n,).

    Padding slots have id -1 and probability 0. ``remainder`` is ``1 - Σ probs``, the mass
    outside the stored ids. When the probabilities are known only within bounds (top-k
    log-probs from a server, re-scaled to a temperature: :func:`temper_topk`), ``probs``
    and ``remainder`` are the upper bounds and ``probs_low`` the lower bounds of ``probs``.
    """

    ids: IntArray
    probs: FloatArray
    remainder: FloatArray
    probs_low: FloatArray | None = None

    def rows(self, idx: npt.ArrayLike) -> TopK:
        """The positions ``idx`` (any numpy index) of this distribution."""
        i = np.asarray(idx)
        low = None if self.probs_low is None else self.probs_low[i]
        return TopK(
            ids=self.ids[i], probs=self.probs[i], remainder=self.remainder[i], probs_low=low
        )

    @property
    def lower(self) -> FloatArray:
        """Lower bounds of ``probs`` (``probs`` itself when exact)."""
        return self.probs if self.probs_low is None else self.probs_low


def top_k(probs: npt.ArrayLike, k: int) -> TopK:
    """The ``k`` most likely ids of each row of ``probs`` (n, vocab) and the remainder mass."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"probs must be 2-D (positions, vocab), got shape {p.shape}")
    k = max(1, min(int(k), p.shape[1]))
    ids = np.argpartition(-p, k - 1, axis=1)[:, :k]
    vals = np.take_along_axis(p, ids, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")
    ids = np.take_along_axis(ids, order, axis=1).astype(np.int64)
    vals = np.take_along_axis(vals, order, axis=1)
    rem = np.clip(1.0 - vals.sum(axis=1), 0.0, 1.0)
    return TopK(ids=ids, probs=vals, remainder=rem)


def temper_topk(
    ids: npt.ArrayLike, logprobs: npt.ArrayLike, temperature: float, vocab_size: int
) -> TopK:
    """A server's top-k log-probabilities at temperature 1 re-scaled to ``temperature``.

    ``ids``/``logprobs`` are (n, k) with id -1 (log-prob ignored) as padding. At
    temperature T the stored probabilities become ``p_i^(1/T) / Z`` with
    ``Z = Σ_top p^(1/T) + Σ_tail p^(1/T)``; the tail (vocabulary outside the top-k, total
    mass ``R``, each ``p_v <= p_min``) is unknown, but for ``a = 1/T > 1`` its sum lies in
    ``[m (R/m)^a, R p_min^(a-1)]`` (m tail ids; spread evenly is the least, piled at
    ``p_min`` the most) and for ``a < 1`` in ``[R p_min^(a-1), m (R/m)^a]``; at T = 1 it
    is ``R``. The result carries the bounds: ``probs`` at the smallest Z, ``probs_low``
    at the largest, ``remainder`` the largest tail share.
    """
    t = check_temperature(temperature)
    if t == 0.0:
        raise InvalidInput("temper_topk needs a temperature > 0")
    i = np.asarray(ids, dtype=np.int64)
    valid = i >= 0
    p = np.where(valid, np.exp(np.asarray(logprobs, dtype=np.float64)), 0.0)
    a = 1.0 / t
    c = p**a
    big_c = c.sum(axis=1)
    rem = np.clip(1.0 - p.sum(axis=1), 0.0, 1.0)
    m = np.maximum(vocab_size - valid.sum(axis=1), 1).astype(np.float64)
    p_min = np.where(valid, p, np.inf).min(axis=1)
    p_min = np.where(np.isfinite(p_min) & (p_min > 0), p_min, 1.0)
    even = m * (rem / m) ** a
    piled = rem * p_min ** (a - 1.0)
    if a > 1.0:
        tail_lo, tail_hi = even, np.minimum(piled, rem)
    elif a < 1.0:
        tail_lo, tail_hi = np.minimum(piled, even), even
    else:
        tail_lo = tail_hi = rem
    z_lo = np.maximum(big_c + tail_lo, 1e-300)
    z_hi = np.maximum(big_c + tail_hi, 1e-300)
    return TopK(
        ids=np.where(valid, i, -1),
        probs=np.clip(c / z_lo[:, None], 0.0, 1.0),
        remainder=np.clip(tail_hi / z_hi, 0.0, 1.0),
        probs_low=np.clip(c / z_hi[:, None], 0.0, 1.0),
    )


@dataclass(frozen=True)
class Overlap:
    """Σ min(p, q) per position with bounds: ``low <= value <= high`` (equal when exact)."""

    low: FloatArray
    high: FloatArray

    @property
    def value(self) -> FloatArray:
        """Point estimate: the midpoint of the bounds (exact when they coincide)."""
        return np.asarray((self.low + self.high) / 2.0)


def overlap_full(p: npt.ArrayLike, q: npt.ArrayLike) -> FloatArray:
    """Σ_v min(p_v, q_v) for each row of two full distributions (n, vocab)."""
    a = np.asarray(p, dtype=np.float64)
    b = np.asarray(q, dtype=np.float64)
    return np.asarray(np.clip(np.minimum(a, b).sum(axis=-1), 0.0, 1.0))


def overlap_topk_full(target: TopK, q: npt.ArrayLike) -> Overlap:
    """Σ min(p, q) when the target ``p`` is top-k compressed and the drafter ``q`` is full.

    The stored ids give an exact part. Outside them each ``p_v`` is at most the smallest
    stored probability and their total is the remainder, so the tail lies in
    ``[0, min(remainder, Σ_tail min(p_min, q_v))]``. A target known within bounds
    (``probs_low``) takes its lower bounds for ``low`` and its upper bounds for ``high``.
    """
    qf = np.asarray(q, dtype=np.float64)
    valid = target.ids >= 0
    safe_ids = np.where(valid, target.ids, 0)
    q_at = np.where(valid, np.take_along_axis(qf, safe_ids, axis=1), 0.0)
    exact = np.minimum(target.probs, q_at).sum(axis=1)
    exact_low = np.minimum(target.lower, q_at).sum(axis=1)
    p_min = np.where(valid, target.probs, np.inf).min(axis=1)
    p_min = np.where(np.isfinite(p_min), p_min, 0.0)
    tail_q = qf.copy()
    rows = np.nonzero(valid)[0]
    tail_q[rows, target.ids[valid]] = 0.0
    tail_cap = np.minimum(tail_q, p_min[:, None]).sum(axis=1)
    high_tail = np.minimum(target.remainder, tail_cap)
    low = np.clip(exact_low, 0.0, 1.0)
    return Overlap(low=low, high=np.clip(exact + high_tail, low, 1.0))


def truncate_draft(q: npt.ArrayLike, top_k: int) -> tuple[FloatArray, FloatArray]:
    """Drafter rows ``q`` (..., vocab) cut to their ``top_k`` ids and renormalised, and the
    mass those ids held per row.

    This is the draft distribution a sampling edge client sends
    (:func:`configspec.serving.client.sparse_support`): a drawn token outside the set ends
    the draft there, so a position's effective acceptance is ``mass · Σ min(p, q_cut)``.
    """
    qf = np.asarray(q, dtype=np.float64)
    n = qf.shape[-1]
    if top_k >= n:
        return qf / qf.sum(axis=-1, keepdims=True), np.ones(qf.shape[:-1])
    top = np.argpartition(-qf, top_k - 1, axis=-1)[..., :top_k]
    kept = np.take_along_axis(qf, top, axis=-1)
    mass = kept.sum(axis=-1)
    out = np.zeros_like(qf)
    np.put_along_axis(out, top, kept / np.maximum(mass, 1e-300)[..., None], axis=-1)
    return out, mass


def overlap_topk_onehot(target: TopK, proposal: npt.ArrayLike) -> Overlap:
    """Σ min(p, onehot(d)) = p(d) for a deterministic proposer's token ``d`` per position.

    ``proposal`` holds -1 where the proposer has nothing to offer (acceptance 0). When ``d``
    is outside the stored ids, ``p(d)`` lies in ``[0, min(remainder, p_min)]``.
    """
    d = np.asarray(proposal, dtype=np.int64)
    hit = (target.ids == d[:, None]) & (d[:, None] >= 0)
    exact = np.where(hit, target.probs, 0.0).sum(axis=1)
    exact_low = np.where(hit, target.lower, 0.0).sum(axis=1)
    found = hit.any(axis=1)
    valid = target.ids >= 0
    p_min = np.where(valid, target.probs, np.inf).min(axis=1)
    p_min = np.where(np.isfinite(p_min), p_min, 0.0)
    tail = np.where(found | (d < 0), 0.0, np.minimum(target.remainder, p_min))
    return Overlap(low=exact_low, high=np.clip(exact + tail, exact_low, 1.0))


def greedy_match(target_tokens: npt.ArrayLike, drafter_tokens: npt.ArrayLike) -> FloatArray:
    """1.0 where the drafter's proposal equals the target's token, else 0.0 (per position)."""
    y = np.asarray(target_tokens, dtype=np.int64)
    d = np.asarray(drafter_tokens, dtype=np.int64)
    if y.shape != d.shape:
        raise ValueError(f"trajectory length {y.shape} != drafter length {d.shape}")
    return np.asarray(y == d, dtype=np.float64)


# --------------------------------------------------------------------------- rounds


def positional_matrix(beta: npt.ArrayLike, k_max: int) -> FloatArray:
    """``B[s, j] = β_{s+j}`` (N, k_max), NaN past the trajectory end (teacher-forced drafter)."""
    b = np.asarray(beta, dtype=np.float64)
    n = b.shape[0]
    idx = np.arange(n)[:, None] + np.arange(k_max)[None, :]
    padded = np.concatenate([b, np.full(k_max, np.nan)])
    return np.asarray(padded[idx])


def block_match_matrix(target_tokens: npt.ArrayLike, blocks: npt.ArrayLike) -> FloatArray:
    """``B[s, j]`` for a deterministic proposer that drafts a block from each position.

    ``blocks[s, j]`` is the j-th token it drafts after ``prompt + y_<s`` (-1 = none).
    Under greedy verification step j is accepted iff it equals ``y_{s+j}``.
    """
    y = np.asarray(target_tokens, dtype=np.int64)
    d = np.asarray(blocks, dtype=np.int64)
    n, k_max = d.shape
    idx = np.arange(n)[:, None] + np.arange(k_max)[None, :]
    inside = idx < n
    y_at = np.where(inside, y[np.minimum(idx, n - 1)], -2)
    out: FloatArray = np.asarray((d == y_at) & (d >= 0), dtype=np.float64)
    out[~inside] = np.nan
    return out


@dataclass(frozen=True)
class RoundSums:
    """Expected totals of speculative rounds along one trajectory for one K."""

    k: int
    rounds: float
    drafted: float
    """Draft slots: ``k`` per round."""
    accepted: float
    tokens: float
    proposed: float = 0.0
    """Tokens actually proposed (a model-free proposer may offer fewer than ``k``)."""


def simulate_rounds(
    accept: npt.ArrayLike, k: int, start: int = 0, proposed: npt.ArrayLike | None = None
) -> RoundSums:
    """Run speculative rounds with ``k`` drafts along a trajectory; expected totals.

    ``accept[s, j]`` (N, ≥k) is the probability draft step j of a round starting at s is
    accepted given the previous steps were. A round from ``s`` needs positions
    ``s .. s+k-1`` on the trajectory; rounds stop when fewer remain (the tail is dropped,
    as a fixed-K decoder would stop drafting there). A round with ``a`` accepted drafts
    yields ``a + 1`` tokens (accepted prefix plus the target's bonus/correction token)
    and the next round starts at ``s + a + 1``. The first round starts at ``start``
    (1 when the first token comes from the target's prefill, as in any speculative
    decoder). ``proposed[s]`` (N,) is how many tokens the proposer offers from ``s``
    (None: always at least ``k``, as a model drafter). Exact expectation by dynamic
    programming; with 0/1 entries it is the deterministic simulation.
    """
    b = np.asarray(accept, dtype=np.float64)
    n = b.shape[0]
    if k < 1 or k > b.shape[1]:
        raise InvalidInput(f"K={k} is out of range (1..{b.shape[1]})")
    last = n - k  # last start position with k positions left
    if last < start:
        return RoundSums(k=k, rounds=0.0, drafted=0.0, accepted=0.0, tokens=0.0)
    offered = (
        np.full(last + 1, float(k))
        if proposed is None
        else np.minimum(np.asarray(proposed, dtype=np.float64)[: last + 1], float(k))
    )
    # Rows for every start; P(a = j) for j = 0..k.
    bk = np.clip(np.nan_to_num(b[: last + 1, :k], nan=0.0), 0.0, 1.0)
    reach = np.concatenate([np.ones((last + 1, 1)), np.cumprod(bk, axis=1)], axis=1)
    p_a = reach.copy()
    p_a[:, :k] = reach[:, :k] * (1.0 - bk)
    a_vals = np.arange(k + 1, dtype=np.float64)
    exp_acc = p_a @ a_vals
    size = n + k + 2
    rounds = np.zeros(size)
    acc = np.zeros(size)
    prop = np.zeros(size)
    for s in range(last, start - 1, -1):
        nxt = s + 1 + np.arange(k + 1)
        row = p_a[s]
        rounds[s] = 1.0 + row @ rounds[nxt]
        acc[s] = exp_acc[s] + row @ acc[nxt]
        prop[s] = offered[s] + row @ prop[nxt]
    return RoundSums(
        k=k,
        rounds=float(rounds[start]),
        drafted=float(k * rounds[start]),
        accepted=float(acc[start]),
        tokens=float(acc[start] + rounds[start]),
        proposed=float(prop[start]),
    )


@dataclass(frozen=True)
class PromptStats:
    """Sufficient statistics of one prompt for one drafter/temperature, poolable over prompts.

    ``beta_sum``/``n_positions`` give the per-token rate; ``reach_num[j]``/``reach_den[j]``
    the conditional acceptance of draft step j over all start positions; ``rounds``,
    ``drafted``, ``accepted``, ``tokens``, ``proposed`` (index K-1) the simulated round
    totals.
    """

    n_positions: int
    beta_sum: float
    reach_num: FloatArray
    reach_den: FloatArray
    rounds: FloatArray
    drafted: FloatArray
    accepted: FloatArray
    tokens: FloatArray
    proposed: FloatArray


def prompt_stats(
    accept: npt.ArrayLike,
    k_max: int,
    first_round: int = 0,
    proposed: npt.ArrayLike | None = None,
) -> PromptStats:
    """Statistics of one prompt from its acceptance matrix ``accept`` (N, ≥k_max).

    Rounds are simulated from position ``first_round``; α and the per-position rates use
    every position. ``proposed`` is as in :func:`simulate_rounds`.
    """
    b = np.asarray(accept, dtype=np.float64)[:, :k_max]
    n = b.shape[0]
    first = np.nan_to_num(b[:, 0], nan=0.0) if n else np.zeros(0)
    valid = ~np.isnan(b)
    bz = np.where(valid, np.clip(b, 0.0, 1.0), 0.0)
    reach = np.cumprod(bz, axis=1)
    prev = np.concatenate([np.ones((n, 1)), reach[:, :-1]], axis=1)
    num = np.where(valid, reach, 0.0).sum(axis=0)
    den = np.where(valid, prev, 0.0).sum(axis=0)
    sums = [simulate_rounds(b, k, first_round, proposed) for k in range(1, k_max + 1)]
    return PromptStats(
        n_positions=n,
        beta_sum=float(first.sum()),
        reach_num=np.asarray(num),
        reach_den=np.asarray(den),
        rounds=np.array([r.rounds for r in sums]),
        drafted=np.array([r.drafted for r in sums]),
        accepted=np.array([r.accepted for r in sums]),
        tokens=np.array([r.tokens for r in sums]),
        proposed=np.array([r.proposed for r in sums]),
    )


# --------------------------------------------------------------------------- pooling


@dataclass(frozen=True)
class Interval:
    """A pooled statistic with its bootstrap confidence interval over prompts."""

    mean: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class Summary:
    """Pooled acceptance over prompts with bootstrap CIs (``k`` runs 1..k_max)."""

    n_prompts: int
    n_tokens: int
    alpha: Interval
    per_position: list[Interval]
    accepted_fraction: list[Interval]
    tokens_per_round: list[Interval]
    iid_tokens_per_round: FloatArray
    positional_tokens_per_round: FloatArray
    proposed_per_round: list[Interval] | None = None
    """Tokens actually proposed per round (None when every round drafted the full K)."""


def _ratio(num: FloatArray, den: FloatArray) -> FloatArray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0))


def _interval(point: float, boot: FloatArray, level: float) -> Interval:
    lo, hi = bootstrap_interval(point, boot, level)
    return Interval(mean=point, ci_low=lo, ci_high=hi)


def summarize(
    stats: Sequence[PromptStats],
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> Summary:
    """Pool prompts (ratios of sums) and bootstrap CIs by resampling prompts.

    ``alpha`` is the pooled per-token acceptance (mean β), ``per_position[j]`` the pooled
    conditional acceptance of draft step j+1, ``accepted_fraction[K-1]`` and
    ``tokens_per_round[K-1]`` the simulated round results (``proposed_per_round[K-1]``
    too, for a proposer that may offer fewer than K). The fitted predictions use the
    point estimates.
    """
    if not stats:
        raise InvalidInput("no prompt produced any tokens to measure acceptance on")
    n_pos = np.array([s.n_positions for s in stats], dtype=np.float64)
    beta = np.array([s.beta_sum for s in stats])
    num = np.stack([s.reach_num for s in stats])
    den = np.stack([s.reach_den for s in stats])
    rounds = np.stack([s.rounds for s in stats])
    drafted = np.stack([s.drafted for s in stats])
    accepted = np.stack([s.accepted for s in stats])
    tokens = np.stack([s.tokens for s in stats])
    m = len(stats)
    rng = np.random.default_rng(seed)
    w = rng.multinomial(m, np.full(m, 1.0 / m), size=n_boot).astype(np.float64)

    def pooled(x: FloatArray, y: FloatArray) -> tuple[FloatArray, FloatArray]:
        return _ratio(x.sum(axis=0), y.sum(axis=0)), _ratio(w @ x, w @ y)

    a_pt, a_bs = pooled(beta, n_pos)
    pp_pt, pp_bs = pooled(num, den)
    af_pt, af_bs = pooled(accepted, drafted)
    tr_pt, tr_bs = pooled(tokens, rounds)
    k_max = num.shape[1]
    pr_pt, pr_bs = pooled(np.stack([s.proposed for s in stats]), rounds)
    proposed_per_round = None
    if np.any(pr_pt < np.arange(1, k_max + 1) - 1e-9):  # some rounds drafted fewer than K
        proposed_per_round = [_interval(float(pr_pt[j]), pr_bs[:, j], level) for j in range(k_max)]
    return Summary(
        n_prompts=m,
        n_tokens=int(n_pos.sum()),
        alpha=_interval(float(a_pt), a_bs, level),
        per_position=[_interval(float(pp_pt[j]), pp_bs[:, j], level) for j in range(k_max)],
        accepted_fraction=[_interval(float(af_pt[j]), af_bs[:, j], level) for j in range(k_max)],
        tokens_per_round=[_interval(float(tr_pt[j]), tr_bs[:, j], level) for j in range(k_max)],
        iid_tokens_per_round=tokens_per_round_from_alpha(float(a_pt), np.arange(1, k_max + 1)),
        positional_tokens_per_round=tokens_per_round_from_positions(pp_pt)[1:],
        proposed_per_round=proposed_per_round,
    )
