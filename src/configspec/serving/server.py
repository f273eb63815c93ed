"""The verifier's HTTP layer (FastAPI) and ways to run it: foreground or in a thread.

Routes are described in :mod:`configspec.serving.protocol`. Every failure is answered
with an :class:`~configspec.serving.protocol.ErrorResponse`: 400 malformed JSON (or not
UTF-8), 401 missing/wrong API key, 403 a session token that is not the session's, 404
unknown path or session, 405 wrong method, 408 a request too slow to arrive, 410 expired
session, 409 a round built on a different session state, 413 a body too large, 422 a
well-formed request the server will not serve (K above the limit, token outside the
vocabulary, context full, schema violation), 429 too many sessions, 431 headers too
large, 500 a target failure or a bug, 503 too many connections. A rejected request
leaves its session exactly as it was. Connection deadlines, caps and the API key live
in :mod:`configspec.serving.guard`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http import HTTPStatus
from typing import Any

import uvicorn
from fastapi import FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from configspec.errors import BackendUnavailable, InvalidInput
from configspec.serving.guard import ConnectionLimits, FrontDoor, guarded_protocol
from configspec.serving.protocol import (
    SESSION_TOKEN_HEADER,
    CloseSessionResponse,
    ErrorBody,
    ErrorCode,
    ErrorResponse,
    Health,
    OpenSessionRequest,
    OpenSessionResponse,
    ServerInfo,
    VerifyRequest,
    VerifyResponse,
)
from configspec.serving.sessions import ApiError, VerifierService

log = logging.getLogger(__name__)


def _error(
    status: int, code: ErrorCode, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = ErrorResponse(error=ErrorBody(code=code, message=message))
    return JSONResponse(status_code=status, content=body.model_dump(), headers=headers)


def _documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries: each status answers an :class:`ErrorResponse`."""
    common = (401, 404, 405, 408, 413, 500, 503)
    return {
        status: {"model": ErrorResponse, "description": HTTPStatus(status).phrase}
        for status in sorted({*statuses, *common})
    }


_SESSION_ERRORS = (403, 409, 410, 422)


def _validation_message(exc: RequestValidationError) -> tuple[int, str]:
    errors = exc.errors()
    if not errors:
        return 422, "request body is invalid"
    err = errors[0]
    if err.get("type") == "json_invalid":
        ctx = err.get("ctx") or {}
        return 400, f"request body is not valid JSON: {ctx.get('error', err.get('msg'))}"
    if tuple(err.get("loc", ())) == ("body",):
        if err.get("type") == "missing":
            return 400, "request body is empty or null; send a JSON object"
        return 400, "request body must be a JSON object"
    loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
    return 422, f"{loc}: {err.get('msg', 'invalid')}"


def create_app(
    service: VerifierService,
    *,
    expiry_interval_s: float | None = None,
    api_key: str | None = None,
    max_body_bytes: int = ConnectionLimits.max_body_bytes,
) -> FastAPI:
    """The FastAPI application serving ``service``, behind :class:`FrontDoor`.

    A background task drops idle sessions every ``expiry_interval_s`` (default: a quarter
    of the session TTL) so memory is freed even when no request arrives. ``api_key``
    (None: open) is required as a bearer token on every path but ``/health``.
    """
    interval_s = expiry_interval_s or max(0.05, service.limits.session_ttl_s / 4)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async def janitor() -> None:
            while True:
                await asyncio.sleep(interval_s)
                service.expire_idle()

        task = asyncio.create_task(janitor())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await service.aclose()

    app = FastAPI(title="ConfigSpec verifier", lifespan=lifespan, docs_url=None, redoc_url=None)
    _add_error_handlers(app, service)
    _add_routes(app, service)

    def count(code: str) -> None:
        service.metrics.errors.labels(code=code).inc()

    # FrontDoor runs outside FastAPI's routing but inside its error middleware
    app.add_middleware(
        FrontDoor,
        api_key=api_key,
        max_body_bytes=max_body_bytes,
        on_error=count,
    )
    return app


def _add_error_handlers(app: FastAPI, service: VerifierService) -> None:
    """Every error, the framework's included, in the documented shape (and counted)."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        service.metrics.errors.labels(code=exc.code).inc()
        log.info("rejected (%s): %s", exc.code, exc.message)
        return _error(exc.status, exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        status, message = _validation_message(exc)
        service.metrics.errors.labels(code="malformed_request").inc()
        return _error(status, "malformed_request", message)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code: ErrorCode
        headers = dict(exc.headers or {})
        if exc.status_code == 404:
            code = "not_found"
            message = f"no such path {request.url.path!r}; see /openapi.json for the routes"
        elif exc.status_code == 405:
            code = "method_not_allowed"
            allowed = headers.get("allow") or headers.get("Allow") or "?"
            message = f"{request.method} is not allowed on {request.url.path} (use {allowed})"
        elif exc.status_code == 400:
            code = "malformed_request"
            message = f"request body cannot be parsed as UTF-8 JSON ({exc.detail})"
        else:
            code = "internal_error" if exc.status_code >= 500 else "malformed_request"
            message = str(exc.detail)
        service.metrics.errors.labels(code=code).inc()
        return _error(exc.status_code, code, message, headers)

    @app.exception_handler(Exception)
    async def _bug(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        service.metrics.errors.labels(code="internal_error").inc()
        return _error(500, "internal_error", f"internal error: {type(exc).__name__}")


def _add_routes(app: FastAPI, service: VerifierService) -> None:
    """The protocol's routes, plus ``/health`` and ``/metrics``."""
    token_header = Header(
        None,
        alias=SESSION_TOKEN_HEADER,
        description="The session_token the session's open returned.",
    )

    @app.post(
        "/v1/sessions",
        response_model=OpenSessionResponse,
        responses=_documented(400, 422, 429),
    )
    async def open_session(req: OpenSessionRequest) -> OpenSessionResponse:
        return await service.open(req)

    @app.post(
        "/v1/sessions/{session_id}/verify",
        response_model=VerifyResponse,
        responses=_documented(400, *_SESSION_ERRORS),
    )
    async def verify(
        session_id: str, req: VerifyRequest, session_token: str | None = token_header
    ) -> VerifyResponse:
        service.check_owner(session_id, session_token)
        return await service.verify(session_id, req)

    @app.delete(
        "/v1/sessions/{session_id}",
        response_model=CloseSessionResponse,
        responses=_documented(*_SESSION_ERRORS),
    )
    async def close_session(
        session_id: str, session_token: str | None = token_header
    ) -> CloseSessionResponse:
        service.check_owner(session_id, session_token)
        return service.close(session_id)

    @app.get("/v1/info", response_model=ServerInfo, responses=_documented())
    async def info() -> ServerInfo:
        return service.server_info()

    @app.get("/health", response_model=Health, responses=_documented())
    async def health() -> Health:
        return Health(active_sessions=service.active_sessions, uptime_s=service.uptime_s())

    @app.head("/health", responses=_documented())
    async def health_head() -> Response:
        return Response(media_type="application/json")

    @app.get(
        "/metrics",
        response_class=PlainTextResponse,
        responses={200: {"content": {"text/plain": {}}}, **_documented()},
    )
    async def metrics() -> Response:
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def _uvicorn_config(
    service: VerifierService,
    host: str,
    port: int,
    limits: ConnectionLimits,
    api_key: str | None,
) -> uvicorn.Config:
    app = create_app(service, api_key=api_key, max_body_bytes=limits.max_body_bytes)
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        http=guarded_protocol(limits),
        timeout_keep_alive=limits.keep_alive_timeout_s,  # type: ignore[arg-type]
        h11_max_incomplete_event_size=limits.max_header_bytes,
    )


def bind_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port``; one clear line when that is impossible."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        raise InvalidInput(
            f"cannot listen on {host}:{port}: {exc.strerror}; pick another --port"
        ) from None
    return sock


def run_server(
    service: VerifierService,
    host: str,
    port: int,
    *,
    limits: ConnectionLimits | None = None,
    api_key: str | None = None,
    sock: socket.socket | None = None,
) -> None:
    """Serve ``service`` in the foreground until interrupted (on ``sock`` if given)."""
    sock = sock or bind_socket(host, port)
    config = _uvicorn_config(service, host, port, limits or ConnectionLimits(), api_key)
    server = uvicorn.Server(config)
    with sock:
        server.run(sockets=[sock])


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that is free right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class ServerThread:
    """A verifier running in a background thread (tests, benchmarks, the edge demo).

    ``with ServerThread(service) as srv: srv.url`` binds 127.0.0.1 on a free port (or
    ``port``) and always shuts the server down on exit.
    """

    def __init__(
        self,
        service: VerifierService,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        limits: ConnectionLimits | None = None,
        api_key: str | None = None,
    ) -> None:
        self.service = service
        self.host = host
        self.port = port or free_port(host)
        self.limits = limits or ConnectionLimits()
        self.api_key = api_key
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL of the server."""
        return f"http://{self.host}:{self.port}"

    def start(self, timeout_s: float = 20.0) -> ServerThread:
        """Start serving and wait until the socket accepts connections."""
        config = _uvicorn_config(self.service, self.host, self.port, self.limits, self.api_key)
        server = uvicorn.Server(config)
        self._server = server
        self._thread = threading.Thread(target=server.run, name="verifier", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise BackendUnavailable(f"verifier did not start on {self.url}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Shut the server down and join its thread."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=20)
        self._server = self._thread = None

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def serving(
    service: VerifierService,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    limits: ConnectionLimits | None = None,
    api_key: str | None = None,
) -> Iterator[str]:
    """Context manager yielding the URL of ``service`` served in a background thread."""
    with ServerThread(service, host, port, limits=limits, api_key=api_key) as srv:
        yield srv.url
