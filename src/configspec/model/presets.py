"""Named model presets: which definitions turn profiles into objectives.

``configspec`` (default) is the full edge–cloud model: E(K) from the best acceptance data
available per K, drafting + uplink + verification + downlink per round, the verification
profile's own price model, and edge energy including idle waiting and radio.

``paper`` reproduces the definitions of the ConfigSpec paper exactly
(``docs/paper.md``; data shipped in ``configspec/data/paper``), so its figures can be checked:

* tokens per round = K·α(K) + 1 from the measured α per K (``AlignmentEntry.by_k``);
* round time = K / draft_tokens_per_s + T_verify with T_verify fixed at 0.5 s; no network;
* cost: per-token pricing, billing the K drafted tokens per round;
* energy: drafting only — measured average power × drafting time;
* K ranges over 2..10.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from configspec.errors import InvalidInput


@dataclass(frozen=True)
class ModelPreset:
    """How the model maps profiles to objectives (see the module docstring)."""

    name: str
    description: str
    acceptance: Literal["best", "by_k_formula"]
    """``best``: per K, measured by_k figures, else per-position, else single α.
    ``by_k_formula``: K·α(K) + 1 from by_k only."""
    fixed_verify_ms: float | None
    """Replace the verification profile's latency with this constant (ms) when set."""
    include_network: bool
    bill_draft_tokens: bool | None
    """Force per-token billing of K (True) or K+1 (False); None keeps the profile's rule."""
    require_per_token_price: bool
    energy_drafting_only: bool
    k_min: int
    k_max_default: int


CONFIGSPEC = ModelPreset(
    name="configspec",
    description=(
        "full edge-cloud model: E(K) from measured acceptance, drafting + network + "
        "verification per round, the profile's price model, edge energy with idle and radio"
    ),
    acceptance="best",
    fixed_verify_ms=None,
    include_network=True,
    bill_draft_tokens=None,
    require_per_token_price=False,
    energy_drafting_only=False,
    k_min=1,
    k_max_default=16,
)

PAPER = ModelPreset(
    name="paper",
    description=(
        "the paper's definitions: K*alpha(K)+1 tokens per round, T_verify = 0.5 s, no network, "
        "per-token price billed on K drafted tokens, drafting-only energy, K in 2..10"
    ),
    acceptance="by_k_formula",
    fixed_verify_ms=500.0,
    include_network=False,
    bill_draft_tokens=True,
    require_per_token_price=True,
    energy_drafting_only=True,
    k_min=2,
    k_max_default=10,
)

PRESETS: dict[str, ModelPreset] = {p.name: p for p in (CONFIGSPEC, PAPER)}


def get_preset(name: str | ModelPreset) -> ModelPreset:
    """The preset called ``name`` (or ``name`` itself if it already is one)."""
    if isinstance(name, ModelPreset):
        return name
    try:
        return PRESETS[name]
    except KeyError:
        raise InvalidInput(
            f"unknown model preset {name!r}; choose one of {', '.join(sorted(PRESETS))}"
        ) from None
