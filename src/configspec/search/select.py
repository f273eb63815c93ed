"""Constraints, the optimum per objective and the Pareto front: the library's ``select``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from configspec import records as R
from configspec.config import NetworkSettings
from configspec.errors import InvalidInput, NoFeasibleConfig, ProfileMissing
from configspec.model.evaluate import Link
from configspec.model.presets import ModelPreset, get_preset
from configspec.search.evaluate import evaluate_space, link_from_network
from configspec.search.pareto import pareto_mask
from configspec.search.space import SearchSettings, Space, load_space
from configspec.store import ProfileStore

log = logging.getLogger(__name__)

OBJECTIVES = ("goodput", "cost", "energy", "pareto")
BoolArray = NDArray[np.bool_]


@dataclass(frozen=True)
class Constraints:
    """Feasibility limits; None means unconstrained.

    ``allow_edge_only``: edge-only decoding produces the drafter's text, not the target's,
    so it is reported as a baseline but only selectable when this is set.
    """

    min_goodput_tok_s: float | None = None
    max_cost_usd_per_mtok: float | None = None
    max_energy_j_per_token: float | None = None
    require_memory_fit: bool = True
    allow_edge_only: bool = False


CONSTRAINT_KEYS = ("min_goodput_tok_s", "max_cost_usd_per_mtok", "max_energy_j_per_token")


def largest_k_searched(table: pd.DataFrame) -> BoolArray:
    """Per row: a speculative configuration whose K is the largest K searched for its
    (device, drafter, target) — an optimum there may only be the edge of the search, and a
    larger K might be better."""
    spec = (table[R.MODE] == R.MODE_SPECULATIVE).to_numpy()
    out = np.zeros(len(table), dtype=bool)
    if not spec.any():
        return out
    sub = table.loc[spec, [R.DEVICE, R.DRAFTER, R.TARGET, R.K]]
    k_max = sub.groupby([R.DEVICE, R.DRAFTER, R.TARGET], observed=True)[R.K].transform("max")
    out[spec] = (sub[R.K] >= k_max).to_numpy()
    return out


def parse_constraints(texts: Sequence[str], allow_edge_only: bool = False) -> Constraints:
    """Parse ``KEY=VALUE`` strings (keys: :data:`CONSTRAINT_KEYS`) into :class:`Constraints`."""
    values: dict[str, float] = {}
    for text in texts:
        key, sep, raw = text.partition("=")
        key = key.strip()
        if not sep or key not in CONSTRAINT_KEYS:
            raise InvalidInput(
                f"constraint {text!r} is not KEY=VALUE with KEY one of {', '.join(CONSTRAINT_KEYS)}"
            )
        try:
            value = float(raw)
        except ValueError:
            raise InvalidInput(f"constraint {key}={raw!r}: {raw!r} is not a number") from None
        if not np.isfinite(value) or value < 0:
            raise InvalidInput(f"constraint {key}={raw}: must be a finite number ≥ 0")
        values[key] = value
    return Constraints(**values, allow_edge_only=allow_edge_only)  # type: ignore[arg-type]


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def feasible_mask(table: pd.DataFrame, c: Constraints) -> BoolArray:
    """Rows satisfying ``c``; :class:`NoFeasibleConfig` naming the constraint that emptied
    the space (applied in order: modelled at all, edge-only, memory, goodput, cost, energy)."""
    goodput = table[R.GOODPUT_TOK_S].to_numpy()
    mask = np.isfinite(goodput) & (goodput > 0)
    if not mask.any():
        raise NoFeasibleConfig(
            "no configuration could be modelled from these profiles (every goodput is "
            "undefined); check that verification profiles cover positions 1..K+1"
        )
    if not c.allow_edge_only:
        mask &= (table[R.MODE] != R.MODE_EDGE_ONLY).to_numpy()
        if not mask.any():
            raise NoFeasibleConfig(
                "only edge-only decoding is left; pass --allow-edge-only or add targets"
            )
    if c.require_memory_fit:
        dev = table[R.DEVICE_MEMORY_BYTES].to_numpy()
        fits = ~(table[R.DRAFTER_MEMORY_BYTES].to_numpy() > dev)  # unknown memory fits
        if not (mask & fits).any():
            raise NoFeasibleConfig(
                "no drafter fits its device's memory (drafter memory_bytes > device "
                "memory_bytes everywhere); use smaller quantisations or a larger device"
            )
        mask &= fits
    checks = [
        ("min_goodput_tok_s", c.min_goodput_tok_s, R.GOODPUT_TOK_S, "ge", "tok/s"),
        ("max_cost_usd_per_mtok", c.max_cost_usd_per_mtok, R.COST_USD_PER_MTOK, "le", "USD/1M tok"),
        ("max_energy_j_per_token", c.max_energy_j_per_token, R.ENERGY_J_PER_TOKEN, "le", "J/tok"),
    ]
    for key, limit, col, sense, unit in checks:
        if limit is None:
            continue
        vals = table[col].to_numpy()
        ok = vals >= limit if sense == "ge" else vals <= limit
        if not (mask & ok).any():
            finite = vals[mask & np.isfinite(vals)]
            if finite.size == 0:
                best = "no configuration has this figure (no data)"
            else:
                b = finite.max() if sense == "ge" else finite.min()
                best = f"the best feasible is {_fmt(b)} {unit}"
            raise NoFeasibleConfig(
                f"no configuration satisfies {key}={_fmt(limit)} ({best}); relax that constraint"
            )
        mask &= ok
    return np.asarray(mask, dtype=bool)


def best_row(table: pd.DataFrame, column: str, mask: BoolArray) -> int | None:
    """Positional index of the feasible row maximising ``column`` (ties: higher goodput,
    then smaller K); None when no feasible row has a finite value."""
    vals = table[column].to_numpy()
    ok = mask & ~np.isnan(vals)
    if not ok.any():
        return None
    cand = np.flatnonzero(ok)
    v = vals[cand]
    top = cand[v == v.max()]
    if top.size > 1:
        g = table[R.GOODPUT_TOK_S].to_numpy()[top]
        top = top[g == g.max()]
    if top.size > 1:
        top = top[np.argsort(table[R.K].to_numpy()[top], kind="stable")]
    return int(top[0])


def pareto_rows(table: pd.DataFrame, mask: BoolArray) -> NDArray[np.int64]:
    """Positional indices of the feasible rows on the Pareto front over
    (goodput, tokens/USD, tokens/J), best goodput first."""
    cand = np.flatnonzero(mask)
    pts = np.column_stack([table[c].to_numpy()[cand] for c in R.PARETO_COLUMNS])
    front = cand[pareto_mask(pts)]
    order = np.argsort(-table[R.GOODPUT_TOK_S].to_numpy()[front], kind="stable")
    return front[order].astype(np.int64)


@dataclass
class Selection:
    """Everything ``select`` found: the evaluated table and what was picked from it."""

    objective: str
    preset: ModelPreset
    table: pd.DataFrame
    feasible: BoolArray
    best: dict[str, int | None]
    pareto: NDArray[np.int64]
    link: Link
    network: NetworkSettings
    space: Space
    constraints: Constraints
    warnings: list[str] = field(default_factory=list)

    @property
    def chosen(self) -> int:
        """Positional row index of the configuration chosen for ``objective`` (pareto: the
        front's highest-goodput point)."""
        if self.objective == "pareto":
            return int(self.pareto[0])
        row = self.best[self.objective]
        assert row is not None  # select() refuses objectives without data
        return row


def pick(
    space: Space,
    network: NetworkSettings,
    objective: str = "goodput",
    preset: str | ModelPreset = "configspec",
    constraints: Constraints | None = None,
    rtt_ms: float | None = None,
    price_scale: float = 1.0,
) -> Selection:
    """Evaluate ``space`` and pick the optimum per objective and the Pareto front."""
    if objective not in OBJECTIVES:
        raise InvalidInput(
            f"objective {objective!r} is unknown; choose one of {', '.join(OBJECTIVES)}"
        )
    if rtt_ms is not None and not (np.isfinite(rtt_ms) and rtt_ms >= 0):
        raise InvalidInput(f"--rtt-ms {rtt_ms} must be a finite number of milliseconds ≥ 0")
    p = get_preset(preset)
    c = constraints or Constraints()
    link = link_from_network(network, rtt_ms)
    table = evaluate_space(space, link, p, price_scale)
    mask = feasible_mask(table, c)
    best = {name: best_row(table, col, mask) for name, col in R.OBJECTIVE_COLUMNS.items()}
    warnings = list(space.warnings)
    if best["energy"] is None:
        warnings.append(
            "no power data: no device profile has draft_power_w, so the energy objective is "
            "undefined (profile the device with a power meter)"
        )
        if objective == "energy":
            raise ProfileMissing(
                "the energy objective needs drafting power, but no device profile has "
                "draft_power_w; profile the device with a power meter or choose --objective "
                "goodput|cost"
            )
    draft_only = (table[R.ENERGY_NOTE] == "drafting only (no idle power)").to_numpy()
    if (draft_only & mask).any():
        warnings.append(
            "some devices have no idle_power_w: their energy charges drafting only "
            "(waiting for the cloud is not counted)"
        )
    return Selection(
        objective=objective,
        preset=p,
        table=table,
        feasible=mask,
        best=best,
        pareto=pareto_rows(table, mask),
        link=link,
        network=network,
        space=space,
        constraints=c,
        warnings=warnings,
    )


def select(
    profiles: Path | ProfileStore,
    objective: str = "goodput",
    preset: str | ModelPreset = "configspec",
    settings: SearchSettings | None = None,
    constraints: Constraints | None = None,
    rtt_ms: float | None = None,
) -> Selection:
    """Read the profiles in ``profiles`` and select the best configuration.

    ``objective``: ``goodput`` (tokens/s), ``cost`` (tokens per USD), ``energy`` (tokens
    per joule) or ``pareto``; ``preset``: ``configspec`` or ``paper``
    (:mod:`configspec.model.presets`); ``rtt_ms`` overrides the stored network's RTT.
    Raises :class:`~configspec.errors.NoFeasibleConfig` when constraints empty the space.
    """
    store = profiles if isinstance(profiles, ProfileStore) else ProfileStore(Path(profiles))
    p = get_preset(preset)
    space, network = load_space(store, p, settings)
    return pick(space, network, objective, p, constraints, rtt_ms)


@dataclass(frozen=True)
class PairBest:
    """The optimum of one objective for one (target, device) pair; ``row`` is None when no
    feasible configuration of the pair has a value (e.g. energy without power data)."""

    target: str
    device: str
    objective: str
    row: int | None


def best_per_pair(sel: Selection) -> list[PairBest]:
    """The optimum per objective for every (target, device) pair of speculative
    configurations, with :func:`best_row`'s tie rule; pairs sorted by target, device.

    Vectorised: rows are grouped by (target, device) codes and ordered within each group
    by (value desc, goodput desc, K asc); the first row of each group is its optimum.
    """
    table = sel.table
    space = sel.space
    spec = space.inputs.mode == R.Mode.SPECULATIVE
    group = space.target_code.astype(np.int64) * (len(space.device_names) + 1) + space.device_code
    groups = np.unique(group[spec])
    goodput = table[R.GOODPUT_TOK_S].to_numpy()
    k = table[R.K].to_numpy()
    best: dict[str, dict[int, int]] = {}
    for name, col in R.OBJECTIVE_COLUMNS.items():
        vals = table[col].to_numpy()
        rows = np.flatnonzero(sel.feasible & spec & ~np.isnan(vals))
        order = rows[np.lexsort((k[rows], -goodput[rows], -vals[rows], group[rows]))]
        first_groups, first = np.unique(group[order], return_index=True)
        best[name] = dict(zip(first_groups.tolist(), order[first].tolist(), strict=True))
    labels = []
    for g in groups.tolist():
        t_code, d_code = divmod(int(g), len(space.device_names) + 1)
        labels.append((space.target_names[t_code], space.device_names[d_code], g))
    out = []
    for target, device, g in sorted(labels):
        for name in R.OBJECTIVE_COLUMNS:
            row = best[name].get(g)
            out.append(PairBest(target, device, name, None if row is None else int(row)))
    return out
