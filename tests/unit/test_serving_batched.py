"""Batched verification across sessions, with a fake multi-sequence target."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import httpx
import numpy as np
import pytest
from _serving_fakes import FakeBatchTarget, FakeDrafter, bigram_table

from configspec.backends.base import Evaluation
from configspec.serving.batched import BatchedVerifierService, BatchPolicy
from configspec.serving.client import EdgeClient
from configspec.serving.server import ServerThread
from configspec.serving.sessions import ServerLimits
from configspec.serving.verify import apply_temperature

V = 40


def _drafter() -> FakeDrafter:
    t = bigram_table(V, seed=1).astype(np.float64)
    rng = np.random.default_rng(101)
    t = t * np.exp(rng.normal(size=t.shape) * 0.5)
    return FakeDrafter(t / t.sum(axis=1, keepdims=True))


def _run_clients(url: str, prompts: list[list[int]], n: int, k: int = 4) -> list[list[int]]:
    out: list[list[int]] = [[] for _ in prompts]

    def run(i: int) -> None:
        with EdgeClient(url, _drafter(), k=k) as c:
            out[i] = c.generate(prompts[i], n).tokens

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_concurrent_sessions_share_passes_and_each_equals_target_only() -> None:
    target = FakeBatchTarget(bigram_table(V, seed=1), pass_delay_s=0.01)
    service = BatchedVerifierService(
        target, ServerLimits(max_sessions=16), BatchPolicy(max_sessions_per_batch=8)
    )
    prompts = [[1, 3 + i, 7, 2 + 2 * i] for i in range(6)]
    with ServerThread(service) as srv:
        got = _run_clients(srv.url, prompts, 30)
        metrics = httpx.get(srv.url + "/metrics").text
    for prompt, tokens in zip(prompts, got, strict=True):
        assert tokens == target.greedy(prompt, 30)
    assert max(len(p) for p in target.passes) > 1  # some passes held several sessions
    assert all(len(p) <= 8 for p in target.passes)
    assert all(len({s for s, _ in p}) == len(p) for p in target.passes)
    for name in (
        "configspec_batch_sessions_bucket",
        "configspec_batch_gather_wait_seconds_bucket",
        "configspec_session_queue_seconds_bucket",
    ):
        assert name in metrics
    assert target.free == sorted(target.free) or len(target.free) == 16  # all freed


def test_policy_limits_sessions_and_positions_per_pass() -> None:
    target = FakeBatchTarget(bigram_table(V, seed=1), pass_delay_s=0.01)
    policy = BatchPolicy(
        max_sessions_per_batch=2, max_positions_per_pass=16, prefill_chunk_tokens=8
    )
    service = BatchedVerifierService(target, ServerLimits(max_k=8, max_sessions=16), policy)
    prompts = [[1, 3 + i, 7] for i in range(5)]
    with ServerThread(service) as srv:
        got = _run_clients(srv.url, prompts, 12)
    assert all(len(p) <= 2 and sum(n for _, n in p) <= 16 for p in target.passes)
    assert got == [target.greedy(p, 12) for p in prompts]


def test_long_prefill_is_chunked_and_does_not_starve_other_rounds() -> None:
    target = FakeBatchTarget(bigram_table(V, seed=1), pass_delay_s=0.02)
    policy = BatchPolicy(max_positions_per_pass=32, prefill_chunk_tokens=32)
    service = BatchedVerifierService(target, ServerLimits(max_k=8, max_sessions=16), policy)
    long_prompt = [1] + [5, 6, 7, 8] * 150  # 601 tokens: 20 chunks
    done: dict[str, float] = {}
    with ServerThread(service) as srv:

        def long_open() -> None:
            with EdgeClient(srv.url, _drafter(), k=4) as c:
                c.generate(long_prompt, 1)
            done["long"] = time.perf_counter()

        t = threading.Thread(target=long_open)
        t.start()
        time.sleep(0.1)  # the long prefill is under way
        short = _run_clients(srv.url, [[1, 9, 4]], 5)
        done["short"] = time.perf_counter()
        t.join()
    assert short[0] == target.greedy([1, 9, 4], 5)
    assert done["short"] < done["long"]  # the short session's rounds interleaved
    assert max(sum(n for _, n in p) for p in target.passes) <= 32


def test_closing_a_session_mid_queue_does_not_disturb_others() -> None:
    target = FakeBatchTarget(bigram_table(V, seed=1), pass_delay_s=0.01)
    service = BatchedVerifierService(target, ServerLimits(max_sessions=4))
    with ServerThread(service) as srv:
        r = httpx.post(srv.url + "/v1/sessions", json={"prompt_tokens": [1, 2, 3]})
        assert r.status_code == 200
        sid = r.json()["session_id"]
        tok = r.json()["session_token"]
        got = _run_clients(srv.url, [[1, 4, 4], [1, 5, 6]], 10)
        httpx.delete(
            srv.url + f"/v1/sessions/{sid}", headers={"X-Session-Token": tok}
        ).raise_for_status()
        again = _run_clients(srv.url, [[1, 4, 4]], 10)
    assert got == [target.greedy([1, 4, 4], 10), target.greedy([1, 5, 6], 10)]
    assert again[0] == got[0]
    assert len(target.free) == target.n_seqs  # every sequence returned


def test_bad_policy_and_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="max_sessions_per_batch"):
        BatchPolicy(max_sessions_per_batch=0)
    target = FakeBatchTarget(bigram_table(V, seed=1), n_seqs=4)
    with pytest.raises(ValueError, match="KV sequences"):
        BatchedVerifierService(target, ServerLimits(max_sessions=8))
    with pytest.raises(ValueError, match="cannot hold"):
        BatchedVerifierService(
            target,
            ServerLimits(max_sessions=4, max_k=16),
            BatchPolicy(max_positions_per_pass=8, prefill_chunk_tokens=8),
        )


def test_a_short_prefill_chunk_never_pads_a_pass_of_rounds() -> None:
    """A prompt shorter than a round of the largest K is still a prefill: mixed into a
    pass of rounds it would pad every round to its width, so it gets a pass of its own
    (and prefill chunks of one width share one)."""
    import asyncio

    from configspec.serving.batched import _Work

    target = FakeBatchTarget(bigram_table(V, seed=1))
    service = BatchedVerifierService(target, ServerLimits(max_sessions=8, max_k=16))
    seqs = [target.new_sequence() for _ in range(5)]
    for s in seqs[:3]:
        target.cache[s] = [1, 2, 3]  # three sessions prefilled
    loop = asyncio.new_event_loop()
    try:

        def work(seq: int, context: list[int], tokens: list[int], round_: bool) -> _Work:
            fut = loop.create_future()
            return _Work(seq, context, tokens, False, lambda e: e, fut, round_=round_)

        service._queue = [
            work(seqs[0], [1, 2, 3], [4, 5, 6, 7], True),  # 5 positions
            work(seqs[3], list(range(1, 13)), [], False),  # a 12-token prompt: 11 positions
            work(seqs[1], [1, 2, 3], [4, 5], True),
            work(seqs[4], list(range(1, 13)), [], False),
            work(seqs[2], [1, 2, 3], [4], True),
        ]
        first = service._compose()
        second = service._compose()
    finally:
        loop.close()
    assert [w.seq for w in first] == [seqs[0], seqs[1], seqs[2]]
    assert all(w.round_ for w in first)
    assert [w.seq for w in second] == [seqs[3], seqs[4]]
    assert not service._queue


def test_pass_trace_records_each_pass_shape_and_time() -> None:
    target = FakeBatchTarget(bigram_table(V, seed=1), pass_delay_s=0.01)
    service = BatchedVerifierService(
        target, ServerLimits(max_sessions=8), BatchPolicy(max_sessions_per_batch=4)
    )
    service.pass_trace = []
    prompts = [[1, 3 + i, 7, 2 + 2 * i] for i in range(3)]
    with ServerThread(service) as srv:
        _run_clients(srv.url, prompts, 12)
    trace = service.pass_trace
    assert len(trace) == len(target.passes)
    for rec, done in zip(trace, target.passes, strict=True):
        shape = rec["shape"]
        assert shape["seqs"] == sorted(s for s, _ in done)
        assert sorted(shape["positions"]) == sorted(n for _, n in done)
        assert len(shape["rounds"]) == len(done) and len(shape["context_tokens"]) == len(done)
        assert all(shape["rounds"]) or not any(shape["rounds"])  # never mixed
        assert shape["runs"] >= 1 and rec["pass_s"] >= 0.01
    assert any(all(r["shape"]["rounds"]) for r in trace)
    assert any(not any(r["shape"]["rounds"]) for r in trace)  # the prompts' prefills


class _TemperedBatchTarget(FakeBatchTarget):
    """Computes ``probs`` at each request's temperature in the pass, as the llama.cpp
    batch target does; records (probs asked, temperature) per request."""

    def __init__(self, table: np.ndarray) -> None:
        super().__init__(table)
        self.asked: list[tuple[bool, float]] = []

    def evaluate_many(self, requests: Sequence[object]) -> list[Evaluation]:
        out = []
        for r, e in zip(requests, super().evaluate_many(requests), strict=True):
            probs, temp = r.probs, r.temperature  # type: ignore[attr-defined]
            self.asked.append((probs, temp))
            if probs and temp != 1.0:
                e = Evaluation(e.argmax, apply_temperature(e.probs, temp), elapsed_s=e.elapsed_s,
                               extra={**e.extra, "probs_temperature": temp})  # fmt: skip
            out.append(e)
        return out


def test_sampled_rounds_take_probs_at_their_temperature_from_the_pass() -> None:
    # the pass's softmax at T replaces re-tempering T=1 probabilities in the decision
    # (3-5 ms and ~13 MB of fresh float64 per row of 262k ids); same seed, same tokens
    table = bigram_table(V, seed=1)
    got = {}
    for name, target in (("T=1 probs", FakeBatchTarget(table)),
                         ("probs at T", _TemperedBatchTarget(table))):  # fmt: skip
        service = BatchedVerifierService(target, ServerLimits(max_sessions=4))
        with ServerThread(service) as srv, EdgeClient(srv.url, _drafter(), k=3,
                                                      temperature=0.8) as c:  # fmt: skip
            c.seed = 7
            got[name] = c.generate([1, 3, 7], 40).tokens
        if isinstance(target, _TemperedBatchTarget):
            rounds = [a for a in target.asked if a[0]]
            assert rounds and all(t == 0.8 for _, t in rounds)
    assert got["T=1 probs"] == got["probs at T"]
