"""Column names of the tables shared between stages (search results, reports).

The search returns one :class:`pandas.DataFrame` row per configuration; its columns are
named by the constants below so that downstream code (report, CLI, the paper
reproduction) never spells a column name by hand. Units are in every name. Columns with
``_LOW``/``_HIGH`` suffixes are the lower/upper bounds propagated from the confidence
intervals of the profiles (see :mod:`configspec.model.evaluate`).
"""

from __future__ import annotations

from enum import IntEnum
from typing import Final

# --- limits and definitions shared by every stage ----------------------------------------
K_LIMIT: Final = 64
"""Largest K (draft tokens per round) anywhere: profiling sweeps, the search, the verifier
protocol, the runtime and the CLI. 64 is the wire protocol's cap (a verify request carries
at most K+1 positions); the search used to allow 256, but a configuration above 64 could
never be run, profiled or validated, and acceptance at such K is indistinguishable from
its limit E(K) → 1/(1-α)."""


def mean_decoding_context_tokens(prompt_tokens: float, generated_tokens: float) -> float:
    """Mean context (tokens) while decoding ``generated_tokens`` after a prompt of
    ``prompt_tokens``: the context grows by one token per token produced, so on average it
    is the prompt plus half the generation."""
    return prompt_tokens + generated_tokens / 2


# --- identity of a configuration -----------------------------------------------------
MODE: Final = "mode"
"""``speculative``, ``cloud_only`` (K=0, target decodes autoregressively over the network)
or ``edge_only`` (K=0, the drafter decodes alone on the device: the drafter's text, not
the target's)."""
DEVICE: Final = "device"
DEVICE_EMULATED: Final = "device_emulated"
DRAFTER: Final = "drafter"
QUANTIZATION: Final = "quantization"
FAMILY: Final = "family"
TARGET: Final = "target"
K: Final = "k"

# --- modelled quantities per configuration ---------------------------------------------
TOKENS_PER_ROUND: Final = "tokens_per_round"
TOKENS_PER_ROUND_LOW: Final = "tokens_per_round_low"
TOKENS_PER_ROUND_HIGH: Final = "tokens_per_round_high"
ACCEPTANCE_SOURCE: Final = "acceptance_source"
"""Which acceptance data gave E(K): ``by_k``, ``per_position``, ``alpha`` or ``none``."""
DRAFT_MS: Final = "draft_ms"
UPLINK_MS: Final = "uplink_ms"
VERIFY_MS: Final = "verify_ms"
DOWNLINK_MS: Final = "downlink_ms"
ROUND_MS: Final = "round_ms"

GOODPUT_TOK_S: Final = "goodput_tok_s"
GOODPUT_TOK_S_LOW: Final = "goodput_tok_s_low"
GOODPUT_TOK_S_HIGH: Final = "goodput_tok_s_high"
COST_USD_PER_MTOK: Final = "cost_usd_per_mtok"
TOKENS_PER_USD: Final = "tokens_per_usd"
TOKENS_PER_USD_LOW: Final = "tokens_per_usd_low"
TOKENS_PER_USD_HIGH: Final = "tokens_per_usd_high"
ENERGY_J_PER_TOKEN: Final = "energy_j_per_token"
TOKENS_PER_J: Final = "tokens_per_j"
TOKENS_PER_J_LOW: Final = "tokens_per_j_low"
TOKENS_PER_J_HIGH: Final = "tokens_per_j_high"
ENERGY_NOTE: Final = "energy_note"
"""``full``, ``drafting only (no idle power)`` or ``no power data``."""
POWER_SOURCE: Final = "power_source"
"""Where the edge power behind the energy figures came from: ``measured`` (a power meter),
``estimated`` (the CPU-time estimator: an illustrative power model, not this device's
power), ``imported``, ... or ``none``. Anything but ``measured`` is labelled wherever an
energy figure is shown."""

SPEEDUP_VS_CLOUD_AR: Final = "speedup_vs_cloud_ar"
SPEEDUP_VS_EDGE_ONLY: Final = "speedup_vs_edge_only"
CLOUD_AR_GOODPUT_TOK_S: Final = "cloud_ar_goodput_tok_s"
EDGE_ONLY_GOODPUT_TOK_S: Final = "edge_only_goodput_tok_s"

DRAFTER_MEMORY_BYTES: Final = "drafter_memory_bytes"
DEVICE_MEMORY_BYTES: Final = "device_memory_bytes"

# --- objectives ----------------------------------------------------------------------
OBJECTIVE_COLUMNS: Final = {
    "goodput": GOODPUT_TOK_S,
    "cost": TOKENS_PER_USD,
    "energy": TOKENS_PER_J,
}
"""Objective name → the column it maximises (every objective is "higher is better")."""

OBJECTIVE_BOUNDS: Final = {
    "goodput": (GOODPUT_TOK_S_LOW, GOODPUT_TOK_S_HIGH),
    "cost": (TOKENS_PER_USD_LOW, TOKENS_PER_USD_HIGH),
    "energy": (TOKENS_PER_J_LOW, TOKENS_PER_J_HIGH),
}
"""Objective name → its (lower, upper) bound columns."""

PARETO_COLUMNS: Final = (GOODPUT_TOK_S, TOKENS_PER_USD, TOKENS_PER_J)

IDENTITY_COLUMNS: Final = (MODE, DEVICE, DRAFTER, QUANTIZATION, TARGET, K)

MODE_SPECULATIVE: Final = "speculative"
MODE_CLOUD_ONLY: Final = "cloud_only"
MODE_EDGE_ONLY: Final = "edge_only"

MODE_LABELS: Final = (MODE_SPECULATIVE, MODE_CLOUD_ONLY, MODE_EDGE_ONLY)
"""The :data:`MODE` column's values, indexed by :class:`Mode`."""


class Mode(IntEnum):
    """How a configuration decodes (an ``IntEnum`` so the model's arrays hold it)."""

    SPECULATIVE = 0
    CLOUD_ONLY = 1
    """K=0: the target decodes autoregressively over the network."""
    EDGE_ONLY = 2
    """K=0: the drafter decodes alone on the device."""

    @property
    def label(self) -> str:
        """The :data:`MODE` column's value (``speculative``, ``cloud_only``, ``edge_only``)."""
        return MODE_LABELS[self]


ACCEPTANCE_SOURCE_LABELS: Final = ("none", "alpha", "per_position", "by_k")
"""The :data:`ACCEPTANCE_SOURCE` column's values, indexed by :class:`AcceptanceSource`."""


class AcceptanceSource(IntEnum):
    """Which acceptance data gave E(K) (later ones override earlier ones where present)."""

    NONE = 0
    ALPHA = 1
    """One acceptance rate α, i.i.d. positions."""
    PER_POSITION = 2
    """Conditional acceptance per draft position."""
    BY_K = 3
    """Figures measured at this K."""

    @property
    def label(self) -> str:
        """The :data:`ACCEPTANCE_SOURCE` column's value."""
        return ACCEPTANCE_SOURCE_LABELS[self]
