"""Slow and idle clients are cut off: header, body and keep-alive deadlines, connection cap."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
from _serving_fakes import FakeTarget, bigram_table

from configspec.serving.guard import ConnectionLimits
from configspec.serving.server import ServerThread
from configspec.serving.sessions import VerifierService

LIMITS = ConnectionLimits(
    header_timeout_s=1.0, body_timeout_s=1.0, keep_alive_timeout_s=1.0, max_connections=200
)
SLACK_S = 4.0  # a loaded 2-core host may run the timer late; never early


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def server() -> Iterator[ServerThread]:
    service = VerifierService([FakeTarget(bigram_table(16, seed=0))])
    with ServerThread(service, limits=LIMITS) as srv:
        yield srv


def _held(srv: ServerThread) -> int:
    assert srv._server is not None
    return len(srv._server.server_state.connections)


def _read_until_closed(sock: socket.socket, within_s: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes; and when it closed (s from now)."""
    t0 = time.monotonic()
    sock.settimeout(within_s)
    got = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            pytest.fail(f"connection still open after {within_s} s")
        except ConnectionResetError:
            break
        if not chunk:
            break
        got += chunk
    return got, time.monotonic() - t0


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to count files")
def test_idle_and_partial_requests_are_closed_after_the_deadline(server: ServerThread) -> None:
    baseline_fds = _open_fds()
    n_each = 20
    socks: list[tuple[str, socket.socket]] = []
    t0 = time.monotonic()
    for i in range(3 * n_each):
        s = socket.create_connection((server.host, server.port), timeout=5)
        kind = ("idle", "partial-header", "partial-body")[i % 3]
        if kind == "partial-header":
            s.sendall(b"POST /v1/sessions HTTP/1.1\r\nhost: x\r\ncontent-ty")
        elif kind == "partial-body":
            s.sendall(
                b"POST /v1/sessions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                b'content-length: 100\r\n\r\n{"prompt_tok'
            )
        socks.append((kind, s))
    time.sleep(0.3)
    assert _held(server) == 3 * n_each  # all were accepted and are being held
    # a well-behaved client is served meanwhile
    with httpx.Client(base_url=server.url, trust_env=False) as ok:
        assert ok.get("/health").status_code == 200
    for kind, s in socks:
        got, _ = _read_until_closed(s, LIMITS.header_timeout_s + SLACK_S)
        if got:  # the server says why before closing
            head, _, body = got.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 408"), (kind, got)
            err = json.loads(body)["error"]
            assert err["code"] == "request_timeout"
            want = "request body" if kind == "partial-body" else "request headers"
            assert want in err["message"], (kind, err)
        s.close()
    elapsed_s = time.monotonic() - t0
    assert elapsed_s < LIMITS.header_timeout_s + SLACK_S + 1.0
    deadline = time.monotonic() + 3.0
    while _held(server) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _held(server) == 0
    assert _open_fds() <= baseline_fds + 3


def test_a_trickling_client_is_cut_off_at_the_header_deadline(server: ServerThread) -> None:
    """One byte at a time resets uvicorn's keep-alive timer, but not the header deadline."""
    with socket.create_connection((server.host, server.port), timeout=5) as s:
        t0 = time.monotonic()
        request = b"GET /health HTTP/1.1\r\nhost: x\r\nx-slow: " + b"a" * 200
        closed = False
        for byte in request:
            try:
                s.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            time.sleep(0.1)
            if time.monotonic() - t0 > LIMITS.header_timeout_s + SLACK_S:
                break
        if not closed:
            got, _ = _read_until_closed(s, SLACK_S)
            assert got.startswith(b"HTTP/1.1 408") or got == b""
        assert time.monotonic() - t0 < LIMITS.header_timeout_s + SLACK_S + 1.0


def test_keep_alive_connection_closes_when_idle_and_serves_until_then(
    server: ServerThread,
) -> None:
    with socket.create_connection((server.host, server.port), timeout=5) as s:
        for _ in range(3):  # requests on one connection, idle below the timeout, are fine
            time.sleep(0.2)
            s.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
            assert s.recv(65536).startswith(b"HTTP/1.1 200")
        t0 = time.monotonic()
        got, _ = _read_until_closed(s, LIMITS.keep_alive_timeout_s + SLACK_S)
        assert got == b""
        assert time.monotonic() - t0 >= LIMITS.keep_alive_timeout_s * 0.9


def test_a_slow_but_steady_body_is_cut_at_the_body_deadline(server: ServerThread) -> None:
    with socket.create_connection((server.host, server.port), timeout=5) as s:
        s.sendall(
            b"POST /v1/sessions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"content-length: 1000\r\n\r\n"
        )
        t0 = time.monotonic()
        for _ in range(100):
            try:
                s.sendall(b" ")
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(0.1)
            if time.monotonic() - t0 > LIMITS.body_timeout_s + SLACK_S:
                pytest.fail("a trickled body was not cut off")
        assert time.monotonic() - t0 >= LIMITS.body_timeout_s * 0.9


def test_connections_above_the_cap_get_503_in_the_error_shape() -> None:
    service = VerifierService([FakeTarget(bigram_table(16, seed=0))])
    limits = ConnectionLimits(header_timeout_s=5.0, max_connections=4)
    with ServerThread(service, limits=limits) as srv:
        held = [socket.create_connection((srv.host, srv.port), timeout=5) for _ in range(4)]
        try:
            time.sleep(0.2)
            with socket.create_connection((srv.host, srv.port), timeout=5) as extra:
                got, _ = _read_until_closed(extra, 5.0)
            head, _, body = got.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 503")
            assert json.loads(body)["error"]["code"] == "server_busy"
        finally:
            for s in held:
                s.close()
        deadline = time.monotonic() + 3.0
        while _held(srv) and time.monotonic() < deadline:
            time.sleep(0.05)
        with httpx.Client(base_url=srv.url, trust_env=False) as ok:  # room again
            assert ok.get("/health").status_code == 200


def test_connection_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="header_timeout_s=0"):
        ConnectionLimits(header_timeout_s=0)
    with pytest.raises(ValueError, match="max_connections=0"):
        ConnectionLimits(max_connections=0)
