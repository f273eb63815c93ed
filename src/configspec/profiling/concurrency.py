"""Timing N requests issued at the same instant (latency under concurrency).

A batching server (vLLM, SGLang, TGI, ConfigSpec's own verifier) serves concurrent
requests together, so the latency one request sees depends on how many are in flight.
:func:`time_concurrent` starts ``len(calls)`` callables together — each worker thread waits
on a barrier, then runs its call — and returns the wall time from the first start to the
last finish (what a batch pass costs) and each request's own latency. Nothing here knows
about HTTP or models: the callables are whatever issues one request.

>>> timing = time_concurrent([lambda: None, lambda: None])
>>> len(timing.request_ms)
2
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from configspec.errors import InvalidInput

DEFAULT_CONCURRENCY = (1, 2, 4, 8, 16)
"""Concurrency levels a server target is profiled at by default."""


@dataclass(frozen=True)
class ConcurrentTiming:
    """``wall_ms``: first request start to last request end, milliseconds;
    ``request_ms``: each request's own start-to-end latency, milliseconds."""

    wall_ms: float
    request_ms: tuple[float, ...]

    @property
    def mean_request_ms(self) -> float:
        """Mean per-request latency, milliseconds."""
        return sum(self.request_ms) / len(self.request_ms)


def time_concurrent(
    calls: Sequence[Callable[[], object]], pool: ThreadPoolExecutor | None = None
) -> ConcurrentTiming:
    """Run ``calls`` concurrently, released together by a barrier; time them.

    One call runs on the calling thread (no pool needed). For more, ``pool`` must have at
    least ``len(calls)`` workers (a fresh one is made and shut down when None). The first
    exception raised by a call is re-raised.
    """
    if not calls:
        raise InvalidInput("time_concurrent needs at least one call")
    if len(calls) == 1:
        start = time.perf_counter()
        calls[0]()
        ms = (time.perf_counter() - start) * 1000.0
        return ConcurrentTiming(wall_ms=ms, request_ms=(ms,))
    own = pool is None
    workers = pool or ThreadPoolExecutor(max_workers=len(calls))
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], object]) -> tuple[float, float]:
        barrier.wait()
        t0 = time.perf_counter()
        call()
        return t0, time.perf_counter()

    try:
        futures = [workers.submit(run, c) for c in calls]
        spans = [f.result() for f in futures]
    finally:
        if own:
            workers.shutdown()
    first = min(s for s, _ in spans)
    last = max(e for _, e in spans)
    return ConcurrentTiming(
        wall_ms=(last - first) * 1000.0,
        request_ms=tuple((e - s) * 1000.0 for s, e in spans),
    )
