"""The target's reference trajectory from a remote OpenAI-compatible server.

The server generates each prompt's continuation through ``/v1/completions``: greedy at
temperature 0, sampled at T > 0 with the prompt's own seed (:func:`~configspec.profiling.
reference.prompt_seed`, as the local path), with its top-k log-probabilities at every
generated position. Sampling filters are switched off (``top_p`` 1, ``top_k`` 0 with -1
as the fallback for older vLLM, ``min_p`` 0, no repetition penalties) so the continuation
follows the target's plain temperature-T distribution, like the local path.

What comes back is turned into the same :class:`~configspec.profiling.reference.
TargetReference` the local path computes, so the drafters are teacher-forced along it
unchanged:

* token ids come from ``token_id:N`` keys (vLLM's ``return_tokens_as_token_ids``) or,
  for servers that answer with token text (llama-cpp-python), from the local vocabulary;
* at T > 0 the log-probabilities are either the server's temperature-T distribution
  (vLLM V0, or V1 with ``--logprobs-mode processed_logprobs``) or the raw T = 1 one
  (vLLM V1's default, llama-cpp-python): a two-request probe tells which, and raw ones
  are re-scaled with bounds (:func:`~configspec.profiling.acceptance.temper_topk`);
* a server that stops at an end-of-generation token without returning it
  (llama-cpp-python) gets the tokenizer's EOS appended at T = 0 (what a greedy verifier
  would accept against); at T > 0 the trajectory ends before it (its distribution is
  unknown).

References are fetched concurrently (:func:`fetch_references`) and each is cached as soon
as it arrives, keyed by the server's model id, the tokenizer, the prompt and the
settings: a profile interrupted by a dead server resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import numpy as np

from configspec.backends.base import Tokenizing
from configspec.backends.openai_http import (
    TOKEN_ID_PREFIX,
    HttpStatus,
    OpenAIServer,
    RetryPolicy,
    check_tokenizer,
    completion_logprobs,
)
from configspec.errors import BackendUnavailable, InvalidInput
from configspec.profiling.acceptance import TopK, temper_topk
from configspec.profiling.prompts import Prompt
from configspec.profiling.reference import (
    ReferenceSettings,
    TargetReference,
    cache_key,
    load_reference,
    prompt_seed,
    save_reference,
)
from configspec.store import ProfileStore

logger = logging.getLogger(__name__)

LogprobScale = Literal["raw", "processed"]
_NO_FILTERS: dict[str, Any] = {
    "top_p": 1.0,
    "min_p": 0.0,
    "repeat_penalty": 1.0,  # llama-cpp-python (default 1.1)
    "repetition_penalty": 1.0,  # vLLM
    "presence_penalty": 0.0,
    "frequency_penalty": 0.0,
}


#: Token text → id per tokenizer object, shared by the sources of one run (a resumed fetch
#: opens a new source); weak keys, so nothing outlives the tokenizer.
_PIECES_BY_TOKENIZER: weakref.WeakKeyDictionary[Tokenizing, dict[str, int]] = (
    weakref.WeakKeyDictionary()
)


class RemoteReferenceSource:
    """Produces target references with a remote server (thread-safe: one per run).

    ``url`` is the server (``http(s)://host:port``); ``tokenizer`` a local copy of the
    served model's vocabulary; ``model`` the served model id (default: the first listed);
    ``retry`` the policy on 429/50x, timeouts and refused connections; ``timeout_s`` per
    request, seconds. The tokenizer check runs here, before any work.
    """

    def __init__(
        self,
        url: str,
        tokenizer: Tokenizing,
        *,
        model: str | None = None,
        api_key: str | None = None,
        retry: RetryPolicy | None = None,
        timeout_s: float = 600.0,
        max_connections: int = 16,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.server = OpenAIServer(
            url,
            timeout_s=timeout_s,
            api_key=api_key,
            transport=transport,
            retry=retry or RetryPolicy(),
            max_connections=max_connections,
            sleep=sleep,
        )
        try:
            self.model = model or self.server.model_ids()[0]
            self.tokenizer = tokenizer
            self.tokenizer_checked = check_tokenizer(self.server, self.model, tokenizer)
        except BaseException:
            self.server.close()
            raise
        self.token_id_prompts: bool | None = None  # learnt from the first completion
        self._top_k_off: int = 0  # "consider all tokens": 0, or -1 for older vLLM
        self.scales: dict[float, LogprobScale] = {}
        self._pieces: dict[str, int] | None = None
        self._pieces_lock = threading.Lock()
        self.requests_s = 0.0  # summed request wall time, seconds

    @property
    def cache_identity(self) -> str:
        """What keys the reference cache besides prompt and settings: the served model id
        and the tokenizer (not the URL: the same model elsewhere gives the same text)."""
        return f"remote:{self.model}:{self.tokenizer.identity.tokenizer_fingerprint}"

    def close(self) -> None:
        """Close the connection pool."""
        self.server.close()

    # requests --------------------------------------------------------------------
    def _complete(self, ids: list[int], text: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST a completion with the prompt as token ids (else text); returns the reply."""
        full = {"model": self.model, "return_tokens_as_token_ids": True, **_NO_FILTERS, **body}
        full["top_k"] = self._top_k_off
        for _ in range(3):  # token ids → text, top_k 0 → -1
            as_ids = self.token_id_prompts is not False
            try:
                reply = self.server.request(
                    "POST", "/v1/completions", {**full, "prompt": ids if as_ids else text}
                )
            except HttpStatus as exc:
                if exc.status in (400, 422) and "top_k" in exc.message and self._top_k_off == 0:
                    self._top_k_off = full["top_k"] = -1
                    continue
                if as_ids and self.token_id_prompts is not True and exc.status in (400, 422, 500):
                    logger.info("%s rejects token-id prompts; sending text", self.server.base_url)
                    self.token_id_prompts = False
                    continue
                if exc.status in (400, 422) and "logprobs" in exc.message:
                    raise BackendUnavailable(
                        f"{exc.url} refused {body.get('logprobs')} log-probs per position "
                        f"({exc.message}); pass a smaller --top-k"
                    ) from None
                raise exc.as_error() from None
            if as_ids:
                self.token_id_prompts = True
            if not isinstance(reply, dict):
                break
            reply["_sent_ids"] = as_ids
            return reply
        raise BackendUnavailable(
            f"{self.server.base_url} is not an OpenAI-compatible completions server"
        )

    def _piece_ids(self) -> dict[str, int]:
        """Token text → id for servers that key log-probs by text.

        Several ids may spell the same text (Gemma has user-defined single-character
        tokens beside the normal ones); the id the tokenizer itself gives for that text is
        taken, else the first."""
        with self._pieces_lock:  # built once, by the first worker that needs it
            if self._pieces is None:
                # one walk over the vocabulary per tokenizer object (~4 s for 262k ids);
                # TypeError: a tokenizer that cannot be weakly referenced is not shared
                with contextlib.suppress(TypeError):
                    self._pieces = _PIECES_BY_TOKENIZER.get(self.tokenizer)
            if self._pieces is None:
                self._pieces = self._build_piece_ids()
                with contextlib.suppress(TypeError):
                    _PIECES_BY_TOKENIZER[self.tokenizer] = self._pieces
            return self._pieces

    def _build_piece_ids(self) -> dict[str, int]:
        spelled: dict[str, list[int]] = {}
        for i in range(self.tokenizer.identity.vocab_size):
            piece = self.tokenizer.detokenize([i]).replace("\ufffd", "")
            spelled.setdefault(piece, []).append(i)
        pieces: dict[str, int] = {}
        for piece, ids in spelled.items():
            if len(ids) > 1 and piece:
                own = self.tokenizer.tokenize(piece, add_bos=False)
                if len(own) == 1 and own[0] in ids:
                    pieces[piece] = own[0]
                    continue
            pieces[piece] = ids[0]
        return pieces

    def _id_of(self, key: str) -> int:
        if key.startswith(TOKEN_ID_PREFIX):
            return int(key[len(TOKEN_ID_PREFIX) :])
        return self._piece_ids().get(key, -1)

    def logprob_scale(
        self, ids: list[int], text: str, settings: ReferenceSettings, seed: int | None = None
    ) -> LogprobScale:
        """Whether the server's log-probs at ``settings.temperature`` are the raw (T = 1)
        distribution or the temperature-scaled one: two one-token requests compared."""
        t = settings.temperature
        if t == 1.0:
            return "processed"  # both are the same
        if t not in self.scales:
            tops = []
            probe_seed = settings.seed if seed is None else seed
            for temp in (1.0, t):
                body = {"max_tokens": 1, "temperature": temp, "seed": probe_seed}
                reply = self._complete(ids, text, {**body, "logprobs": max(2, settings.top_k)})
                top = _logprobs(reply, self.server.base_url)["top_logprobs"][0]
                tops.append({str(k): float(v) for k, v in (top or {}).items()})
            self.scales[t] = _which_scale(tops[0], tops[1], t)
            logger.info("%s returns %s log-probs at T=%g", self.server.base_url, self.scales[t], t)
        return self.scales[t]

    def fetch(self, prompt: Prompt, settings: ReferenceSettings) -> TargetReference:
        """The server's continuation of ``prompt`` and its top-k at every position."""
        start = time.perf_counter()
        ids = self.tokenizer.tokenize(prompt.text, add_bos=True)
        t = settings.temperature
        body: dict[str, Any] = {
            "max_tokens": settings.n_tokens,
            "temperature": t,
            "logprobs": settings.top_k if t > 0 else 1,
        }
        seed = prompt_seed(settings.seed, prompt)  # the local path's seed for this prompt
        if t > 0:
            body["seed"] = seed
        scale = self.logprob_scale(ids, prompt.text, settings, seed) if t > 0 else "processed"
        reply = self._complete(ids, prompt.text, body)
        lp = _logprobs(reply, self.server.base_url)
        n_prompt = lp.get("prompt_tokens")
        if not reply["_sent_ids"] and isinstance(n_prompt, int) and n_prompt != len(ids):
            raise BackendUnavailable(
                f"{self.server.base_url} tokenized prompt {prompt.id!r} into {n_prompt} "
                f"tokens, the local tokenizer into {len(ids)}; pass the served model's GGUF "
                "as --tokenizer"
            )
        tokens = [self._id_of(str(k)) for k in lp["tokens"]]
        token_ids = lp.get("token_ids")
        if isinstance(token_ids, list) and len(token_ids) == len(tokens):
            tokens = [int(x) for x in token_ids]
        if -1 in tokens:
            pos = tokens.index(-1)
            raise BackendUnavailable(
                f"{self.server.base_url} returned token text {lp['tokens'][pos]!r} (prompt "
                f"{prompt.id!r}, position {pos}) that is no token of the local tokenizer; "
                "pass the served model's GGUF as --tokenizer"
            )
        tops = lp["top_logprobs"]
        eos = getattr(self.tokenizer, "eos_token", None)
        stopped = lp.get("finish_reason") == "stop" and len(tokens) < settings.n_tokens
        dist = None
        if t > 0:
            dist = self._dist(tops, len(tokens), t, scale, settings.top_k)
        elif stopped and eos is not None and (not tokens or tokens[-1] != eos):
            tokens.append(int(eos))  # the server stopped at EOS without returning it
        argmax = np.asarray(tokens, dtype=np.int64) if dist is None else dist.ids[:, 0].copy()
        return TargetReference(
            prompt_id=prompt.id,
            domain=prompt.domain,
            prompt_tokens=np.asarray(ids, dtype=np.int64),
            tokens=np.asarray(tokens, dtype=np.int64),
            argmax=argmax,
            dist=dist,
            temperature=t,
            generate_s=time.perf_counter() - start,
        )

    def _dist(
        self, tops: list[Any], n: int, temperature: float, scale: LogprobScale, top_k: int
    ) -> TopK:
        """The top-k distribution per generated position from the server's dicts.

        Servers add the sampled token to its position's dict when it is outside the top-k
        (vLLM, llama-cpp-python): k + 1 entries, the last far below the k-th. Only the k
        largest are kept, because the bounds on the tail (:func:`temper_topk`, the
        overlaps) take every id outside the stored ones to be at most the smallest stored
        probability; with the sampled token kept, that cap was its probability, not the
        k-th largest, and the lower bound of α came out above the true α.
        """
        rows: list[list[tuple[int, float]]] = []
        for i in range(n):
            top = tops[i] if i < len(tops) else None
            if not isinstance(top, dict) or not top:
                raise BackendUnavailable(
                    f"{self.server.base_url} returned no top log-probs for generated position {i}"
                )
            pairs: dict[int, float] = {}
            for k, v in top.items():
                tid = self._id_of(str(k))
                if tid >= 0 and v is not None and math.isfinite(float(v)):
                    pairs[tid] = max(pairs.get(tid, -math.inf), float(v))
            rows.append(sorted(pairs.items(), key=lambda kv: -kv[1])[:top_k])
        width = max((len(r) for r in rows), default=1)
        ids = np.full((n, width), -1, dtype=np.int64)
        lps = np.full((n, width), -np.inf, dtype=np.float64)
        for r, row in enumerate(rows):
            ids[r, : len(row)] = [i for i, _ in row]
            lps[r, : len(row)] = [v for _, v in row]
        if scale == "raw":
            return temper_topk(ids, lps, temperature, self.tokenizer.identity.vocab_size)
        probs = np.where(ids >= 0, np.exp(lps), 0.0)
        return TopK(ids=ids, probs=probs, remainder=np.clip(1.0 - probs.sum(axis=1), 0.0, 1.0))


def _which_scale(at_one: dict[str, float], at_t: dict[str, float], t: float) -> LogprobScale:
    """Whether the log-probs ``at_t`` (asked at temperature ``t``) are the raw ones
    ``at_one`` (asked at T = 1) or the tempered ones, from the gaps to the top token:
    raw gaps are the T = 1 gaps, tempered ones are those divided by ``t``.

    The gaps decide by which is nearer, not by equality: the same prompt evaluated in a
    batch of another size (a server reusing a cached prefix) rounds differently, and
    log-probs that differed by a few 1e-3 were once taken for tempered ones.
    """
    shared = [k for k in at_one if k in at_t]
    if len(shared) < 2:
        return "raw" if t == 1.0 else "processed"
    top = max(shared, key=lambda k: at_one[k])
    gap_one = np.array([at_one[k] - at_one[top] for k in shared])
    gap_t = np.array([at_t[k] - at_t[top] for k in shared])
    raw_err = float(np.abs(gap_t - gap_one).max())
    tempered_err = float(np.abs(gap_t - gap_one / t).max())
    return "raw" if raw_err <= tempered_err else "processed"


def _logprobs(reply: Any, base_url: str) -> dict[str, Any]:
    """``choices[0].logprobs`` plus the finish reason, token ids and prompt token count."""
    choice, out = completion_logprobs(reply, base_url)
    out["finish_reason"] = choice.get("finish_reason")
    out["token_ids"] = choice.get("token_ids")
    usage = reply.get("usage")
    if isinstance(usage, dict) and isinstance(usage.get("prompt_tokens"), int):
        out["prompt_tokens"] = usage["prompt_tokens"]
    return out


@dataclass
class FetchResult:
    """References in prompt order, how many came from the cache, and the fetch time (s)."""

    references: list[TargetReference]
    n_cached: int
    n_fetched: int
    elapsed_s: float


def fetch_references(
    store: ProfileStore,
    source: RemoteReferenceSource,
    prompts: Sequence[Prompt],
    settings: ReferenceSettings,
    *,
    concurrency: int = 4,
    on_done: Callable[[int], None] = lambda n: None,
    on_start: Callable[[int, int], None] = lambda cached, todo: None,
) -> FetchResult:
    """The reference of every prompt: from the cache, else fetched with ``concurrency``
    requests in flight, each cached as soon as it arrives.

    ``on_start(cached, to_fetch)`` is called once before fetching; ``on_done(n)`` after
    every ``n`` references ready. When the server fails for good (retries exhausted),
    raises :class:`BackendUnavailable` saying how many references are cached and that
    rerunning resumes.
    """
    if concurrency < 1:
        raise InvalidInput(f"concurrency {concurrency} is out of range (>= 1)")
    start = time.perf_counter()
    keys = [cache_key(source.cache_identity, p, settings) for p in prompts]
    refs: list[TargetReference | None] = [
        load_reference(store, k, p) for k, p in zip(keys, prompts, strict=True)
    ]
    todo = [i for i, r in enumerate(refs) if r is None]
    n_cached = len(prompts) - len(todo)
    on_start(n_cached, len(todo))
    on_done(n_cached)
    failure: BaseException | None = None
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        pending: dict[Future[TargetReference], int] = {
            pool.submit(source.fetch, prompts[i], settings): i for i in todo
        }
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                i = pending.pop(fut)
                exc = fut.exception()
                if exc is not None:
                    failure = failure or exc
                    continue
                ref = fut.result()
                save_reference(store, keys[i], ref)
                refs[i] = ref
                on_done(1)
            if failure is not None:
                for fut in pending:
                    fut.cancel()
                wait(pending)  # requests in flight finish (or fail) before we report
                for fut, i in pending.items():
                    if not fut.cancelled() and fut.exception() is None:
                        save_reference(store, keys[i], fut.result())
                        refs[i] = fut.result()
                pending.clear()
    if failure is not None:
        n_have = sum(r is not None for r in refs)
        if not isinstance(failure, BackendUnavailable):
            raise failure
        raise BackendUnavailable(
            f"{failure} — {n_have} of {len(prompts)} references are cached; rerun the same "
            "command to resume"
        )
    return FetchResult(
        references=[r for r in refs if r is not None],
        n_cached=n_cached,
        n_fetched=len(todo),
        elapsed_s=time.perf_counter() - start,
    )
