"""Device profiling: how fast each drafter drafts on this device, its memory and power.

For every drafter and every context length C and K = 1..K_max the sweep measures the
per-token drafting latency: the drafter holds C context tokens in its cache (as it does
after a verification round), then proposes K tokens; latency / K is one sample. Each point
is warmed up, then repeated until the 95% CI half-width is within the target (default 5%)
of the mean or the point's time budget runs out; both outcomes are recorded. Prefill
throughput (tokens/s from an empty cache), peak resident memory while the drafter is loaded
and drafting, and average power while drafting (with the idle power measured before any
drafting) complete the profile.

``threads`` and ``cpus`` (CPU affinity via ``os.sched_setaffinity``) let one machine stand
in for a smaller device class; such profiles are marked ``emulated``. Progress is
checkpointed after every point (:mod:`configspec.profiling.sweep`).
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from configspec.backends.base import Drafter, ModelIdentity, Tokenizing
from configspec.backends.specs import NGRAM, is_ngram
from configspec.config import (
    DeviceInfo,
    DeviceProfile,
    DrafterOnDevice,
    DraftLatencyPoint,
    Estimate,
    Provenance,
    Source,
)
from configspec.errors import InvalidInput, ProfileError
from configspec.power.base import Measurement, PowerMeter
from configspec.profiling import host
from configspec.profiling.stats import repeat_until
from configspec.profiling.sweep import Checkpoint, SweepReport, check_sweep
from configspec.progress import NO_PROGRESS, ProgressEvent, ProgressFn
from configspec.stats import student_t_half_width, student_t_mean
from configspec.store import ProfileStore

log = logging.getLogger(__name__)

#: Shortest timed sample, ms: faster calls are repeated inside one sample.
MIN_SAMPLE_MS = 10.0
#: Plain prose the drafting contexts are cut from (repeated to length; written for this
#: project, no licence attached). Repetition also gives the n-gram drafter matches, as a
#: real conversation does.
CONTEXT_TEXT = (
    "Speculative decoding lets a small model guess the next few words and a large model "
    "check them all at once. When the guesses are good, several tokens are produced for the "
    "price of one pass of the large model; when they are bad, little is lost. The edge "
    "device drafts, the cloud verifies, and the network sits in between. A good "
    "configuration balances how long drafting takes, how often the guesses are accepted, "
    "what the cloud charges and how much energy the device spends. "
)


@dataclass(frozen=True)
class DeviceSweepSettings:
    """What the device sweep measures and how hard it tries.

    ``rel_half_width`` is the target 95% CI half-width relative to the mean;
    ``point_budget_s`` the most time spent repeating one point; ``threads`` the llama.cpp
    thread count (default: every allowed CPU); ``cpus`` an optional CPU affinity set;
    ``idle_s`` how long idle power is measured before drafting (0 skips it); ``warmup`` the
    untimed calls that prime each context before its first point. ``temperatures`` are
    the drafting temperatures timed (0 = greedy; above 0 the time includes the softmax,
    the draw and building the top-``draft_top_k`` draft distribution the client sends).
    """

    k_max: int = 16
    context_tokens: tuple[int, ...] = (128, 512)
    warmup: int = 2
    min_repeats: int = 5
    max_repeats: int = 100
    rel_half_width: float = 0.05
    point_budget_s: float = 10.0
    prefill_repeats: int = 3
    threads: int | None = None
    cpus: tuple[int, ...] | None = None
    idle_s: float = 3.0
    temperatures: tuple[float, ...] = (0.0,)
    draft_top_k: int = 64

    def validate(self) -> None:
        """Raise :class:`InvalidInput` naming the first out-of-range setting."""
        check_sweep(self, min_context=1)
        if self.idle_s < 0 or self.prefill_repeats < 1:
            raise InvalidInput(
                f"idle_s={self.idle_s} must be ≥ 0 and prefill_repeats={self.prefill_repeats} ≥ 1"
            )
        check_temperatures(self.temperatures)
        if self.draft_top_k < 1:
            raise InvalidInput(f"draft_top_k={self.draft_top_k} is out of range (≥ 1)")

    def resolved_threads(self) -> int:
        """llama.cpp threads: ``threads``, else one per CPU in ``cpus`` or allowed CPUs."""
        if self.threads is not None:
            return self.threads
        return len(self.cpus) if self.cpus else len(host.allowed_cpus())

    def emulated(self) -> bool:
        """True when fewer threads or CPUs are used than the machine allows."""
        allowed = host.allowed_cpus()
        restricted = self.cpus is not None and set(self.cpus) != set(allowed)
        return restricted or self.resolved_threads() < len(allowed)

    def as_dict(self) -> dict[str, Any]:
        """Settings as plain JSON data (recorded in provenance and checkpoints)."""
        data = asdict(self)
        data["context_tokens"] = list(self.context_tokens)
        data["cpus"] = list(self.cpus) if self.cpus is not None else None
        data["threads"] = self.resolved_threads()
        data["temperatures"] = list(self.temperatures)
        return data


def check_temperatures(temperatures: Sequence[float]) -> None:
    """Raise :class:`InvalidInput` unless ``temperatures`` are distinct values ≥ 0."""
    if not temperatures:
        raise InvalidInput("no temperature given; pass at least one (0 = greedy)")
    bad = [t for t in temperatures if not (math.isfinite(t) and t >= 0)]
    if bad:
        raise InvalidInput(f"temperature {bad[0]} is out of range (0 = greedy, or > 0)")
    if len(set(temperatures)) != len(temperatures):
        raise InvalidInput(f"temperatures repeat: {list(temperatures)}")


@dataclass
class PointResult:
    """One measured sweep point, as shown in the summary table."""

    drafter: str
    k: int
    context_tokens: int
    per_token_ms: Estimate
    rel_half_width: float
    converged: bool
    temperature: float = 0.0


class DeviceSweepReport(SweepReport[PointResult]):
    """Everything the CLI shows after a device sweep."""


def build_context(tokenizer: Tokenizing, n_tokens: int) -> list[int]:
    """``n_tokens`` token ids of :data:`CONTEXT_TEXT` (repeated), starting with BOS."""
    text = CONTEXT_TEXT
    ids = tokenizer.tokenize(text, add_bos=True)
    while len(ids) < n_tokens:
        text += CONTEXT_TEXT
        ids = tokenizer.tokenize(text, add_bos=True)
    return ids[:n_tokens]


def _est_dict(est: Estimate) -> dict[str, Any]:
    return est.model_dump()


@dataclass
class DraftTimer:
    """Times ``k`` drafted tokens after ``context`` as the edge client drafts them: greedy
    at temperature 0; at T > 0 seeded sampling plus the verify request the client builds
    from the draft (top-``top_k`` sparse distributions, :func:`build_request`)."""

    drafter: Drafter
    context: list[int]
    k: int
    temperature: float = 0.0
    top_k: int = 64
    calls: int = 0

    def once(self) -> None:
        if self.temperature == 0.0:
            self.drafter.draft(self.context, self.k)
            return
        from configspec.serving.client import build_request

        self.calls += 1
        draft = self.drafter.draft(
            self.context, self.k, temperature=self.temperature, seed=self.calls
        )
        build_request(0, len(self.context), draft, self.temperature, self.top_k)

    def per_token_ms(self, inner: int) -> float:
        start = time.perf_counter()
        for _ in range(inner):
            self.once()
        return (time.perf_counter() - start) * 1000.0 / (inner * self.k)


def _key(point: dict[str, Any]) -> tuple[int, int, float]:
    """A checkpointed point's (K, context, temperature); greedy when it has no temperature."""
    return (point["k"], point["context_tokens"], point.get("temperature", 0.0))


def inner_repeats(timer: DraftTimer) -> int:
    """Calls per sample so one sample lasts ≥ :data:`MIN_SAMPLE_MS` (the n-gram drafter
    takes µs, and µs timings are dominated by interpreter and scheduler noise); the
    calibration call itself is discarded (it doubles as the point's warm-up)."""
    once_ms = timer.per_token_ms(1) * timer.k
    if once_ms >= MIN_SAMPLE_MS:
        return 1
    return min(10_000, math.ceil(MIN_SAMPLE_MS / max(once_ms, 1e-4)))


def _segment(m: Measurement) -> dict[str, float]:
    """A window's energy, duration and power-sample sums (added up across resumed runs)."""
    return {
        "energy_j": m.energy_j,
        "duration_s": m.duration_s,
        "n": float(len(m.sample_power_w)),
        "sum_w": sum(m.sample_power_w),
        "sumsq_w": sum(x * x for x in m.sample_power_w),
    }


def _power_estimate(seg: dict[str, float], source: Source) -> Estimate | None:
    """Mean power = energy / duration; CI from the spread of the power samples (widened to
    contain the mean). Samples are autocorrelated, so the interval is optimistic."""
    if seg.get("duration_s", 0.0) <= 0:
        return None
    mean = seg["energy_j"] / seg["duration_s"]
    n = int(seg.get("n", 0))
    if n >= 2:
        m = seg["sum_w"] / n
        hw = student_t_half_width(n, (seg["sumsq_w"] - n * m * m) / (n - 1))
        return Estimate(
            mean=mean,
            ci_low=max(0.0, min(mean, m - hw)),
            ci_high=max(mean, m + hw),
            n=n,
            source=source,
            estimator="student_t",
        )
    return Estimate(mean=mean, n=n, source=source)


class DeviceProfiler:
    """Runs the device sweep for a list of drafter specs (see the module docstring).

    ``drafters`` are specs as accepted by :func:`configspec.backends.factory.open_drafter`
    (registered name, GGUF path, ``ngram[:MIN-MAX]``); ``tokenizer`` is the vocabulary the
    n-gram drafter uses (default: the first model drafter's). ``meter`` None means no
    power data. ``proc_root`` is where ``/proc`` lives (tests point it elsewhere).
    """

    def __init__(
        self,
        drafters: Sequence[str],
        store: ProfileStore,
        *,
        device: str,
        description: str = "",
        settings: DeviceSweepSettings | None = None,
        meter: PowerMeter | None = None,
        cache_dir: Path | None = None,
        tokenizer: str | None = None,
        restart: bool = False,
        proc_root: Path = Path("/proc"),
    ) -> None:
        self.settings = settings or DeviceSweepSettings()
        self.settings.validate()
        if not drafters:
            raise InvalidInput("no drafter to profile; pass at least one --drafter")
        if len(set(drafters)) != len(drafters):
            raise InvalidInput(f"drafter specs repeat: {list(drafters)}")
        self.specs = list(drafters)
        self.store = store
        self.device = device
        self.description = description
        self.meter = meter
        self.cache_dir = cache_dir
        self.tokenizer_spec = tokenizer or next((s for s in self.specs if not is_ngram(s)), None)
        self.proc_root = proc_root
        self.checkpoint = Checkpoint(
            store.checkpoint_path(f"device-{device}"),
            kind="device",
            settings={
                **self.settings.as_dict(),
                "drafters": self.specs,
                "meter": meter.name if meter else None,
            },
            restart=restart,
        )

    # ------------------------------------------------------------------ helpers
    def _llama_settings(self) -> Any:
        from configspec.backends.factory import LlamaSettings, profiling_n_ctx

        need = max(self.settings.context_tokens) + self.settings.k_max + 16
        return LlamaSettings(
            n_threads=self.settings.resolved_threads(), n_ctx=profiling_n_ctx(need)
        )

    def _identities(self) -> dict[str, ModelIdentity]:
        from configspec.backends.factory import open_drafter, resolve_identity

        out: dict[str, ModelIdentity] = {}
        for spec in self.specs:
            if is_ngram(spec):
                if self.tokenizer_spec is None:
                    raise InvalidInput(
                        "the ngram drafter needs a vocabulary: pass --tokenizer with a GGUF "
                        "file or registered model, or profile a model drafter with it"
                    )
                identity = open_drafter(
                    spec, tokenizer=self.tokenizer_spec, cache_dir=self.cache_dir
                ).identity
            else:
                identity = resolve_identity(spec, cache_dir=self.cache_dir)
            limit = identity.context_length
            need = max(self.settings.context_tokens) + self.settings.k_max
            if limit is not None and need > limit:
                raise InvalidInput(
                    f"context {max(self.settings.context_tokens)} + K_max "
                    f"{self.settings.k_max} exceeds {identity.name}'s context length {limit}"
                )
            out[spec] = identity
        return out

    def _open(self, spec: str) -> Drafter:
        from configspec.backends.factory import open_drafter

        return open_drafter(
            spec,
            tokenizer=self.tokenizer_spec,
            cache_dir=self.cache_dir,
            settings=self._llama_settings(),
        )

    # ------------------------------------------------------------------ sweep
    def run(
        self, progress: ProgressFn = NO_PROGRESS
    ) -> tuple[DeviceProfile, Path, DeviceSweepReport]:
        """Run (or resume) the sweep; save the profile; return it, its path and a report."""
        started = time.perf_counter()
        identities = self._identities()
        models = {identities[s].name: identities[s].file_sha256 for s in self.specs}
        state = self.checkpoint.load(models)
        state.setdefault("started_at", time.time())
        state.setdefault("drafters", {})
        report = DeviceSweepReport()
        previous = host.set_affinity(list(self.settings.cpus) if self.settings.cpus else None)
        try:
            if self.meter is not None and "idle" not in state and self.settings.idle_s > 0:
                progress(ProgressEvent("idle power", 0, 1))
                m = self.meter.measure_idle(self.settings.idle_s)
                idle = _power_estimate(_segment(m), self.meter.source)
                state["idle"] = _est_dict(idle) if idle else None
                self.checkpoint.save(state, models)
                progress(ProgressEvent("idle power", 1, 1, f"{m.mean_power_w:.2f} W"))
            for spec in self.specs:
                self._sweep_drafter(spec, identities[spec], state, models, report, progress)
        finally:
            if previous is not None:
                host.set_affinity(previous)
        profile = self._profile(identities, state, report)
        path = self.store.save(profile)
        self.checkpoint.remove()
        report.wall_time_s = time.perf_counter() - started
        return profile, path, report

    def _sweep_drafter(
        self,
        spec: str,
        identity: ModelIdentity,
        state: dict[str, Any],
        models: dict[str, str | None],
        report: DeviceSweepReport,
        progress: ProgressFn,
    ) -> None:
        s = self.settings
        entry = state["drafters"].setdefault(
            identity.name,
            {"points": [], "prefill": None, "memory_bytes": 0, "done": False,
             "power": {"energy_j": 0.0, "duration_s": 0.0, "n": 0, "sum_w": 0.0, "sumsq_w": 0.0}},
        )  # fmt: skip
        total = len(s.temperatures) * len(s.context_tokens) * s.k_max
        done_keys = {_key(p) for p in entry["points"]}
        for p in entry["points"]:
            report.points.append(
                PointResult(identity.name, p["k"], p["context_tokens"],
                            Estimate(**p["per_token_ms"]), p["rel_half_width"], p["converged"],
                            p.get("temperature", 0.0))
            )  # fmt: skip
        report.resumed_points += len(done_keys)
        label = identity.name
        if entry["done"]:
            progress(ProgressEvent(label, total, total, "from checkpoint"))
            return
        progress(ProgressEvent(label, len(done_keys), total, "loading"))
        rss = host.PeakRss(self.proc_root)
        rss.start()
        drafter = self._open(spec)
        window = f"draft:{label}"
        if self.meter is not None:
            self.meter.begin_window(window)
        try:
            if entry["prefill"] is None and identity.architecture != NGRAM:
                entry["prefill"] = self._prefill(drafter)
                self.checkpoint.save(state, models)
            if entry.get("catchup") is None and identity.architecture != NGRAM:
                entry["catchup"] = self._catchup(drafter)
                self.checkpoint.save(state, models)
            for ctx_len in s.context_tokens:
                context = build_context(drafter, ctx_len)
                warmed = False
                # every temperature of one (K, context) point back to back, so their
                # difference is the sampled work rather than the host's drift between a
                # greedy block and a sampled block of the sweep
                for k, temp in itertools.product(range(1, s.k_max + 1), s.temperatures):
                    if (k, ctx_len, temp) in done_keys:
                        continue
                    timer = DraftTimer(drafter, context, k, temp, s.draft_top_k)
                    # the context's cache is primed by ``warmup`` calls once; afterwards the
                    # untimed calibration call of each K is its warm-up
                    for _ in range(0 if warmed else s.warmup):
                        timer.once()
                    warmed = True
                    inner = inner_repeats(timer)
                    sampled = repeat_until(
                        functools.partial(timer.per_token_ms, inner),
                        rel_half_width=s.rel_half_width,
                        min_repeats=s.min_repeats,
                        max_repeats=s.max_repeats,
                        budget_s=s.point_budget_s,
                    )
                    est = student_t_mean(sampled.samples)
                    entry["points"].append({
                        "k": k, "context_tokens": ctx_len, "per_token_ms": _est_dict(est),
                        "rel_half_width": sampled.rel_half_width, "converged": sampled.converged,
                        "inner_calls": inner, "temperature": temp,
                    })  # fmt: skip
                    entry["memory_bytes"] = max(entry["memory_bytes"], rss.peak_bytes())
                    self.checkpoint.save(state, models)
                    report.points.append(
                        PointResult(label, k, ctx_len, est, sampled.rel_half_width,
                                    sampled.converged, temp)
                    )  # fmt: skip
                    mark = "" if sampled.converged else " (budget)"
                    at = f" T={temp:g}" if temp else ""
                    detail = f"K={k} ctx={ctx_len}{at}: {est.mean:.3g} ms"
                    detail += f" ±{sampled.rel_half_width:.1%}{mark}"
                    progress(ProgressEvent(label, len(entry["points"]), total, detail))
        finally:
            if self.meter is not None:
                seg = _segment(self.meter.end_window(window))
                for key, value in seg.items():
                    entry["power"][key] += value
            entry["memory_bytes"] = max(entry["memory_bytes"], rss.peak_bytes())
            close = getattr(drafter, "close", None)
            if callable(close):
                close()
            self.checkpoint.save(state, models)
        entry["done"] = True
        self.checkpoint.save(state, models)

    def _prefill(self, drafter: Drafter) -> dict[str, Any]:
        s = self.settings
        context = build_context(drafter, max(s.context_tokens))
        reset = getattr(drafter, "reset", None)

        def once() -> float:
            if callable(reset):
                reset()
            start = time.perf_counter()
            drafter.draft(context, 1)
            return len(context) / (time.perf_counter() - start)

        once()  # warm-up
        sampled = repeat_until(
            once,
            rel_half_width=s.rel_half_width,
            min_repeats=s.prefill_repeats,
            max_repeats=max(s.prefill_repeats, 4 * s.prefill_repeats),
            budget_s=s.point_budget_s,
        )
        return _est_dict(student_t_mean(sampled.samples))

    def _catchup(self, drafter: Drafter) -> dict[str, Any] | None:
        """Extra ms of a round that starts with two new tokens instead of one (see
        :attr:`~configspec.config.DrafterOnDevice.catchup_ms`): draft 1 token after a
        context whose last two tokens are not cached, minus the same with only the last
        one uncached, in interleaved pairs (mean difference, Student-t 95% CI)."""
        prefill = getattr(drafter, "prefill", None)
        if not callable(prefill):
            return None
        s = self.settings
        context = build_context(drafter, min(s.context_tokens))

        def once(new: int) -> float:
            prefill(context[:-new])
            start = time.perf_counter()
            drafter.draft(context, 1)
            return (time.perf_counter() - start) * 1000.0

        def pair() -> float:
            return once(2) - once(1)

        for _ in range(max(1, s.warmup)):
            pair()
        sampled = repeat_until(
            pair,
            rel_half_width=s.rel_half_width,
            min_repeats=max(5, s.min_repeats),
            max_repeats=max(20, s.max_repeats),
            budget_s=s.point_budget_s,
        )
        # a difference of two latencies may be negative (no extra cost): no truncation at 0
        return _est_dict(student_t_mean(sampled.samples, nonnegative=False))

    # ------------------------------------------------------------------ profile
    def _profile(
        self,
        identities: dict[str, ModelIdentity],
        state: dict[str, Any],
        report: DeviceSweepReport,
    ) -> DeviceProfile:
        drafters = []
        source: Source = self.meter.source if self.meter else "measured"
        for spec in self.specs:
            identity = identities[spec]
            entry = state["drafters"][identity.name]
            points = sorted(
                entry["points"],
                key=lambda p: (p.get("temperature", 0.0), p["context_tokens"], p["k"]),
            )
            drafters.append(
                DrafterOnDevice(
                    drafter=identity.name,
                    family=identity.family,
                    quantization=identity.quantization,
                    model_sha256=identity.file_sha256,
                    memory_bytes=int(entry["memory_bytes"]),
                    latency=[
                        DraftLatencyPoint(
                            k=p["k"],
                            context_tokens=p["context_tokens"],
                            per_token_ms=Estimate(**p["per_token_ms"]),
                            temperature=p.get("temperature", 0.0),
                        )
                        for p in points
                    ],
                    prefill_tokens_per_s=Estimate(**entry["prefill"]) if entry["prefill"] else None,
                    draft_power_w=_power_estimate(entry["power"], source) if self.meter else None,
                    catchup_ms=Estimate(**entry["catchup"]) if entry.get("catchup") else None,
                )
            )
        s = self.settings
        n_ok = report.converged_points
        notes = (
            f"{n_ok} of {len(report.points)} latency points reached the ±{s.rel_half_width:.0%} "
            f"95% CI target; the others stopped at the {s.point_budget_s:g} s budget "
            f"(worst ±{report.worst_rel_half_width:.1%}). Per-token latency = time to draft K "
            "tokens after a cached context / K; catch-up = extra time of a round that starts "
            "with two new tokens. Memory = peak RSS increase while loaded."
        )
        if self.meter is not None and self.meter.source == "estimated":
            notes += (
                " Power figures (idle_power_w, every draft_power_w; source 'estimated') are "
                f"not measured: {self.meter.describe()}."
            )
        import llama_cpp

        settings = {
            **self.checkpoint.settings,
            "meter_detail": self.meter.describe() if self.meter else None,
        }
        return DeviceProfile(
            device=DeviceInfo(
                name=self.device,
                description=self.description or f"{platform.system()} {platform.machine()}",
                cpu_model=host.cpu_model(self.proc_root),
                memory_bytes=host.memory_total_bytes(self.proc_root),
                threads=s.resolved_threads(),
                emulated=s.emulated(),
            ),
            meter=self.meter.info() if self.meter else None,
            idle_power_w=Estimate(**state["idle"]) if state.get("idle") else None,
            drafters=drafters,
            provenance=Provenance.here(
                "measured",
                backend="llama.cpp (llama-cpp-python)",
                backend_version=str(getattr(llama_cpp, "__version__", "unknown")),
                model_sha256={
                    identities[x].name: identities[x].file_sha256 or ""
                    for x in self.specs
                    if identities[x].file_sha256
                },
                settings={**settings, "started_at_unix_s": state["started_at"], "pid": os.getpid()},
                notes=notes,
            ),
        )


def check_profile_models(profile: DeviceProfile, identities: Sequence[ModelIdentity]) -> None:
    """Raise :class:`ProfileError` when ``profile`` was measured with other model files.

    Each identity whose name appears in the profile must have the same sha256 as the file
    the profile was measured with; a profile is never silently applied to another model.
    """
    by_name = {d.drafter: d for d in profile.drafters}
    for identity in identities:
        entry = by_name.get(identity.name)
        if entry is None or entry.model_sha256 is None or identity.file_sha256 is None:
            continue
        if entry.model_sha256 != identity.file_sha256:
            raise ProfileError(
                f"device profile {profile.device.name!r} was measured with {identity.name} "
                f"sha256 {entry.model_sha256[:12]}…, but {identity.path or identity.name} has "
                f"sha256 {identity.file_sha256[:12]}…; re-run `configspec profile device`"
            )
