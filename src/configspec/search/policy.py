"""What a selection reports beyond the optimum, and when: the selection policy.

``configspec select`` (and anything else presenting a selection) asks here whether to run
the sensitivity sweeps, whether to show the per-(target, device) optima and whether the
breakeven analysis applies; the CLI only renders the answers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from configspec import records as R
from configspec.config import NetworkSettings
from configspec.model.presets import ModelPreset
from configspec.progress import NO_PROGRESS, Phase, ProgressFn
from configspec.search.breakeven import Breakeven, breakeven
from configspec.search.select import PairBest, Selection, best_per_pair
from configspec.search.sensitivity import Crossover, crossovers
from configspec.search.space import Space

SENSITIVITY_AUTO_LIMIT = 200_000
"""Sensitivity sweeps run by default up to this many configurations (each sweep
re-evaluates the whole space 33 times)."""
PER_PAIR_AUTO_LIMIT = 24
"""Per-pair optima are shown by default for 2 to this many (target, device) pairs: one
pair repeats the optimum; hundreds would bury it."""
RTT_SWEEP_MS = (0.0, 1000.0)
"""RTT range (ms) of the RTT sensitivity sweep."""
PRICE_SCALE_SWEEP = (0.1, 10.0)
"""Price multiplier range of the price sensitivity sweep."""


@dataclass(frozen=True)
class ReportPolicy:
    """What to add to a selection's report. ``None`` fields mean "decide automatically"."""

    sensitivity: bool | None = None
    per_pair: bool | None = None
    breakeven: bool = True
    machine_rows: bool = False
    """True for a row dump (CSV): no extras at all."""


@dataclass
class SelectionExtras:
    """The extras a policy asked for: optimum crossovers, breakeven, per-pair optima."""

    crossings: list[Crossover] = field(default_factory=list)
    breakeven: list[Breakeven] = field(default_factory=list)
    pairs: list[PairBest] = field(default_factory=list)


def wants_sensitivity(policy: ReportPolicy, space: Space, objective: str) -> bool:
    """Run the sweeps? Asked for, or automatically up to :data:`SENSITIVITY_AUTO_LIMIT`
    configurations; never for ``pareto`` or a row dump."""
    on = policy.sensitivity
    if on is None:
        on = len(space) <= SENSITIVITY_AUTO_LIMIT
    return on and objective != "pareto" and not policy.machine_rows


def sensitivity(
    sel: Selection, space: Space, network: NetworkSettings, progress: ProgressFn = NO_PROGRESS
) -> list[Crossover]:
    """Optimum crossovers along the RTT (when the preset models the network) and the price,
    under the selection's own constraints."""
    preset: ModelPreset = sel.preset
    constraints = sel.constraints
    phase = Phase(progress, "sensitivity sweeps", 2)
    found: list[Crossover] = []
    if preset.include_network:
        found += crossovers(space, network, preset, constraints, sel.objective, "rtt_ms",
                            *RTT_SWEEP_MS)  # fmt: skip
    phase.advance()
    found += crossovers(space, network, preset, constraints, sel.objective, "price_scale",
                        *PRICE_SCALE_SWEEP)  # fmt: skip
    phase.advance()
    return found


def pairs_to_show(sel: Selection, policy: ReportPolicy) -> list[PairBest]:
    """Per-(target, device) optima: asked for, or automatically for 2 to
    :data:`PER_PAIR_AUTO_LIMIT` pairs."""
    if policy.per_pair is False or policy.machine_rows:
        return []
    pairs = best_per_pair(sel)
    n_pairs = len({(p.target, p.device) for p in pairs})
    if policy.per_pair is None and not 2 <= n_pairs <= PER_PAIR_AUTO_LIMIT:
        return []
    return pairs


def extras(
    sel: Selection,
    space: Space,
    network: NetworkSettings,
    policy: ReportPolicy,
    progress: ProgressFn = NO_PROGRESS,
) -> SelectionExtras:
    """Everything ``policy`` asks for beyond the optimum itself."""
    out = SelectionExtras()
    has_speculation = bool((space.inputs.mode == R.Mode.SPECULATIVE).any())
    if policy.breakeven and not policy.machine_rows and has_speculation:
        out.breakeven = breakeven(sel)
    if wants_sensitivity(policy, space, sel.objective):
        out.crossings = sensitivity(sel, space, network, progress)
    out.pairs = pairs_to_show(sel, policy)
    return out
