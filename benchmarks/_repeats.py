"""Ratios of goodput between benchmark arms measured in repeated, interleaved cells.

A *cell* is one generation of one arm: (repeat, phase, prompt) and its tokens and decode
seconds. Every arm runs every cell back to back, so two arms' cells with the same key saw
the same prompt at about the same time (the same host load): ratios are taken over paired
cells and their 95% CI by a percentile bootstrap that resamples the cells' keys
(:func:`paired_ratio`).

The **oracle** of a phase (the best static K measured in it) is chosen and scored on
different cells (:func:`heldout_oracle`): for each cell, the K with the best goodput over
the phase's *other* cells (leave one cell out), scored on that cell. The best of several
noisy arms measured on the same cells is biased upwards (it picks the arm whose noise
happened to be kindest); chosen on other cells, the chosen arm's noise on the scored cell
is independent of the choice, so the estimate is unbiased for "the best static K a
planner could have picked from the phase's other measurements" (if anything pessimistic:
a noisy choice can pick a worse K). The in-sample maximum is reported next to it.

Pure numpy; no I/O. Used by ``bench_adaptive.py`` (unit-tested in
``tests/unit/test_bench_repeats.py``).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from configspec.stats import BOOTSTRAP_SAMPLES, bootstrap_interval

Key = tuple[int, int, int]
"""(repeat, phase, prompt index within the phase)."""


@dataclass(frozen=True)
class Cell:
    """One generation of one arm: where it ran and what it produced."""

    repeat: int
    phase: int
    prompt: int
    tokens: int
    decode_s: float

    @property
    def key(self) -> Key:
        return (self.repeat, self.phase, self.prompt)


def goodput(cells: Iterable[Cell]) -> float:
    """Tokens per second of decode time over ``cells`` (NaN when they hold no time)."""
    cs = list(cells)
    seconds = sum(c.decode_s for c in cs)
    return sum(c.tokens for c in cs) / seconds if seconds > 0 else float("nan")


def heldout_oracle(statics: Mapping[int, list[Cell]], phase: int) -> dict[Key, int]:
    """For every cell of ``phase``: the K whose goodput over the phase's other cells is
    best (leave one cell out; with a single cell, that cell's own best — biased)."""
    by_k = {k: {c.key: c for c in cells if c.phase == phase} for k, cells in statics.items()}
    keys = sorted(set.intersection(*(set(v) for v in by_k.values())))
    out: dict[Key, int] = {}
    for key in keys:
        others = [x for x in keys if x != key] or [key]
        out[key] = max(by_k, key=lambda k: goodput(by_k[k][x] for x in others))
    return out


def oracle_cells(statics: Mapping[int, list[Cell]], choice: Mapping[Key, int]) -> list[Cell]:
    """The cells of the K chosen for each key (:func:`heldout_oracle`)."""
    index = {(k, c.key): c for k, cells in statics.items() for c in cells}
    return [index[(k, key)] for key, k in choice.items()]


def paired_ratio(
    num: Iterable[Cell],
    den: Iterable[Cell],
    *,
    n_boot: int = BOOTSTRAP_SAMPLES,
    seed: int = 0,
) -> dict[str, object]:
    """goodput(num) / goodput(den) over the keys both hold, with a 95% percentile
    bootstrap CI resampling keys, and the ratio per repeat with its median."""
    a = {c.key: c for c in num}
    b = {c.key: c for c in den}
    keys = sorted(set(a) & set(b))
    if not keys:
        raise ValueError("no paired cells")
    arr = np.array(
        [[a[k].tokens, a[k].decode_s, b[k].tokens, b[k].decode_s] for k in keys],
        dtype=np.float64,
    )
    point = float(arr[:, 0].sum() / arr[:, 1].sum() / (arr[:, 2].sum() / arr[:, 3].sum()))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(keys), size=(n_boot, len(keys)))
    s = arr[idx].sum(axis=1)
    boot = s[:, 0] / s[:, 1] / (s[:, 2] / s[:, 3])
    lo, hi = bootstrap_interval(point, boot) if len(keys) > 1 else (point, point)
    per_repeat = {}
    for r in sorted({k[0] for k in keys}):
        t = arr[[i for i, k in enumerate(keys) if k[0] == r]].sum(axis=0)
        per_repeat[r] = float(t[0] / t[1] / (t[2] / t[3]))
    return {
        "ratio": point,
        "ci_low": lo,
        "ci_high": hi,
        "cells": len(keys),
        "per_repeat": list(per_repeat.values()),
        "median_of_repeats": statistics.median(per_repeat.values()),
    }
