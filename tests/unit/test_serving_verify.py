"""The accept/resample rules: greedy equivalence and exact output distributions."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from configspec.backends.llamacpp import softmax as llama_softmax
from configspec.serving.protocol import SparseDistribution
from configspec.serving.verify import (
    apply_temperature,
    dense_draft,
    greedy_verify,
    sample_from,
    speculative_verify,
    target_probs_at,
)

V = 5


def test_greedy_accepts_longest_matching_prefix() -> None:
    o = greedy_verify([1, 2, 3], [1, 2, 3, 4])
    assert (o.accepted, o.next_token, o.bonus) == (3, 4, True)
    o = greedy_verify([1, 9, 3], [1, 2, 3, 4])
    assert (o.accepted, o.next_token, o.bonus) == (1, 2, False)
    o = greedy_verify([], [7])
    assert (o.accepted, o.next_token, o.bonus) == (0, 7, True)
    with pytest.raises(ValueError):
        greedy_verify([1], [1])


def test_temperature_matches_softmax_of_logits() -> None:
    logits = np.array([[1.0, 2.0, -1.0, 0.5]])
    p1 = np.exp(logits) / np.exp(logits).sum()
    for t in (0.3, 0.7, 1.0, 2.0):
        want = np.exp(logits / t) / np.exp(logits / t).sum()
        np.testing.assert_allclose(apply_temperature(p1, t), want, rtol=1e-9)


@pytest.mark.parametrize("t", [5e-324, 1e-300, 1e-45, 1e-12])
def test_tiny_temperature_is_the_exact_greedy_limit(t: float) -> None:
    """No overflow: a tiny T gives one-hot on the argmax (split over exact ties)."""
    p1 = np.array([[0.1, 0.6, 0.3, 0.0], [0.4, 0.4, 0.2, 0.0]])
    out = apply_temperature(p1, t)
    np.testing.assert_allclose(out, [[0, 1, 0, 0], [0.5, 0.5, 0, 0]])
    logits = np.log(np.array([[0.1, 0.6, 0.3]], dtype=np.float32))
    np.testing.assert_allclose(llama_softmax(logits, t), [[0, 1, 0]])
    rng = np.random.default_rng(0)
    q = np.full(4, 0.25)
    for _ in range(20):  # a draft the target never picks is always rejected, and resampled
        o = speculative_verify([0], [q], np.vstack([out[0], out[0]]), rng)
        assert (o.accepted, o.next_token) == (0, 1)


def test_temperature_must_be_positive_and_finite() -> None:
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="positive and finite"):
            apply_temperature(np.array([[0.5, 0.5]]), bad)


def test_dense_draft_exact_and_remainder() -> None:
    q = dense_draft(SparseDistribution(ids=[3, 1], probs=[0.75, 0.25]), 5)
    np.testing.assert_allclose(q, [0, 0.25, 0, 0.75, 0])
    q = dense_draft(SparseDistribution(ids=[0], probs=[0.4], remainder=0.6), 4)
    np.testing.assert_allclose(q, [0.4, 0.2, 0.2, 0.2])


def test_sample_from_inverse_cdf() -> None:
    p = np.array([0.0, 0.5, 0.0, 0.5])
    assert sample_from(p, 0.0) == 1
    assert sample_from(p, 0.49) == 1
    assert sample_from(p, 0.51) == 3
    assert sample_from(p, 0.999999) == 3


def _tables(rng: np.random.Generator, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic bigram target p and draft q (row = previous token) of one kind."""
    p = rng.dirichlet(np.ones(V), size=V)
    if kind == "random":
        q = rng.dirichlet(np.ones(V), size=V)
    elif kind == "equal":
        q = p.copy()
    elif kind == "onehot":  # a deterministic drafter (e.g. n-gram)
        q = np.eye(V)[rng.integers(0, V, size=V)]
    elif kind == "disjoint":  # q puts mass where p has none, and vice versa
        p[:, :2] = 0.0
        p /= p.sum(axis=1, keepdims=True)
        q = np.zeros((V, V))
        q[:, :3] = rng.dirichlet(np.ones(3), size=V)
    else:
        raise AssertionError(kind)
    return p, q


@pytest.mark.parametrize("kind", ["random", "equal", "onehot", "disjoint"])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_speculative_sampling_matches_target_joint(kind: str, k: int) -> None:
    """First and second emitted tokens are jointly distributed as p(t1|s) p(t2|t1)."""
    rng = np.random.default_rng(1234 + k)
    p, q = _tables(np.random.default_rng(7), kind)
    start = 0
    n = 6000
    counts = np.zeros((V, V))
    for _ in range(n):
        out: list[int] = []
        prev = start
        while len(out) < 2:
            drafts, dists, ctx = [], [], prev
            for _ in range(k):
                tok = int(rng.choice(V, p=q[ctx]))
                drafts.append(tok)
                dists.append(q[ctx])
                ctx = tok
            rows = [p[prev]] + [p[t] for t in drafts]
            o = speculative_verify(drafts, dists, np.array(rows), rng)
            out.extend(drafts[: o.accepted])
            out.append(o.next_token)
            prev = out[-1]
        counts[out[0], out[1]] += 1
    expected = p[start][:, None] * p
    mask = expected.ravel() > 0
    assert counts.ravel()[~mask].sum() == 0, "emitted a token the target gives probability 0"
    chi2 = stats.chisquare(counts.ravel()[mask], n * expected.ravel()[mask])
    assert chi2.pvalue > 1e-3, f"{kind} K={k}: chi2 p={chi2.pvalue:.2e}"


def test_statistical_power_of_the_chi_square_check_always_accept_is_caught() -> None:
    """Not a test of the library: it checks that the chi-square test above has the power
    to catch a wrong rule (accepting every draft), so its passing means something."""
    rng = np.random.default_rng(0)
    p, q = _tables(np.random.default_rng(7), "random")
    counts = np.zeros(V)
    n = 6000
    for _ in range(n):
        counts[int(rng.choice(V, p=q[0]))] += 1  # the draft token, accepted blindly
    assert stats.chisquare(counts, n * p[0]).pvalue < 1e-6


def test_apply_temperature_leaves_its_input_and_matches_the_formula() -> None:
    rng = np.random.default_rng(3)
    p = rng.dirichlet(np.full(50, 0.3), size=3).astype(np.float32)
    p[0, :5] = 0.0  # zeros stay zeros
    before = p.copy()
    out = apply_temperature(p, 0.8)
    np.testing.assert_array_equal(p, before)  # in-place steps work on a copy
    with np.errstate(divide="ignore"):
        logp = np.log(p.astype(np.float64))
    z = np.exp((logp - logp.max(axis=-1, keepdims=True)) / 0.8)
    np.testing.assert_array_equal(out, z / z.sum(axis=-1, keepdims=True))
    assert out.dtype == np.float64


def test_target_probs_already_at_the_temperature_are_not_re_tempered() -> None:
    rng = np.random.default_rng(4)
    at_one = rng.dirichlet(np.ones(V), size=3)
    at_t = apply_temperature(at_one, 0.8)
    got, approx = target_probs_at(at_t, None, None, 2, 0.8, V, probs_temperature=0.8)
    np.testing.assert_array_equal(got, at_t[:2])  # as computed in the pass
    assert not approx
    got, _ = target_probs_at(at_one, None, None, 2, 0.8, V)  # T=1: re-tempered
    np.testing.assert_array_equal(got, at_t[:2])
    with pytest.raises(ValueError, match="re-tempered"):
        target_probs_at(at_t, None, None, 2, 0.5, V, probs_temperature=0.8)


def test_sample_from_float32_rows_accumulates_in_float64() -> None:
    # the verifier's probabilities are float32 rows of ~262k ids; a float32 running sum
    # over them drifts (here it would pick id 30120 for u = 0.1 instead of 30000)
    p = np.full(300_000, 1e-3, dtype=np.float32)
    assert sample_from(p, 0.1) == sample_from(p.astype(np.float64), 0.1) == 30_000
