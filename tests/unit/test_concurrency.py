"""time_concurrent: requests released together; batch wall vs per-request latency."""

from __future__ import annotations

import threading
import time

import pytest

from configspec.errors import InvalidInput
from configspec.profiling.concurrency import time_concurrent

SLEEP_S = 0.05


def test_parallel_requests_overlap_and_start_together() -> None:
    starts: list[float] = []

    def call() -> None:
        starts.append(time.perf_counter())
        time.sleep(SLEEP_S)

    timing = time_concurrent([call] * 4)
    assert max(starts) - min(starts) < 2 * SLEEP_S  # released together (serial: >= 3x)
    assert len(timing.request_ms) == 4 and min(timing.request_ms) >= SLEEP_S * 1000 * 0.9
    assert timing.wall_ms < 3 * SLEEP_S * 1000  # overlapped, not 4 × 50 ms


def test_a_serialising_server_shows_queueing() -> None:
    """A server that handles one request at a time (llama_cpp.server): the batch takes
    n × the single latency, and requests wait (n + 1) / 2 × on average."""
    lock = threading.Lock()

    def call() -> None:
        with lock:
            time.sleep(SLEEP_S)

    timing = time_concurrent([call] * 4)
    assert timing.wall_ms >= 4 * SLEEP_S * 1000 * 0.95
    # the k-th request served waited k sleeps: mean >= 2.5 sleeps (lower bounds only:
    # a loaded machine can only make sleeps longer)
    assert 2.5 * SLEEP_S * 1000 * 0.95 <= timing.mean_request_ms <= timing.wall_ms


def test_one_call_runs_inline_and_errors_propagate() -> None:
    seen: list[str] = []
    timing = time_concurrent([lambda: seen.append(threading.current_thread().name)])
    assert seen == [threading.main_thread().name] and timing.wall_ms == timing.request_ms[0]

    def boom() -> None:
        raise RuntimeError("server said no")

    with pytest.raises(RuntimeError, match="server said no"):
        time_concurrent([boom, lambda: None])
    with pytest.raises(InvalidInput, match="at least one call"):
        time_concurrent([])
