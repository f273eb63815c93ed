"""Pure functions of the speculative-decoding model: numpy in, numpy out, no I/O.

* :mod:`~configspec.model.acceptance` — tokens per round E(K);
* :mod:`~configspec.model.latency` — latency interpolation, drafting and transfer time;
* :mod:`~configspec.model.cost` — cloud cost (GPU time, per token);
* :mod:`~configspec.model.energy` — edge energy;
* :mod:`~configspec.model.evaluate` — every objective over a grid, with bounds;
* :mod:`~configspec.model.presets` — named model presets (``configspec``, ``paper``).
"""

from configspec.model.acceptance import (
    tokens_per_round_from_alpha,
    tokens_per_round_from_measured,
    tokens_per_round_from_positions,
)
from configspec.model.evaluate import Bounded, GridInputs, Link, evaluate_grid
from configspec.model.presets import CONFIGSPEC, PAPER, PRESETS, ModelPreset, get_preset

__all__ = [
    "CONFIGSPEC",
    "PAPER",
    "PRESETS",
    "Bounded",
    "GridInputs",
    "Link",
    "ModelPreset",
    "evaluate_grid",
    "get_preset",
    "tokens_per_round_from_alpha",
    "tokens_per_round_from_measured",
    "tokens_per_round_from_positions",
]
