"""Search: closed-form checks, properties, Pareto, constraints, presets, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from _model_factory import (
    NO_NETWORK,
    alignment,
    alpha_entry,
    by_k_entry,
    device,
    drafter,
    verification,
)
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from configspec import records as R
from configspec.config import Estimate, NetworkSettings, PerTokenPrice
from configspec.errors import InvalidInput, NoFeasibleConfig, ProfileMissing
from configspec.model import CONFIGSPEC, PAPER
from configspec.search import (
    Constraints,
    SearchSettings,
    build_space,
    crossovers,
    pareto_mask,
    parse_constraints,
    pick,
)
from configspec.search.sensitivity import optimum_label


def _spec(table, mask=None):  # type: ignore[no-untyped-def]
    return table[table[R.MODE] == R.MODE_SPECULATIVE]


def _closed_form_space(alpha: float, c: float, k_max: int = 16, verify_ms: float = 50.0):  # type: ignore[no-untyped-def]
    devs = [device(drafters=[drafter(per_token_ms=c * verify_ms)])]
    aligns = [alignment([alpha_entry(alpha=alpha)])]
    verifs = [verification(base_ms=verify_ms)]
    return build_space(devs, aligns, verifs, CONFIGSPEC, SearchSettings(k_max=k_max))


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.6, 0.8, 0.95, 1.0])
@pytest.mark.parametrize("c", [0.02, 0.1, 0.4])
def test_speedup_matches_closed_form_and_optimal_k_brute_force(alpha: float, c: float) -> None:
    space = _closed_form_space(alpha, c)
    sel = pick(space, NO_NETWORK, "goodput")
    spec = _spec(sel.table)
    ks = spec[R.K].to_numpy()
    if alpha < 1:
        formula = (1 - alpha ** (ks + 1)) / ((1 - alpha) * (ks * c + 1))
    else:
        formula = (ks + 1) / (ks * c + 1)
    assert np.allclose(spec[R.SPEEDUP_VS_CLOUD_AR].to_numpy(), formula, rtol=1e-12)

    # Brute force over K of the closed form, independent of the search code.
    def speedup(k: int) -> float:
        e = (k + 1) if alpha == 1 else (1 - alpha ** (k + 1)) / (1 - alpha)
        return e / (k * c + 1)

    brute = max(range(1, 17), key=speedup)
    chosen = sel.table.iloc[sel.chosen]
    if speedup(brute) <= 1.0:  # speculation never pays: cloud-only (K=0) must win
        assert chosen[R.MODE] == R.MODE_CLOUD_ONLY
    else:
        assert chosen[R.MODE] == R.MODE_SPECULATIVE
        assert int(chosen[R.K]) == brute


@settings(max_examples=60, deadline=None)
@given(
    alpha=st.floats(0.05, 0.99),
    slow_ms=st.floats(0.5, 40.0),
    factor=st.floats(0.05, 0.99),
    verify_base_ms=st.floats(5.0, 200.0),
    per_pos_ms=st.floats(0.0, 5.0),
    rtt_ms=st.floats(0.0, 300.0),
)
def test_faster_drafting_never_lowers_goodput_optimal_k(
    alpha: float,
    slow_ms: float,
    factor: float,
    verify_base_ms: float,
    per_pos_ms: float,
    rtt_ms: float,
) -> None:
    def best_k(ms: float) -> tuple[int, float]:
        devs = [device(drafters=[drafter(per_token_ms=ms)])]
        space = build_space(
            devs,
            [alignment([alpha_entry(alpha=alpha)])],
            [verification(base_ms=verify_base_ms, per_position_ms=per_pos_ms)],
            CONFIGSPEC,
            SearchSettings(k_max=16),
        )
        table = pick(space, NetworkSettings(rtt_ms=rtt_ms), "goodput").table
        spec = _spec(table)
        g = spec[R.GOODPUT_TOK_S].to_numpy()
        order = np.sort(g)
        gap = (order[-1] - order[-2]) / order[-1] if g.size > 1 else 1.0
        return int(spec[R.K].to_numpy()[np.argmax(g)]), gap

    k_slow, gap_slow = best_k(slow_ms)
    k_fast, gap_fast = best_k(slow_ms * factor)
    assume(min(gap_slow, gap_fast) > 1e-9)  # exact ties make "the" optimal K ambiguous
    assert k_fast >= k_slow


def _dominates(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.all(a >= b) and np.any(a > b))


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([0.0, 1.0, 2.0, 3.0, np.inf, np.nan]),
            st.integers(0, 4).map(float),
            st.floats(-5, 5, allow_nan=False),
        ),
        min_size=0,
        max_size=40,
    )
)
def test_pareto_front_is_exactly_the_non_dominated_set(
    rows: list[tuple[float, float, float]],
) -> None:
    pts = np.array(rows, dtype=float).reshape(-1, 3)
    mask = pareto_mask(pts)
    clean = np.where(np.isnan(pts), -np.inf, pts)
    for i in range(len(pts)):
        dominated = any(_dominates(clean[j], clean[i]) for j in range(len(pts)) if j != i)
        assert mask[i] == (not dominated)


def test_pareto_scales_to_many_points() -> None:
    rng = np.random.default_rng(0)
    pts = rng.random((200_000, 3))
    mask = pareto_mask(pts)
    front = pts[mask]
    # Spot check both directions against brute force on a sample.
    for i in rng.choice(len(pts), 200, replace=False):
        dominated = bool(np.any(np.all(front >= pts[i], axis=1) & np.any(front > pts[i], axis=1)))
        assert mask[i] == (not dominated)


def test_bounds_bracket_the_mean() -> None:
    devs = [device(drafters=[drafter(per_token_ms=10, ci=0.2)])]
    space = build_space(
        devs, [alignment([alpha_entry(alpha=0.7, half=0.1)])], [verification()], CONFIGSPEC
    )
    t = pick(space, NetworkSettings(), "goodput").table
    for mean, (lo, hi) in zip(
        R.OBJECTIVE_COLUMNS.values(), R.OBJECTIVE_BOUNDS.values(), strict=True
    ):
        ok = np.isfinite(t[mean])
        assert (t[lo][ok] <= t[mean][ok] * (1 + 1e-12)).all()
        assert (t[hi][ok] >= t[mean][ok] * (1 - 1e-12)).all()
    spec = _spec(t)
    assert (spec[R.GOODPUT_TOK_S_LOW] < spec[R.GOODPUT_TOK_S]).all()


def test_paper_preset_uses_the_papers_definitions() -> None:
    tps, power_w, price = 20.0, 7.5, 0.90
    fractions = {k: 0.9 - 0.05 * k for k in range(2, 11)}
    devs = [device(drafters=[drafter(name="llama-1b", per_token_ms=1000 / tps, power_w=power_w)])]
    aligns = [alignment([by_k_entry("llama-1b", fractions)])]
    verifs = [verification(price=PerTokenPrice(price_usd_per_million_tokens=price))]
    space = build_space(devs, aligns, verifs, PAPER)
    t = _spec(pick(space, NetworkSettings(rtt_ms=80), "goodput", PAPER).table)
    ks = t[R.K].to_numpy()
    assert list(ks) == list(range(2, 11))
    e = ks * np.array([fractions[k] for k in ks]) + 1
    assert np.allclose(t[R.TOKENS_PER_ROUND], e)
    assert np.allclose(t[R.GOODPUT_TOK_S], e / (ks / tps + 0.5))
    assert np.allclose(t[R.TOKENS_PER_USD], e / (ks * price / 1e6))
    assert np.allclose(t[R.ENERGY_J_PER_TOKEN], power_w * (ks / tps) / e)


def test_drafter_and_target_pair_only_within_family() -> None:
    devs = [device(drafters=[drafter("a", family="f1"), drafter("b", family="f2")])]
    aligns = [alignment([alpha_entry("a"), alpha_entry("b")], target="t1", family="f1")]
    space = build_space(devs, aligns, [verification("t1", family="f1")], CONFIGSPEC)
    t = _spec(pick(space, NO_NETWORK).table)
    assert set(t[R.DRAFTER].astype(str)) == {"a"}


def test_quantised_drafter_matches_acceptance_measured_per_model() -> None:
    devs = [device(drafters=[drafter("m-Q4_0", quant="Q4_0"), drafter("m-Q8_0", quant="Q8_0")])]
    aligns = [alignment([alpha_entry("m", 0.6), alpha_entry("m-Q8_0", 0.7)])]
    space = build_space(devs, aligns, [verification()], CONFIGSPEC, SearchSettings(k_max=1))
    t = _spec(pick(space, NO_NETWORK).table).set_index(R.DRAFTER)
    assert t.loc["m-Q4_0", R.TOKENS_PER_ROUND] == pytest.approx(1.6)
    assert t.loc["m-Q8_0", R.TOKENS_PER_ROUND] == pytest.approx(1.7)  # exact id wins


def test_no_power_data_is_nan_not_a_crash() -> None:
    devs = [device(drafters=[drafter(power_w=None)], idle_w=None)]
    space = build_space(devs, [alignment([alpha_entry()])], [verification()], CONFIGSPEC)
    sel = pick(space, NO_NETWORK, "goodput")
    assert sel.best["energy"] is None
    assert (sel.table[R.ENERGY_NOTE].astype(str) == "no power data").all()
    assert any("no power data" in w for w in sel.warnings)
    with pytest.raises(ProfileMissing, match="draft_power_w"):
        pick(space, NO_NETWORK, "energy")


def test_missing_idle_power_charges_drafting_only_and_says_so() -> None:
    devs = [device(drafters=[drafter(per_token_ms=10, power_w=5)], idle_w=None)]
    space = build_space(
        devs, [alignment([alpha_entry()])], [verification()], CONFIGSPEC, SearchSettings(k_max=2)
    )
    sel = pick(space, NetworkSettings(rtt_ms=100), "energy")
    spec = _spec(sel.table)
    assert (spec[R.ENERGY_NOTE].astype(str) == "drafting only (no idle power)").all()
    e = spec[R.TOKENS_PER_ROUND].to_numpy()
    assert np.allclose(spec[R.ENERGY_J_PER_TOKEN], 5 * spec[R.K] * 0.010 / e)
    assert any("drafting only" in w for w in sel.warnings)


def test_constraints_and_empty_space_name_the_constraint() -> None:
    devs = [device(drafters=[drafter(memory_bytes=100)], memory_bytes=1000)]
    space = build_space(devs, [alignment([alpha_entry()])], [verification()], CONFIGSPEC)
    with pytest.raises(NoFeasibleConfig, match=r"min_goodput_tok_s=1e\+04 .*best feasible is"):
        pick(space, NO_NETWORK, constraints=parse_constraints(["min_goodput_tok_s=10000"]))
    sel = pick(space, NO_NETWORK, constraints=parse_constraints(["min_goodput_tok_s=25"]))
    assert (sel.table[R.GOODPUT_TOK_S][sel.feasible] >= 25).all()
    big = [device(drafters=[drafter(memory_bytes=2000)], memory_bytes=1000)]
    space = build_space(big, [alignment([alpha_entry()])], [verification()], CONFIGSPEC)
    sel = pick(space, NO_NETWORK)  # cloud-only still fits: no drafter on the device
    assert sel.table.iloc[sel.chosen][R.MODE] == R.MODE_CLOUD_ONLY
    with pytest.raises(InvalidInput, match="not KEY=VALUE"):
        parse_constraints(["fastest"])
    with pytest.raises(InvalidInput, match="not a number"):
        parse_constraints(["max_cost_usd_per_mtok=cheap"])


def test_k_beyond_profiled_range_is_a_clear_error() -> None:
    aligns = [alignment([by_k_entry("d", {k: 0.5 for k in range(1, 9)})])]
    with pytest.raises(InvalidInput, match=r"K=12 is beyond the profiled range.*--k-max 8"):
        build_space([device()], aligns, [verification()], CONFIGSPEC, SearchSettings(k_max=12))
    # Without an explicit K_max the space is clipped to the profiled range.
    space = build_space([device()], aligns, [verification()], CONFIGSPEC)
    assert int(space.inputs.k.max()) == 8
    # An explicit K_max that only some pairs reach: evaluated, with a warning.
    two = [alignment([by_k_entry("d", {k: 0.5 for k in range(1, 9)}), alpha_entry("e")])]
    devs = [device(drafters=[drafter("d"), drafter("e")])]
    space = build_space(devs, two, [verification()], CONFIGSPEC, SearchSettings(k_max=12))
    assert int(space.inputs.k.max()) == 12
    assert any("d → t reaches K=8" in w for w in space.warnings)


def test_drafter_without_device_profile_is_a_clear_error() -> None:
    with pytest.raises(ProfileMissing, match=r"drafter 'ghost' has no device profile"):
        build_space(
            [device()],
            [alignment([alpha_entry()])],
            [verification()],
            CONFIGSPEC,
            SearchSettings(drafters=("ghost",)),
        )
    aligns = [alignment([alpha_entry(), alpha_entry("ghost")])]
    space = build_space([device()], aligns, [verification()], CONFIGSPEC)
    assert any("'ghost'" in w and "no device profile" in w for w in space.warnings)


def test_paper_preset_refuses_gpu_time_price() -> None:
    aligns = [alignment([by_k_entry("d", {2: 0.5})])]
    with pytest.raises(InvalidInput, match="per_token price"):
        build_space([device()], aligns, [verification()], PAPER)


def test_rtt_crossover_is_where_the_optimum_changes() -> None:
    devs = [device(drafters=[drafter(per_token_ms=5)])]
    space = build_space(
        devs, [alignment([alpha_entry(alpha=0.8)])], [verification(base_ms=30)], CONFIGSPEC
    )
    net = NetworkSettings(rtt_ms=0, bytes_per_token=0, bytes_per_message=0)
    found = crossovers(space, net, CONFIGSPEC, Constraints(), "goodput", "rtt_ms", 0, 2000)
    assert found, "larger RTT must favour longer drafts"
    for x in found:
        below = optimum_label(space, net, CONFIGSPEC, Constraints(), "goodput", rtt_ms=x.at * 0.99)
        above = optimum_label(space, net, CONFIGSPEC, Constraints(), "goodput", rtt_ms=x.at * 1.01)
        assert below == x.before or above == x.after
    ks = [int(x.after.rsplit("K=", 1)[1]) for x in found]
    assert ks == sorted(ks)


def test_drafter_that_proposes_fewer_than_k_is_charged_for_what_it_drafts() -> None:
    """An n-gram drafter at K=4 that drafts 1.5 tokens per round on average: drafting,
    verification and E(K) follow the profile. Drafted is measured at K = 4 only, which
    does not pin down how the widths spread, so verification is interpolated between 2
    and 3 positions (the time at the mean width)."""
    from configspec.config import AcceptanceAtK, AlignmentEntry

    entry = AlignmentEntry(
        drafter="ng",
        by_k=[
            AcceptanceAtK(
                k=4,
                accepted_fraction=Estimate(mean=0.2),
                tokens_per_round=Estimate(mean=1.8),
                drafted_per_round=Estimate(mean=1.5),
            )
        ],
    )
    devs = [device(drafters=[drafter("ng", per_token_ms=2.0)])]
    verifs = [verification(base_ms=10.0, per_position_ms=4.0)]  # 10 + 4 p ms
    space = build_space(devs, [alignment([entry])], verifs, CONFIGSPEC, SearchSettings(k_max=4))
    row = _spec(pick(space, NO_NETWORK).table).set_index(R.K).loc[4]
    assert row[R.DRAFT_MS] == pytest.approx(1.5 * 2.0)
    assert row[R.VERIFY_MS] == pytest.approx(10.0 + 4.0 * 2.5)  # 1.5 drafts + 1 position
    assert row[R.TOKENS_PER_ROUND] == pytest.approx(1.8)
    assert row[R.GOODPUT_TOK_S] == pytest.approx(1.8e3 / (3.0 + 20.0))


def test_an_ngram_drafter_is_charged_verification_over_the_widths_it_drafts() -> None:
    """Drafted measured at every K: verification is the mean over the drafted-length
    distribution those means imply, not the time at the mean width. Here the rounds draft
    0 (40%) or K (60%), and verifying costs 10 ms up to 2 positions, 10 + 20·(p − 2) above."""
    from configspec.config import AcceptanceAtK, AlignmentEntry, VerifyLatencyPoint

    entry = AlignmentEntry(
        drafter="ng",
        by_k=[
            AcceptanceAtK(
                k=k,
                accepted_fraction=Estimate(mean=0.5),
                tokens_per_round=Estimate(mean=1.0 + 0.3 * k),
                drafted_per_round=Estimate(mean=0.6 * k),
            )
            for k in range(1, 5)
        ],
    )
    kinked = verification().model_copy(
        update={
            "latency": [
                VerifyLatencyPoint(
                    positions=p,
                    context_tokens=0,
                    latency_ms=Estimate(mean=10.0 + 20 * max(0, p - 2)),
                )
                for p in range(1, 34)
            ]
        }
    )
    devs = [device(drafters=[drafter("ng", per_token_ms=2.0)])]
    space = build_space(devs, [alignment([entry])], [kinked], CONFIGSPEC, SearchSettings(k_max=4))
    table = _spec(pick(space, NO_NETWORK).table).set_index(R.K)
    for k in range(1, 5):
        expected = 0.4 * 10.0 + 0.6 * (10.0 + 20 * max(0, k - 1))  # 1 or k + 1 positions
        assert table.loc[k, R.VERIFY_MS] == pytest.approx(expected)
        assert table.loc[k, R.DRAFT_MS] == pytest.approx(0.6 * k * 2.0)
    # at the mean width (2.4 drafted, 3.4 positions at K = 4) it would have been 38 ms
    assert table.loc[4, R.VERIFY_MS] == pytest.approx(46.0)


def test_catchup_is_charged_with_the_probability_that_every_draft_is_accepted() -> None:
    """E(K) - E(K-1) = a_1..a_K is the chance the next round starts with two new tokens."""
    base = drafter("d", per_token_ms=10.0)
    slow = base.model_copy(update={"catchup_ms": Estimate(mean=8.0)})
    aligns = [alignment([alpha_entry("d", 0.5)])]
    rows = []
    for d in (base, slow):
        space = build_space(
            [device(drafters=[d])], aligns, [verification()], CONFIGSPEC, SearchSettings(k_max=2)
        )
        rows.append(_spec(pick(space, NO_NETWORK).table).set_index(R.K))
    for k, p_all in ((1, 0.5), (2, 0.25)):
        extra = rows[1].loc[k, R.DRAFT_MS] - rows[0].loc[k, R.DRAFT_MS]
        assert extra == pytest.approx(8.0 * p_all)
