"""Latency tables: piecewise-linear interpolation of profiled points, and round timing.

Profiles hold latency at scattered-but-gridded points (drafting: K × context; verification:
positions × context × batch). :func:`interpolate_separable` interpolates one dimension at a
time (outermost first), clamping at the edges of every dimension except the last, where
the caller chooses: ``clamp`` (drafting: per-token latency beyond the largest profiled K is
taken as flat) or ``nan`` (verification: positions beyond the profiled range are unknown).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]


def _interp_1d(xs: FloatArray, ys: FloatArray, q: FloatArray, outside: str) -> FloatArray:
    """Linear interpolation of rows ``ys`` (shape (n, ...)) at ``q`` along axis 0."""
    if xs.size == 1:
        out = np.broadcast_to(ys[0], (*q.shape, *ys.shape[1:])).astype(np.float64)
        if outside == "nan":
            out = np.where((q == xs[0]).reshape(q.shape + (1,) * (ys.ndim - 1)), out, np.nan)
        return out
    idx = np.clip(np.searchsorted(xs, q, side="right") - 1, 0, xs.size - 2)
    x0, x1 = xs[idx], xs[idx + 1]
    w = (q - x0) / (x1 - x0)
    inside = (q >= xs[0]) & (q <= xs[-1])
    w = np.clip(w, 0.0, 1.0)
    shape = q.shape + (1,) * (ys.ndim - 1)
    out = (1.0 - w).reshape(shape) * ys[idx] + w.reshape(shape) * ys[idx + 1]
    if outside == "nan":
        out = np.where(inside.reshape(shape), out, np.nan)
    return np.asarray(out, dtype=np.float64)


def interpolate_separable(
    coords: Sequence[ArrayLike],
    values: ArrayLike,
    at: Sequence[float],
    last_at: ArrayLike,
    last_outside: Literal["clamp", "nan"] = "clamp",
) -> FloatArray:
    """Interpolate ``values`` given at points ``coords`` (one array per dimension).

    ``at`` holds scalar query values for every dimension but the last (clamped to the
    profiled range); ``last_at`` is the vector of queries along the last dimension. For
    each distinct value of the outer dimension the remaining dimensions are interpolated
    first, then the results are interpolated along the outer one. ``values`` may carry
    trailing dimensions (e.g. shape (n, 3) for mean/low/high, interpolated together);
    the result has shape ``last_at.shape + values.shape[1:]``.
    """
    cs = [np.asarray(c, dtype=np.float64) for c in coords]
    vals = np.asarray(values, dtype=np.float64)
    q_last = np.asarray(last_at, dtype=np.float64)
    if len(cs) != len(at) + 1:
        raise ValueError("need one scalar query per dimension except the last")
    if len(cs) == 1:
        order = np.argsort(cs[0], kind="stable")
        xs, ys = cs[0][order], vals[order]
        xs_u, first = np.unique(xs, return_index=True)
        # Duplicate x (repeated measurements): average them.
        sums = np.add.reduceat(ys, first)
        counts = np.diff(np.append(first, xs.size)).reshape((-1,) + (1,) * (ys.ndim - 1))
        return _interp_1d(xs_u, sums / counts, q_last, last_outside)
    outer = cs[0]
    levels = np.unique(outer)
    rows = np.stack(
        [
            interpolate_separable(
                [c[outer == lv] for c in cs[1:]], vals[outer == lv], at[1:], q_last, last_outside
            )
            for lv in levels
        ]
    )
    q0 = np.clip(np.asarray([at[0]], dtype=np.float64), levels[0], levels[-1])
    return np.asarray(_interp_1d(levels, rows, q0, "clamp")[0], dtype=np.float64)


def draft_time_ms(k: ArrayLike, per_token_ms: ArrayLike) -> FloatArray:
    """Edge drafting time (ms) for K tokens at ``per_token_ms`` each."""
    return np.asarray(k, dtype=np.float64) * np.asarray(per_token_ms, dtype=np.float64)


def transfer_ms(
    rtt_ms: ArrayLike, payload_bytes: ArrayLike, bandwidth_mbps: ArrayLike
) -> FloatArray:
    """One-way transfer time (ms): half the round-trip time plus serialisation.

    ``payload_bytes`` × 8 bits over ``bandwidth_mbps`` (10^6 bit/s).
    """
    rtt = np.asarray(rtt_ms, dtype=np.float64)
    payload = np.asarray(payload_bytes, dtype=np.float64)
    bw = np.asarray(bandwidth_mbps, dtype=np.float64)
    return rtt / 2.0 + payload * 8.0 / (bw * 1e6) * 1e3


def uplink_payload_bytes(
    k: ArrayLike, bytes_per_token: ArrayLike, bytes_per_message: ArrayLike
) -> FloatArray:
    """Bytes the edge sends per round: the K draft tokens plus the message overhead."""
    out = np.asarray(k, dtype=np.float64) * np.asarray(bytes_per_token)
    return np.asarray(out + np.asarray(bytes_per_message), dtype=np.float64)


def downlink_payload_bytes(
    tokens_per_round: ArrayLike, bytes_per_token: ArrayLike, bytes_per_message: ArrayLike
) -> FloatArray:
    """Bytes the cloud returns per round: accepted tokens plus bonus token, plus overhead."""
    out = np.asarray(tokens_per_round, dtype=np.float64) * np.asarray(bytes_per_token)
    return np.asarray(out + np.asarray(bytes_per_message), dtype=np.float64)
