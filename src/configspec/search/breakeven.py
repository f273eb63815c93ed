"""Breakeven: at what acceptance rate and round-trip time does speculation stop paying?

For one drafter/device/target pair, "speculation pays" for an objective when the best K
(over the pair's profiled range) beats cloud-only autoregressive decoding from the same
device to the same target. Two questions, per objective:

* **acceptance**: at the current link, the single acceptance rate α* at which the best K
  ties with cloud-only (E(K) from the closed form (1 − α^{K+1}) / (1 − α); every objective
  rises with α, so speculation pays exactly when α > α*);
* **RTT**: with the pair's measured acceptance, the round-trip time at which the winner
  changes, and on which side speculation pays.

Both are found on a vectorised grid (pair rows × grid values evaluated at once) and then
narrowed by bisection.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from configspec import records as R
from configspec.errors import InvalidInput
from configspec.model.acceptance import alpha_from_tokens_per_round, tokens_per_round_from_alpha
from configspec.model.evaluate import Bounded, GridInputs, Link, evaluate_grid
from configspec.model.presets import ModelPreset
from configspec.search.select import Selection
from configspec.search.sensitivity import config_label

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class Breakeven:
    """Where speculation with one drafter stops paying for one objective.

    ``acceptance``: α*, speculation pays for α above it (None: never pays, even at α = 1;
    0.0: pays at any α). ``measured_acceptance``: the single α equivalent to the pair's
    modelled E(K) at its best K. ``rtt_ms``: the RTT where the winner changes (None: no
    change within 0..``rtt_max_ms``), ``pays_above_rtt``: True if speculation pays above
    it, False if below; ``rtt_note`` says it in words.
    """

    objective: str
    configuration: str
    acceptance: float | None
    measured_acceptance: float
    rtt_ms: float | None
    pays_above_rtt: bool | None
    rtt_note: str
    rtt_max_ms: float


def subset_inputs(g: GridInputs, idx: NDArray[np.int64]) -> GridInputs:
    """The rows ``idx`` of ``g`` (every per-configuration array indexed)."""
    changes: dict[str, Any] = {}
    for f in fields(g):
        value = getattr(g, f.name)
        if isinstance(value, Bounded):
            changes[f.name] = Bounded(value.mean[idx], value.low[idx], value.high[idx])
        else:
            changes[f.name] = value[idx]
    return replace(g, **changes)


def _pair_rows(sel: Selection, row: int) -> tuple[NDArray[np.int64], int]:
    s = sel.space
    spec = np.flatnonzero(
        (s.inputs.mode == R.Mode.SPECULATIVE)
        & (s.device_code == s.device_code[row])
        & (s.drafter_code == s.drafter_code[row])
        & (s.target_code == s.target_code[row])
    )
    cloud = np.flatnonzero(
        (s.inputs.mode == R.Mode.CLOUD_ONLY)
        & (s.device_code == s.device_code[row])
        & (s.target_code == s.target_code[row])
    )
    return spec.astype(np.int64), int(cloud[0])


def _margin(
    g: GridInputs, n_spec: int, reps: int, link: Link, preset: ModelPreset, column: str
) -> FloatArray:
    """Best speculative value minus cloud-only value per repetition (rows are laid out as
    ``reps`` blocks of ``n_spec`` speculative rows plus one cloud-only row)."""
    vals = np.asarray(evaluate_grid(g, link, preset)[column], dtype=np.float64)
    vals = vals.reshape(reps, n_spec + 1)
    with np.errstate(invalid="ignore"):
        return np.asarray(np.nanmax(vals[:, :n_spec], axis=1) - vals[:, n_spec])


def _tiled(sel: Selection, rows: NDArray[np.int64], reps: int) -> GridInputs:
    return subset_inputs(sel.space.inputs, np.tile(rows, reps))


def _link_with_rtt(link: Link, rtt: FloatArray) -> Link:
    return replace(link, rtt_ms=rtt)


def breakeven_acceptance(
    sel: Selection, row: int, objective: str, grid_points: int = 101, tol: float = 1e-6
) -> float | None:
    """α* for the pair of speculative row ``row`` (see :class:`Breakeven`)."""
    spec, cloud = _pair_rows(sel, row)
    rows = np.append(spec, cloud)
    column = R.OBJECTIVE_COLUMNS[objective]
    k = sel.space.inputs.k[spec].astype(np.float64)

    def margins(alphas: FloatArray) -> FloatArray:
        g = _tiled(sel, rows, alphas.size)
        e = tokens_per_round_from_alpha(alphas[:, None], k[None, :])
        e = np.concatenate([e, np.ones((alphas.size, 1))], axis=1).ravel()
        g = replace(g, tokens_per_round=Bounded.exact(e))
        return _margin(g, spec.size, alphas.size, sel.link, sel.preset, column)

    grid = np.linspace(0.0, 1.0, grid_points)
    m = margins(grid)
    if np.all(np.isnan(m)) or not m[-1] > 0:
        return None
    if m[0] > 0:
        return 0.0
    i = int(np.flatnonzero(m > 0)[0])
    lo, hi = float(grid[i - 1]), float(grid[i])
    while hi - lo > tol:
        mid = 0.5 * (lo + hi)
        if margins(np.array([mid]))[0] > 0:
            hi = mid
        else:
            lo = mid
    return hi


def breakeven_rtt(
    sel: Selection,
    row: int,
    objective: str,
    rtt_max_ms: float = 2000.0,
    grid_points: int = 400,
    rel_tol: float = 1e-6,
) -> tuple[float | None, bool | None, str]:
    """(RTT where the winner changes, speculation pays above it?, note) for row's pair."""
    spec, cloud = _pair_rows(sel, row)
    rows = np.append(spec, cloud)
    column = R.OBJECTIVE_COLUMNS[objective]

    def margins(rtts: FloatArray) -> FloatArray:
        g = _tiled(sel, rows, rtts.size)
        link = _link_with_rtt(sel.link, np.repeat(rtts, rows.size))
        return _margin(g, spec.size, rtts.size, link, sel.preset, column)

    if not sel.preset.include_network:
        return None, None, f"the {sel.preset.name!r} model has no network term"
    grid = np.concatenate([[0.0], np.geomspace(0.01, rtt_max_ms, grid_points)])
    m = margins(grid)
    if np.all(np.isnan(m)):
        return None, None, "no data for this objective"
    pays = m > 0
    if pays.all():
        return None, None, f"speculation pays at every RTT in 0..{rtt_max_ms:g} ms"
    if not pays.any():
        return None, None, f"speculation never pays at any RTT in 0..{rtt_max_ms:g} ms"
    i = int(np.flatnonzero(pays != pays[0])[0])
    lo, hi = float(grid[i - 1]), float(grid[i])
    while hi - lo > rel_tol * max(hi, 1e-9):
        mid = 0.5 * (lo + hi)
        if (margins(np.array([mid]))[0] > 0) == pays[0]:
            lo = mid
        else:
            hi = mid
    above = not bool(pays[0])
    side = "above" if above else "below"
    more = "" if (pays[i:] != pays[0]).all() else " (the winner changes again later)"
    return hi, above, f"speculation pays {side} {hi:.4g} ms{more}"


def breakeven(
    sel: Selection, row: int | None = None, rtt_max_ms: float = 2000.0
) -> list[Breakeven]:
    """Breakeven acceptance and RTT per objective for the drafter of ``row``.

    ``row`` defaults to the chosen configuration, or, when no speculation won, the best
    speculative configuration for the selection's objective (goodput for ``pareto``);
    an empty list when the space has no speculative configuration with a value.
    """
    table = sel.table
    if row is None:
        row = sel.chosen
        if table.iloc[row][R.MODE] != R.MODE_SPECULATIVE:
            # Breakeven is about the drafter, not the constraints: when no speculative
            # configuration is feasible, use the best one regardless.
            col = R.OBJECTIVE_COLUMNS.get(sel.objective, R.GOODPUT_TOK_S)
            vals_all = table[col].to_numpy()
            is_spec = (sel.space.inputs.mode == R.Mode.SPECULATIVE) & np.isfinite(vals_all)
            spec = np.flatnonzero(sel.feasible & is_spec)
            if spec.size == 0:
                spec = np.flatnonzero(is_spec)
            if spec.size == 0:
                return []
            vals = np.nan_to_num(table[col].to_numpy()[spec], nan=-np.inf)
            row = int(spec[np.argmax(vals)])
    if sel.space.inputs.mode[row] != R.Mode.SPECULATIVE:
        raise InvalidInput(f"row {row} is not a speculative configuration: no breakeven")
    spec, _ = _pair_rows(sel, row)
    e = table[R.TOKENS_PER_ROUND].to_numpy()[row]
    measured = float(alpha_from_tokens_per_round(e, table[R.K].to_numpy()[row]))
    out = []
    for objective in R.OBJECTIVE_COLUMNS:
        rtt, above, note = breakeven_rtt(sel, row, objective, rtt_max_ms)
        out.append(
            Breakeven(
                objective=objective,
                configuration=config_label(table, row).rsplit(", K=", 1)[0],
                acceptance=breakeven_acceptance(sel, row, objective),
                measured_acceptance=measured,
                rtt_ms=rtt,
                pays_above_rtt=above,
                rtt_note=note,
                rtt_max_ms=rtt_max_ms,
            )
        )
    return out
