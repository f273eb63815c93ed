"""Per-profile lookup tables: one drafter's, one target's and one alignment entry's
figures laid out over K (or positions) at a context length and temperature, as
(mean, low, high) arrays the search and the runtime policy index.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from configspec.config import AlignmentEntry, DrafterOnDevice, Estimate, VerificationProfile
from configspec.errors import InvalidInput
from configspec.model.acceptance import (
    tokens_per_round_from_alpha,
    tokens_per_round_from_measured,
    tokens_per_round_from_positions,
)
from configspec.model.latency import interpolate_separable
from configspec.model.presets import ModelPreset
from configspec.records import AcceptanceSource

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


def estimate_triple(est: Estimate | None) -> tuple[float, float, float]:
    """(mean, low, high) of ``est``; NaN for a missing figure."""
    if est is None:
        return (np.nan, np.nan, np.nan)
    return (est.mean, est.low, est.high)


def profiled_temperature(temperatures: Sequence[float], wanted: float) -> float:
    """The profiled temperature to use for ``wanted``: an exact match (within 1e-9), else
    the nearest one of the same kind (greedy 0 or sampled > 0: sampling costs the same
    softmax and draw at any T > 0), else the nearest one."""
    temps = sorted(set(temperatures))
    if not temps:
        raise InvalidInput("no latency points to pick a temperature from")
    same = [t for t in temps if (t > 0) == (wanted > 0)] or temps
    return min(same, key=lambda t: (abs(t - wanted), t))


def drafter_latency_table(
    drafter: DrafterOnDevice, k_cap: int, context_tokens: int, temperature: float = 0.0
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Per-token drafting latency (ms) for K = 1..k_cap as (mean, low, high) arrays.

    Interpolated over context (clamped) and K (flat beyond the largest profiled K: drafting
    K tokens is K single-token decodes), from the points profiled at the temperature
    :func:`profiled_temperature` picks for ``temperature``.
    """
    t = profiled_temperature([p.temperature for p in drafter.latency], temperature)
    pts = [p for p in drafter.latency if p.temperature == t]
    ks = [p.k for p in pts]
    ctx = [p.context_tokens for p in pts]
    qk = np.arange(1, k_cap + 1, dtype=np.float64)
    vals = [estimate_triple(p.per_token_ms) for p in pts]
    out = interpolate_separable([ctx, ks], vals, [context_tokens], qk, "clamp")
    return out[:, 0], out[:, 1], out[:, 2]


def verify_latency_table(
    profile: VerificationProfile,
    k_cap: int,
    context_tokens: int,
    batch: int,
    temperature: float = 0.0,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Verification latency (ms) for positions 0..k_cap+1 (index = positions) as
    (mean, low, high); NaN outside the profiled range of positions. Uses the points
    profiled at the temperature :func:`profiled_temperature` picks for ``temperature``."""
    t = profiled_temperature([p.temperature for p in profile.latency], temperature)
    pts = [p for p in profile.latency if p.temperature == t]
    coords = [[p.batch for p in pts], [p.context_tokens for p in pts], [p.positions for p in pts]]
    qp = np.arange(0, k_cap + 2, dtype=np.float64)
    vals = [estimate_triple(p.latency_ms) for p in pts]
    out = interpolate_separable(coords, vals, [batch, context_tokens], qp, "nan")
    return out[:, 0], out[:, 1], out[:, 2]


def acceptance_table(
    entry: AlignmentEntry, k_cap: int, preset: ModelPreset
) -> tuple[FloatArray, FloatArray, FloatArray, IntArray, FloatArray]:
    """E(K) for K = 0..k_cap as (mean, low, high, :class:`AcceptanceSource`, drafted tokens
    per round);
    NaN where no data covers K.

    ``best``: single α fills every K, per-position data overrides up to its length, measured
    by_k figures override their K. ``by_k_formula`` (paper): K·α(K)+1 from by_k only.
    Drafted tokens per round are K unless the profile measured fewer (a model-free drafter).
    """
    ks = np.arange(k_cap + 1, dtype=np.float64)
    mean, low, high = (np.full(k_cap + 1, np.nan) for _ in range(3))
    src = np.full(k_cap + 1, AcceptanceSource.NONE, dtype=np.int64)
    if preset.acceptance == "best" and entry.alpha is not None:
        for arr, a in zip((mean, low, high), estimate_triple(entry.alpha), strict=True):
            arr[:] = tokens_per_round_from_alpha(a, ks)
        src[:] = AcceptanceSource.ALPHA
    if preset.acceptance == "best" and entry.per_position:
        n = min(len(entry.per_position), k_cap)
        for arr, attr in zip((mean, low, high), ("mean", "low", "high"), strict=True):
            per = [getattr(e, attr) for e in entry.per_position[:n]]
            arr[: n + 1] = tokens_per_round_from_positions(per)
        src[: n + 1] = AcceptanceSource.PER_POSITION
    points = [p for p in entry.by_k or [] if p.k <= k_cap]
    if points:
        kk = np.asarray([p.k for p in points], dtype=np.int64)
        frac = np.asarray([estimate_triple(p.accepted_fraction) for p in points])
        use_measured = preset.acceptance == "best"
        measured = np.asarray(
            [estimate_triple(p.tokens_per_round if use_measured else None) for p in points]
        )
        for j, arr in enumerate((mean, low, high)):
            arr[kk] = tokens_per_round_from_measured(kk, frac[:, j], measured[:, j])
        src[kk] = AcceptanceSource.BY_K
    mean[0] = low[0] = high[0] = 1.0
    drafted = ks.copy()
    for p in points:
        if p.drafted_per_round is not None and preset.acceptance == "best":
            drafted[p.k] = min(float(p.k), max(0.0, p.drafted_per_round.mean))
    return mean, low, high, src, drafted
