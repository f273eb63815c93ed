"""Machine-readable forms of a :class:`~configspec.search.select.Selection` (JSON, CSV)."""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
import pandas as pd

from configspec import records as R
from configspec._version import __version__
from configspec.search.select import Selection, largest_k_searched
from configspec.search.sensitivity import Crossover, config_label


def _plain(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        f = float(value)
        return None if math.isnan(f) else (str(f) if math.isinf(f) else f)
    if isinstance(value, np.bool_):
        return bool(value)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if pd.isna(value):
        return None
    return value


ENERGY_BY_POWER_SOURCE = {
    "measured": "modelled from measured device power",
    "estimated": "modelled from estimated device power (CPU-time estimator: an illustrative "
    "power model, not measured on this device)",
    "imported": "modelled from imported device power",
    "none": "no power data",
}
"""How each :data:`~configspec.records.POWER_SOURCE` is described next to an energy figure."""


def energy_provenance(power_source: str) -> str:
    """The words that go with an energy figure whose device power has ``power_source``."""
    return ENERGY_BY_POWER_SOURCE.get(power_source, f"modelled from {power_source} device power")


def row_record(
    table: pd.DataFrame, row: int, at_largest_k: np.ndarray | None = None
) -> dict[str, Any]:
    """One configuration as a JSON-ready dict (NaN → null, ±inf → "inf"), with its label.

    ``power_source`` says where the edge power behind the energy figures came from and
    ``energy_provenance`` says it in words (``estimated`` for the CPU-time estimator);
    ``k_is_largest_searched`` (given ``at_largest_k`` from
    :func:`~configspec.search.select.largest_k_searched`) flags a K at the edge of the search.
    """
    rec = {col: _plain(v) for col, v in table.iloc[row].items()}
    if at_largest_k is not None:
        rec["k_is_largest_searched"] = bool(at_largest_k[row])
    rec["label"] = config_label(table, row)
    rec["provenance"] = "modelled"
    rec["energy_provenance"] = energy_provenance(str(rec.get(R.POWER_SOURCE, "none")))
    return rec


def selection_record(
    sel: Selection, top: int = 10, crossings: list[Crossover] | None = None
) -> dict[str, Any]:
    """The whole selection as one JSON-ready dict: inputs, chosen row, best per objective,
    Pareto front, top rows for the objective, crossovers and warnings."""
    table = sel.table
    objective_col = R.OBJECTIVE_COLUMNS.get(sel.objective, R.GOODPUT_TOK_S)
    feasible = np.flatnonzero(sel.feasible)
    vals = table[objective_col].to_numpy()[feasible]
    order = feasible[np.argsort(-np.nan_to_num(vals, nan=-np.inf), kind="stable")][:top]
    edge = largest_k_searched(table)

    def record(row: int) -> dict[str, Any]:
        return row_record(table, row, edge)

    return {
        "tool": "configspec",
        "tool_version": __version__,
        "model": sel.preset.name,
        "model_description": sel.preset.description,
        "objective": sel.objective,
        "profile_sources": {k: sorted(v) for k, v in sel.space.sources.items()},
        "power_sources": sorted({str(x) for x in table[R.POWER_SOURCE].unique()}),
        "network": {**sel.network.model_dump(), "rtt_ms_used": _plain(sel.link.rtt_ms)},
        "constraints": {k: v for k, v in sel.constraints.__dict__.items() if v is not None},
        "configurations": len(table),
        "feasible": int(sel.feasible.sum()),
        "chosen": record(sel.chosen),
        "best": {name: (None if row is None else record(row)) for name, row in sel.best.items()},
        "pareto": [record(int(r)) for r in sel.pareto],
        "top": [record(int(r)) for r in order],
        "crossovers": [c.__dict__ for c in crossings or []],
        "warnings": sel.warnings,
    }


def selection_csv(sel: Selection, rows: str = "feasible") -> str:
    """CSV of the evaluated table: ``feasible`` rows, ``all`` rows or the ``pareto`` front."""
    table = sel.table
    if rows == "pareto":
        out = table.iloc[sel.pareto]
    elif rows == "all":
        out = table
    else:
        out = table[sel.feasible]
    buf = io.StringIO()
    out.to_csv(buf, index=False)
    return buf.getvalue()
