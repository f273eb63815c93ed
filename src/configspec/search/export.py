"""Machine-readable forms of a :class:`~configspec.search.select.Selection` (JSON, CSV)."""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
import pandas as pd

from configspec import records as R
from configspec._version import __version__
from configspec.search.select import Selection
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


def row_record(table: pd.DataFrame, row: int) -> dict[str, Any]:
    """One configuration as a JSON-ready dict (NaN → null, ±inf → "inf"), with its label."""
    rec = {col: _plain(v) for col, v in table.iloc[row].items()}
    rec["label"] = config_label(table, row)
    rec["provenance"] = "modelled"
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
    return {
        "tool": "configspec",
        "tool_version": __version__,
        "model": sel.preset.name,
        "model_description": sel.preset.description,
        "objective": sel.objective,
        "profile_sources": {k: sorted(v) for k, v in sel.space.sources.items()},
        "network": {**sel.network.model_dump(), "rtt_ms_used": _plain(sel.link.rtt_ms)},
        "constraints": {k: v for k, v in sel.constraints.__dict__.items() if v is not None},
        "configurations": len(table),
        "feasible": int(sel.feasible.sum()),
        "chosen": row_record(table, sel.chosen),
        "best": {
            name: (None if row is None else row_record(table, row))
            for name, row in sel.best.items()
        },
        "pareto": [row_record(table, int(r)) for r in sel.pareto],
        "top": [row_record(table, int(r)) for r in order],
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
