"""`profile verify` on the server path: B sessions x P positions through a batched verifier.

The verifier is the real server code (HTTP, batcher) over a fake multi-sequence target
whose passes take a known time.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from _serving_fakes import FakeBatchTarget, FakeTarget, batched_fake_server, bigram_table

from configspec.config import GpuTimePrice
from configspec.errors import InvalidInput
from configspec.profiling import server_path
from configspec.profiling.server_path import ServerPathBench
from configspec.profiling.verification import VerificationProfiler, VerifySweepSettings
from configspec.serving.batched import BatchedVerifierService, BatchPolicy
from configspec.serving.server import ServerThread
from configspec.serving.sessions import ServerLimits, VerifierService
from configspec.store import ProfileStore, load_profile

V = 64
PASS_S = 0.03


@pytest.fixture
def batched() -> Iterator[tuple[str, FakeBatchTarget]]:
    with batched_fake_server(pass_delay_s=PASS_S, max_gather_wait_ms=60) as served:
        yield served


def test_b_sessions_share_one_pass_and_its_server_time_is_the_sample(
    batched: tuple[str, FakeBatchTarget], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, target = batched
    monkeypatch.setattr(server_path, "REOPEN_AFTER_TOKENS", 6)
    with ServerPathBench(url, vocab_size=V) as bench:
        bench.open_sessions(list(range(1, 21)), 4, temperature=0.0)
        n_before = len(target.passes)
        smp = bench.sample(positions=3, pool=None)
        new = target.passes[n_before:]
        assert [len(p) for p in new] == [4]  # one pass of the four sessions
        assert all(n == 3 for _, n in new[0])  # 2 drafts + the last context token each
        assert PASS_S * 1e3 <= smp.pass_ms < PASS_S * 1e3 + 200
        assert len(smp.request_ms) == 4 and min(smp.request_ms) >= smp.pass_ms * 0.9
        opened = target.passes[:]
        for _ in range(10):  # sessions grow one token a round, and are reopened in time
            bench.sample(positions=1, pool=None)
        prefills = [p for p in target.passes[len(opened) :] if max(n for _, n in p) > 3]
        assert prefills  # the reopened sessions' prompts
        assert all(len(p) == 4 for p in target.passes[len(opened) :] if p not in prefills)


def test_rounds_split_over_passes_are_discarded_then_refused() -> None:
    target = FakeBatchTarget(bigram_table(V, seed=2))
    service = BatchedVerifierService(
        target, ServerLimits(max_sessions=4, max_k=4), BatchPolicy(max_sessions_per_batch=1)
    )
    with ServerThread(service) as srv, ServerPathBench(srv.url, vocab_size=V) as bench:
        bench.open_sessions([1, 2, 3, 4], 2, temperature=0.0)
        with pytest.raises(InvalidInput, match=r"never verified 2 sessions in one pass.*\[1\]"):
            bench.sample(positions=2, pool=None)
        assert bench.discarded > 0


def test_a_verifier_that_does_not_batch_is_one_clear_line() -> None:
    service = VerifierService([FakeTarget(bigram_table(V, seed=2))], ServerLimits(max_k=4))
    with ServerThread(service) as srv, ServerPathBench(srv.url, vocab_size=V) as bench:
        bench.open_sessions([1, 2, 3, 4], 1, temperature=0.0)
        with pytest.raises(InvalidInput, match="does not batch"):
            bench.sample(positions=2, pool=None)


def test_sampling_rounds_are_timed_too(batched: tuple[str, FakeBatchTarget]) -> None:
    url, _ = batched
    with ServerPathBench(url, vocab_size=V, seed=5) as bench:
        bench.open_sessions([1, 2, 3, 4, 5], 2, temperature=0.8)
        smp = bench.sample(positions=4, pool=None, draft_top_k=8)
    assert smp.pass_ms >= PASS_S * 1e3


def _profiler(
    tmp_path: Path, url: str, temperatures: tuple[float, ...] = (0.0,), **kw: object
) -> VerificationProfiler:
    settings = VerifySweepSettings(
        k_max=2, context_tokens=(16,), batch_sizes=(1, 2, 4), warmup=0, min_repeats=2,
        max_repeats=3, point_budget_s=2.0, temperatures=temperatures,
    )  # fmt: skip
    return VerificationProfiler(
        "fake-target",
        ProfileStore(tmp_path),
        price=GpuTimePrice(price_usd_per_hour=1.0),
        settings=settings,
        tokenizer=FakeTarget(bigram_table(V, seed=2)),  # type: ignore[arg-type]
        verifier_url=url,
        target_name="fake-verifier",
        **kw,  # type: ignore[arg-type]
    )


def test_sweep_through_a_running_verifier_stores_the_batch_dimension_and_resumes(
    tmp_path: Path, batched: tuple[str, FakeBatchTarget]
) -> None:
    url, _ = batched
    seen: list[str] = []

    def crash_after_four(event: object) -> None:
        seen.append(str(event))
        if sum("ms" in s for s in seen) == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _profiler(tmp_path, url).run(crash_after_four)
    ckpt = ProfileStore(tmp_path).checkpoint_path("verify-fake-verifier")
    assert ckpt.exists()

    _, path, report = _profiler(tmp_path, url).run()
    assert report.resumed_points == 4
    assert path.exists() and not ckpt.exists()
    loaded = load_profile(path)
    assert loaded.endpoint == url and loaded.target == "fake-verifier"
    assert loaded.provenance.settings["path"] == "server"
    pts = {(p.batch, p.positions): p.latency_ms.mean for p in loaded.latency}
    assert sorted(pts) == [(b, p) for b in (1, 2, 4) for p in (1, 2, 3)]
    assert all(ms >= PASS_S * 1e3 for ms in pts.values())  # the fake pass delay, at least
    assert "pass of B sessions" in loaded.provenance.notes
    first = report.points[0]
    assert first.mean_request_ms is not None
    assert first.mean_request_ms >= first.latency_ms.mean * 0.9  # client side includes the pass


def test_server_path_settings_are_checked(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="must start with http"):
        _profiler(tmp_path, "localhost:1")
    with pytest.raises(InvalidInput, match="OpenAI-compatible server"):
        VerificationProfiler(
            "http://engine:8000",
            ProfileStore(tmp_path),
            price=GpuTimePrice(price_usd_per_hour=1.0),
            verifier_url="http://verifier:8000",
        )


def test_sweep_samples_batch_sizes_in_turns_so_host_drift_is_shared(
    tmp_path: Path, batched: tuple[str, FakeBatchTarget]
) -> None:
    # timed in blocks of B, a change in the host's speed fell on one B (a B = 16 row read
    # 25-30% high against B = 8); in turns every B and P sees the same drift
    url, target = batched
    _, _, report = _profiler(tmp_path, url).run()
    rounds = [len(p) for p in target.passes if max(n for _, n in p) <= 3]  # not prefills
    assert {1, 2, 4} <= set(rounds)
    last_b1 = max(i for i, b in enumerate(rounds) if b == 1)
    first_b4 = rounds.index(4)
    assert first_b4 < last_b1  # B = 1 is sampled again after B = 4 has been
    assert sorted((p.batch, p.positions) for p in report.points) == [
        (b, p) for b in (1, 2, 4) for p in (1, 2, 3)
    ]


def test_sweep_samples_temperatures_in_turns_on_their_own_sessions(
    tmp_path: Path, batched: tuple[str, FakeBatchTarget]
) -> None:
    url, target = batched
    _, _, report = _profiler(tmp_path, url, temperatures=(0.0, 0.8)).run()
    assert len(report.points) == 18 and {p.temperature for p in report.points} == {0.0, 0.8}
    # each temperature has its own 4 sessions (KV sequences 0-3 and 4-7 here)
    rounds = [max(q for q, _ in p) for p in target.passes if max(n for _, n in p) <= 3]
    sampled = [q >= 4 for q in rounds]
    assert sampled.index(True) < len(sampled) - 1 - sampled[::-1].index(False)
