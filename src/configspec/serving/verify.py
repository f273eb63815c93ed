"""The verification rules, as pure numpy: greedy acceptance and speculative sampling.

Greedy (temperature 0): accept the longest prefix of the draft that matches the target's
argmax at each position; the next token is the target's argmax where the first mismatch
happened (the correction), or after the last draft when all were accepted (the bonus).
The output is then token-identical to decoding with the target alone.

Speculative sampling (Leviathan et al. 2023, Chen et al. 2023): draft token ``x_i`` drawn
from ``q_i`` is accepted with probability ``min(1, p_i(x_i) / q_i(x_i))``; on the first
rejection the next token is drawn from the residual ``normalise(max(0, p_i - q_i))``;
when all K are accepted the bonus is drawn from ``p_K``. Every emitted token is then
distributed exactly as the target's ``p`` given the tokens before it, whatever ``q`` is,
provided ``q`` is the distribution the draft was really sampled from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from configspec.serving.protocol import SparseDistribution

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Outcome:
    """Accepted draft count, the token that follows them, and whether it is a bonus."""

    accepted: int
    next_token: int
    bonus: bool


def greedy_verify(draft_tokens: Sequence[int], target_argmax: Sequence[int]) -> Outcome:
    """Greedy acceptance; ``target_argmax`` has ``len(draft_tokens) + 1`` entries."""
    k = len(draft_tokens)
    if len(target_argmax) != k + 1:
        raise ValueError(f"need {k + 1} target argmax entries for {k} drafts")
    for i, tok in enumerate(draft_tokens):
        if tok != target_argmax[i]:
            return Outcome(i, int(target_argmax[i]), bonus=False)
    return Outcome(k, int(target_argmax[k]), bonus=True)


def apply_temperature(probs: FloatArray, temperature: float) -> FloatArray:
    """Rows of ``probs`` (at temperature 1) re-tempered: ``p^(1/T)`` renormalised.

    Equals ``softmax(logits / T)`` for the logits ``probs`` came from. Computed in log
    space with the row maximum subtracted *before* dividing by ``T``, so every exponent is
    ``<= 0`` and no finite positive ``T`` overflows: as ``T -> 0`` (even a subnormal such
    as 5e-324) the row tends to the uniform distribution over its argmax ties, which is
    the exact limit, never NaN.
    """
    if not (temperature > 0 and np.isfinite(temperature)):
        raise ValueError(f"temperature {temperature} must be positive and finite to sample")
    # one float64 copy, then every step in place: the same values as the step-by-step
    # formula, without five more (rows x vocab) temporaries per call (fresh pages cost
    # page faults on every round of a sampled run; see target_probs_at)
    p = np.array(probs, dtype=np.float64, copy=True)
    if temperature == 1.0:
        p /= p.sum(axis=-1, keepdims=True)
        return p
    with np.errstate(divide="ignore"):
        np.log(p, out=p)
    with np.errstate(invalid="ignore"):
        p -= p.max(axis=-1, keepdims=True)  # <= 0, 0 at the argmax, -inf for p=0
    with np.errstate(over="ignore", invalid="ignore"):
        p /= temperature  # overflows only to -inf, which exp maps to 0
    p[np.isnan(p)] = -np.inf  # -inf/T stays -inf; guard 0 * inf style NaNs
    np.exp(p, out=p)
    p /= p.sum(axis=-1, keepdims=True)
    return p


def dense_draft(dist: SparseDistribution, vocab_size: int) -> FloatArray:
    """The full-vocabulary distribution a :class:`SparseDistribution` stands for.

    Mass in ``remainder`` is spread uniformly over the ids not listed (an approximation,
    see :mod:`configspec.serving.protocol`); with ``remainder == 0`` this is exact.
    """
    q = np.zeros(vocab_size, dtype=np.float64)
    ids = np.asarray(dist.ids, dtype=np.int64)
    if dist.remainder > 0 and vocab_size > len(ids):
        q[:] = dist.remainder / (vocab_size - len(ids))
    q[ids] = np.asarray(dist.probs, dtype=np.float64)
    return q / q.sum()  # type: ignore[no-any-return]


def sample_from(p: npt.NDArray[np.floating[Any]], u: float) -> int:
    """Inverse-CDF sample of an (unnormalised, non-negative) vector with uniform ``u``
    (the CDF accumulated in float64 whatever ``p``'s precision)."""
    cdf = np.cumsum(p, dtype=np.float64)
    idx = int(np.searchsorted(cdf, u * cdf[-1], side="right"))
    return min(idx, len(p) - 1)


def speculative_verify(
    draft_tokens: Sequence[int],
    draft_dists: Sequence[FloatArray],
    target_probs: npt.NDArray[np.floating[Any]],
    rng: np.random.Generator,
) -> Outcome:
    """Speculative sampling over one round.

    ``draft_dists[i]`` is the full distribution draft ``i`` was sampled from;
    ``target_probs`` has shape (K + 1, vocab) at the sampling temperature.
    """
    k = len(draft_tokens)
    if target_probs.shape[0] != k + 1 or len(draft_dists) != k:
        raise ValueError(f"need {k + 1} target rows and {k} draft rows for {k} drafts")
    for i, tok in enumerate(draft_tokens):
        p = target_probs[i]
        q = draft_dists[i]
        px, qx = float(p[tok]), float(q[tok])
        if qx > 0 and rng.random() * qx < px:  # u < p/q without dividing
            continue
        residual = np.maximum(p - q, 0.0)
        if residual.sum() <= 0.0:  # p == q up to rounding: the residual is p itself
            residual = p
        return Outcome(i, sample_from(residual, rng.random()), bonus=False)
    return Outcome(k, sample_from(target_probs[k], rng.random()), bonus=True)


def target_probs_at(
    probs: npt.NDArray[np.floating[Any]] | None,
    top_ids: npt.NDArray[np.int64] | None,
    top_probs: npt.NDArray[np.floating[Any]] | None,
    rows: int,
    temperature: float,
    vocab_size: int,
    probs_temperature: float = 1.0,
) -> tuple[npt.NDArray[np.floating[Any]], bool]:
    """The target's first ``rows`` distributions at ``temperature`` from an evaluation's
    full ``probs`` (at ``probs_temperature``) or, failing that, its top-k (at 1); True
    when only top-k was available (the result is then an approximation).

    Probabilities the target already computed at ``temperature`` (a local llama.cpp
    target does, in its pass: :meth:`~configspec.backends.llamacpp.LlamaCppTarget.
    evaluate_at`, ``extra["probs_temperature"]``) are used as they are: re-tempering
    ``rows`` x 262k probabilities in float64 cost 3-5 ms per row and ~13 MB of fresh
    memory per row on the 2-core VM, against ~0.7 ms per row for the tempered softmax.
    """
    if probs is not None:
        if probs_temperature == temperature:
            return probs[:rows], False
        if probs_temperature != 1.0:
            raise ValueError(
                f"probabilities at T={probs_temperature:g} cannot be re-tempered to "
                f"T={temperature:g}; evaluate at T=1 or at the sampling temperature"
            )
        return apply_temperature(np.asarray(probs[:rows], dtype=np.float64), temperature), False
    if top_ids is None or top_probs is None:
        raise RuntimeError("the target returned neither probabilities nor top-k")
    dense = np.zeros((rows, vocab_size))
    for r in range(rows):
        dense[r, top_ids[r]] = top_probs[r]
    return apply_temperature(dense, temperature), True


def sampled_decision(
    draft_tokens: Sequence[int],
    draft_distributions: Sequence[SparseDistribution] | None,
    target_probs: npt.NDArray[np.floating[Any]],
    vocab_size: int,
    rng: np.random.Generator,
) -> tuple[Outcome, bool]:
    """One round of speculative sampling as the verifier runs it: the sparse draft
    distributions expanded to the vocabulary (one-hot on the token for a deterministic
    drafter that sent none), then :func:`speculative_verify`. Also returns True when a
    distribution carried remainder mass (approximate)."""
    approximate = False
    q_rows: list[FloatArray] = []
    for i, tok in enumerate(draft_tokens):
        if draft_distributions is not None:
            dist = draft_distributions[i]
            approximate = approximate or dist.remainder > 0
            q_rows.append(dense_draft(dist, vocab_size))
        else:
            q = np.zeros(vocab_size)
            q[tok] = 1.0
            q_rows.append(q)
    return speculative_verify(draft_tokens, q_rows, target_probs, rng), approximate
