"""The closed-loop fleet model against closed forms and the limits it must respect.

Most tests pin the MVA branch (``gather="mva"``); the lockstep branches (``sync``, the
default, and ``continuous``) are tested at the end."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from configspec.model.fleet import (
    GATHER_MODELS,
    BatchLatency,
    anchor_weight,
    mean_pass_sessions,
    padded_pass_ms,
    solve_fleet,
    solve_population,
)


def repairman_rounds_per_s(n: int, think_ms: float, service_ms: float) -> float:
    """Machine-repairman model (M/M/1//N): throughput (1 - P0) / S, closed form."""
    terms = [math.factorial(n) / math.factorial(n - j) * (service_ms / think_ms) ** j
             for j in range(n + 1)]  # fmt: skip
    p0 = 1.0 / sum(terms)
    return (1.0 - p0) / service_ms * 1e3


FLAT = BatchLatency.linear(40.0, 0.0, 0.0, 1)  # 40 ms per verification, one at a time


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 16])
@pytest.mark.parametrize(("think", "service"), [(35.0, 40.0), (200.0, 25.0), (5.0, 60.0)])
def test_one_at_a_time_is_classic_exact_mva(n: int, think: float, service: float) -> None:
    curve = BatchLatency.linear(service, 0.0, 0.0, 1)
    sol = solve_population(n, think, 3.0, 2.0, curve, max_batch=1, gather="mva")
    expect = repairman_rounds_per_s(n, think, service)
    assert sol.rounds_per_s[0, n - 1] == pytest.approx(expect, rel=1e-9)
    # the goodput is E(K) tokens per round
    assert sol.replica_goodput_tok_s[0, n - 1] == pytest.approx(2.0 * expect, rel=1e-9)


def test_schweitzer_stays_close_to_exact() -> None:
    exact = solve_population(16, 35.0, 3.0, 2.0, FLAT, 1, gather="mva")
    for n in (1, 2, 4, 8, 16):
        approx = solve_fleet(n, 35.0, 3.0, 2.0, FLAT, 1, gather="mva")
        assert approx.converged.all()
        assert approx.rounds_per_s[0, 0] == pytest.approx(exact.rounds_per_s[0, n - 1], rel=0.06)


def test_one_client_is_the_single_client_round() -> None:
    curve = BatchLatency.linear(28.0, 6.0, 2.0, 16)
    z, p, e = 33.0, 4.0, 2.5
    s1 = float(curve(1, p))
    assert s1 == pytest.approx(28.0 + 6.0 * 4)
    for sol in (
        solve_population(1, z, p, e, curve, 16, gather="mva"),
        solve_fleet(1, z, p, e, curve, 16, gather="mva"),
    ):
        assert sol.round_ms[0, 0] == pytest.approx(z + s1)
        assert sol.goodput_tok_s[0, 0] == pytest.approx(e / (z + s1) * 1e3)
        assert sol.queue_ms[0, 0] == pytest.approx(0.0)
        assert sol.p95_round_ms[0, 0] == pytest.approx(z + s1)
        assert sol.batch[0, 0] == pytest.approx(1.0)


@pytest.mark.parametrize("b_max", [1, 4, 8])
def test_saturation_throughput_is_full_batches(b_max: int) -> None:
    curve = BatchLatency.linear(28.0, 6.0, 2.0, 8)
    p = 3.0
    cap = b_max / float(curve(b_max, p)) * 1e3
    exact = solve_population(400, 30.0, p, 2.0, curve, b_max, gather="mva")
    assert exact.rounds_per_s[0, -1] == pytest.approx(cap, rel=1e-3)
    approx = solve_fleet(400, 30.0, p, 2.0, curve, b_max, gather="mva")
    assert approx.rounds_per_s[0, 0] == pytest.approx(cap, rel=1e-3)
    assert approx.utilisation[0] == pytest.approx(1.0, abs=1e-3)
    # never above the capacity, at any population
    assert (exact.rounds_per_s <= cap * (1 + 1e-9)).all()


def test_monotone_in_the_population() -> None:
    curve = BatchLatency.linear(28.0, 6.0, 2.0, 16)
    for b_max in (1, 8):
        sol = solve_population(32, 35.0, 3.0, 2.0, curve, b_max, gather="mva")
        x, g, r = sol.rounds_per_s[0], sol.goodput_tok_s[0], sol.round_ms[0]
        assert (np.diff(x) > -1e-9).all()
        assert (np.diff(g) < 1e-9).all()
        assert (np.diff(r) > -1e-9).all()
        assert (sol.p95_round_ms[0] >= sol.round_ms[0] - 1e-9).all()
        assert (sol.p95_round_ms[0] <= sol.max_round_ms[0] + 1e-9).all()


def test_batching_beats_one_at_a_time_under_load() -> None:
    curve = BatchLatency.linear(28.0, 6.0, 2.0, 16)
    one = solve_population(8, 35.0, 3.0, 2.0, curve, 1, gather="mva")
    batched = solve_population(8, 35.0, 3.0, 2.0, curve, 8, gather="mva")
    assert batched.rounds_per_s[0, -1] > 1.5 * one.rounds_per_s[0, -1]
    # most of the 8 clients are at the verifier at once (think time << pass time)
    assert 5.0 < batched.batch[0, -1] <= 8.0
    # the shared GPU time per token falls with the batch
    assert batched.gpu_ms_per_token[0, -1] < one.gpu_ms_per_token[0, -1]


def test_classes_split_equal_one_class() -> None:
    curve = BatchLatency.linear(28.0, 6.0, 2.0, 16)
    one = solve_fleet(12, 40.0, 3.0, 2.0, curve, 8, gather="mva")
    two = solve_fleet(
        [[5.0, 7.0]], [[40.0, 40.0]], [[3.0, 3.0]], [[2.0, 2.0]], curve, 8, gather="mva"
    )
    assert two.replica_goodput_tok_s[0] == pytest.approx(one.replica_goodput_tok_s[0], rel=1e-4)
    assert two.round_ms[0, 0] == pytest.approx(two.round_ms[0, 1], rel=1e-6)


def test_absent_class_and_vectorised_scenarios() -> None:
    curve = BatchLatency.linear(28.0, 6.0, 2.0, 16)
    clients = np.array([[4.0, 0.0], [4.0, 4.0], [0.0, 4.0]])
    sol = solve_fleet(clients, [[30.0, 60.0]], [[3.0, 5.0]], [[2.0, 3.0]], curve, 8, gather="mva")
    assert np.isnan(sol.goodput_tok_s[0, 1]) and np.isnan(sol.goodput_tok_s[2, 0])
    assert sol.rounds_per_s[0, 1] == 0.0
    alone = solve_fleet(4.0, 30.0, 3.0, 2.0, curve, 8, gather="mva")
    assert sol.goodput_tok_s[0, 0] == pytest.approx(alone.goodput_tok_s[0, 0], rel=1e-6)
    # a second class slows the first one down
    assert sol.goodput_tok_s[1, 0] < sol.goodput_tok_s[0, 0]


def test_batch_latency_interpolates_profiled_levels() -> None:
    table = np.array([[np.nan, 30.0, 36.0], [np.nan, 40.0, 52.0], [np.nan, 80.0, 120.0]])
    curve = BatchLatency(table, np.array([1.0, 2.0, 8.0]))
    assert curve.max_batch == 8
    assert float(curve(2, 2)) == 52.0
    assert float(curve(5, 1)) == pytest.approx(60.0)  # halfway between batch 2 and 8
    assert float(curve(1, 1.5)) == pytest.approx(33.0)
    assert float(curve(100, 1)) == 80.0  # clamped at the largest profiled batch
    assert np.isnan(curve(1, 3.0)) and np.isnan(curve(1, 0.5))
    with pytest.raises(ValueError, match="start at 1"):
        BatchLatency(table, np.array([2.0, 4.0, 8.0]))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        solve_fleet(2, 30.0, 3.0, 2.0, FLAT, 0, gather="mva")
    with pytest.raises(ValueError, match="max_clients"):
        solve_population(0, 30.0, 3.0, 2.0, FLAT, 1, gather="mva")


def test_tail_bound_is_the_fifo_worst_case() -> None:
    from configspec.model.fleet import tail_round_ms

    # 5 clients, one at a time: at most the pass in progress + 3 queued + its own = 5 passes
    p95, hard = tail_round_ms(
        np.array([10.0]), np.array([40.0]), np.array([1e6]), np.array([0.9]),
        np.array([5.0]), np.array([40.0]), 1,
    )  # fmt: skip
    assert hard[0] == pytest.approx(10.0 + 5 * 40.0)
    assert p95[0] == pytest.approx(hard[0])  # a huge mean wait is capped by the bound
    # batches of 4: the pass in progress + one more pass + its own... ceil(4/4) + 1 = 2
    _, hard4 = tail_round_ms(
        np.array([10.0]), np.array([40.0]), np.array([0.0]), np.array([0.5]),
        np.array([5.0]), np.array([60.0]), 4,
    )  # fmt: skip
    assert hard4[0] == pytest.approx(10.0 + 2 * 60.0)
    # a wait that happens at most 5% of the time does not move the p95
    p95_idle, _ = tail_round_ms(
        np.array([10.0]), np.array([40.0]), np.array([3.0]), np.array([0.04]),
        np.array([5.0]), np.array([40.0]), 1,
    )  # fmt: skip
    assert p95_idle[0] == pytest.approx(50.0)


CURVE = BatchLatency.linear(100.0, 5.0, 10.0, 16)  # S(b, p) = 100 + 10 (b - 1) + 5 b p


@pytest.mark.parametrize("gather", ["sync", "continuous"])
def test_lockstep_one_client_is_the_single_client_round(gather: str) -> None:
    for sol in (
        solve_population(1, 35.0, 3.0, 2.0, CURVE, 16, gather=gather),
        solve_fleet(1, 35.0, 3.0, 2.0, CURVE, 16, gather=gather),
    ):
        assert sol.round_ms[0, 0] == pytest.approx(35.0 + 115.0)
        assert sol.batch[0, 0] == 1.0 and sol.queue_ms[0, 0] == pytest.approx(0.0)
        assert sol.p95_round_ms[0, 0] == pytest.approx(150.0)


def test_sync_puts_every_client_in_one_pass() -> None:
    sol = solve_population(32, 35.0, 3.0, 2.0, CURVE, 16)  # gather="sync" is the default
    for n in (2, 8, 16):
        s = float(CURVE(n, 3.0))
        assert sol.batch[0, n - 1] == n
        assert sol.round_ms[0, n - 1] == pytest.approx(35.0 + s)
        assert sol.replica_goodput_tok_s[0, n - 1] == pytest.approx(n * 2.0 / (35.0 + s) * 1e3)
    # 32 clients, 16 per pass: two passes a cycle, the verifier never idles
    s16 = float(CURVE(16, 3.0))
    assert sol.batch[0, 31] == 16 and sol.round_ms[0, 31] == pytest.approx(2 * s16)
    assert sol.utilisation[0, 31] == pytest.approx(1.0)
    fleet = solve_fleet(32, 35.0, 3.0, 2.0, CURVE, 16)
    assert fleet.round_ms[0, 0] == pytest.approx(sol.round_ms[0, 31])


def test_continuous_clients_alternate_when_thinking_is_shorter_than_a_pass() -> None:
    sol = solve_population(8, 35.0, 3.0, 2.0, CURVE, 16, gather="continuous")
    # two groups take turns: N = 2 is one session per pass, a round of two passes
    assert sol.batch[0, 1] == 1.0
    assert sol.round_ms[0, 1] == pytest.approx(2 * float(CURVE(1, 3.0)))
    assert sol.batch[0, 7] == 4.0
    # a think time longer than a pass splits the clients further
    slow = solve_population(8, 300.0, 3.0, 2.0, CURVE, 16, gather="continuous")
    assert slow.batch[0, 7] < 4.0
    sync = solve_population(8, 35.0, 3.0, 2.0, CURVE, 16)
    assert (sync.replica_goodput_tok_s[0, 2:] > sol.replica_goodput_tok_s[0, 2:]).all()


def test_sync_classes_wait_for_the_slowest_and_pad_to_the_widest() -> None:
    sol = solve_fleet([[3.0, 5.0]], [[30.0, 60.0]], [[3.0, 5.0]], [[2.0, 3.0]], CURVE, 16)
    s = float(CURVE(8, 5.0))
    assert sol.round_ms[0] == pytest.approx([60.0 + s, 60.0 + s])
    assert sol.queue_ms[0, 0] == pytest.approx(30.0)  # the fast class waits 30 ms
    split = solve_fleet([[5.0, 7.0]], [[40.0, 40.0]], [[3.0, 3.0]], [[2.0, 2.0]], CURVE, 8)
    one = solve_fleet(12, 40.0, 3.0, 2.0, CURVE, 8)
    assert split.replica_goodput_tok_s[0] == pytest.approx(one.replica_goodput_tok_s[0])


def test_unknown_gather_model_is_refused() -> None:
    with pytest.raises(ValueError, match="gather='eager' is not one of sync, continuous, mva"):
        solve_population(4, 35.0, 3.0, 2.0, CURVE, 16, gather="eager")


def test_session_churn_adds_its_prefill_passes_to_every_round() -> None:
    """Each cycle carries N / session_rounds prefill passes (a new session's prompt gets a
    pass of its own); a round of the sync lockstep loses what each runs past the think
    time (90 - 40 ms), the verifier-bound lockstep all of it."""
    curve = BatchLatency.linear(30.0, 5.0, 2.0, 16)
    steady = solve_population(16, 40.0, 5.0, 2.0, curve, 16)
    churn = solve_population(16, 40.0, 5.0, 2.0, curve, 16, session_rounds=50.0, prefill_ms=90.0)
    ns = np.arange(1, 17, dtype=np.float64)
    assert np.allclose(churn.round_ms[0] - steady.round_ms[0], ns / 50.0 * (90.0 - 40.0))
    # verifier-bound (passes of 2, think 1 ms): every prefill pass is extra verifier work
    busy = solve_population(8, 1.0, 5.0, 2.0, curve, 2, session_rounds=4.0, prefill_ms=90.0)
    idle = solve_population(8, 1.0, 5.0, 2.0, curve, 2)
    assert busy.round_ms[0, 7] - idle.round_ms[0, 7] == pytest.approx(8 / 4.0 * 90.0)
    assert np.allclose(churn.batch, steady.batch)  # a round's pass still holds all N
    # the same through solve_fleet (one class of 8, and two classes of 4)
    one = solve_fleet(8.0, 40.0, 5.0, 2.0, curve, 16, session_rounds=50.0, prefill_ms=90.0)
    two = solve_fleet([[4.0, 4.0]], 40.0, 5.0, 2.0, curve, 16, session_rounds=50.0,
                      prefill_ms=90.0)  # fmt: skip
    assert one.round_ms[0, 0] == pytest.approx(churn.round_ms[0, 7], rel=1e-12)
    assert two.round_ms[0, 0] == pytest.approx(churn.round_ms[0, 7], rel=1e-12)
    # per scenario: no churn in the first, churn in the second
    both = solve_population(
        8, [40.0, 40.0], 5.0, 2.0, curve, 16, session_rounds=[np.inf, 50.0],
        prefill_ms=[0.0, 90.0],
    )  # fmt: skip
    assert np.allclose(both.round_ms[0], steady.round_ms[0, :8])
    assert np.allclose(both.round_ms[1], churn.round_ms[0, :8])


def test_mean_sessions_per_pass_counts_prefill_passes() -> None:
    assert mean_pass_sessions(8, 16).item() == pytest.approx(8.0)
    # one prefill pass per cycle of 8 (session_rounds 8): (8 + 1) / (1 + 1)
    assert mean_pass_sessions(8, 16, 8.0).item() == pytest.approx(4.5)
    # 20 clients over passes of 16: 2 passes of 10; churn 20/40 = 0.5 prefill per cycle
    got = mean_pass_sessions([0, 20], 16, 40.0)
    assert got[0] == 0.0 and got[1] == pytest.approx(20.5 / 2.5)
    with pytest.raises(ValueError, match="max_batch=0"):
        mean_pass_sessions(4, 0)


def test_padded_pass_is_the_mean_cost_of_b_random_rounds() -> None:
    # a true cost of F + sum over blocks of (a * widest + c * own width); the profile's
    # passes have p outputs per block of p: S(b, p) = F + b * (a + c) * p. For such a
    # cost the padded pass is exact: Monte Carlo over b independent rounds agrees.
    a_ms, c_ms, f_ms = 2.0, 5.0, 100.0
    curve = BatchLatency.linear(f_ms, a_ms + c_ms, 0.0, 16)
    weights = np.array([3.0, 0.0, 1.0, 0.0, 6.0])  # 0, 2 or 4 drafts: 1, 3 or 5 positions
    rng = np.random.default_rng(5)
    for b in (1, 2, 4, 16):
        draws = rng.choice([1, 3, 5], p=[0.3, 0.1, 0.6], size=(200_000, b))
        true_ms = f_ms + (a_ms * draws.max(axis=1, keepdims=True) + c_ms * draws).sum(axis=1)
        got = padded_pass_ms(curve, float(b), weights, c_ms / (a_ms + c_ms))
        assert got == pytest.approx(true_ms.mean(), rel=2e-3), b
    # one round: the mean over its own widths, what select charges one client
    assert padded_pass_ms(curve, 1.0, weights) == pytest.approx(
        0.3 * curve(1, 1) + 0.1 * curve(1, 3) + 0.6 * curve(1, 5)
    )
    # output_share 0 prices padding in full: a big pass costs the widest block
    assert padded_pass_ms(curve, 16.0, weights, 0.0) == pytest.approx(curve(16, 5), rel=1e-4)
    with pytest.raises(ValueError, match="output_share"):
        padded_pass_ms(curve, 4.0, weights, 1.5)
    with pytest.raises(ValueError, match="drafted_weights"):
        padded_pass_ms(curve, 4.0, [0.0, 0.0])


def test_missing_output_rows_are_priced_on_the_secant_not_the_sawtooth() -> None:
    """fleet_model12's B = 4 row: 4 positions cost less than 3 (tiling), so reading the
    curve between neighbouring widths priced a pass of 4 blocks of 5 with 4.04 output rows
    each at 105 ms; the verifier timed 119.6. The saving per missing row is a share of the
    secant from 2 positions, the shape the share is timed on."""
    row = [np.nan, 82.4, 82.0, 99.4, 96.8, 131.3]
    curve = BatchLatency(np.array([row, row]), np.array([1.0, 4.0]))
    alpha = float(anchor_weight(5.0, 4.035, 0.786))
    assert alpha == pytest.approx(0.786 * 0.965 / 3)
    assert (1 - alpha) * curve(4, 5) + alpha * curve(4, 2) == pytest.approx(118.8, abs=0.1)
    assert anchor_weight(2.0, 1.0, 0.8) == 0.0  # nothing to save below the narrowest block
    assert anchor_weight(5.0, 5.0, 0.8) == 0.0  # every row an output: the profile itself
    assert anchor_weight(5.0, 2.0, 1.0) == 1.0  # only outputs count: the narrow pass
    with pytest.raises(ValueError, match="output_share"):
        anchor_weight(5.0, 2.0, -0.1)


@settings(max_examples=60, deadline=None)
@given(
    w=st.lists(st.floats(0.0, 10.0), min_size=2, max_size=6).filter(lambda x: sum(x) > 0.1),
    share=st.floats(0.0, 1.0),
)
def test_padded_pass_lies_between_its_narrowest_and_widest_passes(
    w: list[float], share: float
) -> None:
    """For a curve increasing in positions: no cheaper than every block at the narrowest
    width drafted, no dearer than every block at the widest; and it grows with the batch
    (a bigger pass is wider, and the curve grows with sessions)."""
    curve = BatchLatency.linear(30.0, 1.5, 2.0, 16)
    weights = np.asarray(w)
    used = np.flatnonzero(weights > 0) + 1.0
    batches = np.array([1.0, 2.0, 3.5, 8.0, 16.0])
    got = padded_pass_ms(curve, batches, weights, share)
    assert np.all(got >= curve(batches, used.min()) - 1e-9)
    assert np.all(got <= curve(batches, used.max()) + 1e-9)
    assert np.all(np.diff(got) >= -1e-9)


@pytest.mark.parametrize("gather", GATHER_MODELS)
def test_solvers_with_one_width_per_class_match_positions(gather: str) -> None:
    """A model drafter's weights (all at K) give exactly the positions-only solution; an
    n-gram-like 0-or-K drafter costs more than its mean width once passes are batched."""
    curve = BatchLatency.linear(20.0, 1.0, 3.0, 8)
    at_k = np.eye(5)[4]
    plain = solve_population(8, 30.0, 5.0, 2.0, curve, 8, gather=gather)
    hot = solve_population(8, 30.0, 5.0, 2.0, curve, 8, gather=gather, drafted_weights=at_k)
    np.testing.assert_allclose(hot.round_ms, plain.round_ms)
    fleet = solve_fleet([[3.0, 5.0]], [[30.0, 40.0]], [[2.0, 4.0]], [[2.0, 3.0]], curve, 8,
                        gather=gather)  # fmt: skip
    fleet_w = solve_fleet([[3.0, 5.0]], [[30.0, 40.0]], [[2.0, 4.0]], [[2.0, 3.0]], curve, 8,
                          gather=gather, drafted_weights=[np.eye(5)[1], np.eye(5)[3]])  # fmt: skip
    if gather != "mva":  # both charged the widest class: now a pass lacks it only when
        # all its sessions are the narrow class's ((3/8)^8 of passes of 8)
        # (continuous: passes of fewer sessions, so a little more often)
        assert np.all(fleet_w.pass_ms <= fleet.pass_ms)
        np.testing.assert_allclose(fleet_w.pass_ms, fleet.pass_ms, rtol=1e-2)
    else:  # mva read the mean width of a mixed pass; the weights pad it to the widest
        assert np.all(fleet_w.pass_ms >= fleet.pass_ms - 1e-9)
    split = np.array([0.5, 0.0, 0.0, 0.0, 0.5])  # drafts 0 or 4, mean 2: 3 positions
    mean = solve_population(8, 30.0, 3.0, 2.0, curve, 8, gather=gather)
    padded = solve_population(8, 30.0, 3.0, 2.0, curve, 8, gather=gather, drafted_weights=split)
    assert padded.pass_ms[0, 0] == pytest.approx(0.5 * curve(1, 1) + 0.5 * curve(1, 5))
    assert np.all(padded.pass_ms[0, 3:] > mean.pass_ms[0, 3:])
