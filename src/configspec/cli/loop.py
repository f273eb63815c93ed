"""``configspec validate``, ``configspec report`` and ``configspec quickstart`` (thin)."""

from __future__ import annotations

import dataclasses
import os
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich import box
from rich.console import Console, RenderableType
from rich.table import Table

from configspec.cli._console import console, err_console, make_progress, rich_progress

if TYPE_CHECKING:
    from configspec.loop.prediction import RunPrediction
    from configspec.loop.quickstart import QuickstartResult
    from configspec.loop.validate import ValidationResult

PROFILES = typer.Option(Path("profiles"), "--profiles", help="Profile directory.")


PROMPTS_OPTION = typer.Option(
    None,
    "--prompts",
    help="JSONL prompts the runs decode (as `profile alignment --prompts` takes them); "
    "default: the bundled set. Use prompts alignment never saw to test held-out accuracy.",
)
LINK_OPTION = typer.Option(
    "auto",
    "--link",
    help="How runs inject the RTT: auto (kernel netem where available, else the TCP delay "
    "proxy), netem, proxy.",
)


NARROW_COLUMNS = 120
"""Below this width the validation table uses a layout that reads at 80 columns."""


def _width() -> int:
    """The width tables are laid out for: the terminal's, COLUMNS when piped, else 140."""
    return console.width if console.is_terminal or "COLUMNS" in os.environ else 140


def _print_wide(renderable: RenderableType) -> None:
    """Tables stay readable when piped: 140 columns unless a terminal (or COLUMNS) says
    otherwise."""
    if console.is_terminal or "COLUMNS" in os.environ:
        console.print(renderable)
    else:
        Console(file=console.file, width=140, color_system=None).print(renderable)


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x:+.1%}"


def _num(x: float | None, digits: int = 3) -> str:
    return "—" if x is None else f"{x:.{digits}g}"


def _interval(prediction: RunPrediction | None, sep: str, level: str = "90%") -> str:
    """``[low, high] in/out`` of a run's goodput prediction interval (— without one)."""
    if prediction is None or level not in prediction.goodput_tok_s:
        return "—"
    lo, hi = prediction.goodput_tok_s[level]
    flag = "in" if prediction.goodput_inside[level] else "OUT"
    return f"[{_num(lo)}, {_num(hi)}]{sep}{flag}"


_RULE_TEXT = {
    "off": "off: raw profiles; probes measured, not applied",
    "gated": "gated: the probe around the run / baseline probe, only when its 95% CI excludes 1",
    "before": "before: the probe right before the run / baseline probe",
    "running": "running: mean of every probe ratio up to the run's start",
    "runs": "runs: measured / profiled latencies of the runs that ended before this one; "
    "the first run raw",
    "bracketed": "bracketed: mean of the probes before and after the run, a check, not a "
    "prediction",
}
"""How the validation table names each :data:`configspec.loop.contention.ContentionRule`."""


def render_validation(result: ValidationResult) -> None:
    """Print the predicted-vs-measured table and the error summary."""
    narrow = _width() < NARROW_COLUMNS
    title = "validation: predicted (modelled from profiles) vs measured (real runtime)"
    if narrow:  # reads at 80 columns: two-line cells, no vertical rules
        table = Table(
            title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
            collapse_padding=True,
        )  # fmt: skip
    else:
        table = Table(title=title, title_justify="left")
    sep = "\n" if narrow else " "
    width = max((len(r.drafter) for r in result.rows), default=13)
    table.add_column("configuration", no_wrap=not narrow, min_width=min(width, 24))
    table.add_column("E(K)\nmeas/mod" if narrow else "E(K) meas/model", justify="right")
    table.add_column("goodput\ntok/s [CI]" if narrow else "goodput measured tok/s", justify="right")
    table.add_column("model-\nled" if narrow else "modelled", justify="right")
    table.add_column("modelled\n90% PI" if narrow else "modelled 90% PI (in?)", justify="right")
    table.add_column("error", justify="right")
    table.add_column("timing", justify="right")
    table.add_column("tok/\nUSD" if narrow else "tok/USD", justify="right")
    for r in result.rows:
        g = r.objectives["goodput"]
        table.add_row(
            f"{r.drafter}{sep}K={r.k} +{r.added_rtt_ms:g}ms",
            f"{_num(r.tokens_per_round.measured)}/{_num(r.tokens_per_round.predicted)}",
            f"{_num(g.measured)}{sep}[{_num(g.measured_low)}, {_num(g.measured_high)}]",
            _num(g.predicted),
            _interval(r.prediction, sep),
            _pct(g.error),
            _pct(r.objectives["goodput_timing"].error),
            _pct(r.objectives["cost"].error),
        )
    _print_wide(table)
    for name, s in result.summary.items():
        if s.n == 0:
            continue
        inside = ", ".join(
            f"{level}: {n_in}/{n}" for level, (n_in, n) in s.inside_prediction.items()
        )
        inside = f"measured inside the modelled prediction interval ({inside})" if inside else ""
        console.print(
            f"  {name}: median |error| {_pct(s.median_abs_error).lstrip('+')}, max "
            f"{_pct(s.max_abs_error).lstrip('+')}, mean {_pct(s.mean_error)} over {s.n} runs; "
            f"modelled range overlaps the measured 95% CI in {s.within_ci}/{s.n}"
            + (f"; {inside}" if inside else ""),
            highlight=False,
        )
    probed = [r for r in result.rows if r.contention is not None]
    if probed:
        applied = [
            f"{r.drafter} K={r.k} +{r.added_rtt_ms:g}ms: draft ×{r.contention.draft.applied:.2f}, "
            f"verify ×{r.contention.verify.applied:.2f}"
            for r in probed
            if r.contention is not None and r.contention.ratios != (1.0, 1.0)
        ]
        console.print(
            f"  host level ({_RULE_TEXT.get(result.contention_rule, result.contention_rule)}; "
            f"--contention-rule): applied in {len(applied)}/{len(probed)} runs"
            + ("; " + "; ".join(applied) if applied else ""),
            highlight=False,
        )
    console.print(
        f"  runtime overhead per round {result.round_overhead_ms:.2f} ms (measured, K=0 rounds); "
        "errors are modelled/measured - 1; timing = modelled round time with the run's "
        "measured E(K); tok/USD = measured verification time x price; tok/J is compared only "
        "for runs with a power meter; 90% PI = modelled goodput's prediction interval for a "
        "run of that many prompts (between-prompt variance of acceptance, cluster bootstrap "
        "over the profiled prompts; not the timing model's error), in = the measured "
        "goodput fell inside, — = the alignment profile has no per-prompt records",
        highlight=False,
    )
    for w in result.warnings:
        err_console.print(f"[yellow]warning:[/] {w}", highlight=False)


class _AcceptanceDomain(str, Enum):
    """``validate --acceptance-domain``: see :func:`configspec.loop.validate.validate`."""

    RUN = "run"
    ALL = "all"


class _ContentionRule(str, Enum):
    """``validate --contention-rule``: :data:`configspec.loop.contention.ContentionRule`."""

    OFF = "off"
    GATED = "gated"
    BEFORE = "before"
    RUNNING = "running"
    RUNS = "runs"
    BRACKETED = "bracketed"


def validate_command(
    profiles: Path = PROFILES,
    configs: list[str] = typer.Option(
        [], "--configs", "-c", help="DRAFTER[:K][@RTT_MS]; repeatable (default: every run)."
    ),
    run: bool = typer.Option(
        False, "--run", help="Run --configs through the local runtime first (needs :K)."
    ),
    target: str = typer.Option("gemma-3-270m-f32", "--target", help="Target for --run."),
    rtt_ms: list[float] = typer.Option(
        [], "--rtt-ms", help="Added RTT for --run configs without @RTT (repeatable; default 0)."
    ),
    max_tokens: int = typer.Option(32, "--max-tokens", min=2, help="Tokens per prompt (--run)."),
    prompts_per_domain: int = typer.Option(1, "--prompts-per-domain", min=1),
    prompts: Path = PROMPTS_OPTION,
    temperature: float = typer.Option(
        0.0, "--temperature", "-T", min=0.0, help="Sampling temperature of --run (0 = greedy)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of sampled --run (prompt i: seed + i)."),
    threads: int = typer.Option(1, "--threads", min=1, help="llama.cpp threads (--run)."),
    device: str = typer.Option(None, "--device", help="Device name recorded in runs (--run)."),
    preset: str = typer.Option("configspec", "--model", help="Model preset."),
    acceptance_domain: _AcceptanceDomain = typer.Option(
        "all",
        "--acceptance-domain",
        help="all: the pooled acceptance; run: a one-domain run is modelled with its "
        "domain's acceptance when alignment profiled that domain.",
    ),
    fold_contention: bool = typer.Option(
        False,
        "--fold-contention/--no-fold-contention",
        help="Scale the profiled latencies by each run's contention probe over the baseline "
        "probe when the ratio is distinguishable from 1 (= --contention-rule gated).",
    ),
    contention_rule: _ContentionRule = typer.Option(
        None,
        "--contention-rule",
        help="How the host's level is folded into each run's prediction (overrides "
        "--fold-contention): runs (default: the earlier runs' measured / profiled "
        "latencies), off (raw profiles), gated (= --fold-contention), before (the probe "
        "before the run, always), running (every probe up to the run's start), bracketed "
        "(mean of before and after: a check, not a prediction).",
    ),
    json_out: Path = typer.Option(None, "--json", help="Also write the result as JSON here."),
    cache_dir: Path = typer.Option(None, "--cache-dir", help="Model cache directory."),
    link: str = LINK_OPTION,
) -> None:
    """Predicted (model on the stored profiles) versus measured (run records), per objective."""
    from configspec.loop.runs import plans_from_filters, run_configs
    from configspec.loop.runtime import RuntimeSettings
    from configspec.loop.validate import parse_config, validate
    from configspec.profiling.prompts import bundled_prompts, load_prompts, select_prompts
    from configspec.store import ProfileStore, atomic_write_json

    filters = [parse_config(c) for c in configs]
    store = ProfileStore(profiles)
    records = None
    overheads: dict[float, float] = {}
    if run:
        plans = [
            dataclasses.replace(p, temperature=temperature, seed=seed if temperature else None)
            for p in plans_from_filters(filters, rtt_ms or [0.0])
        ]
        devices = store.device_profiles()
        run_prompts = load_prompts(prompts) if prompts is not None else bundled_prompts()
        settings = RuntimeSettings(
            target=target,
            prompts=tuple(select_prompts(run_prompts, prompts_per_domain)),
            max_tokens=max_tokens,
            threads=threads,
            device=device or (devices[0].device.name if len(devices) == 1 else None),
            cache_dir=cache_dir,
            link=link,
        )
        with make_progress() as bar:
            records, overheads = run_configs(store, plans, settings, rich_progress(bar))
    result = validate(
        store,
        filters if records is None else (),
        preset,
        runs=records,
        overhead_ms_by_rtt=overheads,
        acceptance_domain="run" if acceptance_domain is _AcceptanceDomain.RUN else "all",
        fold_contention=fold_contention,
        contention_rule=None if contention_rule is None else contention_rule.value,
    )
    render_validation(result)
    if json_out is not None:
        atomic_write_json(json_out, result.to_json())
        err_console.print(f"wrote {json_out}", highlight=False)


def report_command(
    profiles: Path = PROFILES,
    out: Path = typer.Option(Path("report"), "--out", help="Directory for report.html + PNGs."),
    rtt_ms: float = typer.Option(None, "--rtt-ms", help="RTT for the modelled curves (ms)."),
) -> None:
    """Write a self-contained HTML report with PNG plots from a profile directory."""
    from configspec.report.build import write_report
    from configspec.store import ProfileStore

    with make_progress() as bar:
        path = write_report(ProfileStore(profiles), out, rtt_ms=rtt_ms, progress=rich_progress(bar))
    console.print(f"report: {path} (open it in a browser)", highlight=False)


def quickstart_command(
    out: Path = typer.Option(Path("configspec-quickstart"), "--out", help="Output directory."),
    rtt_ms: float = typer.Option(30.0, "--rtt-ms", help="RTT injected for the runs (ms)."),
    k_max: int = typer.Option(8, "--k-max", help="Largest K profiled and searched."),
    context: list[int] = typer.Option(
        [64, 192], "--context", help="Context lengths profiled (tokens); repeatable."
    ),
    max_tokens: int = typer.Option(32, "--max-tokens", help="Tokens per prompt."),
    prompts_per_domain: int = typer.Option(1, "--prompts-per-domain", min=1),
    prompts: Path = PROMPTS_OPTION,
    validate_k: list[int] = typer.Option([2, 6], "--validate-k", help="K run per drafter."),
    drafter: list[str] = typer.Option(
        ["gemma-3-270m-q4_0", "gemma-3-270m-q8_0", "ngram"], "--drafter", "-d"
    ),
    threads: int = typer.Option(1, "--threads", min=1, help="llama.cpp threads."),
    price_usd_per_hour: float = typer.Option(
        None, "--price-usd-per-hour", help="Price of the target's verification time."
    ),
    cache_dir: Path = typer.Option(None, "--cache-dir", help="Model cache directory."),
    link: str = LINK_OPTION,
) -> None:
    """Prepare models, profile this machine, select, run and validate, write the report."""
    from configspec.loop.quickstart import QuickstartSettings, run_quickstart
    from configspec.profiling.prompts import load_prompts, select_prompts

    settings = QuickstartSettings(
        out=out,
        rtt_ms=rtt_ms,
        drafters=tuple(drafter),
        k_max=k_max,
        contexts=tuple(context),
        max_tokens=max_tokens,
        prompts_per_domain=prompts_per_domain,
        validate_ks=tuple(validate_k),
        threads=threads,
        price_usd_per_hour=price_usd_per_hour,
        cache_dir=cache_dir,
        link=link,
        run_prompts=tuple(select_prompts(load_prompts(prompts), prompts_per_domain))
        if prompts is not None
        else (),
    )
    with make_progress() as bar:
        on_event = rich_progress(bar)
        result = run_quickstart(
            settings, on_event, on_step=lambda s: bar.console.print(f"[bold]» {s}[/]")
        )
    _render_optima(result)
    render_validation(result.validation)
    steps = ", ".join(f"{k} {v:.0f} s" for k, v in result.step_s.items())
    console.print(f"time: {steps}", highlight=False)
    if result.report_path is not None:
        console.print(f"report: {result.report_path}", highlight=False)
    summary = out / "quickstart.json"
    from configspec.store import atomic_write_json

    atomic_write_json(summary, {"validation": result.validation.to_json(), "step_s": result.step_s})


def _render_optima(result: QuickstartResult) -> None:
    from configspec import records as R

    sel = result.selection
    t = sel.table
    table = Table(
        title=f"optima at RTT {sel.link.rtt_ms:g} ms (modelled from the profiles just measured)",
        title_justify="left",
    )
    from configspec.search import largest_k_searched
    from configspec.search.export import energy_provenance

    power = {str(x) for x in t[R.POWER_SOURCE].unique()} - {"none"}
    table.add_column("objective", no_wrap=True)
    table.add_column("configuration", no_wrap=True)
    energy_head = "tokens/J estimated" if power == {"estimated"} else "tokens/J"
    for col in ("goodput tok/s", "tokens/USD", energy_head):
        table.add_column(col, justify="right")
    edge = largest_k_searched(t)
    edge_ks: set[int] = set()

    def add(name: str, row: int) -> None:
        r = t.iloc[row]
        what = str(r[R.DRAFTER]) if r[R.MODE] == R.MODE_SPECULATIVE else str(r[R.MODE])
        energy = f"{r[R.TOKENS_PER_J]:.3g}"
        if str(r[R.POWER_SOURCE]) == "estimated" and power != {"estimated"}:
            energy += " estimated"
        if edge[row]:
            edge_ks.add(int(r[R.K]))
        table.add_row(
            name,
            f"{what} K={int(r[R.K])}" + ("†" if edge[row] else ""),
            f"{r[R.GOODPUT_TOK_S]:.2f} "
            f"({r[R.GOODPUT_TOK_S_LOW]:.2f}..{r[R.GOODPUT_TOK_S_HIGH]:.2f})",
            f"{r[R.TOKENS_PER_USD]:.3g}",
            energy,
        )

    for name in ("goodput", "cost", "energy"):
        row = sel.best.get(name)
        if row is None:
            table.add_row(f"best {name}", "no data", "", "", "")
        else:
            add(f"best {name}", row)
    for row in sel.pareto[:8]:
        add("pareto", int(row))
    _print_wide(table)
    energy_note = "; ".join(f"{src}: {energy_provenance(src)}" for src in sorted(power))
    console.print(
        f"cost: {result.price_note}; energy: {energy_note or 'no power data'}; RTT: injected "
        f"by {result.link or 'the link'}",
        highlight=False,
    )
    if edge_ks:
        ks = "/".join(f"K={k}" for k in sorted(edge_ks))
        console.print(
            f"†: {ks} is the largest K searched for that drafter; a larger K might be better "
            "(raise --k-max)",
            highlight=False,
        )
