"""Verification latency on the real server path: B sessions × P positions in one pass.

A batching verifier (``configspec serve verifier``, :mod:`configspec.serving.batched`)
verifies concurrent sessions' rounds in shared target passes. This module measures what
one such pass costs: B sessions are open on a running verifier, each holding the same
context; all B send a round of P - 1 drafts at the same instant (released together by
:func:`~configspec.profiling.concurrency.time_concurrent`), and the sample is the pass
that verified them.

**What is timed, and why server-side.** The stored latency is the verifier's own time of
the pass, ``pass_ms`` in its responses (the forward pass plus every session's decision and
rollback, on the verifier's clock). Not the client-side wall time minus the RTT: that
would add the HTTP stack, JSON, thread hand-offs and whatever the loaded client host's
scheduler does, and the latency model already charges those per round
(``network.json: round_overhead_ms``) and the link separately — counting them here would
count them twice. The pass time is also exactly the service time ``S(b, p)`` of the
queueing station in :mod:`configspec.model.fleet`. The client-side mean latency of the B
requests is kept too (report and checkpoint only).

**A sample counts only when all B rounds shared one pass of exactly B sessions** (the
responses name the pass: ``pass_id``, ``pass_sessions``); otherwise it is discarded and
retried. The in-process verifier :class:`VerificationProfiler` starts for a local target
is set up so that this always holds (at most B sessions per pass, gather wait 1 s: the pass
starts as soon as the B-th round arrives); against a verifier someone else runs, start it
with a fixed gather wait (``--gather fixed --max-gather-wait-ms 200``) and
``--max-batch-sessions`` at least B.

Drafts are random token ids from the upper half of the vocabulary, so they are almost
never accepted: each round grows a session by one token, and sessions are reopened (prefill
untimed) once they have grown ``REOPEN_AFTER_TOKENS`` past the profiled context.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import numpy as np
from pydantic import ValidationError

from configspec.backends.base import ModelIdentity, Tokenizing
from configspec.config import VerificationProfile
from configspec.errors import BackendUnavailable, IncompatibleModels, InvalidInput
from configspec.profiling.concurrency import time_concurrent
from configspec.profiling.device import build_context
from configspec.profiling.stats import stop_sampling
from configspec.profiling.verification import point_record
from configspec.progress import ProgressFn
from configspec.serving.client import auth_headers, probe_server
from configspec.serving.protocol import (
    SESSION_TOKEN_HEADER,
    OpenSessionRequest,
    OpenSessionResponse,
    SparseDistribution,
    VerifyRequest,
    VerifyResponse,
)

if TYPE_CHECKING:
    from configspec.profiling.verification import VerificationProfiler, VerifySweepReport

REOPEN_AFTER_TOKENS = 64
"""Sessions are reopened once they hold this many tokens more than the profiled context."""

MAX_MIXED_PASSES = 20
"""Consecutive samples whose rounds did not share one pass of B before giving up."""


@dataclass(frozen=True)
class PassSample:
    """One timed pass: ``pass_ms`` on the verifier's clock (stored), ``request_ms`` each
    request's client-side latency (ms)."""

    pass_ms: float
    request_ms: tuple[float, ...]


@dataclass
class _Open:
    session_id: str
    token: str
    length: int
    round: int = 0


class ServerPathBench:
    """B sessions on a running ConfigSpec verifier at ``url``, for timing its passes.

    ``vocab_size`` bounds the random drafts; ``seed`` makes them reproducible;
    ``timeout_s`` is the per-request timeout (seconds).
    """

    def __init__(
        self,
        url: str,
        *,
        vocab_size: int,
        api_key: str | None = None,
        timeout_s: float = 300.0,
        seed: int = 0,
        on_open: Callable[[bool], None] | None = None,
    ) -> None:
        if vocab_size < 4:
            raise InvalidInput(f"vocab_size={vocab_size} is too small for random drafts")
        self.url = url.rstrip("/")
        self.vocab_size = vocab_size
        self._client = httpx.Client(
            base_url=self.url,
            timeout=timeout_s,
            headers=auth_headers(api_key),
            trust_env=False,
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=256),
        )
        self._rng = np.random.default_rng(seed)
        self._sessions: list[_Open] = []
        self._context: list[int] = []
        self._temperature = 0.0
        self._on_open = on_open  # called True before opening sessions, False after
        self.discarded = 0  # samples whose rounds were split over passes

    # HTTP --------------------------------------------------------------------------
    def _post(self, path: str, body: str, token: str | None = None) -> bytes:
        headers = {"content-type": "application/json"}
        if token is not None:
            headers[SESSION_TOKEN_HEADER] = token
        try:
            resp = self._client.post(path, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise BackendUnavailable(
                f"the verifier at {self.url} did not answer {path} ({type(exc).__name__})"
            ) from None
        if resp.status_code >= 400:
            try:
                message = resp.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = resp.text[:160]
            raise BackendUnavailable(
                f"the verifier at {self.url} answered HTTP {resp.status_code}: {message}"
            )
        return resp.content

    def _close_sessions(self) -> None:
        for s in self._sessions:
            with contextlib.suppress(httpx.HTTPError):  # else expiry frees it
                self._client.delete(
                    f"/v1/sessions/{s.session_id}", headers={SESSION_TOKEN_HEADER: s.token}
                )
        self._sessions = []

    def close(self) -> None:
        """Close the sessions and the connection pool."""
        self._close_sessions()
        self._client.close()

    def __enter__(self) -> ServerPathBench:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # sessions ----------------------------------------------------------------------
    def open_sessions(self, context: Sequence[int], n: int, temperature: float) -> None:
        """(Re)open ``n`` sessions holding ``context`` at ``temperature`` (untimed)."""
        self._close_sessions()
        self._context = [int(t) for t in context]
        self._temperature = temperature
        if self._on_open is not None:
            self._on_open(True)
        try:
            self._open_all(n)
        finally:
            if self._on_open is not None:
                self._on_open(False)

    def _open_all(self, n: int) -> None:
        temperature = self._temperature
        for i in range(n):
            req = OpenSessionRequest(prompt_tokens=self._context, temperature=temperature,
                                     seed=i, client_id=f"profile-verify-{i}")  # fmt: skip
            try:
                opened = OpenSessionResponse.model_validate_json(
                    self._post("/v1/sessions", req.model_dump_json())
                )
            except ValidationError:
                raise BackendUnavailable(
                    f"{self.url} is not a ConfigSpec verifier (its /v1/sessions answer does "
                    "not parse)"
                ) from None
            self._sessions.append(_Open(opened.session_id, opened.session_token,
                                        opened.session_tokens))  # fmt: skip

    def _request(self, s: _Open, positions: int, draft_top_k: int) -> VerifyRequest:
        k = positions - 1
        lo = self.vocab_size // 2
        drafts = [int(t) for t in self._rng.integers(lo, self.vocab_size, size=k)]
        if self._temperature == 0 or k == 0:
            return VerifyRequest(round=s.round, session_tokens=s.length, draft_tokens=drafts)
        width = max(1, min(draft_top_k, self.vocab_size - lo))
        dists = []
        for tok in drafts:
            others = self._rng.choice(np.arange(lo, self.vocab_size), size=width, replace=False)
            ids = [tok, *(int(i) for i in others if i != tok)][:width]
            dists.append(SparseDistribution(ids=ids, probs=[1.0 / len(ids)] * len(ids)))
        return VerifyRequest(
            round=s.round, session_tokens=s.length, draft_tokens=drafts,
            draft_token_probs=[d.probs[0] for d in dists], draft_distributions=dists,
        )  # fmt: skip

    def _verify_into(self, replies: list[VerifyResponse | None], i: int, body: str) -> None:
        s = self._sessions[i]
        replies[i] = VerifyResponse.model_validate_json(
            self._post(f"/v1/sessions/{s.session_id}/verify", body, s.token)
        )

    # timing ------------------------------------------------------------------------
    def sample(
        self,
        positions: int,
        pool: ThreadPoolExecutor | None,
        draft_top_k: int = 64,
        sessions: int | None = None,
    ) -> PassSample:
        """One pass of the first ``sessions`` open sessions (default: all, B) verifying
        ``positions`` positions each.

        Retries samples whose rounds did not share one pass of exactly B sessions; raises
        :class:`InvalidInput` after :data:`MAX_MIXED_PASSES` of them in a row, or when the
        verifier does not batch (no ``pass_id`` in its answers).
        """
        n_open = len(self._sessions)
        b = n_open if sessions is None else sessions
        if n_open == 0 or not 1 <= b <= n_open:
            raise InvalidInput(f"open at least {max(b, 1)} sessions before timing a pass")
        seen: list[int] = []
        for _ in range(MAX_MIXED_PASSES):
            if max(s.length for s in self._sessions) > len(self._context) + REOPEN_AFTER_TOKENS:
                self.open_sessions(self._context, n_open, self._temperature)
            used = self._sessions[:b]
            bodies = [self._request(s, positions, draft_top_k).model_dump_json() for s in used]
            replies: list[VerifyResponse | None] = [None] * b
            calls = [functools.partial(self._verify_into, replies, i, body)
                     for i, body in enumerate(bodies)]  # fmt: skip
            timing = time_concurrent(calls, pool)
            got = [r for r in replies if r is not None]
            for s, r in zip(used, got, strict=True):
                s.round += 1
                s.length = r.session_tokens
            if any(r.pass_id is None or r.pass_ms is None for r in got):
                raise InvalidInput(
                    f"the verifier at {self.url} does not batch (its answers name no pass); "
                    "start it with --batch on a local GGUF target"
                )
            sizes = {r.pass_sessions for r in got}
            if len({r.pass_id for r in got}) == 1 and sizes == {b}:
                assert got[0].pass_ms is not None
                return PassSample(got[0].pass_ms, timing.request_ms)
            self.discarded += 1
            seen.extend(int(x) for x in sizes if x is not None)
        raise InvalidInput(
            f"the verifier at {self.url} never verified {b} sessions in one pass in "
            f"{MAX_MIXED_PASSES} tries (its passes held {sorted(set(seen))} sessions); restart "
            f"it with --gather fixed --max-gather-wait-ms 200 and --max-batch-sessions >= {b}"
        )


# the sweep -------------------------------------------------------------------------------
@dataclass
class RunningVerifier:
    """A verifier to time (:func:`running_verifier`): its URL, the served model's identity
    and tokenizer, ``set_batch(B)`` (the in-process verifier then puts at most B sessions
    in a pass; a no-op for one someone else runs) and the ``on_open`` hook to give
    :class:`ServerPathBench` (no gather wait while sessions open)."""

    url: str
    identity: ModelIdentity
    tokenizer: Tokenizing
    set_batch: Callable[[int], None]
    on_open: Callable[[bool], None] | None


@contextlib.contextmanager
def running_verifier(prof: VerificationProfiler) -> Iterator[RunningVerifier]:
    """The verifier to time, for ``prof``'s settings (batch sizes, positions, contexts,
    threads): the one at ``prof.verifier_url``, or one started here on the
    local target (each batch size gets at most B sessions per pass and a 1 s gather wait,
    so a pass starts as soon as the B-th round arrives; prefill runs without the wait)."""
    from configspec.backends.factory import LlamaSettings, open_batch_target, open_tokenizer
    from configspec.profiling import host
    from configspec.serving.batched import BatchedVerifierService, BatchPolicy
    from configspec.serving.server import ServerThread
    from configspec.serving.sessions import ServerLimits

    s = prof.settings
    if prof.verifier_url is not None:
        info = probe_server(prof.verifier_url, api_key=prof.api_key)
        tok = open_tokenizer(prof.tokenizer or prof.target_spec, cache_dir=prof.cache_dir)
        if tok.identity.tokenizer_fingerprint != info.target.tokenizer_fingerprint:
            raise IncompatibleModels(
                f"the verifier at {prof.verifier_url} serves {info.target.name}, whose "
                f"tokenizer differs from {tok.identity.name}'s; pass its GGUF as --tokenizer"
            )
        ident = dataclasses.replace(tok.identity, name=info.target.name, file_sha256=None)
        yield RunningVerifier(prof.verifier_url, ident, tok, lambda b: None, None)
        return
    widest = max(s.batch_sizes) * (s.k_max + 2)
    per_pass = max(256, widest)
    n_ctx = max(s.context_tokens) + REOPEN_AFTER_TOKENS + 2 * s.k_max + 8
    threads = s.threads or len(host.allowed_cpus())
    engine = open_batch_target(
        prof.target_spec,
        n_seqs=max(s.batch_sizes) * len(s.temperatures),  # a set of sessions per temperature
        max_positions_per_pass=per_pass,
        cache_dir=prof.cache_dir,
        settings=LlamaSettings(n_threads=threads, n_ctx=n_ctx),
    )
    policy = BatchPolicy(
        max_sessions_per_batch=1,
        max_gather_wait_ms=1000.0,  # a pass starts when the B-th round arrives
        max_positions_per_pass=per_pass,
        gather="fixed",
        prefill_chunk_tokens=per_pass,
    )
    limits = ServerLimits(
        max_sessions=max(s.batch_sizes) * len(s.temperatures),
        max_k=max(1, s.k_max),
        max_context_tokens=n_ctx,
    )
    service = BatchedVerifierService(engine, limits, policy)
    batch = [1]

    def set_batch(b: int) -> None:
        batch[0] = b
        service.policy = dataclasses.replace(policy, max_sessions_per_batch=b)

    def on_open(opening: bool) -> None:
        wait = 0.0 if opening else policy.max_gather_wait_ms
        service.policy = dataclasses.replace(
            policy, max_sessions_per_batch=batch[0], max_gather_wait_ms=wait
        )

    try:
        with ServerThread(service) as srv:
            yield RunningVerifier(srv.url, engine.identity, engine, set_batch, on_open)
    finally:
        engine.close()


@dataclass
class _Cell:
    """One sweep point being sampled in turns: its key (positions, context, batch,
    temperature), its samples (ms), its requests' client-side latencies (ms), the seconds
    its samples took, and whether its stopping rule holds (then it is stored)."""

    key: tuple[int, int, int, float]
    samples: list[float] = dataclasses.field(default_factory=list)
    request_ms: list[float] = dataclasses.field(default_factory=list)
    spent_s: float = 0.0
    done: bool = False


def run_server_path(
    prof: VerificationProfiler, progress: ProgressFn
) -> tuple[VerificationProfile, Path, VerifySweepReport]:
    """The verification sweep on the server path (see the module docstring): every
    (temperature, context, B, P) point is the verifier's pass time for B sessions of P
    positions; checkpointed as each point finishes and resumed like the direct sweep.

    **The points of one context are sampled in turns** -- one pass of every (B,
    temperature, P) point per turn, round-robin, until each point's own stopping rule
    (:func:`~configspec.profiling.stats.stop_sampling`: CI target, repeats, budget) holds
    -- instead of all of one B's passes and then the next B's. Timed in blocks, a change in
    the host's speed lands on one B: on the shared 2-core host a sweep's B = 16 row read
    ~25-30% high against its B = 8 row (side by side the ratio was 1.6-2.0, the blocked
    sweep's 2.55), and single cells came out non-monotone (S(1, 1) > S(1, 2)). In turns,
    drift is shared by every point of the sweep. Each temperature has its own
    ``max(B)`` sessions (the verifier must allow ``max(B) x temperatures`` sessions), a
    B-point uses the first B of them. A point partly sampled when the sweep is killed is
    sampled again on resume (only finished points are checkpointed)."""

    started = time.perf_counter()
    s = prof.settings
    widest = max(s.batch_sizes)
    with running_verifier(prof) as v, contextlib.ExitStack() as stack:
        identity = dataclasses.replace(v.identity, name=prof._name(v.identity.name))
        if not identity.vocab_size:
            raise InvalidInput(f"{identity.name} reports no vocabulary size")
        sweep = prof.open_sweep(
            identity,
            f"verify {identity.name} (server path)",
            {"path": "server", "verifier_url": prof.verifier_url},
            progress,
        )
        pools = {b: stack.enter_context(ThreadPoolExecutor(max_workers=b))
                 for b in s.batch_sizes if b > 1}  # fmt: skip
        benches = {
            temp: stack.enter_context(ServerPathBench(
                v.url, vocab_size=identity.vocab_size, api_key=prof.api_key, on_open=v.on_open,
                seed=i,
            ))
            for i, temp in enumerate(s.temperatures)
        }  # fmt: skip

        def sample(cell: _Cell, first: bool) -> None:
            positions, _, batch, temp = cell.key
            v.set_batch(batch)
            pool = pools.get(batch)
            for _ in range(s.warmup if first else 0):
                benches[temp].sample(positions, pool, s.draft_top_k, batch)
            t0 = time.perf_counter()
            smp = benches[temp].sample(positions, pool, s.draft_top_k, batch)
            cell.spent_s += time.perf_counter() - t0
            cell.samples.append(smp.pass_ms)
            cell.request_ms.append(sum(smp.request_ms) / len(smp.request_ms))
            done = stop_sampling(cell.samples, cell.spent_s, rel_half_width=s.rel_half_width,
                                 min_repeats=s.min_repeats, max_repeats=s.max_repeats,
                                 budget_s=s.point_budget_s)  # fmt: skip
            if done is not None:
                sweep.store(*point_record(done, cell.request_ms, cell.key), progress)
                cell.done = True

        for ctx_len in s.context_tokens:
            cells = [_Cell((p, ctx_len, b, t))
                     for b, t, p in itertools.product(s.batch_sizes, s.temperatures,
                                                      range(1, s.k_max + 2))
                     if (p, ctx_len, b, t) not in sweep.done]  # fmt: skip
            if not cells:
                continue
            context = build_context(v.tokenizer, ctx_len)
            for temp in {c.key[3] for c in cells}:
                benches[temp].open_sessions(context, widest, temp)
            first = True
            while cells:  # one sample of every unfinished point per turn
                for cell in cells:
                    sample(cell, first)
                cells = [c for c in cells if not c.done]
                first = False
    return prof.save_sweep(identity, sweep, started)
