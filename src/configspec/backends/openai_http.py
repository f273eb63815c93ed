"""HTTP plumbing shared by everything that talks to an OpenAI-compatible server.

:class:`OpenAIServer` is a thread-safe client (one :mod:`httpx` connection pool) that
retries what a busy or restarting server answers — HTTP 429/502/503/504, timeouts,
refused connections — with exponential backoff (honouring ``Retry-After``), and turns
everything else into one-line :class:`~configspec.errors.BackendUnavailable` errors.
:func:`server_tokens` asks the server how it tokenizes a text (vLLM's ``/tokenize``,
llama-cpp-python's ``/extras/tokenize``, else an echoed completion) and
:func:`check_tokenizer` refuses a local tokenizer that splits a probe text differently.

``transport`` is an :mod:`httpx` transport seam (tests, proxies, custom TLS).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from configspec.backends.base import Tokenizing
from configspec.backends.specs import is_url
from configspec.errors import BackendUnavailable, IncompatibleModels, InvalidInput

logger = logging.getLogger(__name__)

TOKEN_ID_PREFIX = "token_id:"
PROBE_TEXT = "ConfigSpec probe: Hello, world! 12345 naïve café 東京 <b>x</b>"
RETRY_STATUSES = frozenset({429, 502, 503, 504})


def short(text: str, limit: int = 160) -> str:
    """``text`` on one line, cut to ``limit`` characters."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


class HttpStatus(Exception):
    """An HTTP error status; callers turn it into a :class:`BackendUnavailable`."""

    def __init__(self, status: int, url: str, message: str) -> None:
        super().__init__(message)
        self.status, self.url, self.message = status, url, message

    def as_error(self) -> BackendUnavailable:
        """The one-line user-facing error."""
        return BackendUnavailable(f"{self.url} returned HTTP {self.status}: {self.message}")


def error_message(response: httpx.Response) -> str:
    """The server's error text (OpenAI ``error.message``, FastAPI ``detail``, or the body)."""
    try:
        body = response.json()
    except ValueError:
        return short(response.text or response.reason_phrase)
    err = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(err, dict):
        err = err.get("message", err)
    return short(str(err))


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` tries per request (1 = no retry); the wait before try n+1 is
    ``backoff_s * 2**(n-1)`` seconds, at most ``max_backoff_s`` (or the server's
    ``Retry-After``, capped the same way)."""

    attempts: int = 5
    backoff_s: float = 0.5
    max_backoff_s: float = 8.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.backoff_s < 0 or self.max_backoff_s < 0:
            raise InvalidInput(
                f"retry policy attempts={self.attempts}, backoff {self.backoff_s} s, "
                f"max {self.max_backoff_s} s is out of range (attempts >= 1, waits >= 0)"
            )

    def wait_s(self, attempt: int, retry_after: str | None = None) -> float:
        """Seconds to wait after failed try number ``attempt`` (1-based)."""
        if retry_after is not None:
            try:
                return min(self.max_backoff_s, max(0.0, float(retry_after)))
            except ValueError:
                pass
        return float(min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1)))


NO_RETRY = RetryPolicy(attempts=1)


class OpenAIServer:
    """A thread-safe client for one OpenAI-compatible server.

    ``base_url`` is ``http(s)://host:port`` (with or without ``/v1``); ``timeout_s`` the
    per-request timeout in seconds; ``retry`` what to do on 429/502/503/504, timeouts and
    refused connections; ``sleep`` is the wait function (a seam for tests).
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 60.0,
        api_key: str | None = None,
        transport: httpx.BaseTransport | None = None,
        retry: RetryPolicy = NO_RETRY,
        max_connections: int = 16,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = _server_root(base_url)
        self.timeout_s = timeout_s
        self.retry = retry
        self._sleep = sleep
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        limits = httpx.Limits(max_connections=max_connections)
        self._client = httpx.Client(
            base_url=self.base_url,
            timeout=timeout_s,
            transport=transport,
            headers=headers,
            limits=limits,
        )
        self._lock = threading.Lock()
        self.requests = 0  # HTTP requests answered (any status)
        self.retries = 0  # tries repeated after a retryable failure

    def _once(self, method: str, path: str, body: dict[str, Any] | None) -> Any:
        url = f"{self.base_url}{path}"
        try:
            response = self._client.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise _transport_error(exc, url, self.timeout_s) from None
        with self._lock:
            self.requests += 1
        return _reply_json(response, url)

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """The JSON reply of ``method path``; retries per the policy.

        Raises :class:`HttpStatus` for a non-retryable HTTP error and
        :class:`BackendUnavailable` (one line) when the server is unreachable, keeps
        answering 429/50x, or does not answer JSON.
        """
        for attempt in range(1, self.retry.attempts + 1):
            try:
                return self._once(method, path, body)
            except _Retryable as exc:
                wait = _wait_before_retry(self.retry, attempt, exc)
                with self._lock:
                    self.retries += 1
                self._sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    def model_ids(self) -> list[str]:
        """The served model ids (``GET /v1/models``)."""
        try:
            listing = self.request("GET", "/v1/models")
        except HttpStatus as exc:
            raise BackendUnavailable(
                f"{self.base_url} is not an OpenAI-compatible server (GET /v1/models: HTTP "
                f"{exc.status}); give the URL of a vLLM or llama.cpp server"
            ) from None
        data = listing.get("data") if isinstance(listing, dict) else None
        if not isinstance(data, list) or not data or not isinstance(data[0], dict):
            raise BackendUnavailable(
                f"{self.base_url} is not an OpenAI-compatible server (GET /v1/models has no "
                "model list)"
            )
        return [str(d.get("id", "default")) for d in data if isinstance(d, dict)]

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def __enter__(self) -> OpenAIServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: str | None = None) -> None:
        super().__init__(message)
        self.message, self.retry_after = message, retry_after


def _server_root(base_url: str) -> str:
    """``base_url`` without a trailing ``/`` or ``/v1``; raises :class:`InvalidInput` for
    a URL that is not http(s)."""
    if not is_url(base_url):
        raise InvalidInput(f"remote target URL {base_url!r} must start with http(s)://")
    root = base_url.rstrip("/")
    return root[:-3] if root.endswith("/v1") else root


def _wait_before_retry(retry: RetryPolicy, attempt: int, exc: _Retryable) -> float:
    """Seconds to wait after failed try ``attempt`` (1-based); raises
    :class:`BackendUnavailable` (one line) when it was the last try."""
    if attempt == retry.attempts:
        tries = f" (after {attempt} tries)" if attempt > 1 else ""
        raise BackendUnavailable(f"{exc.message}{tries}") from None
    wait = retry.wait_s(attempt, exc.retry_after)
    logger.info("%s; retrying in %.1f s", exc.message, wait)
    return wait


def _transport_error(exc: httpx.HTTPError, url: str, timeout_s: float) -> _Retryable:
    """The retryable one-line failure of a request that got no HTTP answer."""
    if isinstance(exc, httpx.ConnectError):
        return _Retryable(
            f"cannot connect to {url} ({short(str(exc), 80)}); start the server or fix the URL"
        )
    if isinstance(exc, httpx.TimeoutException):
        return _Retryable(
            f"{url} did not answer within {timeout_s:g} s; raise the timeout or check the server"
        )
    return _Retryable(f"request to {url} failed: {short(str(exc))}")


def _reply_json(response: httpx.Response, url: str) -> Any:
    """The JSON body of an HTTP answer; raises :class:`_Retryable`, :class:`HttpStatus`
    or :class:`BackendUnavailable` (not JSON) otherwise."""
    if response.status_code in RETRY_STATUSES:
        raise _Retryable(
            f"{url} returned HTTP {response.status_code}: {error_message(response)}",
            response.headers.get("retry-after"),
        )
    if response.status_code >= 400:
        raise HttpStatus(response.status_code, url, error_message(response))
    try:
        return response.json()
    except ValueError:
        raise BackendUnavailable(
            f"{url} is not an OpenAI-compatible server (answered "
            f"{response.headers.get('content-type', 'no content type')}, not JSON)"
        ) from None


class AsyncOpenAIServer:
    """The asyncio twin of :class:`OpenAIServer` (same errors, same retry policy): one
    :class:`httpx.AsyncClient` whose pool lets concurrent requests go out at once, so a
    batching engine (vLLM) sees them together. Use it from one event loop.

    ``max_connections`` bounds the requests in flight (the rest wait for a connection);
    ``transport`` is an :class:`httpx.AsyncBaseTransport` seam.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 60.0,
        api_key: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        retry: RetryPolicy = NO_RETRY,
        max_connections: int = 64,
    ) -> None:
        self.base_url = _server_root(base_url)
        self.timeout_s = timeout_s
        self.retry = retry
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=timeout_s,
            transport=transport,
            headers=headers,
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
        )
        self.requests = 0  # HTTP requests answered (any status)
        self.in_flight = 0  # requests sent and not answered yet

    async def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """The JSON reply of ``method path``; errors and retries as :meth:`OpenAIServer.request`."""
        url = f"{self.base_url}{path}"
        for attempt in range(1, self.retry.attempts + 1):
            try:
                self.in_flight += 1
                try:
                    response = await self._client.request(method, path, json=body)
                except httpx.HTTPError as exc:
                    raise _transport_error(exc, url, self.timeout_s) from None
                finally:
                    self.in_flight -= 1
                self.requests += 1
                return _reply_json(response, url)
            except _Retryable as exc:
                await asyncio.sleep(_wait_before_retry(self.retry, attempt, exc))
        raise AssertionError("unreachable")  # pragma: no cover

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()


def _ids_of_keys(keys: list[Any]) -> list[int] | None:
    if keys and all(isinstance(k, str) and k.startswith(TOKEN_ID_PREFIX) for k in keys):
        return [int(k[len(TOKEN_ID_PREFIX) :]) for k in keys]
    return None


def server_tokens(server: OpenAIServer, model: str, text: str) -> list[int] | None:
    """The server's token ids for ``text`` (BOS included if it adds one), or None.

    Tried in order: vLLM's ``POST /tokenize``, llama-cpp-python's ``/extras/tokenize``,
    then a one-token completion with ``echo`` and log-probs keyed by token id (vLLM's
    ``return_tokens_as_token_ids``; with ``prompt_logprobs=0`` each entry holds exactly
    the prompt token). None when the server offers none of these.
    """
    attempts: list[tuple[str, dict[str, Any]]] = [
        ("/tokenize", {"model": model, "prompt": text}),
        ("/extras/tokenize", {"model": model, "input": text}),
    ]
    for path, body in attempts:
        try:
            reply = server.request("POST", path, body)
        except HttpStatus:
            continue
        tokens = reply.get("tokens") if isinstance(reply, dict) else None
        if isinstance(tokens, list) and tokens and all(isinstance(t, int) for t in tokens):
            return [int(t) for t in tokens]
    body = {
        "model": model,
        "prompt": text,
        "max_tokens": 1,
        "temperature": 0.0,
        "echo": True,
        "logprobs": 0,
        "prompt_logprobs": 0,
        "return_tokens_as_token_ids": True,
    }
    try:
        reply = server.request("POST", "/v1/completions", body)
        choice = reply["choices"][0]
    except (HttpStatus, KeyError, IndexError, TypeError):
        return None
    prompt_lp = choice.get("prompt_logprobs") if isinstance(choice, dict) else None
    if isinstance(prompt_lp, list) and prompt_lp:
        # vLLM: one dict per prompt token ({id: {logprob, rank, decoded_token}}), the
        # first None (no log-prob for the first token); a dict holds the prompt token
        # first, then the top-n (n = 0 asked)
        ids: list[int] = []
        for i, entry in enumerate(prompt_lp):
            if entry is None and i == 0:
                continue
            if not isinstance(entry, dict) or not entry:
                return None
            ids.append(int(next(iter(entry))))
        if isinstance(choice.get("prompt_token_ids"), list):
            return [int(t) for t in choice["prompt_token_ids"]]
        return ids  # the first prompt token (BOS, usually) is not in prompt_logprobs
    logprobs = choice.get("logprobs") if isinstance(choice, dict) else None
    toks = logprobs.get("tokens") if isinstance(logprobs, dict) else None
    if not isinstance(toks, list):
        return None
    ids_echo = _ids_of_keys(toks)
    return ids_echo[:-1] if ids_echo else None  # the last one is the generated token


def check_tokenizer(server: OpenAIServer, model: str, tokenizer: Tokenizing) -> bool:
    """Raise :class:`IncompatibleModels` unless the server tokenizes a probe text like
    ``tokenizer``; returns False when the server cannot tokenize for us (not checked)."""
    theirs = server_tokens(server, model, PROBE_TEXT)
    if theirs is None:
        logger.info("%s cannot tokenize for us; tokenizer not cross-checked", server.base_url)
        return False
    mine = tokenizer.tokenize(PROBE_TEXT, add_bos=False)
    # servers differ on adding BOS (and prompt_logprobs omit the first token): compare
    # from the end, allowing one leading token more or less
    n = min(len(mine), len(theirs))
    if theirs[-n:] != mine[-n:] or abs(len(theirs) - len(mine)) > 1 or n < len(mine) - 1:
        raise IncompatibleModels(
            f"the server at {server.base_url} ({model}) tokenizes differently from "
            f"the local tokenizer {tokenizer.identity.name}; pass the served "
            "model's GGUF as the tokenizer"
        )
    return True


def completion_logprobs(reply: Any, base_url: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(choices[0], a copy of choices[0].logprobs)`` of a ``/v1/completions`` reply.

    Raises :class:`BackendUnavailable` naming ``base_url`` when the reply has no
    ``choices[0].logprobs.tokens/top_logprobs`` (the server is not OpenAI-compatible).
    """
    try:
        choice = reply["choices"][0]
        logprobs = choice["logprobs"]
        if not isinstance(logprobs["tokens"], list) or not isinstance(
            logprobs["top_logprobs"], list
        ):
            raise TypeError
    except (KeyError, IndexError, TypeError):
        raise BackendUnavailable(
            f"{base_url} is not an OpenAI-compatible completions server: the reply to "
            "/v1/completions has no choices[0].logprobs.tokens/top_logprobs"
        ) from None
    return choice, dict(logprobs)
