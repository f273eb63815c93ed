"""``configspec plan``: configurations and verifier replicas for a fleet of edge devices.

Thin: read the fleet file and the profiles, call :func:`configspec.plan.plan_fleet`,
render with rich (or JSON), write the trade-off plot.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from configspec.cli._console import console, err_console
from configspec.plan import FleetPlan, load_fleet, plan_fleet, plan_record
from configspec.plan.plot import save_tradeoff
from configspec.search.space import read_profiles
from configspec.store import ProfileStore, atomic_write_text


def _n(x: float, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x:,.{digits}g}" if abs(x) < 1e4 else f"{x:,.0f}"


def _plan_table(plan: FleetPlan) -> Table:
    i = plan.main
    c_ = plan.candidates
    t = Table(
        title=f"fleet plan: {plan.replicas[i]} × {plan.spec.verifier.target} verifier replicas "
        f"(max batch {plan.max_batch})",
        title_justify="left",
        header_style="bold",
        caption=escape(
            "modelled (closed-loop MVA on the profiles); ITL = stall between bursts of tokens "
            "(the round time); p95 from the queueing-delay tail, capped by the FIFO worst case"
        ),
        caption_justify="left",
    )
    t.add_column("class")
    t.add_column("devices", justify="right")
    t.add_column("RTT\nms", justify="right")
    t.add_column("configuration", overflow="fold")
    t.add_column("goodput tok/s\nper device (SLO)", justify="right")
    t.add_column("p95 ITL ms\n(SLO)", justify="right")
    t.add_column("batch", justify="right")
    pools = plan.pool_replicas
    if pools is not None:
        t.add_column("replicas\n(own pool)", justify="right")
    for c, name in enumerate(c_.class_names):
        spec = plan.spec.classes[c]
        limit = "—" if spec.max_p95_itl_ms is None else _n(spec.max_p95_itl_ms)
        t.add_row(
            name,
            f"{spec.count:,}",
            _n(spec.rtt_ms),
            c_.label(c, int(plan.choice[i, c])),
            f"{_n(float(plan.goodput_tok_s[i, c]))} (≥ {_n(spec.min_goodput_tok_s)})",
            f"{_n(float(plan.p95_itl_ms[i, c]))} (≤ {limit})",
            _n(float(plan.batch[i, c])),
            *([] if pools is None else [str(int(pools[i, c]))]),
        )
    return t


def _tradeoff_table(plan: FleetPlan) -> Table:
    t = Table(
        title="cost against the SLO level (× every min goodput, ÷ every max p95)",
        title_justify="left",
        header_style="bold",
    )
    for col in ("SLO\nlevel", "replicas", "utili-\nsation", "fleet\ntok/s", "USD/\n1M tok",
                "USD/1M tok\nbusy share"):  # fmt: skip
        t.add_column(col, justify="right")
    for i, s in enumerate(plan.scales):
        level = f"{s:g}×" + (" *" if i == plan.main else "")
        if not plan.feasible[i]:
            t.add_row(level, "infeasible", "", "", "", "")
            continue
        t.add_row(
            level,
            str(int(plan.replicas[i])),
            f"{plan.utilisation[i]:.0%}",
            _n(float(plan.fleet_goodput_tok_s[i]), 4),
            _n(float(plan.cost_usd_per_mtok[i])),
            _n(float(plan.shared_cost_usd_per_mtok[i])),
        )
    return t


def _tradeoff_configs(plan: FleetPlan) -> list[str]:
    lines = []
    for i, s in enumerate(plan.scales):
        if plan.feasible[i]:
            configs = ", ".join(
                f"{name} {plan.candidates.label(c, int(plan.choice[i, c]))}"
                for c, name in enumerate(plan.candidates.class_names)
            )
            lines.append(f"  {s:g}×: {configs}")
    return lines


def plan_command(
    fleet: Path = typer.Option(
        ..., "--fleet", "-f", help="Fleet file (YAML), e.g. examples/fleet.yaml."
    ),
    profiles: Path = typer.Option(..., "--profiles", "-p", help="Profile directory."),
    json_out: Path | None = typer.Option(
        None, "--json", help="Write the plan as JSON here ('-' = stdout instead of the table)."
    ),
    plot: Path | None = typer.Option(
        None, "--plot", help="Write the cost-versus-SLO plot (PNG) here."
    ),
) -> None:
    """Plan a fleet: per device class (drafter, quantisation, K), verifier replicas, cost
    per 1M tokens and the cost-versus-SLO trade-off, from the profiles."""
    spec = load_fleet(fleet)
    store = ProfileStore(profiles)
    plan = plan_fleet(spec, read_profiles(store))
    record = plan_record(plan)
    text = json.dumps(record, indent=2) + "\n"
    if json_out is not None and str(json_out) == "-":
        typer.echo(text, nl=False)
    else:
        if json_out is not None:
            atomic_write_text(json_out, text)
        i = plan.main
        sources = "; ".join(
            f"{k}: {'/'.join(sorted(v))}" for k, v in plan.candidates.sources.items() if v
        )
        console.print(
            f"[bold]ConfigSpec plan[/] — {len(spec.classes)} classes, "
            f"{plan.candidates.n_candidates} candidate configurations; inputs — {sources}",
            highlight=False,
        )
        if any("illustrative" in v for v in plan.candidates.sources.values()):
            console.print(
                "[bold yellow]Illustrative profiles:[/] example data, not measurements; every "
                "figure below is modelled from them.",
                highlight=False,
            )
        console.print(_plan_table(plan))
        console.print(
            f"  {plan.replicas[i]} replicas at {spec.verifier.price_usd_per_hour:g} USD/h: "
            f"{_n(float(plan.cost_usd_per_mtok[i]))} USD per 1M tokens "
            f"({_n(float(plan.shared_cost_usd_per_mtok[i]))} for the busy GPU time alone; "
            f"utilisation {plan.utilisation[i]:.0%}); fleet goodput "
            f"{_n(float(plan.fleet_goodput_tok_s[i]), 4)} tok/s",
            highlight=False,
        )
        console.print(_tradeoff_table(plan))
        console.print("  * = the SLOs as written. Configurations per level:", highlight=False)
        for line in _tradeoff_configs(plan):
            console.print(escape(line), highlight=False)
    for w in plan.warnings:
        err_console.print(f"[yellow]warning:[/] {escape(w)}", highlight=False)
    if plot is not None:
        save_tradeoff(plan, str(plot))
        if json_out is None or str(json_out) != "-":
            console.print(f"plot: {plot}", highlight=False)
