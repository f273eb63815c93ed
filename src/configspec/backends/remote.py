"""OpenAI-compatible remote target: verification through ``/v1/completions``.

One request per block: the prompt is ``context + tokens``, with ``echo=true``,
``logprobs=top_k``, ``max_tokens=1`` and ``temperature=0``. The prompt tokens' log-probs
come back echoed, so position ``i`` of the block gets the server's top-k after
``context + tokens[:i]``; the one generated token's log-probs give the distribution past
the block (``max_tokens=0`` would lose that row). The server keeps its own prefix cache
(vLLM's automatic prefix caching, llama-cpp-python's KV reuse), so :meth:`rollback` is
local bookkeeping.

Prompts are sent as token ids (vLLM and OpenAI accept lists of ints) and log-prob keys
are read as ids when the server honours vLLM's ``return_tokens_as_token_ids``. Servers
that only take text prompts (``python -m llama_cpp.server``) get the detokenized text;
the echoed tokens are then checked against ours piece by piece and the text keys of the
top-k are mapped back to ids with the local tokenizer (tokens whose text is not unique
map to the first id that spells it, -1 if none).

``transport`` is an :mod:`httpx` transport seam (tests, proxies, custom TLS);
``async_transport`` the same for :meth:`RemoteTarget.aevaluate`, which a verifier serving
many sessions uses so their requests reach the engine concurrently.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Sequence
from typing import Any

import httpx
import numpy as np

from configspec.backends.base import Evaluation, ModelIdentity, Tokenizing
from configspec.backends.openai_http import (
    TOKEN_ID_PREFIX,
    AsyncOpenAIServer,
    HttpStatus,
    OpenAIServer,
    completion_logprobs,
)
from configspec.backends.openai_http import check_tokenizer as check_tokenizer_of
from configspec.backends.specs import is_url
from configspec.errors import BackendUnavailable, InvalidInput

logger = logging.getLogger(__name__)


class RemoteTarget:
    """A target served by an OpenAI-compatible HTTP server (a Target).

    ``base_url`` is ``http(s)://host:port`` (with or without ``/v1``); ``tokenizer`` is a
    local copy of the served model's vocabulary (e.g.
    :class:`~configspec.backends.llamacpp.LlamaCppTokenizer`), whose identity stands for
    the remote model's; ``model`` is the served model id (default: the first listed by
    ``/v1/models``); ``top_k`` the number of log-probs asked per position;
    ``timeout_s`` the per-request timeout in seconds.
    """

    def __init__(
        self,
        base_url: str,
        tokenizer: Tokenizing,
        *,
        model: str | None = None,
        top_k: int = 10,
        timeout_s: float = 60.0,
        api_key: str | None = None,
        transport: httpx.BaseTransport | None = None,
        async_transport: httpx.AsyncBaseTransport | None = None,
        check_tokenizer: bool = True,
    ) -> None:
        if not is_url(base_url):
            raise InvalidInput(f"remote target URL {base_url!r} must start with http(s)://")
        if top_k < 1:
            raise InvalidInput(f"top_k={top_k} is out of range (>= 1)")
        self._server = OpenAIServer(
            base_url, timeout_s=timeout_s, api_key=api_key, transport=transport
        )
        self.base_url = self._server.base_url
        self.tokenizer = tokenizer
        self.top_k = top_k
        self.timeout_s = timeout_s
        self.model = model or self._server.model_ids()[0]
        self._identity = dataclasses.replace(
            tokenizer.identity,
            name=self.model,
            file_sha256=None,
            file_size_bytes=None,
            path=f"{self.base_url}/v1",
        )
        self._api_key = api_key
        self._async_transport = async_transport
        self._aserver: AsyncOpenAIServer | None = None
        self._token_ids_ok: bool | None = None  # learnt from the first completion
        self._piece_ids: dict[str, int] = {}
        self._tokens: list[int] = []
        if check_tokenizer:
            check_tokenizer_of(self._server, self.model, tokenizer)

    # HTTP --------------------------------------------------------------------
    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        return self._server.request(method, path, body)

    @property
    def requests(self) -> int:
        """HTTP requests answered."""
        return self._server.requests

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._server.close()

    def _async_server(self) -> AsyncOpenAIServer:
        """The shared asynchronous client, made on first use (in the loop that uses it)."""
        if self._aserver is None:
            self._aserver = AsyncOpenAIServer(
                self.base_url,
                timeout_s=self.timeout_s,
                api_key=self._api_key,
                transport=self._async_transport,
            )
        return self._aserver

    @property
    def in_flight(self) -> int:
        """Asynchronous requests sent and not yet answered."""
        return 0 if self._aserver is None else self._aserver.in_flight

    async def aclose(self) -> None:
        """Close the asynchronous connection pool (the synchronous one stays open)."""
        if self._aserver is not None:
            await self._aserver.aclose()
            self._aserver = None

    def __enter__(self) -> RemoteTarget:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Tokenizing ----------------------------------------------------------------
    @property
    def identity(self) -> ModelIdentity:
        """The local tokenizer's identity, named after the served model, path = the URL."""
        return self._identity

    def tokenize(self, text: str, *, add_bos: bool = True) -> list[int]:
        """Token ids of ``text`` with the local copy of the served vocabulary."""
        return self.tokenizer.tokenize(text, add_bos=add_bos)

    def detokenize(self, tokens: Sequence[int]) -> str:
        """Text of ``tokens``."""
        return self.tokenizer.detokenize(tokens)

    @property
    def cached_tokens(self) -> list[int]:
        """Tokens of the current sequence (the server holds their KV cache)."""
        return list(self._tokens)

    # Target ----------------------------------------------------------------------
    def _body(self, prompt: list[int], as_ids: bool) -> dict[str, Any]:
        """The completion request for ``prompt`` (token ids, or its text)."""
        if not as_ids:
            bos = self._starts_with_bos(prompt)
            text: str | list[int] = self.tokenizer.detokenize(prompt[1:] if bos else prompt)
        else:
            text = prompt
        return {
            "model": self.model,
            "prompt": text,
            "max_tokens": 1,
            "temperature": 0.0,
            "echo": True,
            "logprobs": self.top_k,
            "return_tokens_as_token_ids": True,
        }

    def _ids_refused(self, exc: HttpStatus) -> None:
        """After a failed token-id prompt: learn that the server wants text, or re-raise."""
        if self._token_ids_ok or exc.status not in (400, 422, 500):
            raise exc.as_error() from None
        logger.info("%s rejects token-id prompts; sending text", self.base_url)
        self._token_ids_ok = False

    def _complete(self, prompt: list[int]) -> tuple[dict[str, Any], bool]:
        """POST the completion; returns (logprobs object, prompt was sent as token ids)."""
        if self._token_ids_ok is not False:
            try:
                reply = self._request("POST", "/v1/completions", self._body(prompt, True))
                self._token_ids_ok = True
                return _logprobs_of(reply, self.base_url), True
            except HttpStatus as exc:
                self._ids_refused(exc)
        try:
            reply = self._request("POST", "/v1/completions", self._body(prompt, False))
        except HttpStatus as exc:
            raise exc.as_error() from None
        return _logprobs_of(reply, self.base_url), False

    async def _acomplete(self, prompt: list[int]) -> tuple[dict[str, Any], bool]:
        """:meth:`_complete` on the shared asynchronous client."""
        server = self._async_server()
        if self._token_ids_ok is not False:
            try:
                reply = await server.request("POST", "/v1/completions", self._body(prompt, True))
                self._token_ids_ok = True
                return _logprobs_of(reply, self.base_url), True
            except HttpStatus as exc:
                self._ids_refused(exc)
        try:
            reply = await server.request("POST", "/v1/completions", self._body(prompt, False))
        except HttpStatus as exc:
            raise exc.as_error() from None
        return _logprobs_of(reply, self.base_url), False

    def _starts_with_bos(self, prompt: list[int]) -> bool:
        bos = self.tokenizer.tokenize("", add_bos=True)
        return bool(bos) and prompt[:1] == bos[:1]

    def _piece(self, token: int) -> str:
        return self.tokenizer.detokenize([token])

    def _id_of(self, key: str, hint: int | None) -> int:
        """Token id of a log-prob key: ``token_id:N``, else the text mapped back to an id."""
        if key.startswith(TOKEN_ID_PREFIX):
            return int(key[len(TOKEN_ID_PREFIX) :])
        if hint is not None and self._piece(hint) == key:
            return hint
        if key not in self._piece_ids:
            ids = self.tokenizer.tokenize(key, add_bos=False)
            self._piece_ids[key] = ids[0] if len(ids) == 1 else -1
        return self._piece_ids[key]

    def evaluate(self, context: Sequence[int], tokens: Sequence[int]) -> Evaluation:
        """Server top-k after ``context + tokens[:i]`` for i = 0..len(tokens).

        ``top_ids``/``top_probs`` are (len(tokens)+1) × width, sorted by probability,
        padded with id -1 / probability 0; ``argmax`` is each row's top id. ``probs`` is
        None (servers return top-k only). llama-cpp-python stops at an end-of-generation
        token (EOS, Gemma's ``<end_of_turn>`` ...) without returning it, so that row is
        the tokenizer's EOS id standing for "generation ends", with probability NaN
        (``extra["stopped_at_eos"]`` = 1). ``elapsed_s`` is the round trip in seconds.
        """
        full = self._checked(context, tokens)
        start = time.perf_counter()
        logprobs, as_ids = self._complete(full)
        ev = self._evaluation(context, full, logprobs, as_ids, time.perf_counter() - start)
        self._tokens = full
        return ev

    async def aevaluate(self, context: Sequence[int], tokens: Sequence[int]) -> Evaluation:
        """:meth:`evaluate` without blocking: many sessions' calls are in flight at once
        over one shared :class:`~configspec.backends.openai_http.AsyncOpenAIServer` (no
        lock), so a batching engine verifies them in shared passes. Stateless: the
        sequence kept for :meth:`rollback` is not touched (each call sends its whole
        prompt; the server's prefix cache makes that cheap). Use from one event loop."""
        full = self._checked(context, tokens)
        start = time.perf_counter()
        logprobs, as_ids = await self._acomplete(full)
        return self._evaluation(context, full, logprobs, as_ids, time.perf_counter() - start)

    @staticmethod
    def _checked(context: Sequence[int], tokens: Sequence[int]) -> list[int]:
        if len(context) < 2:
            raise InvalidInput(
                f"the context has {len(context)} token(s); the remote target needs at least 2 "
                "(servers return no log-prob for the first prompt token)"
            )
        return [int(t) for t in (*context, *tokens)]

    def _evaluation(
        self,
        context: Sequence[int],
        full: list[int],
        logprobs: dict[str, Any],
        as_ids: bool,
        elapsed_s: float,
    ) -> Evaluation:
        """The Evaluation of one completion reply (see :meth:`evaluate`)."""
        echoed = logprobs["tokens"]
        tops = logprobs["top_logprobs"]
        # echoed = prompt tokens (some servers drop BOS) + the generated token, which
        # llama-cpp-python leaves out when it is end-of-sequence (usage says 0 generated)
        generated = 0 if logprobs.get("completion_tokens") == 0 else 1
        offset = len(full) - (len(echoed) - generated)
        if offset not in (0, 1) or (offset == 1 and not self._starts_with_bos(full)):
            raise BackendUnavailable(
                f"{self.base_url} echoed {len(echoed) - generated} prompt tokens for "
                f"{len(full)} sent; "
                "it re-tokenised the prompt text (special tokens such as EOS do not survive "
                "as text); use a server that accepts token-id prompts, e.g. vLLM"
            )
        if not as_ids:
            for pos in range(max(offset, len(context)), len(full)):
                mine, theirs = self._piece(full[pos]), str(echoed[pos - offset])
                if mine != theirs:
                    raise BackendUnavailable(
                        f"{self.base_url} re-tokenised the prompt differently at position "
                        f"{pos} ({theirs!r} vs {mine!r}); use a server that accepts token-id "
                        "prompts, e.g. vLLM"
                    )
        rows_ids: list[list[int]] = []
        rows_p: list[list[float]] = []
        for q in range(len(context), len(full) + 1):  # q = index of the predicted token
            if q == len(full) and not generated:
                # the server stopped at end-of-sequence: greedy argmax known, its p not
                rows_ids.append([int(getattr(self.tokenizer, "eos_token", -1))])
                rows_p.append([math.nan])
                continue
            top = tops[q - offset] if q - offset < len(tops) else None
            if not isinstance(top, dict) or not top:
                raise BackendUnavailable(
                    f"{self.base_url} returned no top log-probs for prompt position {q}; "
                    "start llama_cpp.server with --logits_all true"
                )
            hint = full[q] if q < len(full) else None
            pairs = sorted(
                ((self._id_of(str(k), hint), math.exp(float(v))) for k, v in top.items()),
                key=lambda kv: -kv[1],
            )
            rows_ids.append([i for i, _ in pairs])
            rows_p.append([p for _, p in pairs])
        width = max(len(r) for r in rows_ids)
        top_ids = np.full((len(rows_ids), width), -1, dtype=np.int64)
        top_probs = np.zeros((len(rows_ids), width), dtype=np.float32)
        for r, (ids, ps) in enumerate(zip(rows_ids, rows_p, strict=True)):
            top_ids[r, : len(ids)] = ids
            top_probs[r, : len(ps)] = ps
        return Evaluation(
            argmax=[int(r[0]) for r in top_ids],
            top_ids=top_ids,
            top_probs=top_probs,
            elapsed_s=elapsed_s,
            extra={"token_id_prompt": float(as_ids), "stopped_at_eos": float(not generated)},
        )

    def rollback(self, n_tokens: int) -> None:
        """Keep the first ``n_tokens`` of the sequence (the server's cache follows)."""
        if not 0 <= n_tokens <= len(self._tokens):
            raise InvalidInput(
                f"rollback to {n_tokens} tokens is out of range (0..{len(self._tokens)})"
            )
        del self._tokens[n_tokens:]


def _logprobs_of(reply: Any, base_url: str) -> dict[str, Any]:
    """``choices[0].logprobs`` plus the completion token count when the server gives it."""
    _, out = completion_logprobs(reply, base_url)
    usage = reply.get("usage") if isinstance(reply, dict) else None
    if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
        out["completion_tokens"] = usage["completion_tokens"]
    return out
