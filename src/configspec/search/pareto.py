"""Non-dominated filtering (every objective maximised)."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

BoolArray = NDArray[np.bool_]
FloatArray = NDArray[np.float64]


def _dominated_by(cols: list[FloatArray], p: FloatArray) -> BoolArray:
    """Rows (given column by column) dominated by point ``p``: ≤ everywhere, < somewhere.

    Column-wise comparisons on contiguous 1-D arrays are several times faster than
    ``np.all(rows <= p, axis=1)`` on an (n, m) array with a small m.
    """
    le = cols[0] <= p[0]
    lt = cols[0] < p[0]
    for j in range(1, len(cols)):
        le &= cols[j] <= p[j]
        lt |= cols[j] < p[j]
    return np.asarray(le & lt, dtype=bool)


def pareto_mask(points: ArrayLike) -> BoolArray:
    """Mask of the non-dominated rows of ``points`` (shape (n, m), every column maximised).

    A row is dominated when another row is ≥ in every column and > in at least one;
    identical rows do not dominate each other, so duplicates of a front point are all
    kept. NaN counts as the worst value (−inf).

    A few strong rows (best per column, best normalised sum) first remove most dominated
    rows in one vectorised pass each. The survivors are visited in descending
    lexicographic order, so a row can only be dominated by rows before it; each visited
    survivor is on the front and removes, in one vectorised step, every later row it
    dominates. Cost is O(n log n + n·F) for a front of F rows.
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2:
        raise ValueError("points must be a 2-D array (configurations × objectives)")
    n, m = pts.shape
    mask = np.zeros(n, dtype=bool)
    if n == 0:
        return mask
    cols = [np.where(np.isnan(pts[:, j]), -np.inf, pts[:, j]) for j in range(m)]
    score = np.zeros(n)
    for c in cols:
        finite = np.isfinite(c)
        if finite.any():
            lo, hi = c[finite].min(), c[finite].max()
            score += np.where(finite, (c - lo) / (hi - lo if hi > lo else 1.0), 0.0)
    alive = np.arange(n)
    killers = {int(np.argmax(c)) for c in cols} | {int(np.argmax(score))}
    for killer in killers:
        p = np.array([c[killer] for c in cols])
        keep = ~_dominated_by([c[alive] for c in cols], p)
        alive = alive[keep]
    sub = [c[alive] for c in cols]
    order = np.lexsort(sub[::-1])[::-1]
    cand = [c[order] for c in sub]
    idx = alive[order]
    i = 0
    while i < idx.size:
        p = np.array([c[i] for c in cand])
        dominated = _dominated_by([c[i + 1 :] for c in cand], p)
        if dominated.any():
            keep = np.concatenate([np.ones(i + 1, dtype=bool), ~dominated])
            cand = [c[keep] for c in cand]
            idx = idx[keep]
        i += 1
    mask[idx] = True
    return mask
