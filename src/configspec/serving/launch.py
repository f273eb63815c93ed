"""Open a verifier service from a target spec: batched, or a pool of single-session targets.

``configspec serve verifier`` parses its options into a :class:`VerifierSetup` and calls
:func:`open_verifier_service`; what to load and which service to build is decided here:
a batched service over one engine for a local GGUF target, concurrent requests to a
server URL, or a pool of targets verifying one session at a time each.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from configspec.backends.specs import SpecKind, parse_spec
from configspec.errors import InvalidInput
from configspec.serving.batched import BatchPolicy
from configspec.serving.sessions import ServerLimits, VerifierService


@dataclass(frozen=True)
class VerifierSetup:
    """What a verifier loads and how it serves.

    ``target`` is a registered model, GGUF path or server URL (``tokenizer``: the
    vocabulary of a URL target); ``n_threads`` per target instance, whose context window
    is ``limits.max_context_tokens`` (tokens); ``slots`` target instances when sessions
    are not batched; ``batch`` verifies sessions together: in shared passes (``policy``)
    for a local GGUF target, as concurrent requests for a server URL.
    """

    target: str
    limits: ServerLimits
    policy: BatchPolicy
    tokenizer: str | None = None
    cache_dir: Path | None = None
    n_threads: int = 2
    slots: int = 1
    batch: bool = True

    @property
    def batched(self) -> bool:
        """Whether sessions share target passes (``batch`` and a local GGUF target)."""
        return self.batch and parse_spec(self.target).kind is SpecKind.MODEL

    @property
    def concurrent(self) -> bool:
        """Whether sessions go to the target's server concurrently, for its engine to
        batch (``batch`` and a server URL)."""
        return self.batch and parse_spec(self.target).kind is SpecKind.URL


def open_verifier_service(setup: VerifierSetup) -> VerifierService:
    """Load the target (one batch engine, or ``setup.slots`` instances) and return the
    service. Raises :class:`InvalidInput` for settings the backend rejects."""
    from configspec.backends.factory import (
        LlamaSettings,
        open_batch_target,
        open_remote_target,
        open_target,
    )
    from configspec.serving.batched import BatchedVerifierService
    from configspec.serving.concurrent import ConcurrentVerifierService

    settings = LlamaSettings(n_threads=setup.n_threads, n_ctx=setup.limits.max_context_tokens)
    try:
        if setup.batched:
            engine = open_batch_target(
                setup.target,
                n_seqs=setup.limits.max_sessions,
                max_positions_per_pass=setup.policy.max_positions_per_pass,
                cache_dir=setup.cache_dir,
                settings=settings,
            )
            return BatchedVerifierService(engine, setup.limits, setup.policy)
        if setup.concurrent:
            remote = open_remote_target(
                setup.target, tokenizer=setup.tokenizer, cache_dir=setup.cache_dir
            )
            return ConcurrentVerifierService(remote, setup.limits)
        targets = [
            open_target(
                setup.target,
                tokenizer=setup.tokenizer,
                cache_dir=setup.cache_dir,
                settings=settings,
            )
            for _ in range(setup.slots)
        ]
        return VerifierService(targets, setup.limits)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
