"""The batcher's gather modes: sync keeps closed-loop sessions in shared passes.

Closed-loop clients are coroutines driving the real service (open, verify, close) over
a fake multi-sequence target whose passes take a known time; no HTTP, so the timing is
the batcher's own.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from _serving_fakes import FakeBatchTarget, bigram_table

from configspec.serving.batched import BatchedVerifierService, BatchPolicy
from configspec.serving.protocol import OpenSessionRequest, VerifyRequest
from configspec.serving.sessions import ServerLimits

V = 40
PASS_S = 0.03


def _service(gather: str, cap_ms: float = 0.0) -> tuple[BatchedVerifierService, FakeBatchTarget]:
    target = FakeBatchTarget(bigram_table(V, seed=3), pass_delay_s=PASS_S)
    policy = BatchPolicy(max_sessions_per_batch=8, max_gather_wait_ms=cap_ms, gather=gather)
    return BatchedVerifierService(target, ServerLimits(max_sessions=8), policy), target


async def _client(
    service: BatchedVerifierService,
    prompt: list[int],
    rounds: int,
    think_s: float | list[float],
    start_s: float = 0.0,
    close: bool = True,
    latencies_s: list[tuple[float, float]] | None = None,
) -> list[int]:
    """A closed loop of K=0 rounds: think, verify, repeat; (end time, latency) per round.
    A list of think times is used in turn (a jittery client)."""
    await asyncio.sleep(start_s)
    opened = await service.open(OpenSessionRequest(prompt_tokens=prompt))
    n, out = opened.session_tokens, []
    thinks_s = think_s if isinstance(think_s, list) else [think_s]
    for r in range(rounds):
        await asyncio.sleep(thinks_s[r % len(thinks_s)])
        t0 = time.perf_counter()
        resp = await service.verify(
            opened.session_id, VerifyRequest(round=r, session_tokens=n, draft_tokens=[])
        )
        if latencies_s is not None:
            latencies_s.append((time.perf_counter(), time.perf_counter() - t0))
        n = resp.session_tokens
        out.append(resp.next_token)
    if close:
        service.close(opened.session_id)
    return out


def _decisions(service: BatchedVerifierService) -> dict[str, float]:
    reg = service.metrics.registry
    return {
        stop: reg.get_sample_value("configspec_batch_gather_decisions_total", {"stop": stop}) or 0.0
        for stop in ("none", "arrived", "full", "cap", "quiet", "fixed")
    }


def _two_clients(gather: str) -> tuple[float, FakeBatchTarget, list[list[int]]]:
    """Two clients, the second starting mid-pass; mean sessions per pass over the last 8."""
    service, target = _service(gather)
    prompts = [[1, 4, 9], [1, 6, 2]]

    async def run() -> list[list[int]]:
        got = await asyncio.gather(
            _client(service, prompts[0], 14, 0.004),
            _client(service, prompts[1], 14, 0.004, start_s=PASS_S / 2),
        )
        await service.aclose()
        return list(got)

    got = asyncio.run(run())
    last = target.passes[-8:]
    return sum(len(p) for p in last) / len(last), target, got


def test_sync_gather_pulls_desynchronised_clients_into_shared_passes() -> None:
    sync_batch, target, got = _two_clients("sync")
    fixed_batch, _, _ = _two_clients("fixed")
    # continuous batching: each client arrives just after the other's pass started
    assert fixed_batch < 1.4
    assert sync_batch > 1.7
    # results do not depend on who shared the pass
    assert got == [target.greedy([1, 4, 9], 14), target.greedy([1, 6, 2], 14)]


def test_a_lone_session_never_waits() -> None:
    service, target = _service("sync")
    lat: list[tuple[float, float]] = []

    async def run() -> list[int]:
        out = await _client(service, [1, 2, 3], 10, 0.002, latencies_s=lat)
        await service.aclose()
        return out

    assert asyncio.run(run()) == target.greedy([1, 2, 3], 10)
    d = _decisions(service)
    assert d["none"] == len(target.passes) and sum(d.values()) == d["none"]
    assert max(x for _, x in lat) < PASS_S + 0.02


@pytest.mark.parametrize("cap_ms", [0.0, 10.0])
def test_an_idle_session_does_not_stall_the_others(cap_ms: float) -> None:
    """A session that stops sending (not closed) is waited for at most
    think + max(think, 4·spread, cap/4, 3 ms) after its last result (its think time is
    steady here: spread ~0), and never beyond the cap."""
    service, _ = _service("sync", cap_ms)
    lat: list[tuple[float, float]] = []
    idle_think_s = 0.004

    async def run() -> None:
        quiet = asyncio.create_task(_client(service, [1, 7, 7], 4, idle_think_s, close=False))
        busy = _client(service, [1, 5, 3], 16, 0.002, latencies_s=lat)
        await asyncio.gather(quiet, busy)
        await service.aclose()

    asyncio.run(run())
    d = _decisions(service)
    assert d["quiet"] + d["cap"] >= 1  # the batcher did give up on the idle session
    cap_s = cap_ms / 1e3 or PASS_S  # 0: the mean pass time
    quiet_s = idle_think_s + max(idle_think_s, cap_s / 4)
    wait_bound_s = min(quiet_s, cap_s) + 0.02  # + scheduling slack
    # after the idle session's last round, every round is one pass plus a bounded wait
    late = [x for _, x in lat[8:]]
    assert late and max(late) < PASS_S + wait_bound_s + 0.02


def test_the_pass_fills_up_to_the_session_limit() -> None:
    target = FakeBatchTarget(bigram_table(V, seed=3), pass_delay_s=PASS_S)
    policy = BatchPolicy(max_sessions_per_batch=2)
    service = BatchedVerifierService(target, ServerLimits(max_sessions=8), policy)
    prompts = [[1, 2 + i, 5] for i in range(3)]

    async def run() -> list[list[int]]:
        got = await asyncio.gather(*(_client(service, p, 8, 0.003) for p in prompts))
        await service.aclose()
        return list(got)

    assert asyncio.run(run()) == [target.greedy(p, 8) for p in prompts]
    assert all(len(p) <= 2 for p in target.passes)


def test_unknown_gather_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="gather='batch' is not one of sync, fixed"):
        BatchPolicy(gather="batch")


@pytest.mark.parametrize("gather", ["sync", "fixed"])
def test_a_session_reopened_at_once_gets_the_sequence_its_closed_one_frees(gather: str) -> None:
    """Every KV sequence in use: a client that closes its session and opens the next one
    at once waits for the batcher to free the old sequence instead of being refused."""
    target = FakeBatchTarget(bigram_table(V, seed=3), n_seqs=2, pass_delay_s=PASS_S)
    policy = BatchPolicy(max_sessions_per_batch=2, gather=gather)
    service = BatchedVerifierService(target, ServerLimits(max_sessions=2), policy)

    async def run() -> list[list[int]]:
        busy = asyncio.create_task(_client(service, [1, 5, 3], 24, 0.003))
        again = [await _client(service, [1, 2 + i, 4], 3, 0.003) for i in range(4)]
        await busy
        await service.aclose()
        return again

    assert asyncio.run(run()) == [target.greedy([1, 2 + i, 4], 3) for i in range(4)]


def _jittery_pair() -> tuple[int, FakeBatchTarget, list[list[int]], dict[str, float]]:
    """A steady client (3 ms think) and one whose think time is 3, 3, then 14 ms, in turn;
    the number of passes that held one round only (prefill passes left out)."""
    service, target = _service("sync")
    prompts = [[1, 4, 9], [1, 6, 2]]
    rounds = 24

    async def run() -> list[list[int]]:
        got = await asyncio.gather(
            _client(service, prompts[0], rounds, 0.003),
            _client(service, prompts[1], rounds, [0.003, 0.003, 0.014]),
        )
        await service.aclose()
        return list(got)

    got = asyncio.run(run())
    lone = sum(1 for p in target.passes[2:] if len(p) == 1)
    return lone, target, got, _decisions(service)


def test_sync_gather_waits_for_a_client_whose_think_time_jitters() -> None:
    """The quiet limit grows with the measured spread of a session's think time: a client
    that is sometimes 11 ms late (over twice its think EWMA) still shares its partner's
    pass instead of missing it and taking a pass of its own."""
    lone, target, got, d = _jittery_pair()
    assert got == [target.greedy([1, 4, 9], 24), target.greedy([1, 6, 2], 24)]
    # 24 rounds each: 8 late rounds; after the spread is learned (2-3 of them) none misses
    assert lone <= 4, (lone, d)


def test_sixteen_staggered_clients_share_every_pass_once_started() -> None:
    # bench_fleet_model's N = 16 traced: after the start (a prefill pass per new session)
    # every pass held all 16 (stop "full"); the 10.7 sessions per pass it reported came
    # from prefill passes inside its window. Clients answered one after another by one
    # process (think 4..26 ms, passes 30 ms) must still share every pass once started.
    target = FakeBatchTarget(bigram_table(V, seed=3), pass_delay_s=PASS_S, n_seqs=16)
    policy = BatchPolicy(max_sessions_per_batch=16, gather="sync")
    service = BatchedVerifierService(target, ServerLimits(max_sessions=16), policy)
    prompts = [[1, *range(2, 3 + i % 5)] for i in range(16)]  # 2..6 tokens: own prefills

    async def run() -> None:
        await asyncio.gather(
            *(_client(service, p, 10, 0.004 + 0.0015 * i) for i, p in enumerate(prompts))
        )
        await service.aclose()

    asyncio.run(run())
    # the last pass holds the clients that joined a round late (their last round)
    assert [len(p) for p in target.passes[-7:-1]] == [16] * 6
