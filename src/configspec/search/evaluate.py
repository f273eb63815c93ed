"""Evaluate an enumerated :class:`~configspec.search.space.Space` into a results table."""

from __future__ import annotations

import numpy as np
import pandas as pd

from configspec import records as R
from configspec.config import NetworkSettings
from configspec.model.energy import ENERGY_NOTES
from configspec.model.evaluate import Link, evaluate_grid
from configspec.model.presets import ModelPreset
from configspec.search.space import POWER_SOURCES, Space


def link_from_network(network: NetworkSettings, rtt_ms: float | None = None) -> Link:
    """The model's :class:`~configspec.model.evaluate.Link` for stored network settings,
    with the round-trip time optionally overridden (ms)."""
    return Link(
        rtt_ms=network.rtt_ms if rtt_ms is None else rtt_ms,
        uplink_mbps=network.uplink_mbps,
        downlink_mbps=network.downlink_mbps,
        bytes_per_token=network.bytes_per_token,
        bytes_per_message=network.bytes_per_message,
        radio_energy_j_per_byte=network.radio_energy_j_per_byte,
        round_overhead_ms=network.round_overhead_ms,
    )


def _categorical(codes: np.ndarray, names: list[str] | tuple[str, ...]) -> pd.Categorical:
    return pd.Categorical.from_codes(codes, categories=list(names) or ["-"], validate=False)


def evaluate_space(
    space: Space, link: Link, preset: ModelPreset, price_scale: float = 1.0
) -> pd.DataFrame:
    """One row per configuration with every column of :mod:`configspec.records`.

    Identity columns are categoricals; ``drafter``/``target`` are missing (NaN) for the
    no-speculation rows that have none.
    """
    cols = evaluate_grid(space.inputs, link, preset, price_scale)
    notes = cols.pop(R.ENERGY_NOTE)
    frame: dict[str, object] = {
        R.MODE: _categorical(space.inputs.mode, R.MODE_LABELS),
        R.DEVICE: _categorical(space.device_code, space.device_names),
        R.DRAFTER: _categorical(space.drafter_code, space.drafter_names),
        R.QUANTIZATION: _categorical(space.quant_code, space.quantizations),
        R.FAMILY: _categorical(space.family_code, space.family_names),
        R.TARGET: _categorical(space.target_code, space.target_names),
        R.K: space.inputs.k,
        R.ACCEPTANCE_SOURCE: _categorical(space.acceptance_source, R.ACCEPTANCE_SOURCE_LABELS),
        **cols,
        R.ENERGY_NOTE: _categorical(notes.astype(np.int64), ENERGY_NOTES),
        R.POWER_SOURCE: _categorical(space.power_source, POWER_SOURCES),
        R.DRAFTER_MEMORY_BYTES: space.drafter_memory_bytes,
        R.DEVICE_MEMORY_BYTES: space.device_memory_bytes,
        R.DEVICE_EMULATED: space.device_emulated,
    }
    return pd.DataFrame(frame, copy=False)
