"""Non-dominated filtering (every objective maximised)."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray


def pareto_mask(points: ArrayLike) -> NDArray[np.bool_]:
    """Mask of the non-dominated rows of ``points`` (shape (n, m), every column maximised).

    A row is dominated when another row is ≥ in every column and > in at least one;
    identical rows do not dominate each other, so duplicates of a front point are all
    kept. NaN counts as the worst value (−inf).

    Rows are visited in descending lexicographic order, so a row can only be dominated by
    rows before it; each visited survivor is on the front and removes, in one vectorised
    step, every later row it dominates. Cost is O(n log n + n·F) for a front of F rows.
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2:
        raise ValueError("points must be a 2-D array (configurations × objectives)")
    n = pts.shape[0]
    mask = np.zeros(n, dtype=bool)
    if n == 0:
        return mask
    pts = np.where(np.isnan(pts), -np.inf, pts)
    # Cheap pre-filter: a few strong points (best per column, best normalised sum) remove
    # most dominated rows in one vectorised pass each, before the O(n log n) sort.
    alive = np.arange(n)
    finite = np.where(np.isfinite(pts), pts, 0.0)
    span = finite.max(axis=0) - finite.min(axis=0)
    score = ((finite - finite.min(axis=0)) / np.where(span > 0, span, 1.0)).sum(axis=1)
    for killer in {*np.argmax(pts, axis=0).tolist(), int(np.argmax(score))}:
        p = pts[killer]
        sub = pts[alive]
        dominated = np.all(sub <= p, axis=1) & np.any(sub < p, axis=1)
        alive = alive[~dominated]
    sub = pts[alive]
    order = np.lexsort(sub.T[::-1])[::-1]
    cand = sub[order]
    idx = alive[order]
    i = 0
    while i < cand.shape[0]:
        p = cand[i]
        rest = cand[i + 1 :]
        dominated = np.all(rest <= p, axis=1) & np.any(rest < p, axis=1)
        if dominated.any():
            keep = np.concatenate([np.ones(i + 1, dtype=bool), ~dominated])
            cand = cand[keep]
            idx = idx[keep]
        i += 1
    mask[idx] = True
    return mask
