"""Edge energy per round.

energy = draft power × drafting time + idle power × waiting time (network + verification)
+ radio energy per byte × bytes sent and received. When the idle power is unknown (NaN)
only drafting (and radio) is charged and the result says so; when the drafting power is
unknown the energy is NaN ("no power data"), never a crash.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

ENERGY_FULL = 0
ENERGY_DRAFT_ONLY = 1
ENERGY_NO_DATA = 2
ENERGY_NOTES = ("full", "drafting only (no idle power)", "no power data")
"""Human-readable notes indexed by the codes above."""


def edge_energy_j(
    draft_ms: ArrayLike,
    draft_power_w: ArrayLike,
    wait_ms: ArrayLike,
    idle_power_w: ArrayLike,
    radio_bytes: ArrayLike = 0.0,
    radio_j_per_byte: ArrayLike = 0.0,
) -> FloatArray:
    """Edge joules per round; NaN idle power charges nothing for waiting."""
    idle = np.asarray(idle_power_w, dtype=np.float64)
    idle = np.where(np.isnan(idle), 0.0, idle)
    return np.asarray(
        np.asarray(draft_power_w, dtype=np.float64) * np.asarray(draft_ms) / 1e3
        + idle * np.asarray(wait_ms) / 1e3
        + np.asarray(radio_bytes) * np.asarray(radio_j_per_byte)
    )


def energy_note_codes(draft_power_w: ArrayLike, idle_power_w: ArrayLike) -> IntArray:
    """Per-row code into :data:`ENERGY_NOTES` saying how complete the energy figure is."""
    draft = np.asarray(draft_power_w, dtype=np.float64)
    idle = np.asarray(idle_power_w, dtype=np.float64)
    return np.where(
        np.isnan(draft), ENERGY_NO_DATA, np.where(np.isnan(idle), ENERGY_DRAFT_ONLY, ENERGY_FULL)
    ).astype(np.int64)
