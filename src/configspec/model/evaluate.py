"""All objectives for a whole grid of configurations at once (pure numpy).

:class:`GridInputs` holds one array per quantity, one element per configuration (already
looked up for that configuration's K); :func:`evaluate_grid` returns a dict of column
name (:mod:`configspec.records`) → array.

Uncertainty: every objective is monotone in every input (goodput falls with latency and
rises with E(K); cost rises with verification time; energy rises with power and time), so
a pessimistic pass (E low, latencies and powers high) gives each objective's lower bound
and an optimistic pass its upper bound.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from configspec import records as R
from configspec.model.cost import gpu_time_cost_usd, per_token_cost_usd
from configspec.model.energy import ENERGY_FULL, ENERGY_NO_DATA, edge_energy_j, energy_note_codes
from configspec.model.latency import downlink_payload_bytes, transfer_ms, uplink_payload_bytes
from configspec.model.presets import ModelPreset

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]


GRID_BLOCK_ROWS = 32768
"""Configurations per block in :func:`evaluate_grid` (arrays of 256 KiB: cache-sized)."""


@dataclass(frozen=True)
class Bounded:
    """A quantity per configuration with its lower and upper bounds (same shape)."""

    mean: FloatArray
    low: FloatArray
    high: FloatArray

    @classmethod
    def exact(cls, values: FloatArray) -> Bounded:
        """A quantity without uncertainty."""
        return cls(values, values, values)


@dataclass(frozen=True)
class Link:
    """The edge–cloud link (scalars or per-configuration arrays)."""

    rtt_ms: float | FloatArray = 50.0
    uplink_mbps: float | FloatArray = 20.0
    downlink_mbps: float | FloatArray = 50.0
    bytes_per_token: float | FloatArray = 8.0
    bytes_per_message: float | FloatArray = 400.0
    radio_energy_j_per_byte: float | FloatArray = 0.0
    round_overhead_ms: float | FloatArray = 0.0
    """Fixed runtime time per networked round (HTTP, serialisation, bookkeeping), ms."""


@dataclass(frozen=True)
class GridInputs:
    """Per-configuration inputs of the model; all arrays have one element per configuration.

    ``mode`` holds :class:`~configspec.records.Mode` values; ``k`` is 0 for the two
    no-speculation modes.
    ``draft_ms_per_token`` is the per-token drafting latency at this K and
    ``edge_ms_per_token`` at K = 1 (edge-only decoding). ``verify_ms`` is for K+1 positions
    and ``verify_one_ms`` for one position (cloud-only decoding). Missing powers are NaN.
    Prices: ``gpu_price`` selects GPU-time billing (else per-token). ``drafted`` is the
    mean number of tokens drafted per round (K, or fewer for a model-free drafter that
    may propose less; None = K): drafting, uplink and per-token billing are charged for
    it, and ``verify_ms`` must already be for ``drafted`` + 1 positions.
    ``draft_catchup_ms`` is the expected extra drafting time per round for reading two
    new tokens after a fully accepted round (catch-up × P(all K accepted); None = 0).
    """

    mode: IntArray
    k: IntArray
    tokens_per_round: Bounded
    draft_ms_per_token: Bounded
    edge_ms_per_token: Bounded
    verify_ms: Bounded
    verify_one_ms: Bounded
    draft_power_w: Bounded
    idle_power_w: Bounded
    gpu_price: BoolArray
    price_usd_per_hour: FloatArray
    overhead_ms_per_round: FloatArray
    price_usd_per_mtok: FloatArray
    bill_draft_tokens: BoolArray
    drafted: FloatArray | None = None
    draft_catchup_ms: Bounded | None = None

    def __len__(self) -> int:
        return int(self.k.shape[0])


@dataclass(frozen=True)
class _Static:
    """Quantities that do not depend on which bound is evaluated (computed once)."""

    edge: BoolArray
    cloud: BoolArray
    kf: FloatArray
    """Tokens drafted per round (K, or the measured mean for a model-free drafter)."""
    up_bytes: FloatArray
    up: FloatArray
    per_token_cost: FloatArray
    radio_j: float | FloatArray


def _static(g: GridInputs, link: Link, preset: ModelPreset, price_scale: float) -> _Static:
    edge = g.mode == R.Mode.EDGE_ONLY
    cloud = g.mode == R.Mode.CLOUD_ONLY
    kf = g.k.astype(np.float64) if g.drafted is None else g.drafted.astype(np.float64)
    up_bytes = uplink_payload_bytes(kf, link.bytes_per_token, link.bytes_per_message)
    if preset.include_network:
        up = np.where(edge, 0.0, transfer_ms(link.rtt_ms, up_bytes, link.uplink_mbps))
    else:
        up = np.zeros_like(kf)
    bill = g.bill_draft_tokens
    if preset.bill_draft_tokens is not None:
        bill = np.full(kf.shape, preset.bill_draft_tokens)
    per_token = per_token_cost_usd(kf, g.price_usd_per_mtok, bill) * price_scale
    radio_j = 0.0 if preset.energy_drafting_only else link.radio_energy_j_per_byte
    return _Static(edge, cloud, kf, up_bytes, up, per_token, radio_j)


def _pass(
    g: GridInputs,
    st: _Static,
    link: Link,
    preset: ModelPreset,
    price_scale: float,
    which: str,
    full: bool,
) -> dict[str, FloatArray]:
    """One evaluation with the inputs' ``mean``/``low``/``high`` chosen per ``which``."""
    pick_good = {"mean": "mean", "low": "high", "high": "low"}[which]  # for "bad" inputs
    e: FloatArray = getattr(g.tokens_per_round, which)
    draft_tok: FloatArray = getattr(g.draft_ms_per_token, pick_good)
    edge_tok: FloatArray = getattr(g.edge_ms_per_token, pick_good)
    verify: FloatArray = getattr(g.verify_ms, pick_good)
    verify_one: FloatArray = getattr(g.verify_one_ms, pick_good)
    p_draft: FloatArray = getattr(g.draft_power_w, pick_good)
    p_idle: FloatArray = getattr(g.idle_power_w, pick_good)

    edge, cloud, kf, up = st.edge, st.cloud, st.kf, st.up
    if preset.fixed_verify_ms is not None:
        verify = np.full_like(kf, preset.fixed_verify_ms)
        verify_one = verify
    verify = np.where(edge, 0.0, np.where(cloud, verify_one, verify))
    draft = np.where(edge, edge_tok, kf * draft_tok)
    if g.draft_catchup_ms is not None:
        draft = draft + np.where(edge, 0.0, getattr(g.draft_catchup_ms, pick_good))

    if preset.include_network:
        down_bytes = downlink_payload_bytes(e, link.bytes_per_token, link.bytes_per_message)
        down = np.where(edge, 0.0, transfer_ms(link.rtt_ms, down_bytes, link.downlink_mbps))
        radio_bytes = np.where(edge, 0.0, st.up_bytes + down_bytes)
        overhead = np.where(edge, 0.0, np.asarray(link.round_overhead_ms, dtype=np.float64))
    else:
        down = radio_bytes = overhead = np.zeros_like(kf)
    # The runtime's fixed per-round cost (HTTP, serialisation, bookkeeping): the edge
    # waits through it, the cloud does not bill it.
    wait = up + verify + down + overhead
    round_ms = draft + wait
    goodput = e * 1e3 / round_ms

    cost = np.where(
        g.gpu_price,
        gpu_time_cost_usd(verify, g.price_usd_per_hour, g.overhead_ms_per_round) * price_scale,
        st.per_token_cost,
    )
    cost = np.where(edge, 0.0, cost)
    with np.errstate(divide="ignore"):
        tokens_per_usd = e / cost

    if preset.energy_drafting_only:
        p_idle = np.full_like(kf, np.nan)
    energy = edge_energy_j(draft, p_draft, wait, p_idle, radio_bytes, st.radio_j)
    # Cloud-only rounds draw no drafting power: the edge only waits, so without an idle
    # power there is nothing to charge and the figure is NaN ("no power data").
    energy = np.where(cloud, p_idle * wait / 1e3 + radio_bytes * st.radio_j, energy)
    with np.errstate(divide="ignore", invalid="ignore"):
        tokens_per_j = e / energy

    out = {
        "goodput": goodput,
        "tokens_per_usd": tokens_per_usd,
        "tokens_per_j": tokens_per_j,
        "round": round_ms,
    }
    if full:
        out.update(draft=draft, up=up, verify=verify, down=down, cost=cost, energy=energy)
        # Baselines in the same units, same link: one position verified per token, and
        # the drafter decoding alone at its single-token latency.
        ar_up = transfer_ms(
            link.rtt_ms,
            uplink_payload_bytes(0.0, link.bytes_per_token, link.bytes_per_message),
            link.uplink_mbps,
        )
        ar_down = transfer_ms(
            link.rtt_ms,
            downlink_payload_bytes(1.0, link.bytes_per_token, link.bytes_per_message),
            link.downlink_mbps,
        )
        # every networked round pays the runtime's per-round overhead
        ar_up = ar_up + np.asarray(link.round_overhead_ms, dtype=np.float64)
        if not preset.include_network:
            ar_up = ar_down = np.zeros_like(kf)
        out["cloud_ar"] = 1e3 / (ar_up + verify_one + ar_down)
        out["edge_only"] = 1e3 / edge_tok
    return out


def evaluate_objectives(
    g: GridInputs, link: Link, preset: ModelPreset, price_scale: float = 1.0
) -> dict[str, FloatArray]:
    """The three objectives at the inputs' means only (one pass, no bounds, no breakdown).

    The same round model as :func:`evaluate_grid`, for callers that evaluate a few
    configurations very often (the adaptive-K policy, every round). Returns ``goodput``
    (tokens/s), ``tokens_per_usd``, ``tokens_per_j`` and ``round`` (ms) per configuration.
    """
    st = _static(g, link, preset, price_scale)
    return _pass(g, st, link, preset, price_scale, "mean", full=False)


def evaluate_grid(
    g: GridInputs,
    link: Link,
    preset: ModelPreset,
    price_scale: float = 1.0,
    block_rows: int = GRID_BLOCK_ROWS,
) -> dict[str, FloatArray | IntArray]:
    """Every modelled column of :mod:`configspec.records` for every configuration in ``g``.

    ``price_scale`` multiplies every cloud price (used by the price sensitivity sweep).
    Returns a dict of column name → array (energy notes as integer codes into
    :data:`configspec.model.energy.ENERGY_NOTES` under :data:`~configspec.records.ENERGY_NOTE`).

    Every configuration is evaluated on its own, so the grid is evaluated in blocks of
    ``block_rows`` configurations: the model's temporaries then stay in cache and are
    reused instead of being allocated (and page-faulted in) for the whole grid at once.
    The result is the same, bit for bit, for any block size.
    """
    n = len(g)
    if n <= block_rows:
        return _evaluate_block(g, link, preset, price_scale)
    out: dict[str, Any] = {}
    for start in range(0, n, block_rows):
        rows = slice(start, min(n, start + block_rows))
        part = _evaluate_block(_rows(g, rows, n), _rows(link, rows, n), preset, price_scale)
        for name, values in part.items():
            if name not in out:
                out[name] = np.empty(n, dtype=np.asarray(values).dtype)
            out[name][rows] = values
    return out


_Rows = TypeVar("_Rows", GridInputs, Link)


def _rows(obj: _Rows, rows: slice, n: int) -> _Rows:
    """``obj`` restricted to ``rows``: per-configuration arrays (length ``n``) are sliced,
    scalars and ``None`` kept."""

    def cut(v: Any) -> Any:
        if isinstance(v, Bounded):
            return Bounded(v.mean[rows], v.low[rows], v.high[rows])
        if isinstance(v, np.ndarray) and v.ndim == 1 and v.shape[0] == n:
            return v[rows]
        return v

    return replace(obj, **{f.name: cut(getattr(obj, f.name)) for f in fields(obj)})


def _evaluate_block(
    g: GridInputs, link: Link, preset: ModelPreset, price_scale: float
) -> dict[str, FloatArray | IntArray]:
    """:func:`evaluate_grid` for one block of configurations."""
    st = _static(g, link, preset, price_scale)
    mean = _pass(g, st, link, preset, price_scale, "mean", full=True)
    low = _pass(g, st, link, preset, price_scale, "low", full=False)
    high = _pass(g, st, link, preset, price_scale, "high", full=False)
    idle = g.idle_power_w.mean
    if preset.energy_drafting_only:
        idle = np.full_like(idle, np.nan)
    notes = energy_note_codes(g.draft_power_w.mean, idle)
    # Cloud-only rows draw no drafting power; their figure needs only the idle power.
    notes = np.where(
        g.mode == R.Mode.CLOUD_ONLY, np.where(np.isnan(idle), ENERGY_NO_DATA, ENERGY_FULL), notes
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        return {
            R.TOKENS_PER_ROUND: g.tokens_per_round.mean,
            R.TOKENS_PER_ROUND_LOW: g.tokens_per_round.low,
            R.TOKENS_PER_ROUND_HIGH: g.tokens_per_round.high,
            R.DRAFT_MS: mean["draft"],
            R.UPLINK_MS: mean["up"],
            R.VERIFY_MS: mean["verify"],
            R.DOWNLINK_MS: mean["down"],
            R.ROUND_MS: mean["round"],
            R.GOODPUT_TOK_S: mean["goodput"],
            R.GOODPUT_TOK_S_LOW: low["goodput"],
            R.GOODPUT_TOK_S_HIGH: high["goodput"],
            R.COST_USD_PER_MTOK: 1e6 / mean["tokens_per_usd"],
            R.TOKENS_PER_USD: mean["tokens_per_usd"],
            R.TOKENS_PER_USD_LOW: low["tokens_per_usd"],
            R.TOKENS_PER_USD_HIGH: high["tokens_per_usd"],
            R.ENERGY_J_PER_TOKEN: 1.0 / mean["tokens_per_j"],
            R.TOKENS_PER_J: mean["tokens_per_j"],
            R.TOKENS_PER_J_LOW: low["tokens_per_j"],
            R.TOKENS_PER_J_HIGH: high["tokens_per_j"],
            R.ENERGY_NOTE: notes,
            R.CLOUD_AR_GOODPUT_TOK_S: mean["cloud_ar"],
            R.EDGE_ONLY_GOODPUT_TOK_S: mean["edge_only"],
            R.SPEEDUP_VS_CLOUD_AR: mean["goodput"] / mean["cloud_ar"],
            R.SPEEDUP_VS_EDGE_ONLY: mean["goodput"] / mean["edge_only"],
        }
