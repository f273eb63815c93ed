"""Run configurations for real and store their records: one path for every caller.

``configspec quickstart``, ``configspec validate --run`` and ``configspec run edge`` all
execute configurations through the real edge client and write one
:class:`~configspec.config.RunRecord` per configuration into a profile directory:

* :func:`plans_from_filters` turns ``DRAFTER:K[@RTT]`` filters into :class:`RunPlan` s;
* :func:`measure_overhead` measures the runtime's per-round overhead (K=0 rounds) at
  every RTT the plans use;
* :func:`run_plans` runs the plans through a local :class:`Runtime` and stores each record;
* :func:`run_configs` is ``validate --run``: a runtime, the overhead, the runs;
* :func:`run_edge` is ``run edge``: one prompt against a verifier somewhere else.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from configspec.config import RunRecord
from configspec.errors import InvalidInput
from configspec.loop.runtime import RunPlan, Runtime, RuntimeSettings
from configspec.progress import NO_PROGRESS, Phase, ProgressEvent, ProgressFn
from configspec.records import mean_decoding_context_tokens
from configspec.store import ProfileStore

if TYPE_CHECKING:
    from configspec.backends.base import Drafter, ModelIdentity
    from configspec.loop.validate import ConfigFilter
    from configspec.power.base import PowerMeter
    from configspec.serving.adaptive import AdaptiveK
    from configspec.serving.client import Generation
    from configspec.serving.protocol import ServerInfo

OVERHEAD_LABEL = "runtime overhead (K=0 rounds)"
RUNS_LABEL = "validation runs"


def plans_from_filters(filters: Iterable[ConfigFilter], rtts: Sequence[float]) -> list[RunPlan]:
    """One plan per filter and RTT (a filter's own ``@RTT`` wins over ``rtts``).

    Raises :class:`InvalidInput` for a filter without K or when there is no plan at all.
    """
    plans = []
    for f in filters:
        if f.k is None:
            raise InvalidInput(f"--run needs K for every config: {f.drafter}:K")
        for rtt in [f.added_rtt_ms] if f.added_rtt_ms is not None else rtts:
            plans.append(RunPlan(f.drafter, f.k, rtt))
    if not plans:
        raise InvalidInput("--run needs at least one --configs DRAFTER:K")
    return plans


def measure_overhead(
    runtime: Runtime, drafter: str, rtts: Sequence[float], progress: ProgressFn = NO_PROGRESS
) -> dict[float, float]:
    """The runtime's per-round overhead (ms, mean of the K=0 calibration) at each RTT (ms)."""
    overheads: dict[float, float] = {}
    phase = Phase(progress, OVERHEAD_LABEL, len(rtts))
    for rtt in rtts:
        est = runtime.calibrate_overhead(drafter, rtt)
        overheads[rtt] = est.mean
        detail = f"+{rtt:g} ms: {est.mean:.1f} ms" if len(rtts) > 1 else f"{est.mean:.1f} ms"
        phase.advance(detail=detail)
    return overheads


def run_plans(
    runtime: Runtime,
    plans: Sequence[RunPlan],
    store: ProfileStore,
    progress: ProgressFn = NO_PROGRESS,
    spec_for: Callable[[str], str] = lambda name: name,
) -> list[RunRecord]:
    """Run every plan through ``runtime``, store each record in ``store``; return them.

    ``spec_for`` maps a plan's drafter (e.g. a profiled name) to the spec to open.
    """
    records: list[RunRecord] = []
    for i, plan in enumerate(plans):
        spec_plan = dataclasses.replace(plan, drafter=spec_for(plan.drafter))
        record = runtime.run(spec_plan, progress)
        store.save_run(record)
        records.append(record)
        progress(ProgressEvent(RUNS_LABEL, i + 1, len(plans), plan.drafter))
    return records


def run_configs(
    store: ProfileStore,
    plans: Sequence[RunPlan],
    settings: RuntimeSettings,
    progress: ProgressFn = NO_PROGRESS,
) -> tuple[list[RunRecord], dict[float, float]]:
    """``validate --run``: start a runtime, measure its overhead at every RTT of ``plans``
    (kept per RTT in the network settings, ``round_overhead_by_rtt``, so later
    re-validation uses the matching one), run and store the plans. Returns the records and
    the overhead (ms) per RTT (ms)."""
    with Runtime(settings) as runtime:
        rtts = sorted({p.added_rtt_ms for p in plans})
        overheads = measure_overhead(runtime, plans[0].drafter, rtts, progress)
        store.save_network(store.network().with_overheads(overheads))
        records = run_plans(runtime, plans, store, progress)
    return records, overheads


@dataclass(frozen=True)
class EdgeRun:
    """One ``run edge``: draft locally with ``drafter``, verify on ``server``.

    ``added_rtt_ms`` is the RTT the user injected between edge and server (recorded, not
    added); ``meter`` names the edge power meter (``none`` for no energy figure).
    ``k`` None is ``--k auto``: K is chosen every round in ``k_min..k_max`` (None: the
    profiled range) for ``objective`` by :class:`~configspec.serving.adaptive.AdaptiveK`,
    with the profile directory's device, alignment (for ``domain``) and verification
    profiles as its prior and ``prior_rtt_ms`` (None: the stored network's) as the link's.
    """

    server: str
    drafter: str
    k: int | None
    prompt: str
    max_tokens: int = 128
    tokenizer: str | None = None
    temperature: float = 0.0
    seed: int | None = None
    draft_top_k: int = 64
    added_rtt_ms: float = 0.0
    device: str | None = None
    threads: int = 2
    n_ctx: int = 4096
    cache_dir: Path | None = None
    meter: str = "auto"
    api_key: str | None = field(default=None, repr=False)
    """The verifier's API key (sent as a bearer token); never shown in a repr."""
    k_min: int = 1
    k_max: int | None = None
    objective: str = "goodput"
    domain: str = "all"
    prior_rtt_ms: float | None = None


def adaptive_policy(
    run: EdgeRun, store: ProfileStore | None, drafter: str, context_tokens: int, max_k: int
) -> AdaptiveK:
    """The ``--k auto`` policy of ``run`` for ``drafter`` (its profiled name), its prior from
    ``store``; ``max_k`` is the verifier's limit. Raises when a profile is missing."""
    from configspec.model.presets import get_preset
    from configspec.search.space import read_profiles
    from configspec.serving.adaptive import AdaptiveK, auto_options, prior_from_profiles

    if store is None:
        raise InvalidInput(
            "--k auto needs --profiles: the device, alignment and verification profiles there "
            "are the policy's prior (run `configspec quickstart` or the profile commands)"
        )
    if run.k_max is not None and run.k_max > max_k:
        raise InvalidInput(f"--k-max {run.k_max} is above the verifier's limit ({max_k})")
    profiles = read_profiles(store)
    prior = prior_from_profiles(
        profiles,
        drafter=drafter,
        device=run.device if run.device in {d.device.name for d in profiles.devices} else None,
        domain=run.domain,
        temperature=run.temperature,
        k_max=run.k_max,
        context_tokens=context_tokens,
        rtt_ms=run.prior_rtt_ms,
    )
    k_max = min(prior.k_max, max_k) if run.k_max is None else run.k_max
    return AdaptiveK(
        prior,
        k_min=run.k_min,
        k_max=k_max,
        objective=run.objective,
        preset=get_preset("configspec"),
        **auto_options(prior),
    )


def _no_status(_: str) -> AbstractContextManager[Any]:
    return nullcontext()


def run_edge(
    run: EdgeRun,
    *,
    on_text: Callable[[str], None] | None = None,
    status: Callable[[str], AbstractContextManager[Any]] = _no_status,
    store: ProfileStore | None = None,
) -> tuple[RunRecord, Path | None]:
    """Execute ``run`` against its verifier; return the run record and, when ``store`` is
    given, the path it was saved to.

    Fails fast (before loading any weights) when the server is unreachable, K is above
    its limit or the drafter does not match the target. ``on_text`` receives the text as
    it is generated; ``status(what)`` wraps the slow drafter load (e.g. a spinner).
    """
    from configspec.backends.factory import LlamaSettings, open_drafter
    from configspec.power import open_meter
    from configspec.serving.client import check_drafter

    info, k = _preflight(run, store)
    energy_meter = open_meter(run.meter)
    with status(f"loading {run.drafter}"):
        model = open_drafter(
            run.drafter,
            tokenizer=run.tokenizer,
            cache_dir=run.cache_dir,
            settings=LlamaSettings(n_threads=run.threads, n_ctx=run.n_ctx),
        )
    check_drafter(model.identity, info, k)
    prompt_tokens = model.tokenize(run.prompt)
    policy = None
    if run.k is None:
        context = int(mean_decoding_context_tokens(len(prompt_tokens), run.max_tokens))
        policy = adaptive_policy(run, store, model.identity.name, context, info.max_k)
        k = policy.k_max
    energy_note = _start_metering(energy_meter)
    try:
        gen = _generate(run, model, k, policy, energy_meter, prompt_tokens, on_text)
    finally:
        if energy_meter is not None:
            energy_meter.end_window("edge-run")
    record = _edge_record(
        run, model.identity, gen, k, policy, len(prompt_tokens), energy_meter, energy_note
    )
    path = store.save_run(record) if store is not None else None
    return record, path


def _preflight(run: EdgeRun, store: ProfileStore | None) -> tuple[ServerInfo, int]:
    """The verifier's description and the run's K (for ``--k auto`` the largest allowed,
    until the policy is made); raises before any weights are loaded when the run cannot
    work (no profiles for ``--k auto``, K above the verifier's limit, an n-gram drafter
    without a tokenizer, a drafter the target does not match)."""
    from configspec.backends.factory import resolve_identity
    from configspec.backends.specs import parse_spec
    from configspec.serving.client import check_drafter, probe_server

    if run.k is None and store is None:
        raise InvalidInput(
            "--k auto needs --profiles: the device, alignment and verification profiles there "
            "are the policy's prior (run `configspec quickstart` or the profile commands)"
        )
    info = probe_server(run.server, api_key=run.api_key)
    k = run.k if run.k is not None else min(run.k_max or info.max_k, info.max_k)
    if k > info.max_k:
        raise InvalidInput(f"K={k} is above the verifier's limit ({info.max_k}); lower --k")
    is_ngram = parse_spec(run.drafter).is_ngram
    if is_ngram and run.tokenizer is None:
        raise InvalidInput(
            f"the ngram drafter needs --tokenizer (a GGUF of the target's family, "
            f"{info.target.family})"
        )
    if not is_ngram:
        check_drafter(resolve_identity(run.drafter, cache_dir=run.cache_dir), info, k)
    return info, k


def _start_metering(meter: PowerMeter | None) -> str:
    """Open the run's energy window on ``meter``; return the record's energy note."""
    if meter is None:
        return "no device power meter was used (--meter none); energy not recorded"
    meter.begin_window("edge-run")
    if meter.source == "measured":
        return (
            f"edge energy from the {meter.name} meter ({meter.source}); it meters the whole "
            "host, so a verifier on the same host is included"
        )
    return f"edge energy {meter.source}, not measured: {meter.describe()}"


def _generate(
    run: EdgeRun,
    model: Drafter,
    k: int,
    policy: AdaptiveK | None,
    meter: PowerMeter | None,
    prompt_tokens: Sequence[int],
    on_text: Callable[[str], None] | None,
) -> Generation:
    """Generate ``run.max_tokens`` after the prompt through the verifier (K fixed, or
    chosen every round by ``policy``), reading ``meter`` every round."""
    from configspec.serving.client import EdgeClient

    with EdgeClient(
        run.server,
        model,
        k=k,
        temperature=run.temperature,
        seed=run.seed,
        draft_top_k=run.draft_top_k,
        api_key=run.api_key,
        policy=policy,
        energy_j=(lambda: meter.sample().energy_j) if meter else None,
    ) as client:
        return client.generate(prompt_tokens, run.max_tokens, on_text=on_text)


def _edge_record(
    run: EdgeRun,
    drafter: ModelIdentity,
    gen: Generation,
    k: int,
    policy: AdaptiveK | None,
    n_prompt_tokens: int,
    meter: PowerMeter | None,
    energy_note: str,
) -> RunRecord:
    """The run record of ``gen`` (its configuration: K fixed, or the adaptive policy's)."""
    from configspec.backends.specs import parse_spec
    from configspec.serving.record import build_run_record, model_hashes, run_config

    adaptive: dict[str, Any] = {}
    if policy is not None:
        adaptive = {
            "k_policy": "adaptive",
            "k_min": policy.k_min,
            "k_max": policy.k_max,
            "objective": policy.objective,
        }
    config = run_config(
        drafter,
        gen,
        k=k,
        temperature=run.temperature,
        added_rtt_ms=run.added_rtt_ms,
        server_url=run.server,
        device=run.device,
        prompt_tokens=n_prompt_tokens,
        max_tokens=run.max_tokens,
        seed=run.seed,
        draft_top_k=run.draft_top_k if run.temperature > 0 else None,
        **adaptive,
    )
    return build_run_record(
        gen,
        config,
        backend="ngram" if parse_spec(run.drafter).is_ngram else "llama.cpp",
        model_sha256=model_hashes(drafter),
        energy_note=energy_note,
        energy_source=meter.source if meter is not None else "measured",
        settings={"meter": meter.name if meter else None},
    )
