"""The paper's qualitative findings, checked on an evaluated configuration table.

Input is the search's per-configuration table (columns from :mod:`configspec.records`),
speculative rows only. For every (target, device) the optimum per objective is taken
(ties kept: two quantisations of one drafter have the same acceptance and price, so the
same tokens per USD), and the paper's findings are checked:

* ``goodput_smallest_fastest`` — the goodput optimum is the smallest drafter (parameter
  count read from its name) and the fastest one on that device (also checked apart as
  ``goodput_smallest`` and ``goodput_fastest``);
* ``goodput_k_differs_by_device`` — per target, K* of the goodput optimum differs between
  devices and lies inside the K range;
* ``cost_at_k_min`` / ``energy_at_k_min`` — cost and energy efficiency are maximised at
  the smallest K (2 in the paper);
* ``cost_largest_drafter`` — the cost optimum is the largest drafter (highest acceptance);
* ``energy_smallest_drafter`` — the energy optimum is the smallest drafter.

Each finding reports ``holds`` plus what the data gives per (target, device), so a
finding that fails says where and why.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from configspec import records as R
from configspec.importers.names import parameter_billions

SIZE_B = "size_b"
DRAFTER_MODEL = "drafter_model"
DRAFT_TOK_S = "draft_tok_s"

OBJECTIVES: dict[str, tuple[str, bool]] = {
    "goodput": (R.GOODPUT_TOK_S, True),
    "cost": (R.TOKENS_PER_USD, True),
    "energy": (R.ENERGY_J_PER_TOKEN, False),
}
"""Objective → (column, higher is better). Energy is shown as J per token (lower wins)."""

_TIE_RTOL = 1e-9
NO_POWER = "no power data"


@dataclass(frozen=True)
class Optimum:
    """The best configuration for one (target, device, objective); ``ties`` lists every
    other (drafter, K) reaching the same value. ``note`` is set when nothing could be
    evaluated (e.g. "no power data")."""

    target: str
    device: str
    objective: str
    drafter: str | None = None
    quantization: str | None = None
    k: int | None = None
    goodput_tok_s: float | None = None
    tokens_per_usd: float | None = None
    energy_j_per_token: float | None = None
    size_b: float | None = None
    draft_tok_s: float | None = None
    ties: list[str] = field(default_factory=list)
    note: str = ""

    @property
    def config(self) -> str:
        """``drafter K=k`` (or the note when there is no optimum)."""
        return f"{self.drafter} K={self.k}" if self.drafter else self.note


@dataclass(frozen=True)
class Finding:
    """One of the paper's conclusions, whether it holds, and the evidence per group."""

    name: str
    claim: str
    holds: bool
    evidence: list[str]
    failures: list[str]


def prepare(frame: pd.DataFrame) -> pd.DataFrame:
    """Speculative rows of a search table with the drafter's model (id without
    quantisation), size (B parameters, from its name) and drafting speed (tokens/s, from
    the modelled drafting time of the round) added."""
    spec = frame[frame[R.MODE] == R.MODE_SPECULATIVE].reset_index(drop=True)
    pairs = list(zip(spec[R.DRAFTER].tolist(), spec[R.QUANTIZATION].tolist(), strict=True))
    models = {p: _model_of(str(p[0]), "" if pd.isna(p[1]) else str(p[1])) for p in set(pairs)}
    spec[DRAFTER_MODEL] = [models[p] for p in pairs]
    spec[SIZE_B] = np.array([_size(models[p]) for p in pairs], dtype=float)
    spec[DRAFT_TOK_S] = 1e3 * spec[R.K] / spec[R.DRAFT_MS]
    return spec


@lru_cache(maxsize=4096)
def _size(model: str) -> float:
    size = parameter_billions(model)
    return np.nan if size is None else size


def _model_of(drafter: str, quant: str) -> str:
    if quant and drafter.lower().endswith(quant.lower()) and len(drafter) > len(quant):
        return drafter[: -len(quant)].rstrip("-._")
    return drafter


def _value(row: pd.Series, column: str) -> float | None:
    v = row.get(column)
    return None if v is None or pd.isna(v) else float(v)


def optima(spec: pd.DataFrame) -> list[Optimum]:
    """The optimum per (target, device, objective) of a :func:`prepare`-d table."""
    keys = [R.TARGET, R.DEVICE]
    groups = spec[keys].drop_duplicates().sort_values(keys)
    found: dict[tuple[str, str, str], Optimum] = {}
    for objective, (column, higher) in OBJECTIVES.items():
        values = spec[column].astype(float).where(np.isfinite(spec[column].astype(float)))
        signed = values if higher else -values
        best = signed.groupby([spec[R.TARGET], spec[R.DEVICE]]).transform("max")
        tied = spec[np.isclose(signed, best, rtol=_TIE_RTOL, atol=0.0) & signed.notna()]
        # Exact ties (same α and price): higher goodput, then smaller K, as `select` does.
        tied = tied.sort_values(
            [*keys, R.GOODPUT_TOK_S, R.K, R.DRAFTER], ascending=[True, True, False, True, True]
        )
        for (target, device), group in tied.groupby(keys, sort=False):
            row = group.iloc[0]
            found[(str(target), str(device), objective)] = Optimum(
                target=str(target),
                device=str(device),
                objective=objective,
                drafter=str(row[R.DRAFTER]),
                quantization=None if pd.isna(row[R.QUANTIZATION]) else str(row[R.QUANTIZATION]),
                k=int(row[R.K]),
                goodput_tok_s=_value(row, R.GOODPUT_TOK_S),
                tokens_per_usd=_value(row, R.TOKENS_PER_USD),
                energy_j_per_token=_value(row, R.ENERGY_J_PER_TOKEN),
                size_b=_value(row, SIZE_B),
                draft_tok_s=_value(row, DRAFT_TOK_S),
                ties=[
                    f"{d} K={int(k)}"
                    for d, k in zip(group[R.DRAFTER].iloc[1:], group[R.K].iloc[1:], strict=True)
                ],
            )
    out = []
    for target, device in groups.itertuples(index=False):
        for objective in OBJECTIVES:
            key = (str(target), str(device), objective)
            out.append(found.get(key) or Optimum(*key, note=_why_missing(objective)))
    return out


def best_config(spec: pd.DataFrame, target: str, device: str, objective: str) -> str | None:
    """``drafter K=k`` of the optimum for one (target, device, objective), with the same
    tie rule as :func:`optima`; None when no configuration has a finite value. Cheaper
    than :func:`optima` when only one group is needed (bisection)."""
    column, higher = OBJECTIVES[objective]
    rows = np.flatnonzero(
        (spec[R.TARGET].to_numpy() == target) & (spec[R.DEVICE].to_numpy() == device)
    )
    values = spec[column].to_numpy(dtype=float)[rows]
    signed = values if higher else -values
    finite = np.isfinite(signed)
    if not finite.any():
        return None
    rows, signed = rows[finite], signed[finite]
    top = rows[np.isclose(signed, signed.max(), rtol=_TIE_RTOL, atol=0.0)]
    goodput = spec[R.GOODPUT_TOK_S].to_numpy(dtype=float)[top]
    ks = spec[R.K].to_numpy()[top]
    names = spec[R.DRAFTER].to_numpy()[top]
    pick = top[np.lexsort((names, ks, -goodput))[0]]
    return f"{spec[R.DRAFTER].iloc[pick]} K={int(spec[R.K].iloc[pick])}"


def _why_missing(objective: str) -> str:
    return NO_POWER if objective == "energy" else f"no {objective} figure"


def _group_stats(spec: pd.DataFrame) -> dict[tuple[str, str], tuple[float, float, float]]:
    """(target, device) → (smallest size, largest size, fastest drafting tok/s)."""
    agg = spec.groupby([R.TARGET, R.DEVICE]).agg(
        smin=(SIZE_B, "min"), smax=(SIZE_B, "max"), vmax=(DRAFT_TOK_S, "max")
    )
    return {
        (str(t), str(d)): (float(r.smin), float(r.smax), float(r.vmax))
        for (t, d), r in agg.iterrows()
    }


def _k_differs_by_device(
    by: dict[tuple[str, str, str], Optimum],
    groups: list[tuple[str, str]],
    k_min: int,
    k_max: int,
) -> Finding:
    """Per target: does the goodput-optimal K differ between devices (inside the range)?"""
    evidence, failures = [], []
    for target in sorted({t for t, _ in groups}):
        ks = {d: by[(t, d, "goodput")].k for t, d in groups if t == target}
        line = f"{target}: K* " + ", ".join(
            f"{d}={k}" + (" (edge of the K range)" if k in (k_min, k_max) else "")
            for d, k in sorted(ks.items())
        )
        evidence.append(line)
        values = [k for k in ks.values() if k is not None]
        if len(set(values)) < 2 or not all(k_min <= k <= k_max for k in values):
            failures.append(line)
    return Finding(
        "goodput_k_differs_by_device",
        f"K* of the goodput optimum differs by device within {k_min}..{k_max}",
        not failures,
        evidence,
        failures,
    )


def check_findings(spec: pd.DataFrame, best: list[Optimum] | None = None) -> list[Finding]:
    """Check the paper's six findings (module docstring) on a :func:`prepare`-d table."""
    best = best if best is not None else optima(spec)
    by = {(o.target, o.device, o.objective): o for o in best}
    groups = sorted({(o.target, o.device) for o in best})
    k_min = int(spec[R.K].min())
    k_max = int(spec[R.K].max())
    stats = _group_stats(spec)
    findings: list[Finding] = []

    def check(name: str, claim: str, objective: str, test: Any) -> None:
        evidence, failures = [], []
        for target, device in groups:
            o = by[(target, device, objective)]
            if o.drafter is None:
                evidence.append(f"{target} on {device}: {o.note} (not counted)")
                continue
            ok, text = test(o, *stats[(target, device)])
            line = f"{target} on {device}: {text}"
            evidence.append(line)
            if not ok:
                failures.append(line)
        findings.append(Finding(name, claim, not failures and bool(evidence), evidence, failures))

    def smallest_fastest(o: Optimum, smin: float, _smax: float, vmax: float) -> tuple[bool, str]:
        ok = o.size_b == smin and bool(np.isclose(o.draft_tok_s or 0.0, vmax))
        return ok, (
            f"{o.config} ({o.size_b:g}B, {o.draft_tok_s:.2f} tok/s; smallest {smin:g}B, "
            f"fastest {vmax:.2f} tok/s)"
        )

    check(
        "goodput_smallest_fastest",
        "the goodput optimum is the smallest, fastest drafter",
        "goodput",
        smallest_fastest,
    )
    check(
        "goodput_smallest",
        "the goodput optimum is the smallest drafter",
        "goodput",
        lambda o, smin, _smax, _v: (
            o.size_b == smin,
            f"{o.config} ({o.size_b:g}B; smallest {smin:g}B)",
        ),
    )
    check(
        "goodput_fastest",
        "the goodput optimum is the fastest drafter on the device",
        "goodput",
        lambda o, _smin, _smax, vmax: (
            bool(np.isclose(o.draft_tok_s or 0.0, vmax)),
            f"{o.config} ({o.draft_tok_s:.2f} tok/s; fastest {vmax:.2f} tok/s)",
        ),
    )

    findings.append(_k_differs_by_device(by, groups, k_min, k_max))
    for objective in ("cost", "energy"):
        check(
            f"{objective}_at_k_min",
            f"{objective} efficiency is maximised at K={k_min}",
            objective,
            lambda o, *_: (o.k == k_min, o.config),
        )
    check(
        "cost_largest_drafter",
        "cost efficiency favours the largest drafter (highest acceptance)",
        "cost",
        lambda o, _smin, smax, _v: (
            o.size_b == smax,
            f"{o.config} ({o.size_b:g}B; largest {smax:g}B)",
        ),
    )
    check(
        "energy_smallest_drafter",
        "energy efficiency favours the smallest drafter",
        "energy",
        lambda o, smin, _smax, _v: (
            o.size_b == smin,
            f"{o.config} ({o.size_b:g}B; smallest {smin:g}B)",
        ),
    )
    return findings


def to_json(best: list[Optimum], findings: list[Finding]) -> dict[str, Any]:
    """A JSON-ready dict of optima and findings."""
    return {
        "optima": [asdict(o) for o in best],
        "findings": [asdict(f) for f in findings],
    }
