"""The verifier's front door: connection limits, request deadlines, body size and API key.

uvicorn closes an idle keep-alive connection, but it has no deadline for receiving a
request: a connection that never sends a byte, or trickles its headers or body, is held
forever (``timeout_keep_alive`` only runs between requests and is reset by every byte).
An ASGI middleware cannot help with headers, because the application is only called once
they are complete. So this module has two parts:

* :func:`guarded_protocol` subclasses uvicorn's HTTP protocol (httptools, else h11) with
  a **header deadline** (from connection start, or from the first byte of the next
  request on a kept-alive connection, until the headers are parsed), a **body deadline**
  (from then until the body is complete), a header size cap and a **connection cap**.
  Expiry answers ``408`` (``431`` for oversized headers, ``503`` over the cap) in the
  documented error shape with ``connection: close``, and closes the socket.
* :class:`FrontDoor`, an ASGI middleware, checks the API key (every path but
  ``/health``) before reading a body, then reads the whole body under ``max_body_bytes``
  (``413``) and hands it to the application, which therefore never sees a partial body.

Both answer in :class:`~configspec.serving.protocol.ErrorResponse` form.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from uvicorn.protocols.http.auto import AutoHTTPProtocol

from configspec.serving.protocol import ErrorBody, ErrorCode, ErrorResponse

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_CLOSE = [(b"connection", b"close")]

OPEN_PATHS = frozenset({"/health"})
"""Paths answered without the API key (liveness probes)."""


@dataclass(frozen=True)
class ConnectionLimits:
    """How long and how much a client may take to send a request, and how many may connect.

    Times in seconds, sizes in bytes. ``keep_alive_timeout_s`` closes a connection idle
    between requests (uvicorn's own timer); ``max_connections`` counts open sockets,
    idle or busy.
    """

    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    keep_alive_timeout_s: float = 15.0
    max_connections: int = 256
    max_header_bytes: int = 64 * 1024
    max_body_bytes: int = 32 * 1024 * 1024

    def __post_init__(self) -> None:
        for name in ("header_timeout_s", "body_timeout_s", "keep_alive_timeout_s"):
            value = getattr(self, name)
            if not 0.0 < value <= 3600.0:
                raise ValueError(f"{name}={value} is out of range (>0..3600 s)")
        for name in ("max_connections", "max_header_bytes", "max_body_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be at least 1")


def error_json(code: ErrorCode, message: str) -> bytes:
    """The documented error body as JSON bytes."""
    body = ErrorResponse(error=ErrorBody(code=code, message=message))
    return json.dumps(body.model_dump(), separators=(",", ":")).encode()


def _raw_response(status: int, code: ErrorCode, message: str) -> bytes:
    body = error_json(code, message)
    reason = HTTPStatus(status).phrase
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


def guarded_protocol(limits: ConnectionLimits) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol class with ``limits``' deadlines and caps (pass as ``http=``)."""
    base: Any = AutoHTTPProtocol

    class GuardedHTTPProtocol(base):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._deadline: asyncio.TimerHandle | None = None
            self._awaiting_headers = True
            self._header_bytes = 0

        # -- helpers
        def _arm(self, delay_s: float, what: str) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(delay_s, self._expire, what, delay_s)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expire(self, what: str, delay_s: float) -> None:
            self._deadline = None
            log.info(
                "closing a connection from %s: %s not received in %g s", self.client, what, delay_s
            )
            self._reject(408, "request_timeout", f"{what} not received within {delay_s:g} s")

        def _reject(self, status: int, code: ErrorCode, message: str) -> None:
            self._disarm()
            cycle = self.cycle
            if cycle is not None and not cycle.response_complete:
                # the application is waiting for the rest of the body: it sees a disconnect
                cycle.disconnected = True
                cycle.message_event.set()
            if not self.transport.is_closing():
                if cycle is None or not cycle.response_started:
                    self.transport.write(_raw_response(status, code, message))
                self.transport.close()

        # -- uvicorn protocol hooks
        def connection_made(self, transport: asyncio.Transport) -> None:
            super().connection_made(transport)
            if len(self.connections) > limits.max_connections:
                self._reject(
                    503,
                    "server_busy",
                    f"the server already holds {limits.max_connections} connections; retry later",
                )
                return
            self._arm(limits.header_timeout_s, "request headers")

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._awaiting_headers and self._deadline is None:
                self._arm(limits.header_timeout_s, "request headers")  # next request begins
            before = self.cycle
            super().data_received(data)
            if self.transport.is_closing():
                self._disarm()
                return
            cycle = self.cycle
            if self._awaiting_headers:
                if cycle is not None and cycle is not before:
                    self._headers_done()
                    return
                self._header_bytes += len(data)
                if self._header_bytes > limits.max_header_bytes:
                    self._reject(
                        431,
                        "request_too_large",
                        f"request headers exceed {limits.max_header_bytes} bytes",
                    )
            elif cycle is not None and not cycle.more_body:
                self._disarm()

        def _headers_done(self) -> None:
            self._awaiting_headers = False
            self._header_bytes = 0
            if self.cycle.more_body:
                self._arm(limits.body_timeout_s, "request body")
            else:
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            cycle = self.cycle
            if cycle is None or cycle.response_complete:
                self._awaiting_headers = True  # the deadline starts with the next byte
                self._header_bytes = 0
            elif self._awaiting_headers is False and cycle.more_body:
                self._arm(limits.body_timeout_s, "request body")

    return GuardedHTTPProtocol


class FrontDoor:
    """ASGI middleware: API key, then the whole body read under a size limit.

    ``api_key`` None serves everyone. ``on_error(code)`` is called for every request
    refused here (for metrics).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        api_key: str | None,
        max_body_bytes: int,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        self.app = app
        self.api_key = api_key.encode() if api_key else None
        self.max_body_bytes = max_body_bytes
        self.on_error = on_error

    async def _refuse(
        self,
        send: Send,
        status: int,
        code: ErrorCode,
        message: str,
        headers: list[tuple[bytes, bytes]] | None = None,
        *,
        method: str = "GET",
    ) -> None:
        if self.on_error is not None:
            self.on_error(code)
        body = error_json(code, message)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    *(headers or []),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})

    def _authorised(self, scope: Scope) -> bool:
        if self.api_key is None or scope["path"] in OPEN_PATHS:
            return True
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                if scheme.lower() == b"bearer" and secrets.compare_digest(
                    token.strip(), self.api_key
                ):
                    return True
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope.get("method", "GET")
        if not self._authorised(scope):
            await self._refuse(
                send,
                401,
                "unauthorized",
                "missing or wrong API key: send 'Authorization: Bearer <key>' (the key the "
                "server was started with, --api-key or CONFIGSPEC_API_KEY)",
                [(b"www-authenticate", b"Bearer")],
                method=method,
            )
            return
        too_large = f"request body exceeds this server's limit of {self.max_body_bytes} bytes"
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > self.max_body_bytes:
                    await self._refuse(
                        send, 413, "request_too_large", too_large, _CLOSE, method=method
                    )
                    return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left (or its body deadline passed): nothing to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await self._refuse(send, 413, "request_too_large", too_large, _CLOSE, method=method)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
