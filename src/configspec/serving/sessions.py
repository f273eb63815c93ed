"""The verifier's state: sessions over a pool of targets, limits, expiry and metrics.

This module holds no HTTP: :class:`VerifierService` takes protocol messages and returns
protocol messages (or raises :class:`ApiError`), so it is tested directly and the FastAPI
layer in :mod:`configspec.serving.server` stays thin.

Concurrency. Each session has an :class:`asyncio.Lock`, so its rounds run one at a time
in arrival order. Targets are stateful and not thread-safe, so each target in the pool
has a lock too; a session is pinned to one target when it opens. One target can serve
many sessions: the target keeps one cache and re-evaluates the prefix where a session
differs from whatever it evaluated last (correct, but a switch costs a prefill; give the
server more targets to keep more sessions warm). Model calls run in a worker thread so
the event loop keeps answering ``/health`` and ``/metrics``.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from configspec.backends.base import Evaluation, Target, evaluate_at
from configspec.errors import ConfigSpecError
from configspec.records import K_LIMIT
from configspec.serving.protocol import (
    PROTOCOL_VERSION,
    CloseSessionResponse,
    ErrorCode,
    OpenSessionRequest,
    OpenSessionResponse,
    ServerInfo,
    TargetInfo,
    VerifyRequest,
    VerifyResponse,
)
from configspec.serving.verify import (
    Outcome,
    greedy_verify,
    sampled_decision,
    target_probs_at,
)

log = logging.getLogger(__name__)
_T = TypeVar("_T")

_LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
SESSION_COUNT_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)
"""Histogram buckets of a number of sessions or requests (batched together, in flight)."""


class ApiError(Exception):
    """An expected request failure: HTTP status, stable code, one-line message."""

    def __init__(self, status: int, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code: ErrorCode = code
        self.message = message


@dataclass(frozen=True)
class ServerLimits:
    """What one verifier accepts. ``max_context_tokens`` counts prompt + generated + K + 1.

    ``parallel_evaluations`` bounds how many targets of the pool compute at once: on a
    CPU every target already uses all its threads, and running several at once only
    oversubscribes the cores (raise it for GPU slots or many-core hosts).
    ``offload_compute`` runs model calls in a worker thread so ``/health``, ``/metrics``
    and other sessions' requests are answered during a verification or a long prefill.
    On by default (model work never blocks the event loop); ``False`` runs them inline,
    which saves the thread hand-off (measured 2.2 ms vs 0.18 ms per round on a busy host)
    for a single-client deployment that accepts a frozen server during each call.
    """

    max_sessions: int = 32
    max_k: int = 16
    max_context_tokens: int = 4096
    session_ttl_s: float = 300.0
    parallel_evaluations: int = 1
    offload_compute: bool = True

    def __post_init__(self) -> None:
        if self.max_sessions < 1:
            raise ValueError(f"max_sessions={self.max_sessions} must be at least 1")
        if not 1 <= self.max_k <= K_LIMIT:
            raise ValueError(f"max_k={self.max_k} is out of range (1..{K_LIMIT})")
        if self.max_context_tokens < 2:
            raise ValueError(f"max_context_tokens={self.max_context_tokens} is too small")
        if self.parallel_evaluations < 1:
            raise ValueError(f"parallel_evaluations={self.parallel_evaluations} must be >= 1")
        if self.session_ttl_s <= 0:
            raise ValueError(f"session_ttl_s={self.session_ttl_s} must be positive")


@dataclass
class _Slot:
    target: Target
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    sessions: int = 0


@dataclass
class _Session:
    session_id: str
    token: str
    tokens: list[int]
    temperature: float
    rng: np.random.Generator
    slot: _Slot
    last_used_s: float
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    rounds: int = 0
    last_request: VerifyRequest | None = None
    last_response: VerifyResponse | None = None


class Metrics:
    """Prometheus metrics of one service, in its own registry (no global state)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.rounds = Counter("configspec_verify_rounds", "Verification rounds served", registry=r)
        self.draft_tokens = Counter(
            "configspec_draft_tokens", "Draft tokens received for verification", registry=r
        )
        self.accepted_tokens = Counter(
            "configspec_accepted_tokens", "Draft tokens accepted", registry=r
        )
        self.emitted_tokens = Counter(
            "configspec_emitted_tokens", "Tokens emitted (accepted + correction/bonus)", registry=r
        )
        self.approximate_rounds = Counter(
            "configspec_approximate_rounds",
            "Sampling rounds verified against an approximate draft or target distribution",
            registry=r,
        )
        self.errors = Counter(
            "configspec_request_errors", "Rejected requests by error code", ["code"], registry=r
        )
        self.verify_latency = Histogram(
            "configspec_verify_latency_seconds",
            "Target compute time per verification round",
            buckets=_LATENCY_BUCKETS_S,
            registry=r,
        )
        self.prefill_latency = Histogram(
            "configspec_prefill_latency_seconds",
            "Target compute time to prefill a session's prompt",
            buckets=_LATENCY_BUCKETS_S,
            registry=r,
        )
        self.evaluated_tokens = Counter(
            "configspec_target_evaluated_tokens",
            "Tokens the target decoded (drafts, plus prefixes re-evaluated on a session switch)",
            registry=r,
        )
        self.sessions = Gauge("configspec_sessions_active", "Open sessions", registry=r)


def _pass_fields(ev: Evaluation) -> dict[str, Any]:
    """The batched pass that verified a round (see :class:`VerifyResponse`), if any."""
    x = ev.extra
    if "pass_id" not in x:
        return {}
    return {
        "pass_id": int(x["pass_id"]),
        "pass_sessions": int(x["pass_sessions"]),
        "pass_ms": float(x["pass_ms"]),
    }


_VERIFIER_STREAM = 0x7E21F1E5


def verifier_rng(seed: int | None) -> np.random.Generator:
    """The accept/resample random stream of a session seeded with ``seed``.

    Derived through a SeedSequence with a stream tag, never ``default_rng(seed)`` itself:
    a drafter seeded with the same number would otherwise draw the same uniforms, and
    reusing the uniform that picked a draft token to accept it biases the output.
    """
    if seed is None:
        return np.random.default_rng()
    return np.random.default_rng(np.random.SeedSequence([seed, _VERIFIER_STREAM]))


def target_info(target: Target) -> TargetInfo:
    """What clients need to know about ``target`` (identity, vocabulary, stop tokens)."""
    ident = target.identity
    stops = getattr(target, "stop_token_ids", None)
    if stops is None and getattr(target, "eos_token", None) is not None:
        stops = [target.eos_token]  # type: ignore[attr-defined]
    return TargetInfo(
        name=ident.name,
        family=ident.family,
        vocab_size=ident.vocab_size,
        tokenizer_fingerprint=ident.tokenizer_fingerprint,
        stop_token_ids=sorted(int(t) for t in stops) if stops else [],
    )


class VerifierService:
    """Sessions, limits and verification over a pool of targets of the same model.

    ``clock`` returns seconds (monotonic) and is a parameter so expiry is testable.
    """

    def __init__(
        self,
        targets: Sequence[Target],
        limits: ServerLimits | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not targets:
            raise ValueError("a verifier needs at least one target")
        self.slots = [_Slot(t) for t in targets]
        self.info = target_info(targets[0])
        for t in targets[1:]:
            if target_info(t) != self.info:
                raise ValueError("every target in a verifier's pool must be the same model")
        self.limits = limits or ServerLimits()
        self.clock = clock
        self.metrics = Metrics()
        self.started_s = clock()
        self._sessions: dict[str, _Session] = {}
        self._compute = asyncio.Semaphore(self.limits.parallel_evaluations)
        self._expired: OrderedDict[str, None] = OrderedDict()

    # ----------------------------------------------------------------- sessions
    @property
    def active_sessions(self) -> int:
        """Number of open (unexpired) sessions."""
        return len(self._sessions)

    def server_info(self) -> ServerInfo:
        """Target and limits, for ``/v1/info``."""
        lim = self.limits
        return ServerInfo(
            target=self.info,
            max_k=lim.max_k,
            max_sessions=lim.max_sessions,
            max_context_tokens=lim.max_context_tokens,
            session_ttl_s=lim.session_ttl_s,
            active_sessions=self.active_sessions,
        )

    def expire_idle(self) -> int:
        """Drop sessions idle longer than the TTL; return how many were dropped."""
        now = self.clock()
        dead = [
            s
            for s in self._sessions.values()
            if now - s.last_used_s > self.limits.session_ttl_s and not s.lock.locked()
        ]
        for s in dead:
            self._drop(s.session_id, expired=True)
        return len(dead)

    def _drop(self, session_id: str, *, expired: bool) -> _Session | None:
        s = self._sessions.pop(session_id, None)
        if s is None:
            return None
        s.slot.sessions -= 1
        self._release(s)
        self.metrics.sessions.set(len(self._sessions))
        if expired:
            self._expired[session_id] = None
            while len(self._expired) > 4096:
                self._expired.popitem(last=False)
            log.info("session %s expired after %d rounds", session_id, s.rounds)
        return s

    def _get(self, session_id: str) -> _Session:
        self.expire_idle()
        s = self._sessions.get(session_id)
        if s is not None:
            return s
        if session_id in self._expired:
            raise ApiError(
                410,
                "expired_session",
                f"session {session_id} expired after {self.limits.session_ttl_s:g} s idle; "
                "open a new session with the tokens generated so far",
            )
        raise ApiError(
            404,
            "unknown_session",
            f"session {session_id} does not exist (closed, or the server restarted); "
            "open a new session with the tokens generated so far",
        )

    def _check_tokens(self, tokens: Sequence[int], what: str) -> None:
        vocab = self.info.vocab_size
        bad = [t for t in tokens if not 0 <= t < vocab]
        if bad:
            raise ApiError(
                422,
                "token_out_of_vocab",
                f"{what} token id {bad[0]} is outside the target vocabulary (0..{vocab - 1})",
            )

    async def open(self, req: OpenSessionRequest) -> OpenSessionResponse:
        """Open a session and prefill its prompt into the target's cache."""
        if req.protocol_version != PROTOCOL_VERSION:
            raise ApiError(
                400,
                "protocol_version",
                f"protocol version {req.protocol_version} is not supported (server speaks "
                f"{PROTOCOL_VERSION}); use a matching configspec version",
            )
        self.expire_idle()
        lim = self.limits
        if len(self._sessions) >= lim.max_sessions:
            raise ApiError(
                429,
                "too_many_sessions",
                f"the server already has {len(self._sessions)} sessions (limit "
                f"{lim.max_sessions}); retry later or raise --max-sessions",
            )
        self._check_tokens(req.prompt_tokens, "prompt")
        if len(req.prompt_tokens) + 2 > lim.max_context_tokens:
            raise ApiError(
                422,
                "context_limit",
                f"prompt of {len(req.prompt_tokens)} tokens leaves no room in the context "
                f"limit of {lim.max_context_tokens} tokens",
            )
        slot = min(self.slots, key=lambda s: s.sessions)
        session = _Session(
            session_id=secrets.token_hex(8),
            token=secrets.token_urlsafe(24),
            tokens=list(req.prompt_tokens),
            temperature=req.temperature,
            rng=verifier_rng(req.seed),
            slot=slot,
            last_used_s=self.clock(),
        )
        slot.sessions += 1
        self._sessions[session.session_id] = session
        self.metrics.sessions.set(len(self._sessions))
        prompt = session.tokens
        try:
            async with session.lock:
                ev = await self._prefill(session)
        except Exception as exc:
            self._drop(session.session_id, expired=False)
            if isinstance(exc, ConfigSpecError):  # e.g. the prompt exceeds the context
                raise ApiError(422, "target_error", f"the target refused: {exc}") from None
            log.exception("prefill failed")
            raise ApiError(500, "target_error", f"the target failed to prefill: {exc}") from exc
        self.metrics.prefill_latency.observe(ev.elapsed_s)
        session.last_used_s = self.clock()
        log.info(
            "session %s opened: %d prompt tokens, T=%g (%s)",
            session.session_id,
            len(prompt),
            req.temperature,
            req.client_id or "anonymous",
        )
        return OpenSessionResponse(
            session_id=session.session_id,
            session_token=session.token,
            target=self.info,
            session_tokens=len(session.tokens),
            max_k=lim.max_k,
            max_context_tokens=lim.max_context_tokens,
            session_ttl_s=lim.session_ttl_s,
            prefill_ms=ev.elapsed_s * 1e3,
        )

    def check_owner(self, session_id: str, session_token: str | None) -> None:
        """Raise 403 unless ``session_token`` is the secret ``session_id`` was opened with.

        An unknown or expired id raises 404/410 first (as for any request naming it).
        """
        s = self._get(session_id)
        if session_token is None or not secrets.compare_digest(
            s.token.encode(), session_token.encode()
        ):
            raise ApiError(
                403,
                "forbidden",
                f"session {session_id} belongs to another client: send the session_token "
                "its open returned in the X-Session-Token header",
            )

    def close(self, session_id: str) -> CloseSessionResponse:
        """Close a session and free its slot."""
        s = self._get(session_id)
        self._drop(session_id, expired=False)
        return CloseSessionResponse(session_id=session_id, rounds=s.rounds)

    # ----------------------------------------------------------------- verify
    def _validate(self, s: _Session, req: VerifyRequest) -> None:
        lim = self.limits
        k = len(req.draft_tokens)
        if k > lim.max_k:
            raise ApiError(
                422, "k_above_limit", f"K={k} is above this server's limit ({lim.max_k})"
            )
        if req.session_tokens != len(s.tokens):
            raise ApiError(
                409,
                "session_out_of_sync",
                f"request builds on {req.session_tokens} session tokens but the session "
                f"holds {len(s.tokens)} (round {req.round}); resynchronise or reopen",
            )
        self._check_tokens(req.draft_tokens, "draft")
        for dist in req.draft_distributions or []:
            self._check_tokens(dist.ids, "draft distribution")
        if len(s.tokens) + k + 1 > lim.max_context_tokens:
            raise ApiError(
                422,
                "context_limit",
                f"session of {len(s.tokens)} tokens plus K={k} drafts exceeds the context "
                f"limit of {lim.max_context_tokens} tokens; finish or open a new session",
            )
        if s.temperature > 0 and k and req.draft_distributions is None:
            probs = req.draft_token_probs
            if probs is not None and any(p < 1.0 for p in probs):
                raise ApiError(
                    422,
                    "missing_draft_probs",
                    "sampling drafts with probability < 1 need draft_distributions "
                    "(the residual max(0, p - q) needs q)",
                )

    async def verify(self, session_id: str, req: VerifyRequest) -> VerifyResponse:
        """Verify one round; the session only changes if the whole round succeeds."""
        received_unix_s = time.time()
        t0 = time.perf_counter()
        s = self._get(session_id)
        async with s.lock:
            if session_id not in self._sessions:  # expired or closed while we queued
                s = self._get(session_id)
            s.last_used_s = self.clock()
            if s.last_response is not None and req == s.last_request:
                return s.last_response.model_copy(update={"replayed": True})
            self._validate(s, req)
            try:
                outcome, ev, approximate = await self._compute_round(s, req)
            except ConfigSpecError as exc:
                raise ApiError(422, "target_error", f"the target refused: {exc}") from None
            except Exception as exc:
                log.exception("verification failed in session %s", session_id)
                raise ApiError(500, "target_error", f"the target failed to verify: {exc}") from exc
            s.tokens.extend(req.draft_tokens[: outcome.accepted])
            s.tokens.append(outcome.next_token)
            s.rounds += 1
            s.last_used_s = self.clock()
            m = self.metrics
            m.rounds.inc()
            m.draft_tokens.inc(len(req.draft_tokens))
            m.accepted_tokens.inc(outcome.accepted)
            m.emitted_tokens.inc(outcome.accepted + 1)
            m.verify_latency.observe(ev.elapsed_s)
            m.evaluated_tokens.inc(ev.extra.get("evaluated_tokens", len(req.draft_tokens) + 1))
            if approximate:
                m.approximate_rounds.inc()
            resp = VerifyResponse(
                round=req.round,
                accepted=outcome.accepted,
                next_token=outcome.next_token,
                bonus=outcome.bonus,
                session_tokens=len(s.tokens),
                verify_ms=ev.elapsed_s * 1e3 + ev.extra.get("decision_ms", 0.0),
                server_ms=(time.perf_counter() - t0) * 1e3,
                received_unix_s=received_unix_s,
                sent_unix_s=time.time(),
                **_pass_fields(ev),
            )
            s.last_request, s.last_response = req, resp
            return resp

    # Compute hooks: one target per slot here; the batched service overrides them.
    async def _prefill(self, s: _Session) -> Evaluation:
        """Evaluate a new session's prompt into its target's cache."""
        async with s.slot.lock, self._compute:
            return await self._call(s.slot.target.evaluate, s.tokens, [])

    async def _compute_round(
        self, s: _Session, req: VerifyRequest
    ) -> tuple[Outcome, Evaluation, bool]:
        """Evaluate a round's drafts, decide, and roll the target back."""
        async with s.slot.lock, self._compute:
            return await self._call(self._run, s, req)

    def _release(self, s: _Session) -> None:
        """Free what a dropped session held in its target (nothing for a shared cache)."""

    async def aclose(self) -> None:
        """Stop background work (the server's shutdown calls it)."""

    async def _call(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run a model call in a worker thread, or inline (see ``offload_compute``)."""
        if self.limits.offload_compute:
            return await asyncio.to_thread(fn, *args)
        return fn(*args)

    def _run(self, s: _Session, req: VerifyRequest) -> tuple[Outcome, Evaluation, bool]:
        """Evaluate, decide and roll the target back to the accepted prefix (worker thread)."""
        target = s.slot.target
        # probs only when sampling, and then at the session's temperature where the
        # target can (the batched service's pass does the same)
        ev = evaluate_at(target, s.tokens, list(req.draft_tokens), s.temperature or None)
        outcome, approximate = self._decide(s, req, ev)
        target.rollback(len(s.tokens) + outcome.accepted)
        return outcome, ev, approximate

    def _decide(self, s: _Session, req: VerifyRequest, ev: Evaluation) -> tuple[Outcome, bool]:
        """Accept a prefix of the drafts from the target's evaluation (pure but for rng)."""
        drafts = list(req.draft_tokens)
        approximate = False
        if s.temperature == 0:
            outcome = greedy_verify(drafts, ev.argmax[: len(drafts) + 1])
        else:
            t0 = time.perf_counter()
            p, approximate = target_probs_at(
                ev.probs, ev.top_ids, ev.top_probs, len(drafts) + 1, s.temperature,
                self.info.vocab_size, ev.extra.get("probs_temperature", 1.0),
            )  # fmt: skip
            outcome, approx_q = sampled_decision(
                drafts, req.draft_distributions, p, self.info.vocab_size, s.rng
            )
            approximate = approximate or approx_q
            # the sampling decision is part of verifying (the profile times it too)
            ev.extra["decision_ms"] = (time.perf_counter() - t0) * 1e3
        return outcome, approximate

    def uptime_s(self) -> float:
        """Seconds since the service started."""
        return self.clock() - self.started_s
