"""Cloud verification cost under the two documented pricing models.

* GPU time (:class:`~configspec.config.GpuTimePrice`): ``price_usd_per_hour`` × (verification
  time + fixed per-round overhead);
* per token (:class:`~configspec.config.PerTokenPrice`): ``price_usd_per_million_tokens`` ×
  tokens billed per round, which is K+1 (every position the target evaluates; the
  project's default) or K (drafted tokens only; the paper's definition). A cloud-only
  autoregressive round (K = 0) bills its one generated token under either rule.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]


def gpu_time_cost_usd(
    verify_ms: ArrayLike, price_usd_per_hour: ArrayLike, overhead_ms_per_round: ArrayLike = 0.0
) -> FloatArray:
    """USD per round billed by accelerator time (verification plus fixed overhead)."""
    seconds = (np.asarray(verify_ms, dtype=np.float64) + np.asarray(overhead_ms_per_round)) / 1e3
    return np.asarray(np.asarray(price_usd_per_hour, dtype=np.float64) / 3600.0 * seconds)


def billed_tokens(k: ArrayLike, bill_draft_tokens: ArrayLike) -> FloatArray:
    """Tokens billed per round: K (drafts only, at least 1) or K+1 (all positions)."""
    kk = np.asarray(k, dtype=np.float64)
    return np.where(np.asarray(bill_draft_tokens, dtype=bool), np.maximum(kk, 1.0), kk + 1.0)


def per_token_cost_usd(
    k: ArrayLike, price_usd_per_mtok: ArrayLike, bill_draft_tokens: ArrayLike
) -> FloatArray:
    """USD per round billed per token (see :func:`billed_tokens`)."""
    return (
        np.asarray(price_usd_per_mtok, dtype=np.float64) / 1e6 * billed_tokens(k, bill_draft_tokens)
    )
