"""A verifier in front of a batching engine: sessions' requests go out concurrently.

For an OpenAI-compatible target (vLLM, ``python -m llama_cpp.server``) the engine does
the batching: it must *see* concurrent sessions' verifications at the same time.
:class:`ConcurrentVerifierService` therefore holds no target lock and no compute
semaphore: each session's round awaits :meth:`AsyncTarget.aevaluate` on one shared
asynchronous HTTP client, so N sessions' requests are in flight together and the engine
can verify them in one pass (the one-at-a-time :class:`~configspec.serving.sessions.
VerifierService` would send them one after another). A session's own rounds stay in
order (its session lock); the engine keeps each prompt's prefix cache, so nothing is
rolled back here.

``/metrics`` adds ``configspec_upstream_concurrency`` (requests in flight to the engine,
this one included, when each is sent: the batch the engine can form) and
``configspec_upstream_inflight`` (in flight now).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from prometheus_client import Gauge, Histogram

from configspec.backends.base import Evaluation, Target
from configspec.serving.protocol import VerifyRequest
from configspec.serving.sessions import (
    SESSION_COUNT_BUCKETS,
    ServerLimits,
    VerifierService,
    _Session,
)
from configspec.serving.verify import Outcome


@runtime_checkable
class AsyncTarget(Target, Protocol):
    """A target that can evaluate without blocking, many calls at once (one event loop)."""

    async def aevaluate(self, context: Sequence[int], tokens: Sequence[int]) -> Evaluation: ...

    async def aclose(self) -> None: ...


class ConcurrentVerifierService(VerifierService):
    """Sessions verified through one :class:`AsyncTarget`, concurrently (see the module
    docstring). ``clock`` as for :class:`VerifierService`."""

    def __init__(
        self,
        target: AsyncTarget,
        limits: ServerLimits | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__([target], limits, clock=clock)
        self.async_target = target
        self._in_flight = 0
        r = self.metrics.registry
        self.upstream_concurrency = Histogram(
            "configspec_upstream_concurrency",
            "Requests in flight to the engine (this one included) when one is sent",
            buckets=SESSION_COUNT_BUCKETS,
            registry=r,
        )
        self.upstream_inflight = Gauge(
            "configspec_upstream_inflight", "Requests in flight to the engine now", registry=r
        )

    async def _evaluate(self, context: Sequence[int], tokens: Sequence[int]) -> Evaluation:
        self._in_flight += 1
        self.upstream_concurrency.observe(self._in_flight)
        self.upstream_inflight.set(self._in_flight)
        try:
            return await self.async_target.aevaluate(context, tokens)
        finally:
            self._in_flight -= 1
            self.upstream_inflight.set(self._in_flight)

    async def _prefill(self, s: _Session) -> Evaluation:
        return await self._evaluate(s.tokens, [])

    async def _compute_round(
        self, s: _Session, req: VerifyRequest
    ) -> tuple[Outcome, Evaluation, bool]:
        ev = await self._evaluate(s.tokens, list(req.draft_tokens))
        if s.temperature == 0:  # an argmax comparison: cheaper than a thread hand-off
            outcome, approximate = self._decide(s, req, ev)
        else:  # vocabulary-sized arrays: keep the event loop free
            outcome, approximate = await self._call(self._decide, s, req, ev)
        return outcome, ev, approximate

    async def aclose(self) -> None:
        await self.async_target.aclose()
