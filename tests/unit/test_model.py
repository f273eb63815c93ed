"""The pure model: E(K), timing, cost, energy, bounds, presets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from configspec import records as R
from configspec.errors import InvalidInput
from configspec.model import (
    tokens_per_round_from_alpha,
    tokens_per_round_from_measured,
    tokens_per_round_from_positions,
)
from configspec.model.acceptance import alpha_from_tokens_per_round
from configspec.model.latency import interpolate_separable, transfer_ms
from configspec.model.presets import CONFIGSPEC


def test_alpha_closed_form_matches_sum() -> None:
    for alpha in (0.0, 0.3, 0.8, 0.999):
        for k in range(0, 12):
            expected = sum(alpha**i for i in range(k + 1))
            assert tokens_per_round_from_alpha(alpha, k) == pytest.approx(expected, rel=1e-12)


def test_alpha_near_one_has_no_cancellation() -> None:
    ks = np.arange(1, 17)
    assert np.allclose(tokens_per_round_from_alpha(1.0, ks), ks + 1)
    near = tokens_per_round_from_alpha(1 - 1e-12, ks)
    assert np.allclose(near, ks + 1, rtol=1e-9)


def test_positions_equal_alpha_when_constant() -> None:
    e = tokens_per_round_from_positions(np.full(10, 0.6))
    assert np.allclose(e, tokens_per_round_from_alpha(0.6, np.arange(11)))
    # Conditional acceptance: cumulative products, not powers of the first rate.
    e2 = tokens_per_round_from_positions([0.9, 0.5, 0.0, 1.0])
    assert np.allclose(e2, [1, 1.9, 2.35, 2.35, 2.35])


def test_measured_prefers_direct_tokens_per_round() -> None:
    out = tokens_per_round_from_measured([2, 4], [0.5, 0.25], [np.nan, 3.5])
    assert np.allclose(out, [2.0, 3.5])


@pytest.mark.parametrize("bad", [-0.1, 1.2, float("nan")])
def test_acceptance_outside_unit_interval_is_one_clear_error(bad: float) -> None:
    with pytest.raises(InvalidInput, match=r"outside \[0, 1\]") as info:
        tokens_per_round_from_alpha(bad, 3)
    assert "\n" not in str(info.value)
    with pytest.raises(InvalidInput):
        tokens_per_round_from_positions([0.5, bad])


@settings(max_examples=200, deadline=None)
@given(
    a1=st.floats(0.0, 1.0),
    a2=st.floats(0.0, 1.0),
    k1=st.integers(0, 64),
    k2=st.integers(0, 64),
)
def test_e_is_monotone_in_alpha_and_k(a1: float, a2: float, k1: int, k2: int) -> None:
    lo_a, hi_a = sorted((a1, a2))
    lo_k, hi_k = sorted((k1, k2))
    e = tokens_per_round_from_alpha
    assert e(lo_a, lo_k) <= e(hi_a, lo_k) * (1 + 1e-12)
    assert e(lo_a, lo_k) <= e(lo_a, hi_k) * (1 + 1e-12)
    assert 1.0 - 1e-12 <= e(lo_a, lo_k) <= lo_k + 1 + 1e-9  # (1 - a^1) / (1 - a) rounds


def test_inverse_alpha_round_trips() -> None:
    ks = np.array([1, 4, 8, 16])
    alphas = np.array([0.1, 0.5, 0.8, 0.95])
    back = alpha_from_tokens_per_round(tokens_per_round_from_alpha(alphas, ks), ks)
    assert np.allclose(back, alphas, atol=1e-9)


def test_interpolation_over_grid_and_edges() -> None:
    # latency = 10 + 0.01 * ctx + 2 * positions, on a grid.
    pos = np.array([1, 5, 9] * 2)
    ctx = np.array([0, 0, 0, 1000, 1000, 1000])
    vals = 10 + 0.01 * ctx + 2 * pos
    q = np.array([0.0, 1.0, 3.0, 9.0, 10.0])
    out = interpolate_separable([ctx, pos], vals, [500], q, "nan")
    assert np.isnan(out[0]) and np.isnan(out[-1])  # outside the profiled positions
    assert np.allclose(out[1:4], 15 + 2 * q[1:4])
    clamped = interpolate_separable([ctx, pos], vals, [5000], q, "clamp")
    assert np.allclose(clamped, 20 + 2 * np.clip(q, 1, 9))  # context clamped at 1000


def test_transfer_time_units() -> None:
    # 40 ms RTT, 1 MB at 8 Mbps = 1 s.
    assert transfer_ms(40.0, 1e6, 8.0) == pytest.approx(20.0 + 1000.0)


def test_every_objective_column_is_evaluated_with_ordered_bounds() -> None:
    """The objective, bound and Pareto columns the search reads all exist in an evaluated
    space, and every objective's value lies within its bounds."""
    from configspec.search import OBJECTIVES, evaluate_space, link_from_network, load_space
    from configspec.store import ProfileStore

    examples = Path(__file__).resolve().parents[2] / "examples" / "profiles"
    space, network = load_space(ProfileStore(examples), CONFIGSPEC)
    table = evaluate_space(space, link_from_network(network), CONFIGSPEC)
    assert set(R.OBJECTIVE_COLUMNS) | {"pareto"} == set(OBJECTIVES)
    for name, col in R.OBJECTIVE_COLUMNS.items():
        lo, hi = R.OBJECTIVE_BOUNDS[name]
        v, low, high = (table[c].to_numpy(dtype=float) for c in (col, lo, hi))
        ok = np.isfinite(v) & np.isfinite(low) & np.isfinite(high)
        assert ok.any(), name
        assert np.all(low[ok] <= v[ok] * (1 + 1e-9)) and np.all(v[ok] <= high[ok] * (1 + 1e-9))
    assert set(R.PARETO_COLUMNS) <= set(table.columns)
