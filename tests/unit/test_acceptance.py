"""Acceptance math: hand-computable cases and properties checked with hypothesis."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from configspec.errors import InvalidInput
from configspec.model.acceptance import (
    drafted_length_distribution,
    tokens_per_round_from_alpha,
    tokens_per_round_from_positions,
)
from configspec.profiling.acceptance import (
    block_match_matrix,
    check_temperature,
    greedy_match,
    overlap_full,
    overlap_topk_full,
    overlap_topk_onehot,
    positional_matrix,
    prompt_stats,
    simulate_rounds,
    softmax_temperature,
    summarize,
    top_k,
)


def _greedy_decode(matches: list[int], k: int) -> tuple[int, int, int]:
    """Plain speculative greedy decoding over a 0/1 match list: rounds, accepted, tokens."""
    n, s, rounds, acc, tok = len(matches), 0, 0, 0, 0
    while s + k <= n:
        a = 0
        while a < k and matches[s + a]:
            a += 1
        rounds, acc, tok, s = rounds + 1, acc + a, tok + a + 1, s + a + 1
    return rounds, acc, tok


def _branching_expectation(b: np.ndarray, k: int) -> tuple[float, float]:
    """Expected (rounds, accepted) by explicit branching on every accept/reject outcome."""
    n = b.shape[0]

    def go(s: int) -> tuple[float, float]:
        if s + k > n:
            return 0.0, 0.0
        r_tot, a_tot, reach = 0.0, 0.0, 1.0
        for j in range(k + 1):
            if j < k:
                p = reach * (1.0 - b[s, j])
                reach *= b[s, j]
            else:
                p = reach
            if p == 0.0:
                continue
            r, a = go(s + j + 1)
            r_tot += p * (1.0 + r)
            a_tot += p * (j + a)
        return r_tot, a_tot

    return go(0)


def test_greedy_hand_case() -> None:
    m = greedy_match([5, 6, 7, 8, 9, 1, 2], [5, 6, 0, 8, 9, 1, 0])
    assert m.tolist() == [1, 1, 0, 1, 1, 1, 0]
    r = simulate_rounds(positional_matrix(m, 4), 2)
    # s=0 accepts 2 (tokens 3) -> s=3 accepts 2 -> s=6 has 1 position left < K: stop.
    assert (r.rounds, r.accepted, r.tokens, r.drafted) == (2, 4, 6, 4)
    r1 = simulate_rounds(positional_matrix(m, 4), 1)
    # K=1: s=0 acc,s=2 rej,s=3 acc,s=5 acc,... -> rounds at 0,2,3,5 then s=7 stop
    assert (r1.rounds, r1.accepted) == (4, 3)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 1), min_size=1, max_size=40), st.integers(1, 6))
def test_dp_equals_plain_greedy_decoding(matches: list[int], k: int) -> None:
    b = positional_matrix(np.array(matches, dtype=float), 6)
    r = simulate_rounds(b, k)
    rounds, acc, tok = _greedy_decode(matches, k)
    assert (r.rounds, r.accepted, r.tokens) == (rounds, acc, tok)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(0.0, 1.0), min_size=1, max_size=9),
    st.integers(1, 3),
)
def test_dp_equals_branching_expectation(beta: list[float], k: int) -> None:
    b = positional_matrix(np.array(beta), 3)
    r = simulate_rounds(b, k)
    rounds, acc = _branching_expectation(np.nan_to_num(b), k)
    assert r.rounds == pytest.approx(rounds, abs=1e-9)
    assert r.accepted == pytest.approx(acc, abs=1e-9)
    assert r.tokens == pytest.approx(acc + rounds, abs=1e-9)


@pytest.mark.parametrize(("alpha", "k"), [(0.3, 1), (0.6, 3), (0.8, 5), (0.95, 8)])
def test_constant_rate_matches_iid_formula(alpha: float, k: int) -> None:
    b = positional_matrix(np.full(20_000, alpha), k)
    r = simulate_rounds(b, k)
    assert r.tokens / r.rounds == pytest.approx(
        float(tokens_per_round_from_alpha(alpha, k)), rel=2e-3
    )
    expected_fraction = (alpha - alpha ** (k + 1)) / (1 - alpha) / k
    assert r.accepted / r.drafted == pytest.approx(expected_fraction, rel=2e-3)


def test_iid_and_positional_predictions() -> None:
    assert tokens_per_round_from_alpha(0.5, [1, 2]).tolist() == [1.5, 1.75]
    assert tokens_per_round_from_alpha(1.0, [1, 4]).tolist() == [2.0, 5.0]
    assert tokens_per_round_from_positions([1.0, 0.5])[1:].tolist() == [2.0, 2.5]
    assert tokens_per_round_from_positions([0.5, 0.5])[1:].tolist() == [1.5, 1.75]


def test_rounds_start_after_prefill_token() -> None:
    m = np.array([0, 1, 1, 1, 1, 0, 1], dtype=float)
    r = simulate_rounds(positional_matrix(m, 4), 2, start=1)
    # s=1 accepts 2 -> s=4 accepts 1 (m[5]=0) -> s=6 has one position left: stop.
    assert (r.rounds, r.accepted, r.tokens) == (2, 3, 5)
    assert simulate_rounds(positional_matrix(m, 4), 2, start=6).rounds == 0.0


def test_short_trajectory_has_no_rounds() -> None:
    r = simulate_rounds(positional_matrix(np.ones(2), 4), 3)
    assert r.rounds == 0.0
    with pytest.raises(InvalidInput, match="K=5 is out of range"):
        simulate_rounds(positional_matrix(np.ones(8), 4), 5)


def test_block_matrix_for_deterministic_proposer() -> None:
    y = np.array([1, 2, 3, 4])
    blocks = np.array([[1, 2, 9], [2, 3, 4], [-1, -1, -1], [4, 5, 6]])
    b = block_match_matrix(y, blocks)
    assert np.array_equal(np.nan_to_num(b, nan=-1), [[1, 1, 0], [1, 1, 1], [0, 0, -1], [1, -1, -1]])
    r = simulate_rounds(b, 2)
    # s=0 accepts 2 -> s=3, only one position left: stop.
    assert (r.rounds, r.accepted) == (1, 2)


def test_softmax_temperature_hand_values() -> None:
    p = softmax_temperature([[0.0, math.log(3.0)]], 1.0)
    assert p.tolist()[0] == pytest.approx([0.25, 0.75])
    p2 = softmax_temperature([[0.0, math.log(3.0)]], 2.0)
    s3 = math.sqrt(3.0)
    assert p2.tolist()[0] == pytest.approx([1 / (1 + s3), s3 / (1 + s3)])
    assert softmax_temperature([[1.0, 5.0, 2.0]], 0.0).tolist() == [[0.0, 1.0, 0.0]]


@pytest.mark.parametrize("bad", [-0.1, -5.0, float("nan")])
def test_negative_temperature_is_one_clear_line(bad: float) -> None:
    with pytest.raises(InvalidInput, match="out of range; use 0") as info:
        check_temperature(bad)
    assert "\n" not in str(info.value)


def test_overlap_hand_case() -> None:
    assert overlap_full([[0.5, 0.5, 0.0]], [[0.2, 0.3, 0.5]]).tolist() == pytest.approx([0.5])
    p = np.array([[0.7, 0.2, 0.1]])
    assert overlap_full(p, p).tolist() == pytest.approx([1.0])
    # Top-2 of p keeps 0.7, 0.2; remainder 0.1 (on id 2). q puts 0.6 on id 2.
    tk = top_k(p, 2)
    assert tk.ids.tolist() == [[0, 1]]
    assert tk.remainder.tolist() == pytest.approx([0.1])
    ov = overlap_topk_full(tk, np.array([[0.2, 0.2, 0.6]]))
    assert ov.low.tolist() == pytest.approx([0.4])
    assert ov.high.tolist() == pytest.approx([0.5])  # true value 0.5
    one = overlap_topk_onehot(tk, np.array([1]))
    assert (one.low.tolist(), one.high.tolist()) == ([pytest.approx(0.2)], [pytest.approx(0.2)])
    miss = overlap_topk_onehot(tk, np.array([2]))
    assert miss.low.tolist() == [0.0]
    assert miss.high.tolist() == pytest.approx([0.1])
    none = overlap_topk_onehot(tk, np.array([-1]))
    assert none.high.tolist() == [0.0]


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 12), st.floats(0.2, 3.0))
def test_topk_bounds_contain_exact_overlap(seed: int, k: int, temp: float) -> None:
    rng = np.random.default_rng(seed)
    p = softmax_temperature(rng.normal(size=(5, 12)) * 3, temp)
    q = softmax_temperature(rng.normal(size=(5, 12)) * 3, temp)
    exact = overlap_full(p, q)
    ov = overlap_topk_full(top_k(p, k), q)
    assert np.all(ov.low <= exact + 1e-12)
    assert np.all(exact <= ov.high + 1e-12)
    d = rng.integers(-1, 12, size=5)
    ex_one = np.where(d >= 0, p[np.arange(5), np.maximum(d, 0)], 0.0)
    one = overlap_topk_onehot(top_k(p, k), d)
    assert np.all(one.low <= ex_one + 1e-12)
    assert np.all(ex_one <= one.high + 1e-12)


def test_identical_topk_is_exact_when_k_covers_support() -> None:
    p = np.array([[0.6, 0.4, 0.0, 0.0]])
    ov = overlap_topk_full(top_k(p, 2), p)
    assert ov.value.tolist() == pytest.approx([1.0])


def test_summary_pools_and_bootstraps() -> None:
    perfect = prompt_stats(positional_matrix(np.ones(20), 4), 4)
    half = prompt_stats(positional_matrix(np.array([1.0, 0.0] * 10), 4), 4)
    s = summarize([perfect, half], n_boot=200)
    assert s.n_prompts == 2 and s.n_tokens == 40
    assert s.alpha.mean == pytest.approx(0.75)
    assert s.alpha.ci_low <= 0.75 <= s.alpha.ci_high
    assert s.alpha.ci_low < s.alpha.ci_high
    # Perfect prompt, K=1: every round accepts -> 2 tokens per round.
    alone = summarize([perfect], n_boot=50)
    assert alone.tokens_per_round[0].mean == pytest.approx(2.0)
    assert alone.accepted_fraction[3].mean == pytest.approx(1.0)
    assert alone.alpha.ci_low == alone.alpha.ci_high == 1.0
    assert [iv.mean for iv in alone.per_position] == [1.0] * 4
    assert alone.iid_tokens_per_round.tolist() == [2.0, 3.0, 4.0, 5.0]
    with pytest.raises(InvalidInput):
        summarize([])


def test_per_position_conditional_acceptance() -> None:
    # Pattern 1,1,0 repeated: step 1 accepted 2/3 of starts; step 2 given step 1 = 1/2.
    st_ = prompt_stats(positional_matrix(np.array([1.0, 1.0, 0.0] * 30), 3), 3)
    s = summarize([st_], n_boot=10)
    assert s.per_position[0].mean == pytest.approx(2 / 3, abs=0.01)
    assert s.per_position[1].mean == pytest.approx(1 / 2, abs=0.02)
    assert s.per_position[2].mean == pytest.approx(0.0, abs=0.01)


def test_proposer_that_drafts_fewer_than_k_counts_what_it_proposed() -> None:
    # y = 1 2 3 4 5 6; from each start the proposer offers 0, 1 or 3 tokens
    y = np.array([1, 2, 3, 4, 5, 6])
    blocks = np.array([[-1, -1, -1], [2, -1, -1], [3, 4, 5], [-1, -1, -1], [5, 6, -1], [6, -1, -1]])
    proposed = (blocks >= 0).sum(axis=1)
    b = block_match_matrix(y, blocks)
    r = simulate_rounds(b, 3, proposed=proposed)
    # s=0 offers nothing (1 token) -> s=1 accepts its one draft (2 tokens) -> s=3 offers
    # nothing -> s=4: fewer than K positions left, stop.
    assert (r.rounds, r.accepted, r.tokens) == (3, 1, 4)
    assert r.proposed == 0 + 1 + 0
    assert r.drafted == 9  # draft slots stay K per round
    stats = prompt_stats(b, 3, proposed=proposed)
    model = prompt_stats(positional_matrix(np.ones(6), 3), 3)
    s = summarize([stats], n_boot=10)
    assert s.proposed_per_round is not None
    assert s.proposed_per_round[2].mean == pytest.approx(1 / 3)
    assert summarize([model], n_boot=10).proposed_per_round is None  # always drafts K


@given(
    steps=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=10),
)
def test_drafted_length_distribution_reproduces_consistent_means(steps: list[float]) -> None:
    """Means whose steps fall (a drafter that stops where its match ends) give, at each K,
    a distribution over 0..K that sums to 1 and whose mean is the drafted mean."""
    reach = np.minimum.accumulate(np.asarray(steps))
    drafted = np.concatenate([[0.0], np.cumsum(reach)])
    w = drafted_length_distribution(drafted)
    n = drafted.size - 1
    assert w.shape == (n + 1, n + 1)
    assert np.all(w >= -1e-12)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(w @ np.arange(n + 1), drafted, atol=1e-9)
    assert np.all(np.triu(w, 1) == 0.0)  # never more than K drafted


def test_drafted_length_distribution_of_a_model_drafter_is_k() -> None:
    w = drafted_length_distribution(np.arange(6.0))
    np.testing.assert_array_equal(w, np.eye(6))


def test_drafted_length_distribution_of_a_noisy_profile_stays_a_distribution() -> None:
    """A rising step (noise) is flattened: the chances of reaching a position never rise."""
    w = drafted_length_distribution(np.array([0.0, 0.5, 0.9, 1.6, 1.7]))
    np.testing.assert_allclose(w.sum(axis=1), 1.0)
    assert np.all(w >= 0.0)
    # reach: 0.5, 0.4, min(0.7, 0.4) = 0.4, 0.1
    np.testing.assert_allclose(w[4], [0.5, 0.1, 0.0, 0.3, 0.1])
