"""Sensitivity: where does the optimum change as the round-trip time or the price moves?

Each probe re-evaluates the whole (vectorised) space. A coarse log-spaced sweep finds the
intervals in which the optimum changes; bisection then narrows each change to a relative
tolerance, giving the crossover point ("at RTT ≥ 183 ms, K=3 beats K=5").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from configspec import records as R
from configspec.config import NetworkSettings
from configspec.errors import InvalidInput, NoFeasibleConfig
from configspec.model.presets import ModelPreset
from configspec.search.evaluate import evaluate_space, link_from_network
from configspec.search.select import Constraints, best_row, feasible_mask
from configspec.search.space import Space

PARAMETERS = ("rtt_ms", "price_scale")


@dataclass(frozen=True)
class Crossover:
    """The optimum for ``objective`` changes from ``before`` to ``after`` at ``at``
    (``parameter`` in ms for ``rtt_ms``, a multiplier of every cloud price for
    ``price_scale``)."""

    parameter: str
    objective: str
    at: float
    before: str
    after: str


def config_label(table: pd.DataFrame, row: int) -> str:
    """Short human-readable name of the configuration in positional row ``row``."""
    r = table.iloc[row]
    mode = r[R.MODE]
    if mode == R.MODE_CLOUD_ONLY:
        return f"cloud-only {r[R.TARGET]} (no speculation) from {r[R.DEVICE]}"
    if mode == R.MODE_EDGE_ONLY:
        return f"edge-only {r[R.DRAFTER]} on {r[R.DEVICE]} (no speculation)"
    return f"{r[R.DRAFTER]} on {r[R.DEVICE]} → {r[R.TARGET]}, K={int(r[R.K])}"


def optimum_label(
    space: Space,
    network: NetworkSettings,
    preset: ModelPreset,
    constraints: Constraints,
    objective: str,
    rtt_ms: float | None = None,
    price_scale: float = 1.0,
) -> str | None:
    """Label of the optimum for ``objective`` at these settings; None when infeasible."""
    table = evaluate_space(space, link_from_network(network, rtt_ms), preset, price_scale)
    try:
        mask = feasible_mask(table, constraints)
    except NoFeasibleConfig:
        return None
    row = best_row(table, R.OBJECTIVE_COLUMNS[objective], mask)
    return None if row is None else config_label(table, row)


def crossovers(
    space: Space,
    network: NetworkSettings,
    preset: ModelPreset,
    constraints: Constraints,
    objective: str,
    parameter: str,
    low: float,
    high: float,
    points: int = 33,
    rel_tol: float = 1e-3,
) -> list[Crossover]:
    """Every change of the optimum for ``objective`` as ``parameter`` goes ``low``→``high``.

    The sweep is log-spaced (``low`` may be 0 for RTT: the grid then starts at 0).
    Changes narrower than one sweep step may be missed; raise ``points`` to catch them.
    """
    if parameter not in PARAMETERS:
        raise InvalidInput(f"sensitivity parameter {parameter!r} is unknown; use {PARAMETERS}")
    if objective not in R.OBJECTIVE_COLUMNS:
        raise InvalidInput(
            f"sensitivity needs one objective (goodput|cost|energy), not {objective!r}"
        )
    if not 0 <= low < high:
        raise InvalidInput(f"sweep range {low}..{high} must satisfy 0 ≤ low < high")

    def at(x: float) -> str | None:
        if parameter == "rtt_ms":
            return optimum_label(space, network, preset, constraints, objective, rtt_ms=x)
        return optimum_label(space, network, preset, constraints, objective, price_scale=x)

    start = max(low, high * 1e-4) if low == 0 else low
    grid = np.geomspace(start, high, points)
    if low == 0:
        grid = np.concatenate([[0.0], grid])
    labels = [at(float(x)) for x in grid]
    found: list[Crossover] = []
    for a, b, la, lb in zip(grid[:-1], grid[1:], labels[:-1], labels[1:], strict=True):
        lo, l_lo = float(a), la
        for _ in range(16):  # several changes may fall inside one sweep step
            if l_lo == lb:
                break
            hi = float(b)
            while hi - lo > rel_tol * max(hi, 1e-9):
                mid = 0.5 * (lo + hi)
                if at(mid) == l_lo:
                    lo = mid
                else:
                    hi = mid
            l_hi = at(hi)
            found.append(
                Crossover(
                    parameter, objective, hi, str(l_lo or "infeasible"), str(l_hi or "infeasible")
                )
            )
            lo, l_lo = hi, l_hi
    return found
