"""How far the paper's conclusions move when its assumptions move.

Starting from the ``paper`` model preset on a profile store, the assumptions are varied
one at a time and the optimum per (target, device, objective) and the paper's findings
(:mod:`configspec.report.paper.findings`) re-evaluated:

* verification latency T_verify over 0.05–2 s (the paper fixes 0.5 s);
* network round-trip time over 0–200 ms (the paper has no network), with the stored
  network settings' payload and bandwidth;
* GPU-time pricing (USD per hour × verification time) instead of per-token pricing;
* acceptance at its mean ∓ 1 standard deviation (all drafters low, all high, and the
  adversarial case: the optimum low while every rival is high).

Where an optimum changes along a sweep, the crossover value is refined by bisection.
All evaluation goes through the project's model (:func:`configspec.search.evaluate.
evaluate_space`); nothing here computes an objective itself.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np
import pandas as pd

from configspec import records as R
from configspec.config import NetworkSettings
from configspec.model.evaluate import Bounded
from configspec.model.presets import PAPER, ModelPreset
from configspec.report.paper.findings import (
    DRAFTER_MODEL,
    OBJECTIVES,
    Finding,
    Optimum,
    best_config,
    check_findings,
    optima,
    prepare,
)
from configspec.search.evaluate import evaluate_space, link_from_network
from configspec.search.space import Space

logger = logging.getLogger(__name__)

Acceptance = Literal["mean", "low", "high"]
Progress = Callable[[int], None]

VERIFY_MS_RANGE = (50.0, 2000.0)
RTT_MS_RANGE = (0.0, 200.0)
GPU_USD_PER_HOUR_DEFAULT = 4.0
"""Illustrative accelerator price for the GPU-time variant. With the paper's fixed
T_verify every round costs the same, so the optimum does not depend on this value."""
_BISECT_RTOL = 1e-3


class Evaluator:
    """Evaluates one enumerated space under varied assumptions (via the project's model)."""

    def __init__(self, space: Space, network: NetworkSettings, preset: ModelPreset = PAPER) -> None:
        self.space = space
        self.network = network
        self.preset = preset
        self.evaluations = 0

    def frame(
        self,
        *,
        verify_ms: float | None = None,
        rtt_ms: float | None = None,
        gpu_usd_per_hour: float | None = None,
        acceptance: Acceptance = "mean",
    ) -> pd.DataFrame:
        """Speculative rows (with size and drafting speed, see
        :func:`~configspec.report.paper.findings.prepare`) under the given changes."""
        preset = self.preset
        if verify_ms is not None:
            preset = replace(preset, fixed_verify_ms=verify_ms)
        if rtt_ms is not None:
            preset = replace(preset, include_network=True)
        inputs = self.space.inputs
        changes: dict[str, Any] = {}
        if acceptance != "mean":
            e = getattr(inputs.tokens_per_round, acceptance)
            changes["tokens_per_round"] = Bounded.exact(e)
        if gpu_usd_per_hour is not None:
            n = len(inputs)
            changes.update(
                gpu_price=np.ones(n, dtype=bool),
                price_usd_per_hour=np.full(n, gpu_usd_per_hour),
                overhead_ms_per_round=np.zeros(n),
            )
        space = replace(self.space, inputs=replace(inputs, **changes)) if changes else self.space
        link = link_from_network(self.network, rtt_ms=rtt_ms if rtt_ms is not None else 0.0)
        self.evaluations += 1
        return prepare(evaluate_space(space, link, preset))


@dataclass(frozen=True)
class Crossover:
    """Where the optimum of one (target, device, objective) changes along a sweep."""

    target: str
    device: str
    objective: str
    at: float
    before: str
    after: str


@dataclass
class SweepResult:
    """One assumption swept: optima per value, crossovers, and where each finding holds."""

    parameter: str
    unit: str
    values: list[float]
    optima: pd.DataFrame
    crossovers: list[Crossover]
    findings: dict[str, list[bool]]
    fails_on: dict[str, list[tuple[float, float]]] = field(default_factory=dict)


def _optima_frame(best: list[Optimum], parameter: str, value: float) -> pd.DataFrame:
    rows = [{parameter: value, **asdict(o), "config": o.config} for o in best]
    return pd.DataFrame(rows)


def _configs(best: list[Optimum]) -> dict[tuple[str, str, str], str]:
    return {(o.target, o.device, o.objective): o.config for o in best}


def _frame_for(ev: Evaluator, parameter: str, value: float) -> pd.DataFrame:
    if parameter == "verify_ms":
        return ev.frame(verify_ms=value)
    if parameter == "rtt_ms":
        return ev.frame(rtt_ms=value)
    raise ValueError(f"unknown sweep parameter {parameter!r}")


def sweep(
    ev: Evaluator,
    parameter: Literal["verify_ms", "rtt_ms"],
    values: Sequence[float],
    progress: Progress | None = None,
) -> SweepResult:
    """Evaluate every value of ``parameter`` and refine each change of optimum by bisection.

    Returns the optima per value, the refined crossovers (value in the parameter's unit,
    ms) and, per finding, whether it holds at each value and the ranges where it fails.
    """
    values = sorted(float(v) for v in values)
    frames: list[pd.DataFrame] = []
    configs: list[dict[tuple[str, str, str], str]] = []
    held: dict[str, list[bool]] = {}
    for v in values:
        spec = _frame_for(ev, parameter, v)
        best = optima(spec)
        frames.append(_optima_frame(best, parameter, v))
        configs.append(_configs(best))
        for f in check_findings(spec, best):
            held.setdefault(f.name, []).append(f.holds)
        if progress:
            progress(1)

    def config_at(x: float, key: tuple[str, str, str]) -> str | None:
        return best_config(_frame_for(ev, parameter, x), *key)

    crossovers: list[Crossover] = []
    for i in range(len(values) - 1):
        for key, first in configs[i].items():
            last = configs[i + 1].get(key)
            a, ca = values[i], first
            # Walk every change inside the grid step, not just the first one.
            while last is not None and ca != last:
                lo, hi, chi = a, values[i + 1], last
                while hi - lo > _BISECT_RTOL * max(hi, 1.0):
                    mid = (lo + hi) / 2
                    now = config_at(mid, key)
                    if now == ca:
                        lo = mid
                    else:
                        hi, chi = mid, now if now is not None else chi
                crossovers.append(Crossover(*key, at=round((lo + hi) / 2, 2), before=ca, after=chi))
                a, ca = hi, chi
    crossovers.sort(key=lambda c: (c.target, c.device, c.objective, c.at))
    return SweepResult(
        parameter=parameter,
        unit="ms",
        values=values,
        optima=pd.concat(frames, ignore_index=True),
        crossovers=crossovers,
        findings=held,
        fails_on=_refined_failures(ev, parameter, values, crossovers, held),
    )


def _refined_failures(
    ev: Evaluator,
    parameter: str,
    values: list[float],
    crossovers: list[Crossover],
    held: dict[str, list[bool]],
) -> dict[str, list[tuple[float, float]]]:
    """Where each finding fails, with the refined crossovers as range ends.

    Optima, hence findings, are constant between consecutive crossovers, so one
    evaluation per segment (at its middle) decides the whole segment.
    """
    cuts = sorted({c.at for c in crossovers if values[0] < c.at < values[-1]})
    edges = [values[0], *cuts, values[-1]]
    status: dict[str, list[bool]] = {name: [] for name in held}
    for lo, hi in itertools.pairwise(edges):
        spec = _frame_for(ev, parameter, (lo + hi) / 2)
        found = {f.name: f.holds for f in check_findings(spec)}
        for name in status:
            status[name].append(found.get(name, True))
    out: dict[str, list[tuple[float, float]]] = {}
    for name, oks in status.items():
        spans: list[tuple[float, float]] = []
        for (lo, hi), ok in zip(itertools.pairwise(edges), oks, strict=True):
            if ok:
                continue
            if spans and spans[-1][1] == lo:
                spans[-1] = (spans[-1][0], hi)
            else:
                spans.append((lo, hi))
        out[name] = spans
    return out


@dataclass
class VariantResult:
    """The optima and findings under one alternative assumption."""

    name: str
    description: str
    optima: list[Optimum]
    findings: list[Finding]
    changed: list[str]
    """Human-readable list of optima that differ from the baseline."""


def _changes(base: list[Optimum], other: list[Optimum]) -> list[str]:
    base_cfg = _configs(base)
    out = []
    for o in other:
        was = base_cfg.get((o.target, o.device, o.objective))
        if was is not None and was != o.config:
            out.append(f"{o.objective} on {o.device} for {o.target}: {was} → {o.config}")
    return out


def variant(
    ev: Evaluator, name: str, description: str, base: list[Optimum], **changes: Any
) -> VariantResult:
    """Evaluate one alternative assumption (keyword arguments of :meth:`Evaluator.frame`)."""
    spec = ev.frame(**changes)
    best = optima(spec)
    return VariantResult(name, description, best, check_findings(spec, best), _changes(base, best))


def overtakers(ev: Evaluator, base: list[Optimum]) -> list[dict[str, Any]]:
    """Adversarial acceptance: for each baseline optimum, the configurations of *other*
    drafter models that beat it when the optimum's model has α(K) at mean − 1 std for
    every K and the rival's model at mean + 1 std. Configurations of the optimum's own
    model (other K, other quantisation) share its sweep, so they are compared at the same
    (low) acceptance."""
    low = ev.frame(acceptance="low")
    high = ev.frame(acceptance="high")
    out = []
    for o in base:
        if o.drafter is None:
            continue
        column, higher = OBJECTIVES[o.objective]
        in_group = (low[R.TARGET] == o.target) & (low[R.DEVICE] == o.device)
        mine_rows = low[in_group & (low[R.DRAFTER] == o.drafter) & (low[R.K] == o.k)]
        mine = float(mine_rows[column].iloc[0])
        model = str(mine_rows[DRAFTER_MODEL].iloc[0])
        same = low[in_group & (low[DRAFTER_MODEL] == model)]
        same = same[~((same[R.DRAFTER] == o.drafter) & (same[R.K] == o.k))]
        h_group = (high[R.TARGET] == o.target) & (high[R.DEVICE] == o.device)
        other = high[h_group & (high[DRAFTER_MODEL] != model)]
        rivals = pd.concat([same, other])
        better = rivals[column] > mine if higher else rivals[column] < mine
        beat = rivals[better].sort_values(column, ascending=not higher)
        out.append(
            {
                "target": o.target,
                "device": o.device,
                "objective": o.objective,
                "optimum": o.config,
                "robust": beat.empty,
                "rivals": [
                    f"{d} K={int(k)}"
                    for d, k in zip(beat[R.DRAFTER].head(5), beat[R.K].head(5), strict=True)
                ],
                "n_rivals": len(beat),
            }
        )
    return out
