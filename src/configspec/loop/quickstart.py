"""The whole loop on this machine: prepare, profile, select, run, validate, report.

:func:`run_quickstart` is what ``configspec quickstart`` does, as a library call with a
progress callback. Every step is the real one (the same code as the individual
commands), with short settings so it finishes in minutes on a small CPU:

1. prepare the embedded model family (Gemma 3 270M drafters + F32 target) in the cache;
2. profile this device (drafting latency K × context, memory, power from the best meter);
3. profile verification of the target on this machine (positions 1..K_max+1);
4. profile alignment (acceptance of every drafter along the target's own outputs);
5. start the real verifier, take the baseline contention probe of every drafter (the
   probe each run takes, right after profiling: :mod:`configspec.loop.contention`),
   measure the runtime's per-round overhead (K=0 rounds) and store the network settings
   (the RTT the delay proxy will inject);
6. select the optimum for goodput, cost and energy and the Pareto front;
7. run the chosen configurations plus a few others spanning K and drafters through the
   real runtime behind the delay proxy, and compare predicted with measured;
8. write the HTML report.
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from configspec import records as R
from configspec.backends.specs import parse_spec, spec_of_name
from configspec.config import GpuTimePrice, NetworkSettings
from configspec.errors import InvalidInput
from configspec.loop.contention import take_baseline
from configspec.loop.runs import measure_overhead, run_plans
from configspec.loop.runtime import RunPlan, Runtime, RuntimeSettings
from configspec.loop.validate import ValidationResult, validate
from configspec.model.presets import ModelPreset, get_preset
from configspec.profiling.prompts import Prompt, bundled_prompts, select_prompts
from configspec.progress import ProgressEvent, ProgressFn, prefixed
from configspec.search.select import Selection, pick
from configspec.search.space import SearchSettings, read_profiles, space_from_profiles
from configspec.serving.netem import LINK_KINDS
from configspec.store import ProfileStore

log = logging.getLogger(__name__)

DEFAULT_DRAFTERS = ("gemma-3-270m-q4_0", "gemma-3-270m-q8_0", "ngram")
DEFAULT_TARGET = "gemma-3-270m-f32"
ILLUSTRATIVE_PRICE_USD_PER_HOUR = 1.0
UNCAPPED_MBPS = 1e6


@dataclass(frozen=True)
class QuickstartSettings:
    """Short settings for the whole loop (see the module docstring).

    ``rtt_ms`` is the round trip the delay proxy injects for the validation runs and the
    network the selection assumes; ``price_usd_per_hour`` prices the local target's
    verification time (illustrative unless you pass your own); ``k_max`` bounds every
    sweep; ``validate_ks`` are the K values run per drafter besides the optima.
    ``run_prompts`` are the prompts the validation runs decode (default: the ones
    alignment was profiled on); give prompts alignment never saw to check that the
    prediction holds off the profiled workload.
    """

    out: Path
    rtt_ms: float = 30.0
    drafters: tuple[str, ...] = DEFAULT_DRAFTERS
    target: str = DEFAULT_TARGET
    k_max: int = 8
    contexts: tuple[int, ...] = (64, 192)
    prompts_per_domain: int = 1
    max_tokens: int = 32
    threads: int = 1
    validate_ks: tuple[int, ...] = (2, 6)
    price_usd_per_hour: float | None = None
    cache_dir: Path | None = None
    device: str | None = None
    point_budget_s: float = 1.0
    link: str = "auto"
    """How the validation runs inject the RTT: auto (netem where available), netem, proxy."""
    run_prompts: tuple[Prompt, ...] = ()

    def __post_init__(self) -> None:
        if not (0 <= self.rtt_ms <= 10_000):
            raise InvalidInput(f"--rtt-ms {self.rtt_ms} is out of range (0..10000)")
        if self.link not in LINK_KINDS:
            raise InvalidInput(f"--link {self.link!r} is not one of {', '.join(LINK_KINDS)}")
        if not 1 <= self.k_max <= 16:
            raise InvalidInput(f"--k-max {self.k_max} is out of range (1..16)")
        if any(not 1 <= k <= self.k_max for k in self.validate_ks):
            raise InvalidInput(f"validation K {self.validate_ks} must lie in 1..{self.k_max}")
        if not self.drafters:
            raise InvalidInput("no drafter given; pass at least one --drafter")


@dataclass
class QuickstartResult:
    """What the quickstart produced."""

    store: ProfileStore
    selection: Selection
    validation: ValidationResult
    report_path: Path | None
    overhead_ms: float
    price_note: str
    step_s: dict[str, float] = field(default_factory=dict)
    link: str = "configspec delay proxy"
    """How the validation runs' RTT was injected (the run records' ``link``)."""


def plans_to_validate(
    selection: Selection, drafters: Sequence[str], ks: Sequence[int], rtt_ms: float
) -> list[RunPlan]:
    """The optima of every objective, then each drafter at ``ks`` (duplicates dropped)."""
    table = selection.table
    plans: list[RunPlan] = []
    for row in [selection.best.get(o) for o in ("goodput", "cost", "energy")]:
        if row is None or table[R.MODE].iloc[row] != R.MODE_SPECULATIVE:
            continue
        plans.append(RunPlan(str(table[R.DRAFTER].iloc[row]), int(table[R.K].iloc[row]), rtt_ms))
    names = sorted({str(d) for d in table[R.DRAFTER].dropna().unique()})
    for spec in drafters:
        parsed = parse_spec(spec)
        name = next((n for n in names if parsed.matches(n)), parsed.profiled_name)
        for k in ks:
            plans.append(RunPlan(name, k, rtt_ms))
    seen: set[tuple[str, int]] = set()
    out = []
    for p in plans:
        if (p.drafter, p.k) not in seen:
            seen.add((p.drafter, p.k))
            out.append(p)
    return out


def _spec_for(name: str, specs: Sequence[str]) -> str:
    """The drafter spec a profiled drafter name came from (``ngram[1-3]`` → ``ngram``)."""
    return next((s for s in specs if parse_spec(s).matches(name)), spec_of_name(name))


@dataclass
class StepTimer:
    """Times the quickstart's steps: announces each (``on_step``) and records its wall
    time in seconds under its name."""

    on_step: Callable[[str], None]
    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Announce step ``name`` and time the block (recorded only when it succeeds)."""
        self.on_step(name)
        start = time.perf_counter()
        yield
        self.seconds[name] = time.perf_counter() - start


def run_quickstart(
    s: QuickstartSettings,
    progress: ProgressFn,
    on_step: Callable[[str], None] = lambda _: None,
    make_report: bool = True,
) -> QuickstartResult:
    """Run the whole loop (module docstring) into ``s.out``; return what it found."""
    store = ProfileStore(s.out / "profiles")
    timer = StepTimer(on_step)
    with timer.step("prepare models"):
        _prepare_models(s, progress)
    with timer.step("profile device"):
        device = _profile_device(s, store, progress)
    with timer.step("profile verification"):
        price_note = _profile_verification(s, store, progress)
    with timer.step("profile alignment"):
        prompts = select_prompts(bundled_prompts(), s.prompts_per_domain)
        _profile_alignment(s, store, prompts, progress)
    with Runtime(_runtime_settings(s, prompts, device)) as runtime:
        with timer.step("baseline contention probe"):
            take_baseline(runtime, [RunPlan(d, 1, s.rtt_ms) for d in s.drafters], store)
        with timer.step("measure runtime overhead"):
            overhead_ms = _measure_overhead(runtime, s, store, progress)
        with timer.step("select"):
            selection = _select(runtime, s, store)
        with timer.step("validate"):
            plans = plans_to_validate(selection, list(s.drafters), s.validate_ks, s.rtt_ms)
            records = run_plans(
                runtime, plans, store, progress, spec_for=lambda n: _spec_for(n, s.drafters)
            )
            result = validate(store, runs=records)
    report_path = None
    if make_report:
        from configspec.report.build import write_report

        with timer.step("report"):
            report_path = write_report(store, s.out / "report", progress=progress)
    return QuickstartResult(
        store=store,
        selection=selection,
        validation=result,
        report_path=report_path,
        overhead_ms=overhead_ms,
        price_note=price_note,
        step_s=timer.seconds,
        link=str(records[0].provenance.settings.get("link", "")) if records else "",
    )


def _short_sweep(s: QuickstartSettings) -> dict[str, Any]:
    """The quickstart's short latency-sweep knobs (device and verification alike)."""
    return {
        "k_max": s.k_max,
        "context_tokens": s.contexts,
        "min_repeats": 3,
        "max_repeats": 8,
        "rel_half_width": 0.1,
        "point_budget_s": s.point_budget_s,
        "threads": s.threads,
    }


def _prepare_models(s: QuickstartSettings, progress: ProgressFn) -> None:
    """Step 1: the embedded model family in the cache."""
    from configspec.backends.models import prepare_family

    prepare_family(
        s.cache_dir,
        on_step=lambda i, n, what: progress(ProgressEvent("prepare models", i, n, what)),
    )
    progress(ProgressEvent("prepare models", 1, 1, "ready"))


def _profile_device(s: QuickstartSettings, store: ProfileStore, progress: ProgressFn) -> str:
    """Step 2: drafting latency, memory and power of this device; returns its name."""
    from configspec.power import make_meter
    from configspec.profiling.device import DeviceProfiler, DeviceSweepSettings

    meter = make_meter("auto")
    meter.probe()
    device = s.device or f"{platform.node() or 'device'}-{s.threads}t"
    dev_settings = DeviceSweepSettings(**_short_sweep(s), idle_s=1.0)
    try:
        DeviceProfiler(
            list(s.drafters),
            store,
            device=device,
            description="this machine (configspec quickstart)",
            settings=dev_settings,
            meter=meter,
            cache_dir=s.cache_dir,
            tokenizer=s.target,
        ).run(progress)
    finally:
        meter.close()
    return device


def _profile_verification(s: QuickstartSettings, store: ProfileStore, progress: ProgressFn) -> str:
    """Step 3: the local target's verification latency; returns how cost is priced."""
    from configspec.profiling.verification import VerificationProfiler, VerifySweepSettings

    price = GpuTimePrice(price_usd_per_hour=s.price_usd_per_hour or ILLUSTRATIVE_PRICE_USD_PER_HOUR)
    price_note = f"{price.price_usd_per_hour:g} USD per hour of verification time" + (
        " (illustrative: pass --price-usd-per-hour)" if s.price_usd_per_hour is None else ""
    )
    VerificationProfiler(
        s.target,
        store,
        price=price,
        settings=VerifySweepSettings(**_short_sweep(s)),
        cache_dir=s.cache_dir,
        hardware="this machine (local llama.cpp target)",
    ).run(progress)
    return price_note


def _profile_alignment(
    s: QuickstartSettings, store: ProfileStore, prompts: Sequence[Prompt], progress: ProgressFn
) -> None:
    """Step 4: acceptance of every drafter along the target's own outputs."""
    from configspec.profiling.alignment import AlignmentSettings, profile_alignment

    profile_alignment(
        s.target,
        list(s.drafters),
        prompts,
        store,
        settings=AlignmentSettings(
            n_tokens=s.max_tokens, k_max=s.k_max, n_threads=s.threads, n_boot=300
        ),
        cache_dir=s.cache_dir,
        progress=prefixed(progress, "alignment: "),
    )


def _runtime_settings(
    s: QuickstartSettings, prompts: Sequence[Prompt], device: str
) -> RuntimeSettings:
    return RuntimeSettings(
        target=s.target,
        prompts=s.run_prompts or tuple(prompts),
        max_tokens=s.max_tokens,
        threads=s.threads,
        device=device,
        cache_dir=s.cache_dir,
        max_k=max(16, s.k_max),
        link=s.link,
    )


def _measure_overhead(
    runtime: Runtime, s: QuickstartSettings, store: ProfileStore, progress: ProgressFn
) -> float:
    """Step 5: the runtime's per-round overhead (ms) at the quickstart's RTT, stored with
    the network settings the selection will assume."""
    overhead_ms = measure_overhead(runtime, s.drafters[0], [s.rtt_ms], progress)[s.rtt_ms]
    store.save_network(
        NetworkSettings(
            rtt_ms=s.rtt_ms,
            uplink_mbps=UNCAPPED_MBPS,
            downlink_mbps=UNCAPPED_MBPS,
            source="measured",
        ).with_overheads({s.rtt_ms: overhead_ms})
    )
    return overhead_ms


def _select(runtime: Runtime, s: QuickstartSettings, store: ProfileStore) -> Selection:
    """Step 6: the goodput optimum (and the others) at the prompts' mean context."""
    profiles = read_profiles(store)
    space = space_from_profiles(
        profiles,
        _preset(),
        SearchSettings(k_max=s.k_max, context_tokens=prompts_context(runtime, s)),
    )
    return pick(space, profiles.network, "goodput")


def _preset() -> ModelPreset:
    return get_preset("configspec")


def prompts_context(runtime: Runtime, s: QuickstartSettings) -> int:
    """Mean decoding context of the quickstart's prompts (prompt + half the generation)."""
    d = runtime.drafter(s.drafters[0])
    lengths = [len(d.tokenize(p.text)) for p in runtime.settings.prompts]
    return round(R.mean_decoding_context_tokens(sum(lengths) / len(lengths), s.max_tokens))
