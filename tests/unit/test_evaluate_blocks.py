"""evaluate_grid evaluates in blocks of configurations; the block size must not change a bit."""

from __future__ import annotations

import numpy as np
import pytest

from configspec import records as R
from configspec.model import CONFIGSPEC, PAPER, ModelPreset, evaluate_grid
from configspec.model.evaluate import Bounded, GridInputs, Link


def _bounded(rng: np.random.Generator, n: int, lo: float, hi: float, nan: float = 0.0) -> Bounded:
    mean = rng.uniform(lo, hi, n)
    mean[rng.random(n) < nan] = np.nan
    return Bounded(mean, mean * rng.uniform(0.8, 1.0, n), mean * rng.uniform(1.0, 1.2, n))


def _inputs(n: int, seed: int, optional: bool) -> GridInputs:
    rng = np.random.default_rng(seed)
    mode = rng.choice([int(m) for m in R.Mode], n).astype(np.int64)
    k = np.where(mode == R.Mode.SPECULATIVE, rng.integers(1, 17, n), 0).astype(np.int64)
    return GridInputs(
        mode=mode,
        k=k,
        tokens_per_round=_bounded(rng, n, 1.0, 6.0),
        draft_ms_per_token=_bounded(rng, n, 2.0, 60.0),
        edge_ms_per_token=_bounded(rng, n, 2.0, 60.0),
        verify_ms=_bounded(rng, n, 10.0, 200.0),
        verify_one_ms=_bounded(rng, n, 10.0, 150.0),
        draft_power_w=_bounded(rng, n, 2.0, 30.0, nan=0.2),
        idle_power_w=_bounded(rng, n, 1.0, 6.0, nan=0.2),
        gpu_price=rng.random(n) < 0.5,
        price_usd_per_hour=rng.uniform(0.5, 4.0, n),
        overhead_ms_per_round=rng.uniform(0.0, 5.0, n),
        price_usd_per_mtok=rng.uniform(0.1, 1.0, n),
        bill_draft_tokens=rng.random(n) < 0.5,
        drafted=k * rng.uniform(0.5, 1.0, n) if optional else None,
        draft_catchup_ms=_bounded(rng, n, 0.0, 10.0) if optional else None,
    )


@pytest.mark.parametrize("optional", [False, True])
@pytest.mark.parametrize("preset", [CONFIGSPEC, PAPER], ids=["configspec", "paper"])
def test_block_size_changes_no_bit(optional: bool, preset: ModelPreset) -> None:
    n = 1000
    g = _inputs(n, seed=3, optional=optional)
    rng = np.random.default_rng(4)
    # a link with per-configuration arrays must be cut into the same blocks
    link = Link(rtt_ms=rng.uniform(0, 120, n), radio_energy_j_per_byte=5e-7, round_overhead_ms=3.0)
    whole = evaluate_grid(g, link, preset, price_scale=1.3, block_rows=n)
    for block in (1, 7, 256, n - 1):
        part = evaluate_grid(g, link, preset, price_scale=1.3, block_rows=block)
        assert part.keys() == whole.keys()
        for name, values in whole.items():
            assert part[name].dtype == values.dtype, name
            np.testing.assert_array_equal(part[name], values, err_msg=name)
