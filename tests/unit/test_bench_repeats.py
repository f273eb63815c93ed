"""The benchmark's repeated-cell ratios (benchmarks/_repeats.py): held-out oracle, paired CI."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from _repeats import Cell, goodput, heldout_oracle, oracle_cells, paired_ratio


def arm(rates: dict[tuple[int, int, int], float], tokens: int = 64) -> list[Cell]:
    """Cells of one arm from its goodput (tok/s) per (repeat, phase, prompt)."""
    return [Cell(r, p, i, tokens, tokens / rate) for (r, p, i), rate in rates.items()]


def test_the_heldout_oracle_is_not_biased_up_by_noise() -> None:
    # eight static arms of the same true goodput (10 tok/s), 6 cells of noise each: the
    # in-sample best is biased upwards, the held-out one is not
    rng = np.random.default_rng(0)
    keys = [(r, 0, i) for r in range(2) for i in range(3)]
    in_sample, held_out = [], []
    for _ in range(300):
        statics = {k: arm({key: 10.0 * (1 + 0.05 * rng.standard_normal()) for key in keys})
                   for k in range(1, 9)}  # fmt: skip
        in_sample.append(max(goodput(cells) for cells in statics.values()))
        held_out.append(goodput(oracle_cells(statics, heldout_oracle(statics, 0))))
    assert np.mean(in_sample) > 10.2  # the max of eight noisy arms
    assert np.mean(held_out) == pytest.approx(10.0, abs=0.05)


def test_the_heldout_oracle_finds_a_clearly_better_k_and_never_scores_its_own_pick() -> None:
    keys = [(r, 1, i) for r in range(2) for i in range(3)]
    statics = {1: arm(dict.fromkeys(keys, 8.0)), 2: arm(dict.fromkeys(keys, 9.0))}
    statics[3] = arm({key: 12.0 if key == (0, 1, 0) else 7.0 for key in keys})  # one lucky cell
    choice = heldout_oracle(statics, 1)
    assert set(choice) == set(keys)
    # the lucky cell's own K=3 is not chosen for it: chosen on the other cells, K=2 is
    assert choice[(0, 1, 0)] == 2
    assert all(k == 2 for k in choice.values())
    # other phases' cells are not used
    assert heldout_oracle(statics, 0) == {}


def test_paired_ratio_ci_holds_the_point_and_narrows_with_cells() -> None:
    rng = np.random.default_rng(1)

    def pair(n_repeats: int) -> dict[str, object]:
        keys = [(r, 0, i) for r in range(n_repeats) for i in range(3)]
        load = {key: 1 + 0.2 * rng.standard_normal() for key in keys}  # shared by both arms
        a = arm({key: 10.0 * load[key] * (1 + 0.02 * rng.standard_normal()) for key in keys})
        b = arm({key: 9.0 * load[key] * (1 + 0.02 * rng.standard_normal()) for key in keys})
        return paired_ratio(a, b)

    small, large = pair(2), pair(12)
    for out in (small, large):
        assert out["ci_low"] <= out["ratio"] <= out["ci_high"]  # type: ignore[operator]
        assert out["ratio"] == pytest.approx(10 / 9, rel=0.05)
    assert len(small["per_repeat"]) == 2  # type: ignore[arg-type]
    assert small["median_of_repeats"] == pytest.approx(np.median(small["per_repeat"]))  # type: ignore[arg-type]

    def width(out: dict[str, object]) -> float:
        return out["ci_high"] - out["ci_low"]  # type: ignore[operator,no-any-return]

    assert np.mean([width(pair(12)) for _ in range(10)]) < np.mean(
        [width(pair(2)) for _ in range(10)]
    )
    with pytest.raises(ValueError, match="no paired cells"):
        paired_ratio(arm({(0, 0, 0): 1.0}), arm({(1, 0, 0): 1.0}))


def test_arm_ratios_pair_two_adaptive_arms_per_phase_whole_and_control() -> None:
    from _adaptive_report import arm_ratios

    def cells(speed: list[float]) -> list[Cell]:
        return [Cell(r, p, i, 64, 64 / speed[p]) for r in range(2) for p in range(3)
                for i in range(3)]  # fmt: skip

    shape, line = cells([12.0, 5.0, 10.0]), cells([10.0, 5.0, 10.0])
    out = arm_ratios(shape, line, cells([9.0] * 3), cells([10.0] * 3))
    phases = out["phases"]
    assert [round(x["ratio"], 6) for x in phases] == [1.2, 1.0, 1.0]  # type: ignore[index]
    assert phases[0]["cells"] == 6  # type: ignore[index]
    assert out["control"]["ratio"] == pytest.approx(0.9)  # type: ignore[index]
    whole = out["whole"]["ratio"]  # type: ignore[index]
    assert 1.0 < whole < 1.2
