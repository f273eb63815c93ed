"""Breakeven acceptance and RTT agree with brute-force searches of the model."""

from __future__ import annotations

import numpy as np
import pytest
from _model_factory import alignment, alpha_entry, device, drafter, verification

from configspec import records as R
from configspec.config import NetworkSettings, PerTokenPrice
from configspec.model import CONFIGSPEC, evaluate_grid
from configspec.search import SearchSettings, build_space, link_from_network, pick
from configspec.search.breakeven import breakeven, breakeven_acceptance, breakeven_rtt

NET = NetworkSettings(rtt_ms=20.0, bytes_per_token=8, bytes_per_message=200)


def _space(alpha: float, draft_ms: float = 8.0, power_w: float = 6.0, idle_w: float = 3.0):  # type: ignore[no-untyped-def]
    devs = [device(drafters=[drafter(per_token_ms=draft_ms, power_w=power_w)], idle_w=idle_w)]
    return build_space(
        devs,
        [alignment([alpha_entry(alpha=alpha)])],
        [
            verification(
                base_ms=40.0,
                per_position_ms=1.5,
                price=PerTokenPrice(price_usd_per_million_tokens=1.0, billed="draft_tokens"),
            )
        ],
        CONFIGSPEC,
        SearchSettings(k_max=12),
    )


def _spec_pays(space, objective: str, rtt_ms: float) -> bool:  # type: ignore[no-untyped-def]
    """Brute force: evaluate the whole space and compare best K with cloud-only."""
    cols = evaluate_grid(space.inputs, link_from_network(NET, rtt_ms), CONFIGSPEC)
    vals = cols[R.OBJECTIVE_COLUMNS[objective]]
    mode = space.inputs.mode
    return bool(
        np.nanmax(vals[mode == R.Mode.SPECULATIVE]) > np.nanmax(vals[mode == R.Mode.CLOUD_ONLY])
    )


def _spec_row(sel) -> int:  # type: ignore[no-untyped-def]
    return int(np.flatnonzero(sel.table[R.MODE].to_numpy() == R.MODE_SPECULATIVE)[0])


@pytest.mark.parametrize("objective", ["goodput", "cost", "energy"])
def test_breakeven_rtt_matches_brute_force(objective: str) -> None:
    space = _space(alpha=0.6, draft_ms=12.0)
    sel = pick(space, NET, "goodput")
    rtt, above, _ = breakeven_rtt(sel, _spec_row(sel), objective, rtt_max_ms=500.0)
    grid = np.linspace(0.0, 500.0, 501)
    pays = np.array([_spec_pays(space, objective, float(r)) for r in grid])
    changes = np.flatnonzero(pays[1:] != pays[:-1])
    if changes.size == 0:
        assert rtt is None
        return
    assert rtt is not None
    i = int(changes[0])
    assert grid[i] <= rtt <= grid[i + 1]
    assert above == bool(pays[i + 1])


@pytest.mark.parametrize("objective", ["goodput", "cost", "energy"])
@pytest.mark.parametrize("draft_ms", [4.0, 25.0])
def test_breakeven_acceptance_matches_brute_force(objective: str, draft_ms: float) -> None:
    sel = pick(_space(alpha=0.5, draft_ms=draft_ms), NET, "goodput")
    alpha_star = breakeven_acceptance(sel, _spec_row(sel), objective)
    grid = np.linspace(0.0, 1.0, 201)
    pays = np.array(
        [_spec_pays(_space(alpha=float(a), draft_ms=draft_ms), objective, NET.rtt_ms) for a in grid]
    )
    if not pays.any():
        assert alpha_star is None
        return
    first = int(np.flatnonzero(pays)[0])
    assert pays[first:].all()  # monotone in α
    if first == 0:
        assert alpha_star == 0.0
    else:
        assert alpha_star is not None
        assert grid[first - 1] <= alpha_star <= grid[first] + 1e-6


def test_breakeven_report_for_the_chosen_drafter() -> None:
    sel = pick(_space(alpha=0.8), NET, "goodput")
    report = breakeven(sel)
    assert [b.objective for b in report] == ["goodput", "cost", "energy"]
    good = report[0]
    assert good.acceptance is not None and good.acceptance < good.measured_acceptance
    assert good.measured_acceptance == pytest.approx(0.8, abs=1e-6)


def test_no_speculation_wins_when_drafting_is_too_slow() -> None:
    sel = pick(_space(alpha=0.3, draft_ms=80.0), NET, "goodput")
    chosen = sel.table.iloc[sel.chosen]
    assert chosen[R.MODE] == R.MODE_CLOUD_ONLY and int(chosen[R.K]) == 0
    report = breakeven(sel)  # falls back to the best speculative configuration
    assert report[0].acceptance is None or report[0].acceptance > 0.3


def test_breakeven_survives_constraints_that_exclude_all_speculation() -> None:
    # The drafter does not fit the device: only cloud-only decoding is feasible.
    devs = [device(drafters=[drafter(memory_bytes=10_000)], memory_bytes=1_000)]
    space = build_space(devs, [alignment([alpha_entry(alpha=0.7)])], [verification()], CONFIGSPEC)
    sel = pick(space, NET, "goodput")
    assert sel.table.iloc[sel.chosen][R.MODE] == R.MODE_CLOUD_ONLY
    assert [b.objective for b in breakeven(sel)] == ["goodput", "cost", "energy"]
