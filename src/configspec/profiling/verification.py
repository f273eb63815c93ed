"""Verification profiling: how long the target takes to check K drafted tokens.

For each context length C and positions P = 1..K_max+1 (K drafted tokens plus the bonus
position) the sweep times one verification call: the target holds C context tokens in its
cache (as it does between rounds) and evaluates the last context token plus P-1 new
tokens, returning distributions at all P positions. Against a remote OpenAI-compatible
server the time is the full HTTP round trip (what the edge waits for). With ``batch_sizes``
above 1 against such a server, B requests are sent at the same instant over B connections
(:func:`~configspec.profiling.concurrency.time_concurrent`), as a batching server (vLLM)
sees B edge clients, and the wall time of the whole batch is stored as the latency of a
B-batch pass (the ``batch`` dimension the model interpolates); the mean latency each
request saw is kept in the checkpoint and report.

**The server path** (a local GGUF target with a batch size above 1, or ``verifier_url``):
the sweep runs through ConfigSpec's own batched verifier — one started in this process on
the local target (real HTTP server, real batcher, one KV sequence per session), or one
already running at ``verifier_url`` — with B sessions each verifying P positions in one
pass, and stores the verifier's own time of that pass (see
:mod:`configspec.profiling.server_path` for why server-side). Every batch size, 1
included, is measured on that path, so the ``batch`` dimension is one consistent curve.

The price model (per GPU hour or per million tokens) is stored with the latencies, so the
cost model can turn them into USD. Repeats, CI targets, checkpoints and resume work as in
:mod:`configspec.profiling.device`.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from configspec.backends.base import Evaluation, ModelIdentity, Target, evaluate_at
from configspec.config import (
    Estimate,
    GpuTimePrice,
    PerTokenPrice,
    Provenance,
    VerificationProfile,
    VerifyLatencyPoint,
)
from configspec.errors import InvalidInput
from configspec.profiling import host
from configspec.profiling.concurrency import time_concurrent
from configspec.profiling.device import build_context, check_temperatures
from configspec.profiling.stats import Sampled, repeat_until
from configspec.profiling.sweep import Checkpoint, SweepReport, check_sweep
from configspec.progress import NO_PROGRESS, ProgressEvent, ProgressFn
from configspec.serving.protocol import SparseDistribution
from configspec.serving.verify import sampled_decision, target_probs_at
from configspec.stats import student_t_mean
from configspec.store import ProfileStore

log = logging.getLogger(__name__)

REQUEST_TIMEOUT_S = 60.0
"""Per-request timeout against a server at concurrency 1 (scaled by the largest B)."""


@dataclass(frozen=True)
class VerifySweepSettings:
    """What the verification sweep measures (positions 1..``k_max``+1 per context).

    ``temperatures``: 0 times greedy verification; above 0 the time also covers the
    verifier's speculative-sampling decision (``serving.verify.sampled_decision``), with
    draft distributions of ``draft_top_k`` ids as the edge client sends them.
    """

    k_max: int = 16
    context_tokens: tuple[int, ...] = (128, 512)
    batch_sizes: tuple[int, ...] = (1,)
    warmup: int = 1
    min_repeats: int = 5
    max_repeats: int = 50
    rel_half_width: float = 0.05
    point_budget_s: float = 10.0
    threads: int | None = None
    temperatures: tuple[float, ...] = (0.0,)
    draft_top_k: int = 64

    def validate(self) -> None:
        """Raise :class:`InvalidInput` naming the first out-of-range setting."""
        check_sweep(self, min_context=2)
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise InvalidInput(f"batch sizes {list(self.batch_sizes)} must be ≥ 1 each")
        check_temperatures(self.temperatures)
        if self.draft_top_k < 1:
            raise InvalidInput(f"draft_top_k={self.draft_top_k} is out of range (≥ 1)")

    def as_dict(self) -> dict[str, Any]:
        """Settings as plain JSON data."""
        data = asdict(self)
        data["context_tokens"] = list(self.context_tokens)
        data["batch_sizes"] = list(self.batch_sizes)
        data["temperatures"] = list(self.temperatures)
        return data


SERVER_PATH_BATCHES = (1, 2, 4, 8)
"""Sessions per pass timed through a running verifier (``--verifier``) by default."""


def default_batch_sizes(target: str, verifier_url: str | None = None) -> tuple[int, ...]:
    """The batch sizes a verification sweep times when none are given: sessions per pass
    through a running verifier, concurrent requests to a server ``target``, else one."""
    from configspec.backends.specs import is_url
    from configspec.profiling.concurrency import DEFAULT_CONCURRENCY

    if verifier_url is not None:
        return SERVER_PATH_BATCHES
    return tuple(DEFAULT_CONCURRENCY) if is_url(target) else (1,)


@dataclass
class VerifyPointResult:
    """One measured point, as shown in the summary table."""

    positions: int
    context_tokens: int
    batch: int
    latency_ms: Estimate
    rel_half_width: float
    converged: bool
    temperature: float = 0.0
    mean_request_ms: float | None = None
    """Mean latency each of the ``batch`` concurrent requests saw (ms)."""


class VerifySweepReport(SweepReport[VerifyPointResult]):
    """Everything the CLI shows after a verification sweep."""


def parse_price(
    price_usd_per_hour: float | None, price_usd_per_million_tokens: float | None
) -> GpuTimePrice | PerTokenPrice:
    """The price model from exactly one of the two CLI options."""
    if (price_usd_per_hour is None) == (price_usd_per_million_tokens is None):
        raise InvalidInput(
            "give exactly one price: --price-usd-per-hour (GPU time) or "
            "--price-usd-per-million-tokens (per token)"
        )
    if price_usd_per_hour is not None:
        if price_usd_per_hour < 0:
            raise InvalidInput(f"--price-usd-per-hour={price_usd_per_hour} must be ≥ 0")
        return GpuTimePrice(price_usd_per_hour=price_usd_per_hour)
    assert price_usd_per_million_tokens is not None
    if price_usd_per_million_tokens < 0:
        raise InvalidInput(
            f"--price-usd-per-million-tokens={price_usd_per_million_tokens} must be ≥ 0"
        )
    return PerTokenPrice(price_usd_per_million_tokens=price_usd_per_million_tokens)


@dataclass
class _SampledDecision:
    """The verifier's speculative-sampling step after an evaluation (the server's code:
    :func:`~configspec.serving.verify.sampled_decision`), with fixed draft distributions."""

    temperature: float
    vocab_size: int
    dists: list[SparseDistribution]
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))

    def __call__(self, ev: Evaluation, tokens: list[int]) -> None:
        p, _ = target_probs_at(
            ev.probs, ev.top_ids, ev.top_probs, len(tokens) + 1, self.temperature,
            self.vocab_size, ev.extra.get("probs_temperature", 1.0),
        )  # fmt: skip
        sampled_decision(tokens, self.dists or None, p, self.vocab_size, self.rng)


def draft_distributions(
    target: Target, context: list[int], tokens: list[int], temperature: float, top_k: int
) -> list[SparseDistribution]:
    """Realistic draft distributions for ``tokens``: the target's own at ``temperature``,
    cut to the top ``top_k`` as the edge client sends them (untimed)."""
    from configspec.serving.client import sparse_support

    if not tokens:
        return []
    ev = target.evaluate(context, tokens)
    vocab = target.identity.vocab_size or 1
    p, _ = target_probs_at(ev.probs, ev.top_ids, ev.top_probs, len(tokens), temperature, vocab)
    return [sparse_support(row, top_k) for row in p]


def _time_batch(targets: Sequence[Target], context: list[int], tokens: list[int],
                pool: ThreadPoolExecutor | None,
                decide: _SampledDecision | None = None,
                request_ms: list[float] | None = None) -> float:  # fmt: skip
    """Wall time (ms) of one verification by each of ``targets`` at once (see
    :func:`~configspec.profiling.concurrency.time_concurrent`); appends the mean
    per-request latency to ``request_ms``.

    Each call is the verifier's own (``serving.sessions``): greedy, the pass without
    probabilities; sampled, the pass with the softmax at the sampling temperature, then
    the decision (:func:`~configspec.backends.base.evaluate_at`)."""
    temperature = decide.temperature if decide is not None else None

    def one(t: Target) -> None:
        ev = evaluate_at(t, context, tokens, temperature)
        if decide is not None:
            decide(ev, tokens)

    timing = time_concurrent([functools.partial(one, t) for t in targets], pool)
    if request_ms is not None:
        request_ms.append(timing.mean_request_ms)
    return timing.wall_ms


def point_key(point: dict[str, Any]) -> tuple[int, int, int, float]:
    """A checkpointed point's (positions, context, batch, temperature)."""
    return (point["positions"], point["context_tokens"], point["batch"],
            point.get("temperature", 0.0))  # fmt: skip


@dataclass
class OpenSweep:
    """A verification sweep in progress: its checkpoint (``state`` holds the points so
    far), the points already done (resumed), the report, the progress label and total,
    and the settings each point is timed with."""

    checkpoint: Checkpoint
    state: dict[str, Any]
    models: dict[str, str | None]
    done: set[tuple[int, int, int, float]]
    report: VerifySweepReport
    label: str
    total: int
    settings: VerifySweepSettings

    def measure(
        self,
        measure: Callable[[], float],
        request_ms: Sequence[float],
        key: tuple[int, int, int, float],
        progress: ProgressFn,
    ) -> None:
        """Time one point with :func:`time_point`, store it in the checkpoint, report it."""
        self.store(*time_point(measure, request_ms, self.settings, key), progress)

    def store(self, point: dict[str, Any], detail: str, progress: ProgressFn) -> None:
        """Store a timed point (:func:`point_record`) in the checkpoint and report it."""
        points: list[dict[str, Any]] = self.state["points"]
        points.append(point)
        self.checkpoint.save(self.state, self.models)
        progress(ProgressEvent(self.label, len(points), self.total, detail))


def time_point(
    measure: Callable[[], float],
    request_ms: Sequence[float],
    s: VerifySweepSettings,
    key: tuple[int, int, int, float],
) -> tuple[dict[str, Any], str]:
    """Sample one sweep point, ``key`` = (positions, context tokens, batch, temperature),
    with ``measure`` (one latency in ms per call; ``request_ms`` fills with each request's
    latency as it runs) until ``s``'s CI target or budget. Returns the point as the
    checkpoint stores it and a progress line."""
    sampled = repeat_until(
        measure,
        rel_half_width=s.rel_half_width,
        min_repeats=s.min_repeats,
        max_repeats=s.max_repeats,
        budget_s=s.point_budget_s,
    )
    return point_record(sampled, request_ms, key)


def point_record(
    sampled: Sampled, request_ms: Sequence[float], key: tuple[int, int, int, float]
) -> tuple[dict[str, Any], str]:
    """One sweep point ``key`` = (positions, context tokens, batch, temperature) from its
    samples (ms) and its requests' client-side latencies (ms), as the checkpoint stores
    it, and a progress line."""
    positions, ctx_len, batch, temp = key
    est = student_t_mean(sampled.samples)
    point = {
        "positions": positions, "context_tokens": ctx_len,
        "batch": batch, "latency_ms": est.model_dump(),
        "rel_half_width": sampled.rel_half_width,
        "converged": sampled.converged, "temperature": temp,
        "mean_request_ms": sum(request_ms) / len(request_ms),
    }  # fmt: skip
    mark = "" if sampled.converged else " (budget)"
    at = f" T={temp:g}" if temp else ""
    return point, f"P={positions} ctx={ctx_len} B={batch}{at}: {est.mean:.3g} ms{mark}"


class VerificationProfiler:
    """Runs the verification sweep against one target spec (local GGUF or server URL).

    ``tokenizer`` is needed for a URL (a GGUF spec with the served model's vocabulary);
    ``hardware`` describes where the target runs (default: this CPU for a local target);
    ``target_name`` names the profile (default: the model's name or the server's model id).
    """

    def __init__(
        self,
        target: str,
        store: ProfileStore,
        *,
        price: GpuTimePrice | PerTokenPrice,
        settings: VerifySweepSettings | None = None,
        tokenizer: str | None = None,
        cache_dir: Path | None = None,
        hardware: str = "",
        target_name: str | None = None,
        restart: bool = False,
        verifier_url: str | None = None,
        api_key: str | None = None,
    ) -> None:
        from configspec.backends.specs import is_url

        self.settings = settings or VerifySweepSettings()
        self.settings.validate()
        self.remote = is_url(target)
        self.verifier_url = verifier_url
        self.server_path = verifier_url is not None or (
            not self.remote and max(self.settings.batch_sizes) > 1
        )
        if verifier_url is not None and not is_url(verifier_url):
            raise InvalidInput(f"verifier URL {verifier_url!r} must start with http(s)://")
        if self.server_path and self.remote:
            raise InvalidInput(
                f"{target} is an OpenAI-compatible server: its batch dimension is measured "
                "with concurrent requests; --verifier takes a ConfigSpec verifier instead"
            )
        self.api_key = api_key
        self.target_spec = target
        self.store = store
        self.price = price
        self.tokenizer = tokenizer
        self.cache_dir = cache_dir
        self.hardware = hardware or (
            "" if self.remote or verifier_url else (host.cpu_model() or "")
        )
        self.restart = restart
        self.target_name = target_name

    def _name(self, served: str) -> str:
        """The profile's target name: ``target_name``, else the model id (a server that
        names its model by file path, like llama_cpp.server, gets the file's stem)."""
        if self.target_name:
            return self.target_name
        return Path(served).stem if served.endswith(".gguf") else served

    def _open(self) -> Target:
        from configspec.backends.factory import LlamaSettings, open_target, profiling_n_ctx

        s = self.settings
        threads = s.threads or len(host.allowed_cpus())
        return open_target(
            self.target_spec,
            tokenizer=self.tokenizer,
            cache_dir=self.cache_dir,
            settings=LlamaSettings(
                n_threads=threads, n_ctx=profiling_n_ctx(max(s.context_tokens) + s.k_max + 16)
            ),
            # B concurrent requests may queue behind each other (a server that serves one
            # at a time answers the last after B single latencies)
            timeout_s=REQUEST_TIMEOUT_S * max(s.batch_sizes),
        )

    def _decision(
        self, target: Target, context: list[int], tokens: list[int], temperature: float
    ) -> _SampledDecision | None:
        """The sampling step to time after each evaluation (None when greedy)."""
        if temperature == 0.0:
            return None
        vocab = target.identity.vocab_size or 1
        dists = draft_distributions(target, context, tokens, temperature, self.settings.draft_top_k)
        return _SampledDecision(temperature, vocab, dists)

    def run(
        self, progress: ProgressFn = NO_PROGRESS
    ) -> tuple[VerificationProfile, Path, VerifySweepReport]:
        """Run (or resume) the sweep; save the profile; return it, its path and a report."""
        if self.server_path:
            from configspec.profiling.server_path import run_server_path

            return run_server_path(self, progress)
        started = time.perf_counter()
        s = self.settings
        targets = [self._open()]
        try:
            identity = targets[0].identity
            identity = dataclasses.replace(identity, name=self._name(identity.name))
            sweep = self.open_sweep(identity, f"verify {identity.name}", {}, progress)
            while len(targets) < max(s.batch_sizes):
                targets.append(self._open())
            for batch in s.batch_sizes:
                group = targets[:batch]
                pool = ThreadPoolExecutor(max_workers=batch) if batch > 1 else None
                try:
                    # every temperature of one (context, positions) point back to back:
                    # their difference is then the sampled work, not the host's drift
                    # between a greedy block and a sampled block of the sweep (on the
                    # shared 2-core VM a block 20 s later read up to 20% faster)
                    for ctx_len in s.context_tokens:
                        full = build_context(targets[0], ctx_len + s.k_max)
                        context = full[:ctx_len]
                        for positions, temp in itertools.product(
                            range(1, s.k_max + 2), s.temperatures
                        ):
                            if (positions, ctx_len, batch, temp) in sweep.done:
                                continue
                            tokens = full[ctx_len : ctx_len + positions - 1]
                            decide = self._decision(targets[0], context, tokens, temp)
                            for _ in range(s.warmup):
                                _time_batch(group, context, tokens, pool, decide)
                            request_ms: list[float] = []
                            measure = functools.partial(
                                _time_batch, group, context, tokens, pool, decide, request_ms
                            )
                            key = (positions, ctx_len, batch, temp)
                            sweep.measure(measure, request_ms, key, progress)
                finally:
                    if pool is not None:
                        pool.shutdown()
        finally:
            for t in targets:
                close = getattr(t, "close", None)
                if callable(close):
                    close()
        return self.save_sweep(identity, sweep, started)

    def open_sweep(
        self,
        identity: ModelIdentity,
        label: str,
        extra_settings: dict[str, Any],
        progress: ProgressFn,
    ) -> OpenSweep:
        """Open (or resume) the sweep of ``identity``: its checkpoint keyed by the settings
        (plus ``extra_settings``), the points done; announced on ``progress`` as ``label``."""
        s = self.settings
        models = {identity.name: identity.file_sha256}
        checkpoint = Checkpoint(
            self.store.checkpoint_path(f"verify-{identity.name}"),
            kind="verification",
            settings={**s.as_dict(), "target": self.target_spec, **extra_settings},
            restart=self.restart,
        )
        state = checkpoint.load(models)
        state.setdefault("started_at", time.time())
        done = {point_key(p) for p in state.setdefault("points", [])}
        total = len(s.temperatures) * len(s.context_tokens) * (s.k_max + 1) * len(s.batch_sizes)
        progress(ProgressEvent(label, len(done), total, "starting"))
        report = VerifySweepReport(resumed_points=len(done))
        return OpenSweep(checkpoint, state, models, done, report, label, total, s)

    def save_sweep(
        self, identity: ModelIdentity, sweep: OpenSweep, started: float
    ) -> tuple[VerificationProfile, Path, VerifySweepReport]:
        """After the last point: the report's points, the profile saved (the checkpoint
        removed) and the wall time since ``started`` (``time.perf_counter``)."""
        state, report, checkpoint = sweep.state, sweep.report, sweep.checkpoint
        for p in state["points"]:
            report.points.append(
                VerifyPointResult(p["positions"], p["context_tokens"], p["batch"],
                                  Estimate(**p["latency_ms"]), p["rel_half_width"],
                                  p["converged"], p.get("temperature", 0.0),
                                  p.get("mean_request_ms"))
            )  # fmt: skip
        profile = self._profile(identity, state, report)
        path = self.store.save(profile)
        checkpoint.remove()
        report.wall_time_s = time.perf_counter() - started
        return profile, path, report

    def _profile(
        self, identity: ModelIdentity, state: dict[str, Any], report: VerifySweepReport
    ) -> VerificationProfile:
        import llama_cpp

        s = self.settings
        n_ok = report.converged_points
        worst = report.worst_rel_half_width
        points = sorted(
            state["points"],
            key=lambda p: (p.get("temperature", 0.0), p["batch"], p["context_tokens"],
                           p["positions"]),
        )  # fmt: skip
        return VerificationProfile(
            target=identity.name,
            target_family=identity.family,
            endpoint=self.verifier_url or (self.target_spec if self.remote else "local"),
            hardware=self.hardware,
            latency=[
                VerifyLatencyPoint(
                    positions=p["positions"],
                    context_tokens=p["context_tokens"],
                    batch=p["batch"],
                    latency_ms=Estimate(**p["latency_ms"]),
                    temperature=p.get("temperature", 0.0),
                )
                for p in points
            ],
            price=self.price,
            provenance=Provenance.here(
                "measured",
                backend="openai-compatible HTTP"
                if self.remote
                else "llama.cpp (llama-cpp-python)"
                + (", ConfigSpec batched verifier (server path)" if self.server_path else ""),
                backend_version=None if self.remote else str(llama_cpp.__version__),
                model_sha256={identity.name: identity.file_sha256} if identity.file_sha256 else {},
                settings={
                    **s.as_dict(),
                    "target": self.target_spec,
                    "path": "server" if self.server_path else "direct",
                    "verifier_url": self.verifier_url,
                    "threads": None if self.remote else (s.threads or len(host.allowed_cpus())),
                    "started_at_unix_s": state["started_at"],
                },
                notes=(
                    f"{n_ok} of {len(report.points)} points reached the ±{s.rel_half_width:.0%} "
                    f"95% CI target (worst ±{worst:.1%}). "
                    + (
                        "Latency = the batched verifier's own time of one pass of B sessions "
                        "x P positions (forward pass + decisions + rollbacks, its pass_ms), "
                        "after a cached context; HTTP, queueing and RTT excluded."
                        if self.server_path
                        else "Latency = wall time of one verification call after a cached "
                        "context" + (", including the HTTP round trip." if self.remote else ".")
                    )
                ),
            ),
        )
