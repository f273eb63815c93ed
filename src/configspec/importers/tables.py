"""Read and validate the published CSV formats at the boundary (pandas).

Three table kinds are recognised by their header, not by file name:

* device profiling runs (one row per model on one device: tokens/s, power, energy);
* acceptance sweeps (one row per target, drafter and speculative length K);
* drafting-speed tables (tokens/s per device, target, drafter and quantisation).

Column names are module constants; a file that looks like one kind but lacks one of its
required columns is refused with the column and the file named.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import pandas as pd

from configspec.errors import InvalidInput

logger = logging.getLogger(__name__)


class DataImportError(InvalidInput):
    """An imported file is unusable; the message names the file and what to fix."""


# device profiling CSV (one llama.cpp run per model)
DEV_DEVICE = "device"
DEV_MODEL = "model_name"
DEV_TOK_S_AVG = "tok_s_avg"
DEV_TOK_S_MIN = "tok_s_min"
DEV_TOK_S_MAX = "tok_s_max"
DEV_POWER_AVG_W = "power_avg_w"
DEV_ENERGY_J = "energy_j"
DEV_PM_METHOD = "pm_method"
DEV_PM_INTERVAL_S = "pm_interval_s"
DEV_PM_SAMPLES = "pm_samples"
DEV_REQUIRED = (DEV_DEVICE, DEV_MODEL, DEV_TOK_S_AVG, DEV_POWER_AVG_W, DEV_PM_METHOD)
DEV_OPTIONAL = (DEV_TOK_S_MIN, DEV_TOK_S_MAX, DEV_ENERGY_J, DEV_PM_INTERVAL_S, DEV_PM_SAMPLES)

# acceptance sweep CSV
ACC_TARGET = "target_model"
ACC_DRAFTER = "draft_model"
ACC_K = "spec_len"
ACC_MEAN = "mean_acceptance_rate"
ACC_STD = "std_acceptance_rate"
ACC_MIN = "min_acceptance_rate"
ACC_MAX = "max_acceptance_rate"
ACC_REQUIRED = (ACC_TARGET, ACC_DRAFTER, ACC_K, ACC_MEAN)
ACC_OPTIONAL = (ACC_STD, ACC_MIN, ACC_MAX)

# drafting-speed table
SPD_DEVICE = "device"
SPD_TARGET = "target_model"
SPD_DRAFTER = "draft_model"
SPD_QUANT = "quant"
SPD_TOK_S = "draft_tokens_per_s"
SPD_REQUIRED = (SPD_DEVICE, SPD_TARGET, SPD_DRAFTER, SPD_QUANT, SPD_TOK_S)


class TableKind(Enum):
    """What a CSV file holds, recognised from its header."""

    DEVICE_RUNS = "device profiling runs"
    ACCEPTANCE = "acceptance sweep"
    DRAFT_SPEED = "drafting-speed table"


_COLUMNS: dict[TableKind, tuple[tuple[str, ...], tuple[str, ...]]] = {
    TableKind.DEVICE_RUNS: (DEV_REQUIRED, DEV_OPTIONAL),
    TableKind.ACCEPTANCE: (ACC_REQUIRED, ACC_OPTIONAL),
    TableKind.DRAFT_SPEED: (SPD_REQUIRED, ()),
}
# Columns only one kind has: a header with any of them is of that kind.
_SIGNATURE: dict[TableKind, frozenset[str]] = {
    TableKind.DEVICE_RUNS: frozenset(
        {DEV_MODEL, DEV_TOK_S_AVG, DEV_POWER_AVG_W, DEV_PM_METHOD, DEV_ENERGY_J}
    ),
    TableKind.ACCEPTANCE: frozenset({ACC_K, ACC_MEAN, ACC_STD}),
    TableKind.DRAFT_SPEED: frozenset({SPD_TOK_S, SPD_QUANT}),
}


@dataclass(frozen=True)
class Table:
    """A validated CSV: its kind, where it came from and its rows."""

    kind: TableKind
    path: Path
    frame: pd.DataFrame


def classify(columns: list[str]) -> TableKind | None:
    """The table kind whose signature columns the header shares most; None if none."""
    present = set(columns)
    scores = {kind: len(sig & present) for kind, sig in _SIGNATURE.items()}
    best = max(scores, key=lambda k: scores[k])
    return best if scores[best] > 0 else None


def _read(path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path)
    except FileNotFoundError:
        raise DataImportError(f"{path} does not exist") from None
    except (OSError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise DataImportError(f"cannot read {path} as CSV: {exc}") from None
    except pd.errors.EmptyDataError:
        raise DataImportError(f"{path} is empty; expected a CSV with a header row") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def _numeric(frame: pd.DataFrame, column: str, path: Path, *, required: bool) -> None:
    """Coerce ``column`` to float; refuse text that is not a number, naming row and value."""
    values = pd.to_numeric(frame[column], errors="coerce")
    bad = values.isna() & frame[column].notna()
    if bad.any():
        row = int(bad.idxmax())
        raise DataImportError(
            f"{path.name}: column {column!r} row {row + 2} holds {frame[column][row]!r}, "
            "not a number"
        )
    if required and values.isna().any():
        row = int(values.isna().idxmax())
        raise DataImportError(f"{path.name}: column {column!r} is empty in row {row + 2}")
    frame[column] = values.astype(float)


def read_table(path: Path, expect: TableKind | None = None) -> Table:
    """Read one CSV, recognise its kind and validate it.

    Raises :class:`DataImportError` naming the file and column when a required column
    is missing, a value is not a number, or (with ``expect``) the file is of another kind.
    """
    path = Path(path)
    frame = _read(path)
    kind = classify(list(frame.columns))
    if kind is None or (expect is not None and kind is not expect):
        wanted = expect or TableKind.DEVICE_RUNS
        what = "no known format" if kind is None else f"a {kind.value}"
        raise DataImportError(
            f"{path.name} is {what}; expected a {wanted.value} with columns "
            f"{', '.join(_COLUMNS[wanted][0])}"
        )
    required, optional = _COLUMNS[kind]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataImportError(
            f"{path} ({kind.value}) is missing required column {missing[0]!r}"
            + (f" (and {', '.join(repr(m) for m in missing[1:])})" if missing[1:] else "")
            + f"; expected columns {', '.join(required)}"
        )
    if frame.empty:
        raise DataImportError(f"{path} ({kind.value}) has a header but no rows")
    if kind is TableKind.DEVICE_RUNS:
        _numeric(frame, DEV_TOK_S_AVG, path, required=True)
        _numeric(frame, DEV_POWER_AVG_W, path, required=False)
        for col in (c for c in optional if c in frame.columns):
            _numeric(frame, col, path, required=False)
        _positive(frame, DEV_TOK_S_AVG, path)
    elif kind is TableKind.ACCEPTANCE:
        _numeric(frame, ACC_K, path, required=True)
        _numeric(frame, ACC_MEAN, path, required=True)
        for col in (c for c in optional if c in frame.columns):
            _numeric(frame, col, path, required=False)
        _in_unit_interval(frame, ACC_MEAN, path)
        if (frame[ACC_K] < 1).any() or (frame[ACC_K] % 1 != 0).any():
            row = int(((frame[ACC_K] < 1) | (frame[ACC_K] % 1 != 0)).idxmax())
            raise DataImportError(
                f"{path.name}: {ACC_K}={frame[ACC_K][row]} in row {row + 2} is not a K >= 1"
            )
        frame[ACC_K] = frame[ACC_K].astype(int)
    else:
        _numeric(frame, SPD_TOK_S, path, required=True)
        _positive(frame, SPD_TOK_S, path)
    for col in frame.columns:
        if frame[col].dtype == object:
            frame[col] = frame[col].astype("string").str.strip()
    return Table(kind=kind, path=path, frame=frame)


def _positive(frame: pd.DataFrame, column: str, path: Path) -> None:
    bad = frame[column] <= 0
    if bad.any():
        row = int(bad.idxmax())
        raise DataImportError(
            f"{path.name}: {column}={frame[column][row]} in row {row + 2} must be > 0"
        )


def _in_unit_interval(frame: pd.DataFrame, column: str, path: Path) -> None:
    bad = (frame[column] < 0) | (frame[column] > 1)
    if bad.any():
        row = int(bad.idxmax())
        raise DataImportError(
            f"{path.name}: {column}={frame[column][row]} in row {row + 2} is outside [0, 1]"
        )


def scan_directory(folder: Path) -> list[Table]:
    """Every recognised CSV in ``folder`` (sorted by name); unrecognised ones are logged."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataImportError(f"{folder} is not a directory")
    tables: list[Table] = []
    for path in sorted(folder.glob("*.csv")):
        header = _read(path)
        if classify(list(header.columns)) is None:
            logger.warning("skipping %s: not a device, acceptance or drafting-speed table", path)
            continue
        tables.append(read_table(path))
    return tables
