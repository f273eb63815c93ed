"""The verifier's HTTP layer (FastAPI) and ways to run it: foreground or in a thread.

Routes are described in :mod:`configspec.serving.protocol`. Every failure is answered
with an :class:`~configspec.serving.protocol.ErrorResponse`: 400 malformed JSON, 422 a
well-formed request the server will not serve (K above the limit, token outside the
vocabulary, context full, schema violation), 404/410 unknown or expired session, 409 a
round built on a different session state, 429 too many sessions, 500 a target failure.
A rejected request leaves its session exactly as it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from configspec.errors import BackendUnavailable, InvalidInput
from configspec.serving.protocol import (
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


def _error(status: int, code: ErrorCode, message: str) -> JSONResponse:
    body = ErrorResponse(error=ErrorBody(code=code, message=message))
    return JSONResponse(status_code=status, content=body.model_dump())


def _validation_message(exc: RequestValidationError) -> tuple[int, str]:
    errors = exc.errors()
    if not errors:
        return 422, "request body is invalid"
    err = errors[0]
    if err.get("type") == "json_invalid":
        ctx = err.get("ctx") or {}
        return 400, f"request body is not valid JSON: {ctx.get('error', err.get('msg'))}"
    loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
    return 422, f"{loc}: {err.get('msg', 'invalid')}"


def create_app(service: VerifierService, *, expiry_interval_s: float | None = None) -> FastAPI:
    """The FastAPI application serving ``service``.

    A background task drops idle sessions every ``expiry_interval_s`` (default: a quarter
    of the session TTL) so memory is freed even when no request arrives.
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

    app = FastAPI(title="ConfigSpec verifier", lifespan=lifespan, docs_url=None, redoc_url=None)

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

    @app.post("/v1/sessions", response_model=OpenSessionResponse)
    async def open_session(req: OpenSessionRequest) -> OpenSessionResponse:
        return await service.open(req)

    @app.post("/v1/sessions/{session_id}/verify", response_model=VerifyResponse)
    async def verify(session_id: str, req: VerifyRequest) -> VerifyResponse:
        return await service.verify(session_id, req)

    @app.delete("/v1/sessions/{session_id}", response_model=CloseSessionResponse)
    async def close_session(session_id: str) -> CloseSessionResponse:
        return service.close(session_id)

    @app.get("/v1/info", response_model=ServerInfo)
    async def info() -> ServerInfo:
        return service.server_info()

    @app.get("/health", response_model=Health)
    async def health() -> Health:
        return Health(active_sessions=service.active_sessions, uptime_s=service.uptime_s())

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def _uvicorn_config(app: FastAPI, host: str, port: int) -> uvicorn.Config:
    return uvicorn.Config(
        app, host=host, port=port, log_level="warning", access_log=False, lifespan="on"
    )


def run_server(service: VerifierService, host: str, port: int) -> None:
    """Serve ``service`` in the foreground until interrupted."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        raise InvalidInput(
            f"cannot listen on {host}:{port}: {exc.strerror}; pick another --port"
        ) from None
    server = uvicorn.Server(_uvicorn_config(create_app(service), host, port))
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

    def __init__(self, service: VerifierService, host: str = "127.0.0.1", port: int = 0) -> None:
        self.service = service
        self.host = host
        self.port = port or free_port(host)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL of the server."""
        return f"http://{self.host}:{self.port}"

    def start(self, timeout_s: float = 20.0) -> ServerThread:
        """Start serving and wait until the socket accepts connections."""
        server = uvicorn.Server(_uvicorn_config(create_app(self.service), self.host, self.port))
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
def serving(service: VerifierService, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Context manager yielding the URL of ``service`` served in a background thread."""
    with ServerThread(service, host, port) as srv:
        yield srv.url
