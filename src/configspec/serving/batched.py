"""Batched verification across sessions: many sessions' rounds in one target pass.

:class:`BatchedVerifierService` is a :class:`~configspec.serving.sessions.VerifierService`
over one :class:`BatchTarget` (e.g. :class:`~configspec.backends.llamacpp_batch.
LlamaCppBatchTarget`): every session owns a KV sequence, and a single background task
(the batcher) gathers queued work, runs one forward pass for it in a worker thread, then
decides each session's round and rolls each sequence back to its accepted prefix.

Policy (:class:`BatchPolicy`): at most ``max_sessions_per_batch`` sessions and
``max_positions_per_pass`` positions per pass. How long a pass waits to gather is the
``gather`` mode:

- ``"sync"`` (the default) keeps closed-loop sessions together. The batcher knows, per
  session, when its last result went out and an EWMA of its *think time* (its next round's
  enqueue minus its last result: link, drafting, client). Before a pass it waits for the
  *expected* sessions: active (a think time measured, not closed), not queued, due back
  (last result + think) before the cap, and not gone quiet (a session is dropped from the
  expected set once ``think + max(think, 4·spread, cap/4, 3 ms)`` has passed since its
  last result; ``spread`` is an EWMA of how far its think samples fall from its think
  EWMA, so a client whose think time jitters, e.g. clients sharing cores with the
  verifier, is still waited for, and ``cap/4`` covers a stall that delays every client
  at once: waiting a quarter pass saves the session a pass of its own). It
  stops when every expected session has queued, the pass is full
  (``max_sessions_per_batch``), or the cap passes. The cap is ``max_gather_wait_ms``
  after the batcher became ready, or, when that is 0, the mean recent pass time (EWMA):
  waiting less than a pass for a session saves it a pass of its own. A lone session, a
  new one, or one that went quiet never makes others wait. Without it (``"fixed"`` with
  0 ms), closed loops whose think time is shorter than a pass desynchronise: each client
  arrives just after the previous pass started, and passes hold one or two sessions.
- ``"fixed"``: after the first request arrives the batcher waits up to
  ``max_gather_wait_ms`` for more (0 = continuous batching: whatever queued while the
  previous pass ran goes into the next one).

``/metrics`` counts each pass's gather decision in
``configspec_batch_gather_decisions_total{stop=...}``: ``none`` (nobody expected: no
wait), ``arrived`` (every expected session queued), ``full``, ``cap``, ``quiet`` (the
remaining expected sessions went quiet), ``fixed`` (the fixed mode). Setting
``service.pass_trace = []`` records one dict per pass (a debug trace: its sessions and
their enqueue times, the stop reason, the expected set with think times and spreads, the
cap, start and end times; perf_counter seconds), plus its ``shape`` (sequence ids, each
block's positions before padding, each context's length, whether it is a round, runs of
consecutive ids, the live sequences) and ``pass_s`` (the pass as timed for
``configspec_batch_pass_seconds``).

A prompt is prefilled in chunks of at most ``prefill_chunk_tokens`` positions, one
chunk per pass, so other sessions' rounds interleave with a long prefill instead of
waiting for it. A chunk never shares a pass with rounds, however short the prompt: every
block of a pass is padded to the widest, so a 16-token prompt in a pass of eight
5-position rounds would make it a pass of eight 16-position blocks. Work is validated
before it is queued; a dropped session's sequence is freed between passes; a failed pass
fails only the work in it and clears those
sequences (the next round re-prefills them).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from prometheus_client import Counter, Histogram

from configspec.backends.base import Evaluation
from configspec.backends.llamacpp_batch import SeqRequest
from configspec.serving.protocol import VerifyRequest
from configspec.serving.sessions import (
    SESSION_COUNT_BUCKETS,
    ApiError,
    ServerLimits,
    VerifierService,
    _Session,
)
from configspec.serving.verify import Outcome

_WAIT_BUCKETS_S = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)

GATHER_MODES = ("sync", "fixed")
"""The batcher's gather modes (see the module docstring)."""

GATHER_STOPS = ("none", "arrived", "full", "cap", "quiet", "fixed")
"""Why a pass stopped gathering (the ``stop`` label of the decisions counter)."""

_THINK_EWMA_WEIGHT = 0.3  # weight of the newest think-time sample
_PASS_EWMA_WEIGHT = 0.2  # weight of the newest pass time (the automatic cap)
_QUIET_SLACK_S = 0.003  # an expected session is waited for at least this past its think
_SPREAD_FACTOR = 4.0  # ... and this many think-time spreads (EWMA of |sample - think|)
_CAP_SLACK_FRACTION = 0.25  # ... and this fraction of the cap
_MAX_THINK_SAMPLE_S = 10.0  # a longer pause is an idle client, not a think time


@dataclass(frozen=True)
class BatchPolicy:
    """How the batcher groups work; see the module docstring."""

    max_sessions_per_batch: int = 8
    max_gather_wait_ms: float = 0.0
    max_positions_per_pass: int = 256
    prefill_chunk_tokens: int = 64
    #: ``"sync"``: wait for the sessions expected back (``max_gather_wait_ms`` is the cap,
    #: 0 = the mean recent pass time); ``"fixed"``: wait ``max_gather_wait_ms`` after the
    #: first request (0 = continuous batching)
    gather: str = "sync"

    def __post_init__(self) -> None:
        if self.gather not in GATHER_MODES:
            raise ValueError(f"gather={self.gather!r} is not one of {', '.join(GATHER_MODES)}")
        if self.max_sessions_per_batch < 1:
            raise ValueError(
                f"max_sessions_per_batch={self.max_sessions_per_batch} must be at least 1"
            )
        if not 0 <= self.max_gather_wait_ms <= 1000:
            raise ValueError(f"max_gather_wait_ms={self.max_gather_wait_ms} is out of range")
        if self.max_positions_per_pass < 2:
            raise ValueError(
                f"max_positions_per_pass={self.max_positions_per_pass} must be at least 2"
            )
        if not 2 <= self.prefill_chunk_tokens <= self.max_positions_per_pass:
            raise ValueError(
                f"prefill_chunk_tokens={self.prefill_chunk_tokens} is out of range "
                f"(2..max_positions_per_pass={self.max_positions_per_pass})"
            )


def seq_run_lengths(seqs: Sequence[int]) -> list[int]:
    """Lengths of the runs of consecutive ids in ``seqs`` (sorted or not), lowest ids
    first: llama.cpp splits a pass over separate KV streams into one micro-batch per run,
    each reading every weight again."""
    ids = sorted(set(seqs))
    runs: list[int] = []
    for i, s in enumerate(ids):
        if i and s == ids[i - 1] + 1:
            runs[-1] += 1
        else:
            runs.append(1)
    return runs


def seq_runs(seqs: Sequence[int]) -> int:
    """How many runs of consecutive ids ``seqs`` holds (:func:`seq_run_lengths`)."""
    return len(seq_run_lengths(seqs))


@runtime_checkable
class BatchTarget(Protocol):
    """A target holding one KV sequence per session and evaluating many in one pass."""

    n_batch: int
    n_seqs: int

    def new_sequence(self) -> int: ...

    def free_sequence(self, seq: int) -> None: ...

    def rollback(self, seq: int, n_tokens: int) -> None: ...

    def plan_positions(self, seq: int, context: Sequence[int], tokens: Sequence[int]) -> int: ...

    def evaluate_many(self, requests: Sequence[SeqRequest]) -> list[Evaluation]: ...


@dataclass
class _Work:
    seq: int
    context: list[int]
    tokens: list[int]
    probs: bool
    #: runs in the worker thread after the pass: decides and rolls back; its result is
    #: the work's result
    after: Callable[[Evaluation], Any]
    future: asyncio.Future[Any]
    enqueued_s: float = field(default_factory=time.perf_counter)
    #: a round (drafts to verify); False for a prefill chunk
    round_: bool = False
    #: the temperature ``probs`` are computed at (a sampled round's own)
    temperature: float = 1.0


class _BatchMetrics:
    def __init__(self, service: VerifierService) -> None:
        r = service.metrics.registry
        self.batch_sessions = Histogram(
            "configspec_batch_sessions",
            "Sessions in one target pass",
            buckets=SESSION_COUNT_BUCKETS,
            registry=r,
        )
        self.batch_positions = Histogram(
            "configspec_batch_positions",
            "Positions decoded in one target pass",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
            registry=r,
        )
        self.gather_wait = Histogram(
            "configspec_batch_gather_wait_seconds",
            "Time the batcher waited to gather a batch after the first request",
            buckets=_WAIT_BUCKETS_S,
            registry=r,
        )
        self.queue_time = Histogram(
            "configspec_session_queue_seconds",
            "Time one session's work waited in the queue before its pass started",
            buckets=_WAIT_BUCKETS_S,
            registry=r,
        )
        self.gather_decisions = Counter(
            "configspec_batch_gather_decisions",
            "Passes by why the batcher stopped gathering (none: nobody expected, no wait)",
            ["stop"],
            registry=r,
        )
        for stop in GATHER_STOPS:
            self.gather_decisions.labels(stop=stop)
        self.expected_sessions = Histogram(
            "configspec_batch_expected_sessions",
            "Sessions the sync gather waited for before a pass (0: no wait)",
            buckets=SESSION_COUNT_BUCKETS,
            registry=r,
        )
        self.pass_latency = Histogram(
            "configspec_batch_pass_seconds",
            "Target compute time of one batched pass",
            buckets=(*_WAIT_BUCKETS_S[3:], 2.5, 10.0),
            registry=r,
        )


class BatchedVerifierService(VerifierService):
    """A verifier whose sessions share target passes (see the module docstring)."""

    def __init__(
        self,
        target: BatchTarget,
        limits: ServerLimits | None = None,
        policy: BatchPolicy | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        limits = limits or ServerLimits(max_sessions=target.n_seqs)
        super().__init__([target], limits, clock=clock)  # type: ignore[list-item]
        self.batch_target = target
        self.policy = policy or BatchPolicy()
        lim = self.limits
        if lim.max_sessions > target.n_seqs:
            raise ValueError(
                f"max_sessions={lim.max_sessions} exceeds the target's {target.n_seqs} KV sequences"
            )
        if lim.max_k + 2 > self.policy.max_positions_per_pass:
            raise ValueError(
                f"max_positions_per_pass={self.policy.max_positions_per_pass} cannot hold "
                f"a round of K={lim.max_k} (needs {lim.max_k + 2})"
            )
        if lim.max_context_tokens > getattr(target, "n_ctx", lim.max_context_tokens):
            raise ValueError(
                f"max_context_tokens={lim.max_context_tokens} exceeds the target's "
                f"n_ctx={getattr(target, 'n_ctx', None)}"
            )
        if self.policy.max_positions_per_pass > target.n_batch:
            raise ValueError(
                f"max_positions_per_pass={self.policy.max_positions_per_pass} exceeds the "
                f"target's n_batch={target.n_batch}"
            )
        self.batch_metrics = _BatchMetrics(self)
        self._queue: list[_Work] = []
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._pending_free: list[int] = []
        self._free_waiters: list[asyncio.Future[None]] = []
        self._unfreed = 0  # sequences released by closed sessions, not yet freed
        self._seqs: dict[str, int] = {}
        self._passes = 0
        # the sync gather's state, per KV sequence: when its last result went out
        # (perf_counter s) and its think-time EWMA (s); the pass-time EWMA (s)
        self._last_out_s: dict[int, float] = {}
        self._think_s: dict[int, float] = {}
        self._spread_s: dict[int, float] = {}  # EWMA of |think sample - think EWMA| (s)
        self._pass_ewma_s = 0.0
        #: when a list, one record per pass is appended (a debug trace: times in s,
        #: perf_counter clock); None (the default) records nothing
        self.pass_trace: list[dict[str, Any]] | None = None
        self._gather_info: dict[str, Any] = {}

    # hooks of VerifierService --------------------------------------------------
    async def _prefill(self, s: _Session) -> Evaluation:
        while self._unfreed and len(self._seqs) + self._unfreed >= self.batch_target.n_seqs:
            # a closed session's sequence is freed by the batcher between passes: wait
            self._ensure_batcher()
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._free_waiters.append(fut)
            assert self._wake is not None
            self._wake.set()
            await fut
        seq = self.batch_target.new_sequence()
        self._seqs[s.session_id] = seq
        prompt = list(s.tokens)
        chunk = self.policy.prefill_chunk_tokens
        elapsed_s = 0.0
        done = 1  # chunks end one token short: the last one decodes the final token too
        ev: Evaluation | None = None
        while ev is None:
            end = min(done + chunk - 1, len(prompt))
            last = end == len(prompt)
            part = await self._submit(seq, prompt[:end], [], probs=False, after=lambda e: e)
            elapsed_s += part.elapsed_s
            if last:
                ev = part
            done = end
        return Evaluation(argmax=ev.argmax, elapsed_s=elapsed_s, extra=ev.extra)

    async def _compute_round(
        self, s: _Session, req: VerifyRequest
    ) -> tuple[Outcome, Evaluation, bool]:
        seq = self._seqs[s.session_id]
        target = self.batch_target
        context = list(s.tokens)

        def after(ev: Evaluation) -> tuple[Outcome, Evaluation, bool]:
            outcome, approximate = self._decide(s, req, ev)
            target.rollback(seq, len(context) + outcome.accepted)
            return outcome, ev, approximate

        result: tuple[Outcome, Evaluation, bool] = await self._submit(
            seq, context, list(req.draft_tokens), probs=s.temperature > 0, after=after,
            round_=True, temperature=s.temperature if s.temperature > 0 else 1.0,
        )  # fmt: skip
        return result

    def _release(self, s: _Session) -> None:
        seq = self._seqs.pop(s.session_id, None)
        if seq is not None:
            self._last_out_s.pop(seq, None)
            self._think_s.pop(seq, None)
            self._spread_s.pop(seq, None)
            self._pending_free.append(seq)
            self._unfreed += 1
            if self._wake is not None:
                self._wake.set()

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    # the batcher -------------------------------------------------------------------
    async def _submit(
        self,
        seq: int,
        context: list[int],
        tokens: list[int],
        *,
        probs: bool,
        after: Callable[[Evaluation], Any],
        round_: bool = False,
        temperature: float = 1.0,
    ) -> Any:
        self._ensure_batcher()
        assert self._wake is not None
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        work = _Work(
            seq, context, tokens, probs, after, fut, round_=round_, temperature=temperature
        )
        last = self._last_out_s.get(seq)
        if round_ and last is not None:  # a round's think time (prefill chunks have none)
            sample = work.enqueued_s - last
            if sample <= _MAX_THINK_SAMPLE_S:
                old = self._think_s.get(seq)
                w = _THINK_EWMA_WEIGHT
                self._think_s[seq] = sample if old is None else (1 - w) * old + w * sample
                if old is not None:
                    dev = abs(sample - old)
                    spread = self._spread_s.get(seq)
                    self._spread_s[seq] = dev if spread is None else (1 - w) * spread + w * dev
        self._last_out_s.pop(seq, None)  # in flight: not expected until its result is out
        self._queue.append(work)
        self._wake.set()
        return await fut

    def _ensure_batcher(self) -> None:
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._task = asyncio.create_task(self._loop())

    def _drop_closed(self, seqs: list[int]) -> None:
        """Fail the queued work of sessions closed (or expired) while it waited."""
        for w in [w for w in self._queue if w.seq in seqs]:
            self._queue.remove(w)
            if not w.future.done():
                w.future.set_exception(
                    ApiError(404, "unknown_session", "the session was closed during its round")
                )

    async def _free_now(self, seqs: list[int]) -> None:
        """Free ``seqs`` between passes (worker thread) and wake sessions waiting to open."""
        if seqs:
            await asyncio.to_thread(self._free, seqs)
            self._unfreed -= len(seqs)
        self._wake_free_waiters()

    def _wake_free_waiters(self) -> None:
        waiters, self._free_waiters = self._free_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def _expected(self, queued: set[int], ready_s: float, cap_s: float) -> dict[int, float]:
        """The sessions a sync gather waits for: {sequence: time (perf_counter s) after
        which it counts as gone quiet}; see the module docstring."""
        now = time.perf_counter()
        out: dict[int, float] = {}
        for seq, last in self._last_out_s.items():
            think = self._think_s.get(seq)
            if think is None or seq in queued or last + think > ready_s + cap_s:
                continue
            slack = max(
                think,
                _SPREAD_FACTOR * self._spread_s.get(seq, 0.0),
                _CAP_SLACK_FRACTION * cap_s,
                _QUIET_SLACK_S,
            )
            quiet = last + think + slack
            if quiet > now:
                out[seq] = quiet
        return out

    async def _gather_sync(self, pol: BatchPolicy) -> str:
        """Wait for the expected sessions (sync mode); returns why it stopped."""
        assert self._wake is not None
        ready_s = time.perf_counter()
        cap_s = pol.max_gather_wait_ms / 1e3 if pol.max_gather_wait_ms > 0 else self._pass_ewma_s
        deadline = ready_s + cap_s
        queued = {w.seq for w in self._queue}
        first = self._expected(queued, ready_s, cap_s)
        if first and len(queued) < pol.max_sessions_per_batch and not self._queue[0].round_:
            first = {}  # a prefill chunk leads the pass: rounds could not join it
        self.batch_metrics.expected_sessions.observe(len(first))
        if self.pass_trace is not None:
            self._gather_info = {
                "ready_s": ready_s,
                "cap_s": cap_s,
                "queued_at_ready": sorted(queued),
                "expected": {
                    q: (self._last_out_s[q], self._think_s[q], t) for q, t in first.items()
                },
                "think_s": dict(self._think_s),
                "spread_s": dict(self._spread_s),
                "last_out_s": dict(self._last_out_s),
            }
        if not first or len(queued) >= pol.max_sessions_per_batch:
            return "none"
        expected = first
        while True:
            now = time.perf_counter()
            if len(queued) >= pol.max_sessions_per_batch:
                return "full"
            if not expected:
                return "arrived" if first.keys() <= queued else "quiet"
            if now >= deadline:
                return "cap"
            self._wake.clear()
            timeout = min(deadline, min(expected.values())) - now
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(0.0, timeout))
            if self._pending_free:  # a session closed: free its sequence now, not after
                frees, self._pending_free = self._pending_free, []  # the pass (one may open)
                self._drop_closed(frees)
                await self._free_now(frees)
            queued = {w.seq for w in self._queue}
            expected = self._expected(queued, ready_s, cap_s)

    def _compose(self) -> list[_Work]:
        """The next pass: FIFO, one share per sequence, within the policy's limits.

        Every block in a pass is padded to the widest (see the target), so a pass costs
        ``width * sessions`` positions; rounds (<= K+2 positions) mix freely, a prefill
        chunk shares a pass only with prefill chunks of its own width. A short prompt's
        chunk (as wide as a round of large K) is no exception: mixed into a pass of
        rounds it would pad every round to its width (traced on 8 clients with 12..26
        token prompts: passes holding one went from ~0.5 s to ~1 s, while the chunk alone
        costs about one session's share).
        """
        pol = self.policy
        target = self.batch_target
        chosen: list[_Work] = []
        width = 0
        for w in self._queue:
            if len(chosen) >= pol.max_sessions_per_batch:
                break
            if any(c.seq == w.seq for c in chosen):
                continue
            n = max(2, target.plan_positions(w.seq, w.context, w.tokens))
            new_width = max(width, n)
            if chosen and (
                new_width * (len(chosen) + 1) > pol.max_positions_per_pass
                or w.round_ != chosen[0].round_
                or (not w.round_ and n != width)
            ):
                continue
            chosen.append(w)
            width = new_width
        for w in chosen:
            self._queue.remove(w)
        return chosen

    async def _loop(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            pol = self.policy  # may be replaced between passes (e.g. by a profiler)
            frees, self._pending_free = self._pending_free, []
            if not self._queue:
                await self._free_now(frees)
                continue
            t_first = min(w.enqueued_s for w in self._queue)
            if pol.gather == "sync":
                if frees:  # free before waiting: a session may be opening meanwhile
                    self._drop_closed(frees)
                    await self._free_now(frees)
                    frees = []
                stop = await self._gather_sync(pol)
            else:
                stop = "fixed"
                if pol.max_gather_wait_ms > 0:
                    deadline = t_first + pol.max_gather_wait_ms / 1e3
                    while (
                        len({w.seq for w in self._queue}) < pol.max_sessions_per_batch
                        and time.perf_counter() < deadline
                    ):
                        await asyncio.sleep(min(0.0005, max(0.0, deadline - time.perf_counter())))
            self._drop_closed(frees)
            batch = self._compose()
            if not batch:
                await self._free_now(frees)
                continue
            started = time.perf_counter()
            bm = self.batch_metrics
            bm.gather_wait.observe(max(0.0, started - t_first))
            bm.gather_decisions.labels(stop=stop).inc()
            if self.pass_trace is not None:
                self.pass_trace.append(
                    {
                        "started_s": started,
                        "stop": stop,
                        "batch": [(w.seq, w.enqueued_s) for w in batch],
                        "shape": self._shape(batch),
                        "left_queued": [w.seq for w in self._queue],
                        **self._gather_info,
                    }
                )
                self._gather_info = {}
            for w in batch:
                bm.queue_time.observe(started - w.enqueued_s)
            results, pass_s = await asyncio.to_thread(self._run_pass, batch, frees)
            self._unfreed -= len(frees)
            self._wake_free_waiters()
            out_s = time.perf_counter()
            if self.pass_trace is not None and self.pass_trace:
                self.pass_trace[-1]["out_s"] = out_s
                self.pass_trace[-1]["pass_s"] = pass_s
            live = set(self._seqs.values())  # a session closed during the pass is not expected
            for w, (ok, value) in zip(batch, results, strict=True):
                if w.seq in live:
                    self._last_out_s[w.seq] = out_s
                if w.future.done():
                    continue
                if ok:
                    w.future.set_result(value)
                else:
                    w.future.set_exception(value)
            if self._queue or self._pending_free or self._free_waiters:
                self._wake.set()

    def _shape(self, batch: list[_Work]) -> dict[str, Any]:
        """A pass's shape for the trace: its sequences (in order), each block's positions
        (before padding to the widest), each context's length (tokens) and the runs of
        consecutive sequence ids (llama.cpp decodes each run as its own micro-batch)."""
        seqs = sorted(w.seq for w in batch)
        target = self.batch_target
        return {
            "seqs": seqs,
            "positions": [target.plan_positions(w.seq, w.context, w.tokens) for w in batch],
            "context_tokens": [len(w.context) for w in batch],
            "rounds": [w.round_ for w in batch],
            "runs": seq_runs(seqs),
            "live_seqs": sorted(self._seqs.values()),
        }

    def _free(self, seqs: list[int]) -> None:
        for seq in seqs:
            self.batch_target.free_sequence(seq)

    def _run_pass(
        self, batch: list[_Work], frees: list[int]
    ) -> tuple[list[tuple[bool, Any]], float]:
        """One forward pass (worker thread): evaluate, then each work's ``after``. Returns
        each work's (ok, result or exception) and the pass's time (s; NaN for a pass whose
        evaluation failed)."""
        self._free(frees)
        reqs = [SeqRequest(w.seq, w.context, w.tokens, w.probs, w.temperature) for w in batch]
        t0 = time.perf_counter()
        try:
            evs = self.batch_target.evaluate_many(reqs)
        except Exception as exc:  # every work of this pass fails the same way
            return [(False, exc)] * len(batch), float("nan")
        bm = self.batch_metrics
        bm.pass_latency.observe(time.perf_counter() - t0)
        bm.batch_sessions.observe(len(batch))
        bm.batch_positions.observe(sum(e.extra.get("evaluated_tokens", 0.0) for e in evs))
        out: list[tuple[bool, Any]] = []
        for w, ev in zip(batch, evs, strict=True):
            try:
                out.append((True, w.after(ev)))
            except Exception as exc:
                out.append((False, exc))
        # the pass as the station's service time: forward pass + decisions + rollbacks
        self._passes += 1
        pass_s = time.perf_counter() - t0
        a = _PASS_EWMA_WEIGHT
        self._pass_ewma_s = (
            pass_s if self._passes == 1 else (1 - a) * self._pass_ewma_s + a * pass_s
        )
        tag = {"pass_id": float(self._passes), "pass_sessions": float(len(batch)),
               "pass_ms": pass_s * 1e3}  # fmt: skip
        for ev in evs:
            ev.extra.update(tag)
        return out, pass_s
