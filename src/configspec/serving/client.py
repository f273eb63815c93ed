"""The edge client: draft locally, verify remotely, record every round.

:class:`EdgeClient` opens a session on a verifier with the prompt, then repeats rounds:
draft K tokens with any :class:`~configspec.backends.base.Drafter`, send them, append the
accepted prefix and the correction/bonus token. It stops at ``max_tokens``, at a target
stop token, or at the server's context limit.

Failures it rides out without losing or duplicating a token:

* a connection error or timeout: the same request is re-sent (with backoff, up to
  ``reconnect_timeout_s``); the server answers a repeated round from memory, so a lost
  response never applies a round twice;
* an unknown or expired session (the server restarted, or the session idled out): a new
  session is opened with the prompt plus every token accepted so far, and the round is
  re-sent to it.

Sampling (temperature > 0): the draft distribution of each position is sent as its top
``draft_top_k`` tokens renormalised (exact, see :mod:`configspec.serving.protocol`). A
draft token outside that set ends the draft early at that position: drafts are then only
ever sent conditioned on falling inside the truncated support, so the truncated
distribution is exactly the one they were drawn from.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import httpx
import numpy as np
from pydantic import ValidationError

from configspec.backends.base import Drafter, DraftResult, ModelIdentity, same_tokenizer
from configspec.config import RoundTiming
from configspec.errors import BackendUnavailable, ConfigSpecError, IncompatibleModels, InvalidInput
from configspec.records import K_LIMIT
from configspec.serving.protocol import (
    SESSION_TOKEN_HEADER,
    ErrorResponse,
    OpenSessionRequest,
    OpenSessionResponse,
    ServerInfo,
    SparseDistribution,
    VerifyRequest,
    VerifyResponse,
)

if TYPE_CHECKING:
    from configspec.serving.adaptive import AdaptiveK

log = logging.getLogger(__name__)

_RETRYABLE = (httpx.TransportError,)

API_KEY_ENV = "CONFIGSPEC_API_KEY"
"""Environment variable the edge client (and the server) read the API key from."""


def auth_headers(api_key: str | None) -> dict[str, str]:
    """``Authorization: Bearer`` headers for ``api_key`` (none when it is None or empty)."""
    return {"authorization": f"Bearer {api_key}"} if api_key else {}


class ServerRejected(ConfigSpecError):
    """The verifier refused a request (the message is the server's own one-liner)."""

    exit_code = 10

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"verifier rejected the request ({status} {code}): {message}")
        self.status = status
        self.code = code


@dataclass
class Generation:
    """The outcome of :meth:`EdgeClient.generate`: tokens, text and the round timeline."""

    prompt_tokens: list[int]
    tokens: list[int]
    text: str
    rounds: list[RoundTiming]
    decode_s: float
    prefill_ms: float
    reconnects: int
    stopped_by: str
    target_name: str
    target_family: str
    energy_j: float | None = None
    sessions: list[str] = field(default_factory=list)
    draft_prefill_ms: float = 0.0
    """The drafter's prefill of the prompt, done before the first round (not in decode)."""


_DRAFT_STREAM = 0xD5AF7


def draft_seed(seed: int, round_no: int) -> int:
    """The drafter's seed for one round.

    Independent of every other round's and of the verifier's stream, which is derived
    from the same ``seed`` (see :func:`configspec.serving.sessions.verifier_rng`).
    """
    state = np.random.SeedSequence([seed, round_no, _DRAFT_STREAM]).generate_state(2, np.uint32)
    return int(state[0]) << 32 | int(state[1])


def sparse_support(q: np.ndarray, top_k: int, mass: float = 1.0 - 1e-6) -> SparseDistribution:
    """The smallest top set of ``q`` covering ``mass`` (at most ``top_k`` ids), renormalised."""
    q = np.asarray(q, dtype=np.float64)
    n = min(top_k, q.size)
    top = np.argpartition(-q, n - 1)[:n] if n < q.size else np.arange(q.size)
    top = top[np.argsort(-q[top], kind="stable")]
    cum = np.cumsum(q[top])
    total = float(q.sum())
    cut = int(np.searchsorted(cum, mass * total)) + 1
    top = top[: max(1, min(cut, n))]
    top = top[q[top] > 0] if (q[top] > 0).any() else top[:1]
    probs = q[top] / q[top].sum()
    return SparseDistribution(ids=[int(i) for i in top], probs=[float(p) for p in probs])


def build_request(
    round_no: int,
    session_tokens: int,
    draft: DraftResult,
    temperature: float,
    draft_top_k: int,
) -> VerifyRequest:
    """The verify request for ``draft`` (truncating the draft when sampling; see module doc)."""
    tokens = list(draft.tokens)
    if temperature == 0 or not tokens:
        return VerifyRequest(round=round_no, session_tokens=session_tokens, draft_tokens=tokens)
    if draft.distributions is None:
        if all(p >= 1.0 - 1e-9 for p in draft.token_probs):  # deterministic drafter
            return VerifyRequest(
                round=round_no,
                session_tokens=session_tokens,
                draft_tokens=tokens,
                draft_token_probs=[1.0] * len(tokens),
            )
        raise InvalidInput(
            "the drafter samples but returns no distributions; speculative sampling needs "
            "them (use a llama.cpp drafter or temperature 0)"
        )
    kept: list[int] = []
    dists: list[SparseDistribution] = []
    for i, tok in enumerate(tokens):
        dist = sparse_support(draft.distributions[i], draft_top_k)
        p = dist.prob_of(tok)
        if p is None:
            break  # the draft left the truncated support: cut it here (exactness)
        kept.append(tok)
        dists.append(dist)
    return VerifyRequest(
        round=round_no,
        session_tokens=session_tokens,
        draft_tokens=kept,
        draft_token_probs=[d.prob_of(t) or 0.0 for d, t in zip(dists, kept, strict=True)],
        draft_distributions=dists or None,
    )


def probe_server(url: str, *, timeout_s: float = 5.0, api_key: str | None = None) -> ServerInfo:
    """The verifier's target and limits from ``/v1/info``; fails fast with one clear line."""
    try:
        resp = httpx.get(
            url.rstrip("/") + "/v1/info",
            timeout=timeout_s,
            trust_env=False,
            headers=auth_headers(api_key),
        )
    except httpx.TransportError as exc:
        raise BackendUnavailable(
            f"cannot reach the verifier at {url} ({type(exc).__name__}); start it with "
            "`configspec serve verifier` or check --server"
        ) from None
    except httpx.InvalidURL as exc:
        raise InvalidInput(f"--server {url!r} is not a valid URL: {exc}") from None
    if resp.status_code == 401:
        raise BackendUnavailable(
            f"the verifier at {url} wants an API key and "
            + ("refused the one given" if api_key else "none was given")
            + f"; set {API_KEY_ENV} (or the variable named by --api-key-env)"
        )
    try:
        resp.raise_for_status()
        return ServerInfo.model_validate_json(resp.content)
    except (httpx.HTTPStatusError, ValidationError):
        raise BackendUnavailable(
            f"{url} answered /v1/info with HTTP {resp.status_code} but is not a ConfigSpec "
            "verifier; check --server"
        ) from None


def check_drafter(drafter: ModelIdentity, info: ServerInfo, k: int) -> None:
    """Raise unless ``drafter`` shares the served target's tokenizer and K fits the limit."""
    target = info.target
    if not same_tokenizer(drafter, target):
        raise IncompatibleModels(
            f"drafter {drafter.name} (family {drafter.family}) does not share the tokenizer of "
            f"target {target.name} (family {target.family}); pick a drafter of family "
            f"{target.family}"
        )
    if k > info.max_k:
        raise InvalidInput(f"K={k} is above the verifier's limit ({info.max_k})")


@dataclass
class _Session:
    """The verifier session a generation decodes in, and what reopening it has cost."""

    opened: OpenSessionResponse
    sessions: list[str] = field(default_factory=list)
    prefill_ms: float = 0.0
    reconnects: int = 0

    def __post_init__(self) -> None:
        self.sessions.append(self.opened.session_id)
        self.prefill_ms += self.opened.prefill_ms

    @property
    def session_id(self) -> str:
        return self.opened.session_id

    def reopen(self, opened: OpenSessionResponse) -> None:
        """Continue in a fresh session (the server lost the last one)."""
        self.opened = opened
        self.sessions.append(opened.session_id)
        self.prefill_ms += opened.prefill_ms
        self.reconnects += 1


class EdgeClient:
    """Speculative decoding against a remote verifier with a local drafter.

    ``transport`` lets tests and embedders plug in an httpx transport; ``energy_j`` is a
    callable returning the device meter's cumulative energy in joules (None: no meter).
    ``api_key`` is sent as a bearer token (read it from :data:`API_KEY_ENV`; never put it
    on a command line).
    ``policy`` (an :class:`~configspec.serving.adaptive.AdaptiveK`) chooses K every round
    (``k`` is then ignored; the policy's ``k_max`` bounds it) and learns from each round's
    outcome; each :class:`~configspec.config.RoundTiming` keeps the choice and estimates.
    """

    def __init__(
        self,
        server_url: str,
        drafter: Drafter,
        *,
        k: int,
        temperature: float = 0.0,
        seed: int | None = None,
        draft_top_k: int = 64,
        timeout_s: float = 60.0,
        reconnect_timeout_s: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        energy_j: Callable[[], float] | None = None,
        client_id: str = "",
        api_key: str | None = None,
        policy: AdaptiveK | None = None,
    ) -> None:
        if policy is not None:
            k = policy.k_max
        if not 0 <= k <= K_LIMIT:
            raise InvalidInput(f"K={k} is out of range (0..{K_LIMIT})")
        if temperature < 0:
            raise InvalidInput(f"temperature {temperature} must be >= 0")
        if draft_top_k < 1:
            raise InvalidInput(f"draft_top_k={draft_top_k} must be >= 1")
        self.server_url = server_url.rstrip("/")
        self.drafter = drafter
        self.k = k
        self.temperature = temperature
        self.seed = seed
        self.draft_top_k = draft_top_k
        self.reconnect_timeout_s = reconnect_timeout_s
        self.energy_j = energy_j
        self.client_id = client_id
        self.policy = policy
        self._http = httpx.Client(
            base_url=self.server_url,
            timeout=timeout_s,
            transport=transport,
            trust_env=False,
            headers=auth_headers(api_key),
        )
        self._session_tokens: dict[str, str] = {}

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._http.close()

    def __enter__(self) -> EdgeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ HTTP
    def _post(
        self, path: str, body: str, *, retry: bool = True, session_id: str | None = None
    ) -> httpx.Response:
        """POST, retrying transport errors for up to ``reconnect_timeout_s`` if ``retry``."""
        deadline = time.monotonic() + (self.reconnect_timeout_s if retry else 0.0)
        delay_s = 0.05
        headers = {"content-type": "application/json", **self._token_header(session_id)}
        while True:
            try:
                return self._http.post(path, content=body, headers=headers)
            except _RETRYABLE as exc:
                if time.monotonic() >= deadline:
                    raise BackendUnavailable(
                        f"cannot reach the verifier at {self.server_url} ({type(exc).__name__}: "
                        f"{exc or 'no detail'}); start it with `configspec serve verifier` "
                        "or check --server"
                    ) from None
                log.info("verifier unreachable (%s); retrying in %.2f s", exc, delay_s)
                time.sleep(delay_s)
                delay_s = min(delay_s * 2, 1.0)

    def _token_header(self, session_id: str | None) -> dict[str, str]:
        token = self._session_tokens.get(session_id or "")
        return {SESSION_TOKEN_HEADER: token} if token else {}

    @staticmethod
    def _error(resp: httpx.Response) -> ServerRejected:
        try:
            body = ErrorResponse.model_validate_json(resp.content).error
            return ServerRejected(resp.status_code, body.code, body.message)
        except ValidationError:
            return ServerRejected(resp.status_code, "unexpected", resp.text[:200])

    def _open(self, tokens: Sequence[int], *, retry: bool = True) -> OpenSessionResponse:
        req = OpenSessionRequest(
            prompt_tokens=list(tokens),
            temperature=self.temperature,
            seed=self.seed,
            client_id=self.client_id,
        )
        resp = self._post("/v1/sessions", req.model_dump_json(), retry=retry)
        if resp.status_code != 200:
            raise self._error(resp)
        opened = OpenSessionResponse.model_validate_json(resp.content)
        self._session_tokens[opened.session_id] = opened.session_token
        self._check_compatible(opened)
        return opened

    def _check_compatible(self, opened: OpenSessionResponse) -> None:
        info = ServerInfo(
            target=opened.target,
            max_k=opened.max_k,
            max_sessions=1,
            max_context_tokens=opened.max_context_tokens,
            session_ttl_s=opened.session_ttl_s,
            active_sessions=0,
        )
        check_drafter(self.drafter.identity, info, self.k)

    # ------------------------------------------------------------------ decode
    def generate(
        self,
        prompt_tokens: Sequence[int],
        max_tokens: int,
        *,
        on_text: Callable[[str], None] | None = None,
    ) -> Generation:
        """Generate up to ``max_tokens`` tokens after ``prompt_tokens``.

        ``on_text`` receives each new piece of text as rounds complete (streaming).
        """
        if max_tokens < 1:
            raise InvalidInput(f"max_tokens={max_tokens} must be >= 1")
        prompt = list(prompt_tokens)
        if not prompt:
            raise InvalidInput("the prompt is empty")
        st = _Session(self._open(prompt, retry=False))  # fail fast if the server is not there
        stops = set(st.opened.target.stop_token_ids)
        out: list[int] = []
        rounds: list[RoundTiming] = []
        text = ""
        stopped_by = "max_tokens"
        # The drafter reads the prompt once, before decoding starts (as the server's
        # prefill did on open): otherwise the first round would carry a whole prefill.
        draft_prefill_ms = self._prefill_drafter(prompt)
        energy0 = self.energy_j() if self.energy_j else None
        t_decode = time.perf_counter()
        while len(out) < max_tokens:
            context = prompt + out
            room = st.opened.max_context_tokens - len(context) - 1
            if room < 0:
                stopped_by = "context_limit"
                break
            # --k auto: the policy picks this round's K from what it has seen so far
            choice = self.policy.choose() if self.policy is not None else None
            k_want = choice.k if choice is not None else self.k
            k = max(0, min(k_want, max_tokens - len(out) - 1, room))
            timing, new = self._round(st, context, k, len(rounds))
            if self.policy is not None:
                self.policy.observe(
                    k_asked=k,
                    drafted=timing.k,
                    accepted=timing.accepted,
                    draft_ms=timing.draft_ms,
                    verify_ms=timing.verify_ms,
                    round_ms=timing.round_ms,
                )
                timing = timing.model_copy(update={"choice": choice})
            rounds.append(timing)
            hit_stop = next((i for i, t in enumerate(new) if t in stops), None)
            if hit_stop is not None:
                new = new[: hit_stop + 1]
                stopped_by = "stop_token"
            out.extend(new[: max_tokens - len(out)])
            if on_text is not None:
                full = self.drafter.detokenize(out)
                if full.startswith(text) and len(full) > len(text):
                    on_text(full[len(text) :])
                text = full
            if hit_stop is not None:
                break
        decode_s = time.perf_counter() - t_decode
        self._close_session(st.session_id)
        return Generation(
            prompt_tokens=prompt,
            tokens=out,
            text=self.drafter.detokenize(out),
            rounds=rounds,
            decode_s=decode_s,
            prefill_ms=st.prefill_ms,
            reconnects=st.reconnects,
            stopped_by=stopped_by,
            target_name=st.opened.target.name,
            target_family=st.opened.target.family,
            energy_j=(self.energy_j() - energy0) if self.energy_j and energy0 is not None else None,
            sessions=st.sessions,
            draft_prefill_ms=draft_prefill_ms,
        )

    def _round(
        self, st: _Session, context: list[int], k: int, round_no: int
    ) -> tuple[RoundTiming, list[int]]:
        """One round: draft up to ``k`` tokens after ``context``, verify them (reopening
        an expired session); the round's timing and the tokens it produced."""
        e0 = self.energy_j() if self.energy_j else None
        t0 = time.perf_counter()
        draft = self._draft(context, k, round_no)
        draft_ms = draft.elapsed_s * 1e3 or (time.perf_counter() - t0) * 1e3
        t_build = time.perf_counter()
        req = build_request(round_no, len(context), draft, self.temperature, self.draft_top_k)
        # building the sparse draft distributions is part of sampled drafting (the
        # device profile times it so); greedy requests cost nothing to build
        draft_ms += (time.perf_counter() - t_build) * 1e3 if self.temperature > 0 else 0.0
        v, send_unix_s, recv_unix_s, request_ms, retries = self._verify(st, req, context)
        timing = RoundTiming(
            round=round_no,
            k=len(req.draft_tokens),
            k_limit=k,
            accepted=v.accepted,
            bonus=v.bonus,
            draft_ms=draft_ms,
            uplink_ms=max(0.0, (v.received_unix_s - send_unix_s) * 1e3),
            verify_ms=v.verify_ms,
            server_ms=v.server_ms,
            downlink_ms=max(0.0, (recv_unix_s - v.sent_unix_s) * 1e3),
            network_ms=request_ms - v.server_ms,
            round_ms=(time.perf_counter() - t0) * 1e3,
            energy_j=(self.energy_j() - e0) if self.energy_j and e0 is not None else None,
            retries=retries,
        )
        return timing, [*req.draft_tokens[: v.accepted], v.next_token]

    def _verify(
        self, st: _Session, req: VerifyRequest, context: list[int]
    ) -> tuple[VerifyResponse, float, float, float, int]:
        """POST one verify request, reopening the session (from ``context``) when the
        server lost it. Returns the response, the send and receive wall clocks (Unix s),
        the request time (ms) and how many times it was retried."""
        retries = 0
        while True:
            t_send = time.perf_counter()
            send_unix_s = time.time()
            resp = self._post(
                f"/v1/sessions/{st.session_id}/verify",
                req.model_dump_json(),
                session_id=st.session_id,
            )
            t_recv = time.perf_counter()
            recv_unix_s = time.time()
            if resp.status_code == 200:
                break
            err = self._error(resp)
            if err.code not in ("unknown_session", "expired_session"):
                raise err
            log.warning("%s; reopening from %d tokens", err, len(context))
            st.reopen(self._open(context))
            retries += 1
        v = VerifyResponse.model_validate_json(resp.content)
        return v, send_unix_s, recv_unix_s, (t_recv - t_send) * 1e3, retries

    def _prefill_drafter(self, prompt: list[int]) -> float:
        """Let the drafter read ``prompt`` (if it can); the time it took in ms."""
        prefill = getattr(self.drafter, "prefill", None)
        if not callable(prefill):
            return 0.0
        t0 = time.perf_counter()
        prefill(prompt)
        return (time.perf_counter() - t0) * 1e3

    def _draft(self, context: list[int], k: int, round_no: int) -> DraftResult:
        if k == 0:
            return DraftResult(tokens=[], token_probs=[])
        seed = None if self.seed is None else draft_seed(self.seed, round_no)
        return self.drafter.draft(context, k, temperature=self.temperature, seed=seed)

    def _close_session(self, session_id: str) -> None:
        try:
            self._http.delete(f"/v1/sessions/{session_id}", headers=self._token_header(session_id))
            self._session_tokens.pop(session_id, None)
        except httpx.TransportError:
            log.info("could not close session %s (server gone); it will expire", session_id)
