"""Repeat a timed measurement until its 95% confidence interval is tight enough.

One way to time a region everywhere in profiling: :func:`repeat_until` calls ``measure``
(which returns one sample, e.g. milliseconds) until the 95% CI half-width of the mean is
within ``rel_half_width`` of the mean (Student's t, :mod:`configspec.stats`), or
``max_repeats`` or the time budget is reached. Both the achieved half-width and whether
the target was met are returned, so profiles can report them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from configspec.stats import relative_half_width


@dataclass(frozen=True)
class Sampled:
    """Samples of one sweep point and how sampling stopped.

    ``converged`` is True when the 95% CI half-width reached the target; otherwise the
    time budget or ``max_repeats`` ran out first. ``rel_half_width`` is what was achieved.
    """

    samples: tuple[float, ...]
    converged: bool
    rel_half_width: float
    elapsed_s: float


def repeat_until(
    measure: Callable[[], float],
    *,
    rel_half_width: float = 0.05,
    min_repeats: int = 5,
    max_repeats: int = 200,
    budget_s: float = 10.0,
    clock: Callable[[], float] = time.perf_counter,
) -> Sampled:
    """Call ``measure`` (one sample each) until the 95% CI half-width ≤ ``rel_half_width``
    × mean, or ``max_repeats`` samples, or ``budget_s`` seconds; at least ``min_repeats``
    samples are always taken."""
    start = clock()
    samples: list[float] = []
    while True:
        samples.append(float(measure()))
        done = stop_sampling(samples, clock() - start, rel_half_width=rel_half_width,
                             min_repeats=min_repeats, max_repeats=max_repeats,
                             budget_s=budget_s)  # fmt: skip
        if done is not None:
            return done


def stop_sampling(
    samples: Sequence[float],
    elapsed_s: float,
    *,
    rel_half_width: float,
    min_repeats: int,
    max_repeats: int,
    budget_s: float,
) -> Sampled | None:
    """:func:`repeat_until`'s stopping rule for ``samples`` taken in ``elapsed_s`` seconds:
    the finished :class:`Sampled`, or None while more samples are due. For callers that
    interleave several points' samples (each point's own samples and time)."""
    if len(samples) < min_repeats:
        return None
    achieved = relative_half_width(samples)
    if achieved <= rel_half_width:
        return Sampled(tuple(samples), True, achieved, elapsed_s)
    if len(samples) >= max_repeats or elapsed_s >= budget_s:
        return Sampled(tuple(samples), False, achieved, elapsed_s)
    return None
