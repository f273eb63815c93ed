"""The verifier's API surface: authentication, session binding, error shape, strict parsing."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from _serving_fakes import FakeDrafter, FakeTarget, bigram_table

from configspec.errors import BackendUnavailable
from configspec.serving.client import EdgeClient, ServerRejected, probe_server
from configspec.serving.guard import ConnectionLimits
from configspec.serving.protocol import ErrorResponse
from configspec.serving.server import ServerThread
from configspec.serving.sessions import ServerLimits, VerifierService

V = 40
PROMPT = [1, 5, 9, 3]
KEY = "test-key-0123456789"


@pytest.fixture
def target() -> FakeTarget:
    return FakeTarget(bigram_table(V, seed=1))


@pytest.fixture
def locked(target: FakeTarget) -> Iterator[ServerThread]:
    """A server that wants an API key, with a 2 kB body limit."""
    service = VerifierService([target], ServerLimits(max_k=8, max_context_tokens=512))
    limits = ConnectionLimits(max_body_bytes=2000)
    with ServerThread(service, api_key=KEY, limits=limits) as srv:
        yield srv


def _http(url: str, key: str | None = KEY) -> httpx.Client:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=url, trust_env=False, headers=headers)


def _shape(r: httpx.Response, status: int, code: str) -> str:
    """Assert ``r`` is a documented error with ``status`` and ``code``; return its message."""
    assert r.status_code == status, r.text
    body = ErrorResponse.model_validate_json(r.content)
    assert body.error.code == code, r.text
    assert body.error.message and "\n" not in body.error.message
    return body.error.message


def test_api_key_is_required_everywhere_but_health(locked: ServerThread) -> None:
    with _http(locked.url, None) as anon, _http(locked.url, "wrong") as wrong:
        assert anon.get("/health").status_code == 200
        assert anon.head("/health").status_code == 200
        for client in (anon, wrong):
            for method, path in [
                ("GET", "/v1/info"),
                ("GET", "/metrics"),
                ("POST", "/v1/sessions"),
                ("DELETE", "/v1/sessions/x"),
                ("GET", "/no/such/path"),
            ]:
                r = client.request(method, path, json={"prompt_tokens": PROMPT})
                msg = _shape(r, 401, "unauthorized")
                assert "Bearer" in msg and r.headers["www-authenticate"] == "Bearer"
        # a key in the wrong scheme is not a key
        r = anon.get("/v1/info", headers={"authorization": f"Basic {KEY}"})
        _shape(r, 401, "unauthorized")
    with _http(locked.url) as ok:
        assert ok.get("/v1/info").status_code == 200
    with pytest.raises(BackendUnavailable, match="wants an API key and none was given"):
        probe_server(locked.url)
    assert probe_server(locked.url, api_key=KEY).max_k == 8


def test_edge_client_with_key_generates_and_without_is_refused(
    locked: ServerThread, target: FakeTarget
) -> None:
    drafter = FakeDrafter(bigram_table(V, seed=1))
    with EdgeClient(locked.url, drafter, k=3, api_key=KEY) as client:
        gen = client.generate(PROMPT, 12)
    assert gen.tokens == target.greedy(PROMPT, 12)
    with EdgeClient(locked.url, drafter, k=3) as client, pytest.raises(ServerRejected) as err:
        client.generate(PROMPT, 4)
    assert err.value.status == 401 and err.value.code == "unauthorized"


def test_a_leaked_session_id_cannot_drive_or_close_the_session(
    locked: ServerThread, target: FakeTarget
) -> None:
    want = target.greedy(PROMPT, 2)
    with _http(locked.url) as owner, _http(locked.url) as thief:
        opened = owner.post("/v1/sessions", json={"prompt_tokens": PROMPT}).json()
        sid, token = opened["session_id"], opened["session_token"]
        assert len(token) >= 32
        round0 = {"round": 0, "session_tokens": 4, "draft_tokens": want[:1]}
        for headers in ({}, {"X-Session-Token": "guess"}, {"X-Session-Token": token[:-1]}):
            r = thief.post(f"/v1/sessions/{sid}/verify", json=round0, headers=headers)
            assert "belongs to another client" in _shape(r, 403, "forbidden")
            _shape(thief.delete(f"/v1/sessions/{sid}", headers=headers), 403, "forbidden")
        # the owner's session is untouched by all of that
        mine = {"X-Session-Token": token}
        r = owner.post(f"/v1/sessions/{sid}/verify", json=round0, headers=mine)
        assert r.status_code == 200 and r.json()["session_tokens"] == 6
        # another session's token does not open this one
        other = owner.post("/v1/sessions", json={"prompt_tokens": PROMPT}).json()
        r = owner.delete(f"/v1/sessions/{sid}", headers={"X-Session-Token": other["session_token"]})
        _shape(r, 403, "forbidden")
        assert owner.delete(f"/v1/sessions/{sid}", headers=mine).json()["rounds"] == 1


def test_framework_errors_use_the_documented_shape(locked: ServerThread) -> None:
    with _http(locked.url) as http:
        assert "'/nope'" in _shape(http.get("/nope"), 404, "not_found")
        assert "PUT is not allowed on /health" in _shape(
            http.put("/health"), 405, "method_not_allowed"
        )
        _shape(http.post("/v1/info"), 405, "method_not_allowed")
        _shape(http.get("/v1/sessions"), 405, "method_not_allowed")
        json_ct = {"content-type": "application/json"}
        for bad in (b'\xff\xfe{"prompt_tokens": [1]}', b"{not json", b"", b"[1, 2]", b"null"):
            r = http.post("/v1/sessions", content=bad, headers=json_ct)
            _shape(r, 400, "malformed_request")
        big = {"prompt_tokens": [1] * 1000}
        assert "2000 bytes" in _shape(http.post("/v1/sessions", json=big), 413, "request_too_large")
        # a huge declared length is refused before any of the body is read
        with socket.create_connection((locked.host, locked.port), timeout=5) as sock:
            sock.sendall(
                b"POST /v1/sessions HTTP/1.1\r\nhost: x\r\n"
                + f"authorization: Bearer {KEY}\r\n".encode()
                + b"content-type: application/json\r\ncontent-length: 999999999\r\n\r\n{"
            )
            head = sock.recv(4096)
        assert head.startswith(b"HTTP/1.1 413") and b'"request_too_large"' in head
        # the server is fine after all of it
        assert http.get("/health").json()["status"] == "ok"


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"prompt_tokens": ["2", "3"]}, "prompt_tokens.0: Input should be a valid integer"),
        ({"prompt_tokens": [True, False]}, "prompt_tokens.0: Input should be a valid integer"),
        ({"prompt_tokens": [2.0]}, "prompt_tokens.0: Input should be a valid integer"),
        ({"prompt_tokens": [1], "temperature": "0.5"}, "temperature: Input should be a valid"),
        ({"prompt_tokens": [1], "seed": "7"}, "seed: Input should be a valid integer"),
        ({"prompt_tokens": [1], "protocol_version": "2"}, "protocol_version: Input should be"),
        ({"prompt_tokens": [1], "temperature": 11}, "temperature: Input should be less than"),
    ],
)
def test_open_parsing_is_strict(locked: ServerThread, body: dict[str, object], needle: str) -> None:
    with _http(locked.url) as http:
        msg = _shape(http.post("/v1/sessions", json=body), 422, "malformed_request")
        assert needle in msg


def test_nan_and_infinite_temperature_are_rejected_as_such(locked: ServerThread) -> None:
    with _http(locked.url) as http:
        for raw in (b"NaN", b"Infinity", b"-Infinity"):
            r = http.post(
                "/v1/sessions",
                content=b'{"prompt_tokens": [1], "temperature": ' + raw + b"}",
                headers={"content-type": "application/json"},
            )
            msg = _shape(r, 422, "malformed_request")
            assert "temperature: Input should be a finite number" in msg, msg


def test_verify_parsing_is_strict(locked: ServerThread) -> None:
    with _http(locked.url) as http:
        opened = http.post("/v1/sessions", json={"prompt_tokens": PROMPT}).json()
        http.headers["X-Session-Token"] = opened["session_token"]
        path = f"/v1/sessions/{opened['session_id']}/verify"
        for bad in (
            {"round": 0, "session_tokens": 4, "draft_tokens": ["2", "3"]},
            {"round": 0, "session_tokens": 4, "draft_tokens": [True]},
            {"round": "0", "session_tokens": 4, "draft_tokens": [2]},
            {"round": 0, "session_tokens": 4.0, "draft_tokens": [2]},
        ):
            msg = _shape(http.post(path, json=bad), 422, "malformed_request")
            assert "valid integer" in msg
        ok = {"round": 0, "session_tokens": 4, "draft_tokens": [2]}
        assert http.post(path, json=ok).status_code == 200


def test_the_protocol_version_is_checked(locked: ServerThread) -> None:
    with _http(locked.url) as http:
        r = http.post("/v1/sessions", json={"prompt_tokens": [1], "protocol_version": 1})
        assert "server speaks 2" in _shape(r, 400, "protocol_version")


def test_tiny_temperature_over_http_is_exact(locked: ServerThread, target: FakeTarget) -> None:
    """T = 5e-324 is greedy in the limit: every verify returns the target's argmax."""
    want = target.greedy(PROMPT, 6)
    with _http(locked.url) as http:
        opened = http.post(
            "/v1/sessions", json={"prompt_tokens": PROMPT, "temperature": 5e-324, "seed": 3}
        ).json()
        http.headers["X-Session-Token"] = opened["session_token"]
        path = f"/v1/sessions/{opened['session_id']}/verify"
        seq = list(PROMPT)
        for rnd in range(6):
            r = http.post(path, json={"round": rnd, "session_tokens": len(seq), "draft_tokens": []})
            assert r.status_code == 200, r.text
            seq.append(r.json()["next_token"])
    assert seq[len(PROMPT) :] == want
    assert all(0 <= t < V for t in seq)
    assert not np.isnan(np.asarray(seq, dtype=float)).any()
