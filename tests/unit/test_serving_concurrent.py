"""A verifier in front of an OpenAI-compatible engine sends sessions' requests concurrently.

The engine is a fake: a real threaded HTTP server answering ``/v1/completions`` (vLLM's
echo + token-id log-prob shape) from a bigram table after a fixed delay, and counting how
many requests it holds at once.
"""

from __future__ import annotations

import http.server
import json
import math
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from _serving_fakes import FakeDrafter, FakeTarget, bigram_table

from configspec.backends.remote import RemoteTarget
from configspec.serving.client import EdgeClient
from configspec.serving.concurrent import AsyncTarget, ConcurrentVerifierService
from configspec.serving.server import ServerThread, free_port
from configspec.serving.sessions import ServerLimits, VerifierService

V = 48


class FakeEngine:
    """A slow OpenAI-compatible completions server over a bigram table (test fake)."""

    def __init__(self, table: np.ndarray, delay_s: float) -> None:
        self.table, self.delay_s = table, delay_s
        self.lock = threading.Lock()
        self.in_flight = self.max_in_flight = self.completions = 0
        self.fail = False  # answer 503 (an engine overloaded or restarting)
        engine = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _send(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._send(200, {"object": "list", "data": [{"id": "fake-engine"}]})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                if self.path != "/v1/completions" or not isinstance(body.get("prompt"), list):
                    self._send(404 if self.path != "/v1/completions" else 400, {"detail": "no"})
                    return
                if engine.fail:
                    self._send(503, {"error": {"message": "engine overloaded"}})
                    return
                self._send(200, engine.complete(body["prompt"], int(body["logprobs"])))

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def complete(self, prompt: list[int], top_k: int) -> dict[str, Any]:
        with self.lock:
            self.in_flight += 1
            self.completions += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            time.sleep(self.delay_s)
            tops: list[dict[str, float] | None] = [None]
            for prev in prompt:  # row j+1 predicts the token after prompt[:j+1]
                row = self.table[prev]
                ids = np.argsort(-row)[:top_k]
                tops.append({f"token_id:{i}": math.log(float(row[i])) for i in ids})
            nxt = int(self.table[prompt[-1]].argmax())
            toks = [f"token_id:{t}" for t in (*prompt, nxt)]
            return {"choices": [{"logprobs": {"tokens": toks, "top_logprobs": tops}}]}
        finally:
            with self.lock:
                self.in_flight -= 1

    def __enter__(self) -> FakeEngine:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def table() -> np.ndarray:
    return bigram_table(V, seed=3)


@pytest.fixture
def engine(table: np.ndarray) -> Iterator[FakeEngine]:
    with FakeEngine(table, delay_s=0.4) as e:
        yield e


def _generate(url: str, table: np.ndarray, prompts: list[list[int]], n: int, k: int):  # type: ignore[no-untyped-def]
    out: list[list[int]] = [[] for _ in prompts]
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            with EdgeClient(url, FakeDrafter(table), k=k, timeout_s=60) as c:
                out[i] = c.generate(prompts[i], n).tokens
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return out, time.perf_counter() - t0


def test_eight_sessions_reach_the_engine_together_not_one_after_another(
    engine: FakeEngine, table: np.ndarray
) -> None:
    target = RemoteTarget(engine.url, FakeTarget(table), top_k=5)
    assert isinstance(target, AsyncTarget)
    service = ConcurrentVerifierService(target, ServerLimits(max_sessions=16))
    prompts = [[1, 3 + i, 7, 2 + 2 * i] for i in range(8)]
    # the drafter is the target's own table: every round accepts all K=3 drafts, so each
    # session is 3 engine requests (prefill, 2 rounds of 4 tokens) = 1.2 s of engine delay
    with ServerThread(service) as srv:
        got, elapsed_s = _generate(srv.url, table, prompts, n=8, k=3)
        metrics = httpx.get(srv.url + "/metrics").text
    for prompt, tokens in zip(prompts, got, strict=True):
        assert tokens == FakeTarget(table).greedy(prompt, 8)
    assert engine.completions == 3 * 8
    assert engine.max_in_flight == 8  # all eight sessions' requests at the engine at once
    # ~1x the per-session delay (1.2 s), not 8x (9.6 s) as one-at-a-time would take
    assert elapsed_s < 4.0, elapsed_s
    assert "configspec_upstream_concurrency_bucket" in metrics
    line = next(
        x for x in metrics.splitlines() if x.startswith("configspec_upstream_concurrency_sum")
    )
    assert float(line.split()[-1]) > 24  # mean concurrency above 1


def test_one_at_a_time_service_serialises_the_same_engine(table: np.ndarray) -> None:
    """The contrast: the locked pool sends one request at a time (why the new service)."""
    with FakeEngine(table, delay_s=0.05) as engine:
        target = RemoteTarget(engine.url, FakeTarget(table), top_k=5)
        service = VerifierService([target], ServerLimits(max_sessions=8))
        with ServerThread(service) as srv:
            got, _ = _generate(srv.url, table, [[1, 4, 9], [1, 5, 2], [1, 6, 3]], n=4, k=3)
    assert engine.max_in_flight == 1
    assert got[0] == FakeTarget(table).greedy([1, 4, 9], 4)


def test_engine_errors_fail_only_that_request(table: np.ndarray) -> None:
    """An engine answering 503 gives the client one clear error; the verifier lives on."""
    with FakeEngine(table, delay_s=0.0) as engine:
        target = RemoteTarget(engine.url, FakeTarget(table), top_k=5)
        service = ConcurrentVerifierService(target, ServerLimits(max_sessions=4))
        with ServerThread(service) as srv:
            open_body = {"prompt_tokens": [1, 4, 9], "protocol_version": 2}
            engine.fail = True
            r = httpx.post(srv.url + "/v1/sessions", json=open_body)
            assert r.status_code == 422 and r.json()["error"]["code"] == "target_error"
            assert "HTTP 503: engine overloaded" in r.json()["error"]["message"]
            assert service.active_sessions == 0
            engine.fail = False
            with EdgeClient(srv.url, FakeDrafter(table), k=2) as c:
                assert c.generate([1, 4, 9], 3).tokens == FakeTarget(table).greedy([1, 4, 9], 3)
