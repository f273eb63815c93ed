"""The wire protocol between the edge client and the verifier server (JSON over HTTP).

Endpoints (all bodies are the pydantic models below, serialised as JSON)::

    POST   /v1/sessions                 OpenSessionRequest  -> OpenSessionResponse
    POST   /v1/sessions/{id}/verify     VerifyRequest       -> VerifyResponse
    DELETE /v1/sessions/{id}                                -> CloseSessionResponse
    GET    /v1/info                                         -> ServerInfo
    GET    /health                                          -> Health
    GET    /metrics                                         Prometheus text format

Every error is a 4xx/5xx with an :class:`ErrorResponse` body, ``{"error": {"code": ...,
"message": ...}}``: a stable machine-readable ``code`` (:data:`ErrorCode`) and a one-line
human ``message`` naming the bad value. That holds for the framework's own failures too
(unknown path, wrong method, a body that is not UTF-8 JSON, a body too large, a request
too slow to arrive). A rejected request never changes the session it names.

Authentication. A server started with an API key answers every path but ``/health``
only to requests carrying ``Authorization: Bearer <key>`` (401 ``unauthorized``).
Independently, each session is bound to its opener: the ``session_token`` returned on
open must come back in the ``X-Session-Token`` header of verify and close (403
``forbidden``).

Ordering and retries: each verify request carries the client's round number and the
session length it believes the server holds (``session_tokens``). The server answers a
repeated round (same number, same drafts) from its last response instead of verifying
twice, so a client may retry after a lost response without duplicating tokens; a request
built on a different session length is refused with ``session_out_of_sync`` (409).

Draft distributions (speculative sampling only). The residual distribution
``max(0, p - q)`` needs the drafter's distribution ``q`` over the whole vocabulary at every
drafted position. Sending K × vocab floats (262 144 for Gemma 3) is too much for an edge
uplink, so a distribution travels as :class:`SparseDistribution`: the ``ids`` and
``probs`` of its support plus ``remainder``, the mass outside it.

* ``remainder == 0`` (what :mod:`configspec.serving.client` sends) is **exact**: the client
  truncates its sampling distribution to its top-k tokens, renormalises, and samples the
  draft from that truncated distribution. The server then knows ``q`` exactly, and the
  accept/resample rule makes the output distribution equal to the target's exactly
  (speculative sampling is correct for any ``q`` as long as the verifier uses the ``q``
  the draft was really sampled from). Truncation only costs acceptance, never correctness.
* ``remainder > 0`` is an approximation for drafters that cannot truncate: the server
  spreads the remainder uniformly over the tokens outside ``ids``. The output
  distribution then deviates from the target's by at most ``remainder`` in total
  variation per position; a run using it is not exact and the server counts such rounds.

Probabilities are JSON doubles; Python writes them with round-trip precision, so nothing
is lost on the wire.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, model_validator

from configspec.records import K_LIMIT

PROTOCOL_VERSION = 2
"""2: sessions are bound to the client that opened them (``session_token``)."""

SESSION_TOKEN_HEADER = "X-Session-Token"
"""Header carrying a session's ``session_token`` on verify and close requests."""

MAX_DRAFT_TOKENS = K_LIMIT
"""Hard protocol cap on K (:data:`configspec.records.K_LIMIT`); a server's own limit
(``ServerInfo.max_k``) is usually lower."""

MAX_PROMPT_TOKENS = 1 << 20
MAX_TEMPERATURE = 10.0
PROB_SUM_TOLERANCE = 1e-3
"""How far ``sum(probs) + remainder`` may stray from 1 (float32 drafters round)."""


class _Msg(BaseModel):
    """Requests are parsed strictly: ``"2"``, ``true`` or ``2.0`` are not token ids."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SparseDistribution(_Msg):
    """A drafter distribution over the vocabulary at one drafted position.

    ``probs[i]`` is the probability of token ``ids[i]``; ``remainder`` is the mass on all
    other tokens (0 means the distribution is exactly zero outside ``ids``, see the module
    docstring for what a non-zero remainder means).
    """

    ids: list[StrictInt] = Field(min_length=1, max_length=4096)
    probs: list[StrictFloat] = Field(min_length=1, max_length=4096)
    remainder: StrictFloat = Field(default=0.0, ge=0.0, le=1.0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _consistent(self) -> SparseDistribution:
        if len(self.ids) != len(self.probs):
            raise ValueError(
                f"ids has {len(self.ids)} entries but probs has {len(self.probs)}; "
                "they must pair up"
            )
        if len(set(self.ids)) != len(self.ids):
            raise ValueError("ids contains duplicates")
        if any(i < 0 for i in self.ids):
            raise ValueError(f"negative token id {min(self.ids)} in ids")
        if any(not math.isfinite(p) or p < 0.0 for p in self.probs):
            raise ValueError("probs must be finite and non-negative")
        total = math.fsum(self.probs) + self.remainder
        if abs(total - 1.0) > PROB_SUM_TOLERANCE:
            raise ValueError(f"probs plus remainder sum to {total:.6f}, expected 1")
        return self

    def prob_of(self, token: int) -> float | None:
        """Probability of ``token`` if it is in the support, else None."""
        try:
            return self.probs[self.ids.index(token)]
        except ValueError:
            return None


class OpenSessionRequest(_Msg):
    """Open a session: the server prefills ``prompt_tokens`` into the target's cache.

    ``temperature`` 0 selects greedy verification, > 0 speculative sampling at that
    temperature; ``seed`` seeds the server's accept/resample random stream.
    ``client_id`` is free text shown in logs.
    """

    protocol_version: StrictInt = PROTOCOL_VERSION
    prompt_tokens: list[StrictInt] = Field(min_length=1, max_length=MAX_PROMPT_TOKENS)
    temperature: StrictFloat = Field(default=0.0, ge=0.0, le=MAX_TEMPERATURE, allow_inf_nan=False)
    seed: StrictInt | None = Field(default=None, ge=0, lt=2**63)
    client_id: str = Field(default="", max_length=200)


class TargetInfo(_Msg):
    """The target model a server verifies with (drafters must share its tokenizer)."""

    name: str
    family: str
    vocab_size: int
    tokenizer_fingerprint: str
    stop_token_ids: list[int] = Field(default_factory=list)


class OpenSessionResponse(_Msg):
    """A new session: its id, the target, the server's limits and the prefill time.

    ``session_token`` is a secret only the opener knows: verify and close requests must
    send it in the ``X-Session-Token`` header, so a session id seen in a log or URL is
    not enough to drive or close the session.
    """

    session_id: str
    session_token: str
    target: TargetInfo
    session_tokens: int = Field(ge=1)
    max_k: int = Field(ge=1)
    max_context_tokens: int = Field(ge=1)
    session_ttl_s: float
    prefill_ms: float = Field(ge=0)


class VerifyRequest(_Msg):
    """One speculative round: K draft tokens after the session's current tokens.

    K may be 0: the server then just produces the target's next token (target-only
    decoding through the same path, and what a client sends when its draft was cut).

    ``round`` counts the client's rounds from 0 (a repeated round is answered from the
    server's memory, never verified twice); ``session_tokens`` is the session length the
    client believes the server holds. When sampling (session temperature > 0) the drafter's
    ``draft_token_probs`` and ``draft_distributions`` (one per draft token) are required.
    """

    round: StrictInt = Field(ge=0, lt=2**63)
    session_tokens: StrictInt = Field(ge=1, lt=2**63)
    draft_tokens: list[StrictInt] = Field(min_length=0, max_length=MAX_DRAFT_TOKENS)
    draft_token_probs: list[StrictFloat] | None = None
    draft_distributions: list[SparseDistribution] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> VerifyRequest:
        k = len(self.draft_tokens)
        if any(t < 0 for t in self.draft_tokens):
            raise ValueError(f"negative token id {min(self.draft_tokens)} in draft_tokens")
        if self.draft_token_probs is not None:
            if len(self.draft_token_probs) != k:
                raise ValueError(
                    f"draft_token_probs has {len(self.draft_token_probs)} entries for "
                    f"{k} draft tokens"
                )
            if any(not (0.0 <= p <= 1.0) for p in self.draft_token_probs):  # NaN fails too
                raise ValueError("draft_token_probs must lie in [0, 1]")
        if self.draft_distributions is not None:
            if len(self.draft_distributions) != k:
                raise ValueError(
                    f"draft_distributions has {len(self.draft_distributions)} entries for "
                    f"{k} draft tokens"
                )
            for i, (tok, dist) in enumerate(
                zip(self.draft_tokens, self.draft_distributions, strict=True)
            ):
                if dist.prob_of(tok) is None and dist.remainder == 0.0:
                    raise ValueError(
                        f"draft token {tok} at position {i} has probability 0 in its own "
                        "draft distribution"
                    )
        return self


class VerifyResponse(_Msg):
    """The outcome of one round.

    ``accepted`` draft tokens were kept (0..K), then ``next_token`` follows them: the
    correction when a draft was rejected, the bonus token when all K were accepted
    (``bonus`` tells which). The session now holds ``session_tokens`` tokens
    (= previous + accepted + 1). ``verify_ms`` is the target's compute time for the round,
    ``server_ms`` the whole time the server spent on the request (queueing, locks,
    verification, sampling); ``received_unix_s``/``sent_unix_s`` are the server's wall
    clock when the request was parsed and the answer built (for one-way time estimates
    when client and server clocks agree). A batching verifier also says which target pass
    verified the round: ``pass_id`` (counts passes), ``pass_sessions`` (sessions in it)
    and ``pass_ms`` (the pass's own time: the forward pass plus every session's decision
    and rollback, ms); None from a verifier that does not batch.
    """

    round: int
    accepted: int = Field(ge=0)
    next_token: int = Field(ge=0)
    bonus: bool
    session_tokens: int = Field(ge=1)
    verify_ms: float = Field(ge=0)
    server_ms: float = Field(ge=0)
    received_unix_s: float
    sent_unix_s: float
    replayed: bool = False
    pass_id: int | None = None
    pass_sessions: int | None = None
    pass_ms: float | None = None

    @property
    def new_tokens(self) -> int:
        """Tokens this round added to the sequence (accepted drafts plus next_token)."""
        return self.accepted + 1


class CloseSessionResponse(_Msg):
    """A closed session and how many rounds it served."""

    session_id: str
    rounds: int


class ServerInfo(_Msg):
    """What a verifier serves and its limits."""

    protocol_version: int = PROTOCOL_VERSION
    target: TargetInfo
    max_k: int
    max_sessions: int
    max_context_tokens: int
    session_ttl_s: float
    active_sessions: int


class Health(_Msg):
    """Liveness: ``status`` is "ok" once the target is loaded."""

    status: Literal["ok"] = "ok"
    active_sessions: int
    uptime_s: float


ErrorCode = Literal[
    "malformed_request",
    "unauthorized",
    "forbidden",
    "not_found",
    "method_not_allowed",
    "request_timeout",
    "request_too_large",
    "server_busy",
    "internal_error",
    "unknown_session",
    "expired_session",
    "k_above_limit",
    "token_out_of_vocab",
    "context_limit",
    "too_many_sessions",
    "session_out_of_sync",
    "protocol_version",
    "missing_draft_probs",
    "target_error",
]


class ErrorBody(_Msg):
    """What went wrong, in one line, and a stable code for programs."""

    code: ErrorCode
    message: str


class ErrorResponse(_Msg):
    """The body of every non-2xx answer."""

    error: ErrorBody
