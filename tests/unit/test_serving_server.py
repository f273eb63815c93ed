"""Verifier server and edge client over real HTTP, with small fake models."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from _serving_fakes import FakeDrafter, FakeTarget, bigram_table
from scipy import stats

from configspec.errors import BackendUnavailable, IncompatibleModels
from configspec.serving.client import EdgeClient, ServerRejected
from configspec.serving.protocol import OpenSessionRequest, VerifyRequest
from configspec.serving.server import ServerThread, free_port
from configspec.serving.sessions import ApiError, ServerLimits, VerifierService

V = 40
PROMPT = [1, 5, 9, 3]


@pytest.fixture
def target() -> FakeTarget:
    return FakeTarget(bigram_table(V, seed=1))


@pytest.fixture
def server(target: FakeTarget) -> Iterator[ServerThread]:
    service = VerifierService([target], ServerLimits(max_k=8, max_context_tokens=512))
    with ServerThread(service) as srv:
        yield srv


def _similar_drafter(seed: int = 1, noise: float = 0.5) -> FakeDrafter:
    t = bigram_table(V, seed=1).astype(np.float64)
    rng = np.random.default_rng(seed + 100)
    t = t * np.exp(rng.normal(size=t.shape) * noise)
    return FakeDrafter(t / t.sum(axis=1, keepdims=True))


@pytest.mark.parametrize("k", [1, 2, 4, 8])
def test_greedy_equals_target_only(server: ServerThread, target: FakeTarget, k: int) -> None:
    drafter = _similar_drafter()
    with EdgeClient(server.url, drafter, k=k) as client:
        gen = client.generate(PROMPT, 40)
    assert gen.tokens == target.greedy(PROMPT, 40)
    assert sum(r.accepted + 1 for r in gen.rounds) >= 40
    assert all(r.k <= k for r in gen.rounds)
    assert any(r.accepted > 0 for r in gen.rounds)  # the drafter is good enough to help


def test_stop_token_ends_generation(target: FakeTarget) -> None:
    seq = target.greedy(PROMPT, 30)
    stop = seq[7]
    t = FakeTarget(target.table, stop_token_ids=[stop])
    with (
        ServerThread(VerifierService([t])) as srv,
        EdgeClient(srv.url, _similar_drafter(), k=4) as c,
    ):
        gen = c.generate(PROMPT, 30)
    assert gen.tokens == seq[: seq.index(stop) + 1]
    assert gen.stopped_by == "stop_token"


def _raw(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, trust_env=False)


def _open(http: httpx.Client, **kw: object) -> str:
    """Open a session; ``http`` then sends its session token on every request."""
    r = http.post("/v1/sessions", json={"prompt_tokens": PROMPT, **kw})
    assert r.status_code == 200, r.text
    http.headers["X-Session-Token"] = r.json()["session_token"]
    return str(r.json()["session_id"])


def test_bad_requests_get_4xx_and_leave_the_session_intact(
    server: ServerThread, target: FakeTarget
) -> None:
    want = target.greedy(PROMPT, 3)
    with _raw(server.url) as http:
        sid = _open(http)
        path = f"/v1/sessions/{sid}/verify"
        cases = [
            (
                dict(content=b"{not json", headers={"content-type": "application/json"}),
                400,
                "malformed_request",
                "not valid JSON",
            ),
            (
                dict(json={"round": 0, "session_tokens": 4}),
                422,
                "malformed_request",
                "draft_tokens: Field required",
            ),
            (
                dict(json={"round": 0, "session_tokens": 4, "draft_tokens": [1] * 9}),
                422,
                "k_above_limit",
                "K=9 is above this server's limit (8)",
            ),
            (
                dict(json={"round": 0, "session_tokens": 4, "draft_tokens": [V + 3]}),
                422,
                "token_out_of_vocab",
                f"token id {V + 3} is outside the target vocabulary",
            ),
            (
                dict(json={"round": 0, "session_tokens": 9, "draft_tokens": [1]}),
                409,
                "session_out_of_sync",
                "holds 4",
            ),
        ]
        for kwargs, status, code, msg in cases:
            r = http.post(path, **kwargs)  # type: ignore[arg-type]
            assert r.status_code == status, r.text
            body = r.json()["error"]
            assert body["code"] == code
            assert msg in body["message"]
        r = http.post(
            "/v1/sessions/deadbeef/verify",
            json={"round": 0, "session_tokens": 4, "draft_tokens": [1]},
        )
        assert r.status_code == 404
        assert "does not exist" in r.json()["error"]["message"]
        r = http.post("/v1/sessions", json={"prompt_tokens": [1, 10_000]})
        assert r.status_code == 422 and "10000" in r.json()["error"]["message"]
        # the session is untouched: a correct round continues from the prompt
        r = http.post(path, json={"round": 0, "session_tokens": 4, "draft_tokens": want[:2]})
        assert r.status_code == 200, r.text
        assert r.json()["accepted"] == 2 and r.json()["next_token"] == want[2]
        assert r.json()["session_tokens"] == 7
        # replaying the same round does not apply it twice
        again = http.post(path, json={"round": 0, "session_tokens": 4, "draft_tokens": want[:2]})
        assert again.json()["replayed"] is True and again.json()["session_tokens"] == 7
        metrics = http.get("/metrics").text
        assert "configspec_verify_rounds_total 1.0" in metrics
        assert "configspec_accepted_tokens_total 2.0" in metrics
        assert 'configspec_request_errors_total{code="k_above_limit"} 1.0' in metrics
        assert "configspec_verify_latency_seconds_bucket" in metrics
        assert http.get("/health").json()["status"] == "ok"
        assert http.delete(f"/v1/sessions/{sid}").json()["rounds"] == 1


def test_session_expiry_and_session_limit(target: FakeTarget) -> None:
    now = [0.0]
    service = VerifierService(
        [target], ServerLimits(max_sessions=2, session_ttl_s=10), clock=lambda: now[0]
    )

    async def scenario() -> None:
        a = await service.open(OpenSessionRequest(prompt_tokens=PROMPT))
        await service.open(OpenSessionRequest(prompt_tokens=PROMPT))
        with pytest.raises(ApiError, match="already has 2 sessions") as err:
            await service.open(OpenSessionRequest(prompt_tokens=PROMPT))
        assert err.value.status == 429
        now[0] = 11.0
        with pytest.raises(ApiError, match="expired after 10 s idle") as err:
            await service.verify(
                a.session_id, VerifyRequest(round=0, session_tokens=4, draft_tokens=[1])
            )
        assert err.value.status == 410
        assert service.active_sessions == 0

    asyncio.run(scenario())


def test_sessions_sharing_one_target_do_not_interfere(target: FakeTarget) -> None:
    """Interleaved sessions on one target give the same tokens as each alone."""
    service = VerifierService([target], ServerLimits(max_k=8))
    prompts = [[1, 2, 3], [1, 7, 7, 7], [1, 30]]

    async def scenario() -> list[list[int]]:
        ids = [
            (await service.open(OpenSessionRequest(prompt_tokens=p))).session_id for p in prompts
        ]
        seqs = [list(p) for p in prompts]
        drafter = _similar_drafter()
        for rnd in range(10):
            for i, sid in enumerate(ids):
                d = drafter.draft(seqs[i], 3)
                v = await service.verify(
                    sid,
                    VerifyRequest(round=rnd, session_tokens=len(seqs[i]), draft_tokens=d.tokens),
                )
                seqs[i] += [*d.tokens[: v.accepted], v.next_token]
        return [s[len(p) :] for s, p in zip(seqs, prompts, strict=True)]

    outs = asyncio.run(scenario())
    for p, out in zip(prompts, outs, strict=True):
        assert out == target.greedy(p, len(out))


def test_client_reopens_after_server_restart(target: FakeTarget) -> None:
    port = free_port()
    service = VerifierService([target])
    holder = {"srv": ServerThread(service, port=port).start()}
    drafter = _similar_drafter()
    inner = drafter.draft
    restarted = threading.Event()

    def draft_then_restart(*a: object, **kw: object):  # type: ignore[no-untyped-def]
        if drafter.calls == 4 and not restarted.is_set():
            restarted.set()
            holder["srv"].stop()

            def later() -> None:
                time.sleep(0.3)
                holder["srv"] = ServerThread(VerifierService([target]), port=port).start()

            threading.Thread(target=later).start()
        return inner(*a, **kw)  # type: ignore[arg-type]

    drafter.draft = draft_then_restart  # type: ignore[method-assign]
    try:
        with EdgeClient(f"http://127.0.0.1:{port}", drafter, k=3) as client:
            gen = client.generate(PROMPT, 40)
    finally:
        time.sleep(0.4)
        holder["srv"].stop()
    assert restarted.is_set()
    assert gen.reconnects == 1 and len(gen.sessions) == 2
    assert gen.tokens == target.greedy(PROMPT, 40)  # nothing lost, nothing duplicated


def test_eight_concurrent_clients_no_cross_talk(target: FakeTarget) -> None:
    service = VerifierService([target], ServerLimits(max_sessions=8, max_context_tokens=2048))
    prompts = [[1, 2 + i, 3 + 2 * i] for i in range(8)]
    results: dict[int, list[int]] = {}
    rounds: dict[int, int] = {}
    errors: list[BaseException] = []

    def worker(i: int, url: str) -> None:
        try:
            with EdgeClient(url, _similar_drafter(seed=i, noise=3.0), k=1) as c:
                gen = c.generate(prompts[i], 200)
            results[i] = gen.tokens
            rounds[i] = len(gen.rounds)
        except BaseException as exc:
            errors.append(exc)

    with ServerThread(service) as srv:
        threads = [threading.Thread(target=worker, args=(i, srv.url)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors, errors
    for i, p in enumerate(prompts):
        assert results[i] == target.greedy(p, 200), f"client {i} diverged"
        assert rounds[i] >= 100


def test_speculative_sampling_end_to_end_matches_target(target: FakeTarget) -> None:
    """First two tokens through client + server are distributed as the target's."""
    service = VerifierService([target], ServerLimits(max_sessions=4))
    prompt = [1, 4]
    p = target.table.astype(np.float64)
    drafter = _similar_drafter(noise=1.0)
    n = 1000
    first = np.zeros(V)
    pair = {}
    with (
        ServerThread(service) as srv,
        EdgeClient(srv.url, drafter, k=3, temperature=1.0, seed=0) as c,
    ):
        for i in range(n):
            c.seed = 1000 + i
            gen = c.generate(prompt, 2)
            first[gen.tokens[0]] += 1
            pair[(gen.tokens[0], gen.tokens[1])] = pair.get((gen.tokens[0], gen.tokens[1]), 0) + 1
    want = p[4]
    keep = want * n >= 5
    obs = np.append(first[keep], first[~keep].sum())
    exp = np.append(want[keep] * n, want[~keep].sum() * n)
    assert stats.chisquare(obs, exp / exp.sum() * obs.sum()).pvalue > 1e-3
    # next token given the most frequent first token
    top = int(first.argmax())
    cond = np.array([pair.get((top, j), 0) for j in range(V)], dtype=float)
    m = cond.sum()
    keep = p[top] * m >= 5
    obs = np.append(cond[keep], cond[~keep].sum())
    exp = np.append(p[top][keep] * m, p[top][~keep].sum() * m)
    assert stats.chisquare(obs, exp / exp.sum() * obs.sum()).pvalue > 1e-3


def test_client_errors_are_one_clear_line(server: ServerThread) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with (
        EdgeClient(dead, _similar_drafter(), k=2) as c,
        pytest.raises(BackendUnavailable, match="cannot reach the verifier"),
    ):
        c.generate(PROMPT, 5)
    other = FakeDrafter(bigram_table(V, 3), fingerprint="other-tok", name="alien")
    with (
        EdgeClient(server.url, other, k=2) as c,
        pytest.raises(IncompatibleModels, match="does not share the tokenizer"),
    ):
        c.generate(PROMPT, 5)
    with (
        EdgeClient(server.url, _similar_drafter(), k=2) as c,
        pytest.raises(ServerRejected, match="outside the target vocabulary"),
    ):
        c.generate([1, 10_000], 5)


def test_offloaded_compute_gives_the_same_tokens(target: FakeTarget) -> None:
    service = VerifierService([target], ServerLimits(offload_compute=True))
    with ServerThread(service) as srv, EdgeClient(srv.url, _similar_drafter(), k=4) as client:
        gen = client.generate(PROMPT, 30)
    assert gen.tokens == target.greedy(PROMPT, 30)


def test_drafter_prefill_happens_before_decoding_and_tail_rounds_are_marked(
    server: ServerThread,
) -> None:
    """A drafter that can prefill reads the prompt before the first round (so no round
    carries a prompt prefill), and every round records the K it asked for."""

    class PrefillingDrafter(FakeDrafter):
        prefilled: list[list[int]] = []  # noqa: RUF012

        def prefill(self, context: list[int]) -> None:
            self.prefilled.append(list(context))
            time.sleep(0.05)

    base = _similar_drafter()
    drafter = PrefillingDrafter(base.table)
    with EdgeClient(server.url, drafter, k=4) as client:
        gen = client.generate(PROMPT, 10)
    assert drafter.prefilled == [PROMPT]
    assert gen.draft_prefill_ms >= 50.0
    assert all(r.draft_ms < 50.0 for r in gen.rounds)
    assert gen.decode_s * 1e3 < sum(r.round_ms for r in gen.rounds) + 50.0
    limits = [r.k_limit for r in gen.rounds]
    assert limits[0] == 4 and all(x is not None and x <= 4 for x in limits)
    # the last round may not pass max_tokens: its K is cut to what is left
    produced = 0
    for r in gen.rounds:
        assert r.k_limit == min(4, 10 - produced - 1)
        produced += r.accepted + 1


def test_health_answers_while_a_long_prefill_runs() -> None:
    """By default model work runs off the event loop: a 1.5 s prefill (a long prompt)
    does not hold up /health (issue 19, item 4)."""

    class SlowPrefillTarget(FakeTarget):
        def evaluate(self, context, tokens):  # type: ignore[no-untyped-def]
            if len(context) > 100 and not tokens:
                time.sleep(1.5)
            return super().evaluate(context, tokens)

    service = VerifierService([SlowPrefillTarget(bigram_table(V, seed=1))])
    assert service.limits.offload_compute
    with ServerThread(service) as srv:
        body = OpenSessionRequest(prompt_tokens=[1] + [5] * 200).model_dump_json()
        opener = threading.Thread(
            target=httpx.post,
            args=(srv.url + "/v1/sessions",),
            kwargs={"content": body, "timeout": 10.0},
        )
        opener.start()
        time.sleep(0.3)  # the prefill is running now
        t0 = time.perf_counter()
        health = httpx.get(srv.url + "/health", timeout=5.0)
        waited_s = time.perf_counter() - t0
        opener.join()
    assert health.status_code == 200
    assert waited_s < 0.5


def test_adaptive_k_client_keeps_the_output_and_records_each_choice(
    server: ServerThread, target: FakeTarget
) -> None:
    from configspec.config import RoundTiming
    from configspec.model.evaluate import Link
    from configspec.serving.adaptive import AdaptiveK, PolicyPrior

    n = 8
    verify = np.full(n + 2, 5.0)
    verify[0] = np.nan
    prior = PolicyPrior(
        acceptance=np.full(n, 0.6),
        proposal=np.ones(n),
        draft_ms_per_token=np.full(n, 0.5),
        verify_ms=verify,
        link=Link(rtt_ms=10.0, bytes_per_token=0.0, bytes_per_message=0.0),
    )
    policy = AdaptiveK(prior, k_min=2, k_max=6)
    with EdgeClient(server.url, _similar_drafter(), k=99, policy=policy) as client:
        gen = client.generate(PROMPT, 60)
    assert gen.tokens == target.greedy(PROMPT, 60)  # K per round never changes the text
    assert policy.rounds_seen == len(gen.rounds)
    for r in gen.rounds:
        assert r.choice is not None
        assert 2 <= r.choice.k <= 6
        assert r.k_limit is not None and r.k_limit <= r.choice.k
        assert len(r.choice.acceptance) == n
    # the estimates are stored with the round and read back
    again = RoundTiming.model_validate_json(gen.rounds[3].model_dump_json())
    assert again.choice == gen.rounds[3].choice
    # a record written before adaptive K (no choice) still reads
    old = gen.rounds[0].model_dump(exclude={"choice"})
    assert RoundTiming.model_validate(old).choice is None
