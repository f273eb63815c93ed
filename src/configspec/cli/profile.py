"""``configspec profile ...``: measure the device and the target, store the profiles.

Thin: parse options, call :mod:`configspec.profiling`, draw progress bars and a summary
table. Other stages add their sweeps to :data:`profile_app` (e.g. ``profile alignment``).
"""

from __future__ import annotations

import itertools
import os
import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from configspec.cli._console import console, progress_events
from configspec.config import Estimate
from configspec.errors import InvalidInput
from configspec.records import K_LIMIT
from configspec.store import ProfileStore

if TYPE_CHECKING:
    from configspec.config import DeviceProfile, VerificationProfile
    from configspec.profiling.device import DeviceSweepSettings
    from configspec.profiling.sweep import SweepReport
    from configspec.profiling.verification import VerifySweepReport, VerifySweepSettings

profile_app = typer.Typer(
    help="Measure drafters on this device, targets in the cloud, and store the profiles.",
    no_args_is_help=True,
)

DEFAULT_DRAFTERS = (
    "gemma-3-270m-q4_0",
    "gemma-3-270m-q4_k_m",
    "gemma-3-270m-q8_0",
    "gemma-3-270m-f16",
    "ngram",
)

PROFILES_OPTION = typer.Option(
    Path(os.environ.get("CONFIGSPEC_PROFILES", "profiles")),
    "--profiles",
    help="Profile directory (env CONFIGSPEC_PROFILES).",
)
CACHE_DIR_OPTION = typer.Option(
    None, "--cache-dir", help="Model cache directory (default: configspec's cache)."
)
# Knobs every measurement sweep (device, verify) takes, declared once so they read alike.
CONTEXT_OPTION = typer.Option([128, 512], "--context", help="Context length; repeatable.")
CI_OPTION = typer.Option(0.05, "--ci", help="Target 95% CI half-width, relative to mean.")
POINT_BUDGET_OPTION = typer.Option(10.0, "--point-budget-s", help="Max seconds per point.")
MIN_REPEATS_OPTION = typer.Option(5, "--min-repeats")
RESTART_OPTION = typer.Option(False, "--restart", help="Ignore an existing checkpoint.")
TEMPERATURE_OPTION = typer.Option(
    [0.0],
    "--temperature",
    "-T",
    help="Temperature timed (repeatable; 0 = greedy, > 0 adds the sampling work per token).",
)


def parse_cpus(text: str | None) -> tuple[int, ...] | None:
    """``"0,2-3"`` → (0, 2, 3); None stays None."""
    if not text:
        return None
    cpus: set[int] = set()
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            cpus.update(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise InvalidInput(f"--cpus {text!r} is not a CPU list like 0,2-3") from None
    return tuple(sorted(cpus))


def _fmt(est: Estimate | None, unit: str = "", digits: int = 3) -> str:
    if est is None:
        return "—"
    rel = (est.high - est.mean) / est.mean if est.mean else 0.0
    tag = "" if est.source == "measured" else f" [dim]({est.source})[/]"
    return f"{est.mean:.{digits}g}{unit} ±{rel:.1%}{tag}"


@profile_app.command("device")
def device(
    drafter: list[str] = typer.Option(
        list(DEFAULT_DRAFTERS),
        "--drafter",
        "-d",
        help="Drafter spec (registered name, GGUF path, ngram[:MIN-MAX]); repeatable.",
    ),
    device_name: str = typer.Option(
        None, "--device", help="Device name (default: host name, -Nt suffix if emulated)."
    ),
    description: str = typer.Option("", "--description", help="Free-text device description."),
    k_max: int = typer.Option(16, "--k-max", help=f"Largest K profiled (1..{K_LIMIT})."),
    context: list[int] = CONTEXT_OPTION,
    threads: int = typer.Option(None, "--threads", help="llama.cpp threads (default: all CPUs)."),
    cpus: str = typer.Option(None, "--cpus", help="CPU affinity, e.g. 0-1 (emulates a device)."),
    meter: str = typer.Option("auto", "--meter", help="Power meter: auto, none, rapl, nvml, ..."),
    meter_trace: Path = typer.Option(None, "--meter-trace", help="Trace CSV for --meter replay."),
    meter_record: Path = typer.Option(
        None, "--meter-record", help="Write the meter's power trace (CSV) here, for --meter replay."
    ),
    meter_root: Path = typer.Option(
        None, "--meter-root", help="sysfs root for rapl/hwmon/jetson (e.g. a mounted /sys copy)."
    ),
    idle_power_w: float = typer.Option(None, "--idle-power-w", help="Estimator idle power (W)."),
    power_w_per_core: float = typer.Option(
        None, "--power-w-per-core", help="Estimator power per busy core (W)."
    ),
    idle_s: float = typer.Option(3.0, "--idle-s", help="Seconds of idle power measurement."),
    ci: float = CI_OPTION,
    point_budget_s: float = POINT_BUDGET_OPTION,
    min_repeats: int = MIN_REPEATS_OPTION,
    max_repeats: int = typer.Option(100, "--max-repeats"),
    tokenizer: str = typer.Option(None, "--tokenizer", help="Vocabulary for the ngram drafter."),
    temperature: list[float] = TEMPERATURE_OPTION,
    restart: bool = RESTART_OPTION,
    profiles: Path = PROFILES_OPTION,
    cache_dir: Path = CACHE_DIR_OPTION,
) -> None:
    """Profile drafting latency (K = 1..K_max × contexts), prefill, memory and power."""
    from configspec.power import open_meter
    from configspec.profiling.device import DeviceProfiler, DeviceSweepSettings

    settings = DeviceSweepSettings(
        k_max=k_max,
        context_tokens=tuple(context),
        min_repeats=min_repeats,
        max_repeats=max_repeats,
        rel_half_width=ci,
        point_budget_s=point_budget_s,
        threads=threads,
        cpus=parse_cpus(cpus),
        idle_s=idle_s,
        temperatures=tuple(temperature),
    )
    settings.validate()
    power = open_meter(
        meter,
        root=meter_root,
        trace=meter_trace,
        idle_power_w=idle_power_w,
        power_w_per_core=power_w_per_core,
    )
    name = device_name or (platform.node() or "device")
    if device_name is None and settings.emulated():
        name += f"-{settings.resolved_threads()}t"
    profiler = DeviceProfiler(
        drafter,
        ProfileStore(profiles),
        device=name,
        description=description,
        settings=settings,
        meter=power,
        cache_dir=cache_dir,
        tokenizer=tokenizer,
        restart=restart,
    )
    try:
        with progress_events() as on_event:
            profile, path, report = profiler.run(on_event)
    finally:
        if power is not None:
            power.close()
            if meter_record is not None:
                from configspec.power import write_trace

                write_trace(meter_record, power.trace())

    console.print(_device_table(profile, settings))
    _print_device_summary(profile, settings, report, path, ci)


def _device_table(profile: DeviceProfile, settings: DeviceSweepSettings) -> Table:
    """Per-token latency at K=1 and K_max per context, prefill, catch-up, memory, power."""
    table = Table(title=f"device profile {profile.device.name}" + (
        " (emulated)" if profile.device.emulated else ""))  # fmt: skip
    table.add_column("drafter", no_wrap=True)
    for ctx in settings.context_tokens:
        table.add_column(f"ms/token K=1 ctx={ctx}", justify="right")
        table.add_column(f"K={settings.k_max}", justify="right")
    table.add_column("prefill tok/s", justify="right")
    table.add_column("catch-up ms", justify="right")
    table.add_column("peak MB", justify="right")
    table.add_column("power W", justify="right")
    for d, temp in itertools.product(profile.drafters, settings.temperatures):
        by = {(p.k, p.context_tokens, p.temperature): p.per_token_ms for p in d.latency}
        row = [d.drafter + (f" T={temp:g}" if temp else "")]
        for ctx in settings.context_tokens:
            row += [_fmt(by.get((1, ctx, temp))), _fmt(by.get((settings.k_max, ctx, temp)))]
        row += [
            _fmt(d.prefill_tokens_per_s),
            "—"
            if d.catchup_ms is None  # a difference near 0: absolute half-width
            else f"{d.catchup_ms.mean:.3g} ±{d.catchup_ms.high - d.catchup_ms.mean:.2g}",
            f"{d.memory_bytes / 1e6:.0f}",
            _fmt(d.draft_power_w),
        ]
        table.add_row(*row)
    return table


def _print_device_summary(
    profile: DeviceProfile,
    settings: DeviceSweepSettings,
    report: SweepReport[Any],
    path: Path,
    ci: float,
) -> None:
    n_ok = report.converged_points
    idle = f"idle {_fmt(profile.idle_power_w, ' W')}, " if profile.idle_power_w else ""
    meter_line = f"meter {profile.meter.name} ({profile.meter.source})" if profile.meter else (
        "no power meter")  # fmt: skip
    console.print(
        f"{n_ok}/{len(report.points)} points within ±{ci:.0%} (95% CI), worst "
        f"±{report.worst_rel_half_width:.1%}; {report.resumed_points} resumed from checkpoint; "
        f"{idle}{meter_line}; {report.wall_time_s:.0f} s wall. Latencies measured on "
        f"{settings.resolved_threads()} thread(s); catch-up = extra time of a round that "
        f"starts with two new tokens (after all K drafts were accepted). Saved {path}",
        highlight=False,
    )


def _latency_table(profile: VerificationProfile, settings: VerifySweepSettings) -> Table:
    """Latency (ms) per positions (rows) × temperature, batch and context (columns)."""
    table = Table(title=f"verification profile {profile.target} ({profile.endpoint})")
    table.add_column("positions", justify="right")
    cols = list(
        itertools.product(settings.temperatures, settings.batch_sizes, settings.context_tokens)
    )
    for t, b, c in cols:
        head = f"ms ctx={c}" + (f" B={b}" if b > 1 else "") + (f" T={t:g}" if t else "")
        table.add_column(head, justify="right")
    by = {
        (p.positions, p.context_tokens, p.batch, p.temperature): p.latency_ms
        for p in profile.latency
    }
    for positions in range(1, settings.k_max + 2):
        table.add_row(str(positions), *[_fmt(by.get((positions, c, b, t))) for t, b, c in cols])
    return table


def _concurrency_table(
    report: VerifySweepReport, context_tokens: int, k_max: int, *, server_path: bool = False
) -> Table:
    """Latency against concurrent requests at one context, T = 0, P = 1 and K_max + 1."""
    stored = (
        "batch = the verifier's own time of one pass of B sessions (stored)"
        if server_path
        else "batch = first send to last reply (stored)"
    )
    table = Table(
        title=(
            f"latency vs concurrent {'sessions' if server_path else 'requests'} "
            f"(ctx={context_tokens}, T=0): {stored}, request = mean each request saw "
            "(client side)"
        ),
        title_justify="left",
    )
    table.add_column("sessions" if server_path else "concurrent", justify="right")
    for p in (1, k_max + 1):
        table.add_column(f"batch ms P={p}", justify="right")
        table.add_column(f"request ms P={p}", justify="right")
        table.add_column(f"req/s P={p}", justify="right")
    by = {
        (r.batch, r.positions): r
        for r in report.points
        if r.context_tokens == context_tokens and r.temperature == 0.0
    }
    for b in sorted({r.batch for r in report.points}):
        row = [str(b)]
        for p in (1, k_max + 1):
            r = by.get((b, p))
            if r is None:
                row += ["—", "—", "—"]
                continue
            req = "—" if r.mean_request_ms is None else f"{r.mean_request_ms:.3g}"
            row += [_fmt(r.latency_ms), req, f"{b * 1000.0 / r.latency_ms.mean:.3g}"]
        table.add_row(*row)
    return table


@profile_app.command("verify")
def verify(
    target: str = typer.Option(
        "gemma-3-270m-f32",
        "--target",
        "-t",
        help="Target: registered name, GGUF path, or OpenAI-compatible server URL.",
    ),
    tokenizer: str = typer.Option(None, "--tokenizer", help="Vocabulary for a server target."),
    price_usd_per_hour: float = typer.Option(
        None, "--price-usd-per-hour", help="Cloud price per GPU hour (USD)."
    ),
    price_usd_per_million_tokens: float = typer.Option(
        None, "--price-usd-per-million-tokens", help="Cloud price per million tokens (USD)."
    ),
    hardware: str = typer.Option("", "--hardware", help="Where the target runs (e.g. 1×A10G)."),
    target_name: str = typer.Option(
        None, "--target-name", help="Profile name (default: model name / server model id)."
    ),
    k_max: int = typer.Option(16, "--k-max", help="Largest K; positions 1..K_max+1 are timed."),
    context: list[int] = CONTEXT_OPTION,
    batch: list[int] = typer.Option(
        [],
        "--batch",
        help="Concurrent requests for a URL target (default 1 2 4 8 16), or sessions per "
        "pass on the server path: a local target with any --batch above 1 is timed through "
        "a batched verifier started here (default 1 only: direct); repeatable.",
    ),
    verifier: str = typer.Option(
        None,
        "--verifier",
        help="Time a running `configspec serve verifier` (server path; default --batch 1 2 "
        "4 8; give --tokenizer or --target for its vocabulary). API key from "
        "$CONFIGSPEC_API_KEY.",
    ),
    threads: int = typer.Option(None, "--threads", help="llama.cpp threads for a local target."),
    ci: float = CI_OPTION,
    point_budget_s: float = POINT_BUDGET_OPTION,
    min_repeats: int = MIN_REPEATS_OPTION,
    max_repeats: int = typer.Option(50, "--max-repeats"),
    temperature: list[float] = TEMPERATURE_OPTION,
    restart: bool = RESTART_OPTION,
    profiles: Path = PROFILES_OPTION,
    cache_dir: Path = CACHE_DIR_OPTION,
) -> None:
    """Profile target verification latency for 1..K_max+1 positions, with its price."""
    from configspec.profiling.verification import (
        VerificationProfiler,
        VerifySweepSettings,
        default_batch_sizes,
        parse_price,
    )

    price = parse_price(price_usd_per_hour, price_usd_per_million_tokens)
    settings = VerifySweepSettings(
        k_max=k_max,
        context_tokens=tuple(context),
        batch_sizes=tuple(batch) or default_batch_sizes(target, verifier),
        min_repeats=min_repeats,
        max_repeats=max_repeats,
        rel_half_width=ci,
        point_budget_s=point_budget_s,
        threads=threads,
        temperatures=tuple(temperature),
    )
    profiler = VerificationProfiler(
        target,
        ProfileStore(profiles),
        price=price,
        settings=settings,
        tokenizer=tokenizer,
        cache_dir=cache_dir,
        hardware=hardware,
        target_name=target_name,
        restart=restart,
        verifier_url=verifier,
        api_key=os.environ.get("CONFIGSPEC_API_KEY"),
    )
    with progress_events() as on_event:
        profile, path, report = profiler.run(on_event)
    table = _latency_table(profile, settings)
    console.print(table)
    if len(settings.batch_sizes) > 1:
        console.print(
            _concurrency_table(
                report, settings.context_tokens[0], k_max, server_path=profiler.server_path
            )
        )
    n_ok = report.converged_points
    worst = report.worst_rel_half_width
    console.print(
        f"{n_ok}/{len(report.points)} points within ±{ci:.0%} (95% CI), worst ±{worst:.1%}; "
        f"{report.resumed_points} resumed; price {profile.price.model_dump_json()}; "
        f"{report.wall_time_s:.0f} s wall. Saved {path}",
        highlight=False,
    )
