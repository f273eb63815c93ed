"""``configspec select``: pick the best configuration from a profile directory.

Thin: parse options, call :func:`configspec.search.select`, render with rich (or JSON/CSV).
"""

from __future__ import annotations

import functools
import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from configspec import records as R
from configspec.cli._console import console, err_console, make_progress, rich_progress
from configspec.deploy import ENGINES, Deployment, emit
from configspec.deploy.fingerprint import fingerprint_warnings, installed_fingerprint
from configspec.errors import InvalidInput
from configspec.model.presets import PRESETS, get_preset
from configspec.search import (
    OBJECTIVES,
    Crossover,
    PairBest,
    SearchSettings,
    Selection,
    config_label,
    largest_k_searched,
    parse_constraints,
    pick,
)
from configspec.search.breakeven import Breakeven
from configspec.search.export import energy_provenance, selection_csv, selection_record
from configspec.search.policy import ReportPolicy, SelectionExtras, extras, wants_sensitivity
from configspec.search.space import read_profiles, space_from_profiles
from configspec.store import ProfileStore, atomic_write_text

FORMATS = ("table", "json", "csv")
OBJECTIVE_UNITS = {"goodput": "tok/s", "cost": "tok/USD", "energy": "tok/J"}


def _num(x: float, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if math.isinf(x):
        return "∞"
    if abs(x) >= 1e5:
        return f"{x:.3g}"
    return f"{x:.{digits}g}" if abs(x) < 10 else f"{x:,.{max(digits - 2, 0)}f}"


def _bounded(row: pd.Series, col: str, lo: str, hi: str) -> str:
    mean, low, high = row[col], row[lo], row[hi]
    if (isinstance(mean, float) and (math.isnan(mean) or math.isinf(mean))) or low == high:
        return _num(mean)
    return f"{_num(mean)} [{_num(low)}–{_num(high)}]"


def _sources(sel: Selection) -> str:
    parts = [f"{kind}: {'/'.join(sorted(src))}" for kind, src in sel.space.sources.items() if src]
    return "; ".join(parts)


def _estimated(row: pd.Series) -> str:
    """ " estimated" after an energy figure from estimated device power, else nothing."""
    return " estimated" if str(row[R.POWER_SOURCE]) == "estimated" else ""


_SOURCE_SHORT = {"by_k": "by K", "per_position": "pos", "alpha": "α", "none": "—"}


NARROW_COLUMNS = 120
"""Below this width the configuration table uses a layout that reads at 80 columns."""


def _config_table(sel: Selection, rows: list[int], title: str, narrow: bool = False) -> Table:
    """Ranked configurations; the CI bounds are shown for the objective's own column
    (goodput for ``pareto``) to keep the table readable; JSON/CSV carry all bounds.

    ``narrow``: one configuration column (drafter on device → target, K) and the bounds
    under each value, without tok/round and E(K) source, so it reads at 80 columns."""
    t = sel.table
    focus = sel.objective if sel.objective in R.OBJECTIVE_COLUMNS else "goodput"
    shown = {str(t.iloc[i][R.POWER_SOURCE]) for i in rows} - {"none"}
    all_estimated = shown == {"estimated"}
    edge = largest_k_searched(t)
    table = Table(
        title=title,
        title_justify="left",
        header_style="bold",
        caption=_caption("estimated" in shown, bool(edge[rows].any()), narrow),
        caption_justify="left",
    )
    energy_head = "tok/J\nestimated" if all_estimated else "tok/J"
    if narrow:
        _narrow_columns(table, focus, energy_head)
    else:
        _wide_columns(table, t, rows, focus, energy_head)
    for rank, i in enumerate(rows, 1):
        r = t.iloc[i]
        mode = r[R.MODE]
        drafter = "—" if pd.isna(r[R.DRAFTER]) else str(r[R.DRAFTER])
        target = "—" if pd.isna(r[R.TARGET]) else str(r[R.TARGET])
        if mode == R.MODE_CLOUD_ONLY:
            drafter = "[italic]none: cloud-only[/]"
        elif mode == R.MODE_EDGE_ONLY:
            target = "[italic]none: edge-only[/]"
        device = str(r[R.DEVICE]) + (" (emulated)" if r[R.DEVICE_EMULATED] else "")
        k = str(int(r[R.K])) + ("†" if edge[i] else "")
        figures = _figures(r, focus, all_estimated)
        if narrow:  # bounds on their own line under each value
            figures = [f.replace(" [", "\n[") for f in figures]
            table.add_row(str(rank), f"{drafter} on {device}\n→ {target}, K={k}", *figures)
            continue
        table.add_row(
            str(rank),
            device,
            drafter,
            target,
            k,
            _num(r[R.TOKENS_PER_ROUND]),
            "—" if mode != R.MODE_SPECULATIVE else _SOURCE_SHORT[str(r[R.ACCEPTANCE_SOURCE])],
            *figures,
        )
    return table


def _caption(any_estimated: bool, k_at_edge: bool, narrow: bool) -> str:
    """The ranked table's caption: what the figures are, plus notes that apply."""
    return escape(
        "All figures modelled from the profiles; [low–high] = bounds propagated from the "
        "profiles' confidence intervals. E(K) src: acceptance data used (by K = measured per "
        "K, pos = per-position, α = single rate). Speedup: vs cloud-only decoding."
        + (" tok/J estimated: " + energy_provenance("estimated") + "." if any_estimated else "")
        + (
            " K†: the largest K searched for that drafter; a larger K might be better."
            if k_at_edge
            else ""
        )
        + (
            " Narrow layout: tok/round and E(K) source left out (wider terminal or "
            "--format json for all columns)."
            if narrow
            else ""
        )
    )


def _narrow_columns(table: Table, focus: str, energy_head: str) -> None:
    ci = " [CI]"
    table.add_column("#", justify="right")
    table.add_column("configuration", overflow="fold", ratio=1)
    table.add_column(f"goodput\ntok/s{ci if focus == 'goodput' else ''}", justify="right")
    table.add_column(f"USD/\n1M tok{ci if focus == 'cost' else ''}", justify="right")
    table.add_column(f"{energy_head}{ci if focus == 'energy' else ''}", justify="right")
    table.add_column("speed-\nup", justify="right")


def _figures(r: pd.Series, focus: str, all_estimated: bool) -> list[str]:
    """Goodput, USD/1M tok, tok/J and speedup of one row (escaped), bounds on ``focus``."""
    goodput = (
        _bounded(r, R.GOODPUT_TOK_S, R.GOODPUT_TOK_S_LOW, R.GOODPUT_TOK_S_HIGH)
        if focus == "goodput"
        else _num(r[R.GOODPUT_TOK_S])
    )
    cost = _num(r[R.COST_USD_PER_MTOK])
    if focus == "cost":  # bounds of USD/1M tok are the inverse of tokens/USD's
        lo, hi = r[R.TOKENS_PER_USD_HIGH], r[R.TOKENS_PER_USD_LOW]
        if lo != hi and np.isfinite(lo) and np.isfinite(hi) and lo > 0 and hi > 0:
            cost += f" [{_num(1e6 / lo)}–{_num(1e6 / hi)}]"
    energy = (
        _bounded(r, R.TOKENS_PER_J, R.TOKENS_PER_J_LOW, R.TOKENS_PER_J_HIGH)
        if focus == "energy"
        else _num(r[R.TOKENS_PER_J])
    )
    if str(r[R.ENERGY_NOTE]) == "no power data":
        energy = "no power data"
    else:
        if str(r[R.ENERGY_NOTE]) != "full":
            energy += " *"
        if not all_estimated and str(r[R.POWER_SOURCE]) == "estimated":
            energy += " estimated"
    speedup = r[R.SPEEDUP_VS_CLOUD_AR]
    return [
        escape(goodput),
        escape(cost),
        escape(energy),
        "—" if pd.isna(speedup) else f"{_num(speedup)}×",
    ]


def _wide_columns(
    table: Table, t: pd.DataFrame, rows: list[int], focus: str, energy_head: str
) -> None:
    """The wide layout's columns: device, drafter, target, K, tok/round, E(K) source."""
    ci = " [CI]"
    table.add_column("#", justify="right")
    table.add_column("device", overflow="fold")
    names = [str(t.iloc[i][R.DRAFTER]) for i in rows if not pd.isna(t.iloc[i][R.DRAFTER])]
    table.add_column("drafter", overflow="fold", min_width=max(map(len, names), default=7))
    table.add_column("target", overflow="fold")
    table.add_column("K", justify="right")
    table.add_column("tok/\nround", justify="right")
    table.add_column("E(K)\nsrc")
    table.add_column(f"goodput\ntok/s{ci if focus == 'goodput' else ''}", justify="right")
    table.add_column(f"USD/\n1M tok{ci if focus == 'cost' else ''}", justify="right")
    table.add_column(f"{energy_head}{ci if focus == 'energy' else ''}", justify="right")
    table.add_column("speed-\nup", justify="right")


def _top_rows(sel: Selection, n: int) -> list[int]:
    if sel.objective == "pareto":
        return [int(i) for i in sel.pareto[:n]]
    col = R.OBJECTIVE_COLUMNS[sel.objective]
    idx = np.flatnonzero(sel.feasible)
    vals = np.nan_to_num(sel.table[col].to_numpy()[idx], nan=-np.inf)
    return [int(i) for i in idx[np.argsort(-vals, kind="stable")][:n]]


def _render(sel: Selection, out: Console, top: int, crossings: list[Crossover]) -> None:
    t = sel.table
    say = functools.partial(out.print, highlight=False)
    illustrative_kinds = {
        kind
        for kind, s in sel.space.sources.items()
        if "illustrative" in s and (kind != "network" or sel.preset.include_network)
    }
    illustrative = bool(illustrative_kinds - {"network"})
    link = (
        f"RTT {_num(float(np.asarray(sel.link.rtt_ms)))} ms (network: {sel.network.source})"
        if sel.preset.include_network
        else f"no network term (model {sel.preset.name!r})"
    )
    say(
        f"[bold]ConfigSpec select[/] — objective [cyan]{sel.objective}[/], model "
        f"[cyan]{sel.preset.name}[/] ({sel.preset.description})"
    )
    say(
        f"{len(t):,} configurations, {int(sel.feasible.sum()):,} feasible; {link}; "
        f"inputs — {_sources(sel)}"
    )
    if illustrative:
        say(
            "[bold yellow]Illustrative profiles:[/] these inputs are example data, not "
            "measurements; every figure below is modelled from them."
        )
    elif illustrative_kinds:
        say(
            "[yellow]Network:[/] illustrative settings (no measured network.json); pass "
            "--rtt-ms or write network.json with your link's figures."
        )
    chosen = sel.chosen
    r = t.iloc[chosen]
    say()
    say(f"[bold green]Chosen ({sel.objective}):[/] {config_label(t, chosen)}")
    say(
        f"  goodput {_bounded(r, R.GOODPUT_TOK_S, R.GOODPUT_TOK_S_LOW, R.GOODPUT_TOK_S_HIGH)} "
        f"tok/s · {_num(r[R.COST_USD_PER_MTOK])} USD/1M tok · "
        f"{_num(r[R.ENERGY_J_PER_TOKEN])} J/tok{_estimated(r)} ({r[R.ENERGY_NOTE]}) · "
        f"{_num(r[R.SPEEDUP_VS_CLOUD_AR])}× vs cloud-only, "
        f"{_num(r[R.SPEEDUP_VS_EDGE_ONLY])}× vs edge-only (modelled)"
    )
    if r[R.MODE] != R.MODE_SPECULATIVE:
        say(
            "  [bold]No speculation wins here:[/] no drafter beats plain decoding for this "
            "objective under these profiles."
        )
    elif largest_k_searched(t)[chosen]:
        say(
            f"  [yellow]K={int(r[R.K])} is the largest K searched[/] for this drafter: a larger "
            "K might be better (raise --k-max; profile longer drafts if the profiles stop here)."
        )
    say()
    title = (
        "Pareto front (goodput, tokens/USD, tokens/J)"
        if sel.objective == "pareto"
        else f"Top {top} by {sel.objective} ({OBJECTIVE_UNITS[sel.objective]})"
    ) + " — every number column is modelled (not measured)"
    out.print(_config_table(sel, _top_rows(sel, top), title, out.width < NARROW_COLUMNS))
    best = Table(title="Best per objective", title_justify="left", header_style="bold")
    best.add_column("objective")
    best.add_column("configuration")
    best.add_column("value (modelled) [CI]", justify="right")
    for name, row in sel.best.items():
        if row is None:
            best.add_row(name, "no power data", "n/a")
            continue
        col = R.OBJECTIVE_COLUMNS[name]
        lo, hi = R.OBJECTIVE_BOUNDS[name]
        best.add_row(
            name,
            config_label(t, row),
            f"{_bounded(t.iloc[row], col, lo, hi)} {OBJECTIVE_UNITS[name]}"
            + (_estimated(t.iloc[row]) if name == "energy" else ""),
        )
    out.print(best)
    for parameter, what, unit, start in (
        ("rtt_ms", "the RTT grows", " ms", "0"),
        ("price_scale", "every cloud price is scaled (×0.1..×10)", "×", "0.1"),
    ):
        found = [c for c in crossings if c.parameter == parameter]
        if not found:
            continue
        sens = Table(
            title=f"Sensitivity: the {sel.objective} optimum as {what} (modelled)",
            title_justify="left",
            header_style="bold",
        )
        sens.add_column("from", justify="right")
        sens.add_column("optimum")
        sens.add_row(f"{start}{unit}", found[0].before)
        for c in found:
            sens.add_row(f"{_num(c.at)}{unit}", c.after)
        out.print(sens)
    if (t[R.ENERGY_NOTE].astype(str) == "drafting only (no idle power)").any():
        say("  * energy charges drafting only (the device profile has no idle power)")
    if (t[R.POWER_SOURCE].astype(str) == "estimated").any():
        say(f"  energy labelled estimated: {energy_provenance('estimated')}")


def _render_per_pair(sel: Selection, out: Console, pairs: list[PairBest]) -> None:
    if not pairs:
        return
    t = sel.table
    table = Table(
        title="Best per (target, device) (modelled)", title_justify="left", header_style="bold"
    )
    for col in ("target", "device", "objective", "drafter", "quant", "K"):
        table.add_column(col)
    for col in ("goodput tok/s", "tokens/USD", "J/token"):
        table.add_column(col, justify="right")
    for p in pairs:
        if p.row is None:
            why = "no power data" if p.objective == "energy" else "no feasible configuration"
            table.add_row(p.target, p.device, p.objective, f"[yellow]{why}[/]", "", "", "", "", "")
            continue
        r = t.iloc[p.row]
        energy = r[R.ENERGY_J_PER_TOKEN]
        table.add_row(
            p.target,
            p.device,
            p.objective,
            str(r[R.DRAFTER]),
            str(r[R.QUANTIZATION]),
            str(int(r[R.K])),
            _num(r[R.GOODPUT_TOK_S]),
            f"{r[R.TOKENS_PER_USD]:,.0f}",
            "no power data" if pd.isna(energy) else _num(energy) + _estimated(r),
        )
    out.print(table)


def _pair_record(sel: Selection, pairs: list[PairBest]) -> list[dict[str, object]]:
    t = sel.table
    out: list[dict[str, object]] = []
    for p in pairs:
        doc: dict[str, object] = {"target": p.target, "device": p.device, "objective": p.objective}
        if p.row is None:
            doc["note"] = (
                "no power data" if p.objective == "energy" else "no feasible configuration"
            )
        else:
            r = t.iloc[p.row]
            energy = r[R.ENERGY_J_PER_TOKEN]
            doc.update(
                drafter=str(r[R.DRAFTER]),
                quantization=str(r[R.QUANTIZATION]),
                k=int(r[R.K]),
                goodput_tok_s=float(r[R.GOODPUT_TOK_S]),
                tokens_per_usd=float(r[R.TOKENS_PER_USD]),
                energy_j_per_token=None if pd.isna(energy) else float(energy),
                energy_note="no power data" if pd.isna(energy) else str(r[R.ENERGY_NOTE]),
                power_source=str(r[R.POWER_SOURCE]),
            )
        out.append(doc)
    return out


def _render_breakeven(out: Console, report: list[Breakeven]) -> None:
    if not report:
        return
    table = Table(
        title=f"Breakeven for {report[0].configuration} (modelled)",
        title_justify="left",
        header_style="bold",
        caption=(
            f"α: single per-token acceptance rate; this drafter's profiled E(K) corresponds to "
            f"α ≈ {report[0].measured_acceptance:.3f}. Compared with cloud-only decoding of the "
            "same target from the same device."
        ),
        caption_justify="left",
    )
    table.add_column("objective")
    table.add_column("speculation pays when α >", justify="right")
    table.add_column("round-trip time")
    for b in report:
        alpha = "never (even α = 1)" if b.acceptance is None else f"{b.acceptance:.3f}"
        table.add_row(b.objective, alpha, b.rtt_note)
    out.print(table)


def _render_deployment(out: Console, dep: Deployment) -> None:
    out.print(f"[bold]Deploy with {dep.engine}[/] (flags: {dep.version})", highlight=False)
    for cmd in dep.shell().splitlines():
        out.print(f"  {cmd}", highlight=False, soft_wrap=True)
    for note in dep.notes:
        out.print(f"  note: {note}", highlight=False)


def _deployment(sel: Selection, engine: str, model_dir: str, server_url: str | None) -> Deployment:
    r = sel.table.iloc[sel.chosen]
    return emit(
        engine,
        str(r[R.MODE]),
        None if pd.isna(r[R.TARGET]) else str(r[R.TARGET]),
        None if pd.isna(r[R.DRAFTER]) else str(r[R.DRAFTER]),
        None
        if pd.isna(r[R.QUANTIZATION]) or not str(r[R.QUANTIZATION])
        else str(r[R.QUANTIZATION]),
        int(r[R.K]),
        model_dir=model_dir,
        server_url=server_url,
        rtt_ms=float(np.asarray(sel.link.rtt_ms)) if sel.preset.include_network else None,
    )


# The longer option declarations of `select`, declared once here.
_CONSTRAINT = typer.Option(
    [],
    "--constraint",
    "-c",
    help="KEY=VALUE: min_goodput_tok_s, max_cost_usd_per_mtok, max_energy_j_per_token.",
)
_SENSITIVITY = typer.Option(
    None,
    "--sensitivity/--no-sensitivity",
    help="Report RTT and price crossovers (default: on up to 200,000 configurations).",
)
_EMIT_ENGINE = typer.Option(
    None,
    "--emit",
    help="Print deploy commands: llama-server | llama-cpp-python | vllm | configspec.",
)
_SHOW_BREAKEVEN = typer.Option(
    True, "--breakeven/--no-breakeven", help="Breakeven acceptance and RTT per objective."
)
_PER_PAIR = typer.Option(
    None,
    "--per-pair/--no-per-pair",
    help="Optimum per objective for every (target, device) pair (default: on for 2 to 24 pairs).",
)
_DEPLOYED_FINGERPRINT = typer.Option(
    None,
    help="JSON fingerprint of the deployment (engine, engine_version, build_flags, "
    "threads, device, model_sha256); default: the installed llama-cpp-python.",
)
_ALLOW_EDGE_ONLY = typer.Option(
    False, help="Let edge-only decoding (the drafter's own text) be selected."
)
_MAX_PROFILE_AGE_DAYS = typer.Option(90.0, help="Warn about profiles older than this (days).")


def select_command(
    profiles: Path = typer.Option(..., "--profiles", "-p", help="Profile directory."),
    objective: str = typer.Option("goodput", help="goodput | cost | energy | pareto."),
    rtt_ms: float | None = typer.Option(None, "--rtt-ms", help="Override the network RTT (ms)."),
    constraint: list[str] = _CONSTRAINT,
    model: str = typer.Option("configspec", "--model", help="Model preset: configspec | paper."),
    fmt: str = typer.Option("table", "--format", help="table | json | csv."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write here (atomically)."),
    k_max: int | None = typer.Option(None, "--k-max", help="Largest K (default: preset's)."),
    context_tokens: int = typer.Option(512, help="Context length the latencies are read at."),
    domain: str = typer.Option("all", help="Alignment domain to read acceptance for."),
    temperature: float = typer.Option(0.0, help="Sampling temperature of the acceptance data."),
    device: list[str] = typer.Option([], "--device", help="Only these devices."),
    drafter: list[str] = typer.Option([], "--drafter", help="Only these drafters."),
    target: list[str] = typer.Option([], "--target", help="Only these targets."),
    top: int = typer.Option(10, help="Rows in the table / JSON top list."),
    allow_edge_only: bool = _ALLOW_EDGE_ONLY,
    sensitivity: bool | None = _SENSITIVITY,
    rows: str = typer.Option("feasible", help="CSV rows: feasible | all | pareto."),
    emit_engine: str | None = _EMIT_ENGINE,
    model_dir: str = typer.Option("models", help="Where --emit expects <model id>.gguf files."),
    server_url: str | None = typer.Option(None, help="Verifier URL for --emit configspec."),
    show_breakeven: bool = _SHOW_BREAKEVEN,
    per_pair: bool | None = _PER_PAIR,
    max_profile_age_days: float = _MAX_PROFILE_AGE_DAYS,
    deployed_fingerprint: Path | None = _DEPLOYED_FINGERPRINT,
) -> None:
    """Select the best drafter, quantisation, K and device for an objective."""
    _check_options(objective, fmt, model, rows, emit_engine, context_tokens, temperature, top)
    if not profiles.is_dir():
        raise InvalidInput(f"--profiles {profiles} is not a directory; pass a profile directory")
    preset = get_preset(model)
    settings = SearchSettings(
        k_max=k_max,
        context_tokens=context_tokens,
        domain=domain,
        temperature=temperature,
        devices=tuple(device),
        drafters=tuple(drafter),
        targets=tuple(target),
    )
    constraints = parse_constraints(constraint, allow_edge_only=allow_edge_only)
    deployed = _read_fingerprint(deployed_fingerprint)
    with err_console.status("reading profiles and evaluating the configuration space"):
        loaded = read_profiles(ProfileStore(profiles))
        space = space_from_profiles(loaded, preset, settings)
        sel = pick(space, loaded.network, objective, preset, constraints, rtt_ms)
    sel.warnings.extend(
        fingerprint_warnings(
            loaded.devices, loaded.alignments, loaded.verifications, deployed, max_profile_age_days
        )
    )
    deployment = None
    if emit_engine is not None:
        deployment = _deployment(sel, emit_engine, model_dir, server_url)
    policy = ReportPolicy(
        sensitivity=sensitivity,
        per_pair=per_pair,
        breakeven=show_breakeven,
        machine_rows=fmt == "csv",
    )
    if wants_sensitivity(policy, space, objective):  # the sweeps take a while: a bar
        with make_progress(transient=True) as bar:
            found = extras(sel, space, loaded.network, policy, rich_progress(bar))
    else:
        found = extras(sel, space, loaded.network, policy)
    if fmt == "json":
        text = _json_text(sel, top, found, deployment)
    elif fmt == "csv":
        text = selection_csv(sel, rows)
    else:
        text = _table_text(sel, top, found, deployment, to_file=output is not None)
    for w in sel.warnings:
        err_console.print(f"[yellow]note:[/] {w}", highlight=False, soft_wrap=True)
    if output is not None:
        atomic_write_text(output, text)
        err_console.print(f"wrote {output}")
    elif fmt != "table":
        typer.echo(text, nl=False)


def _check_options(
    objective: str,
    fmt: str,
    model: str,
    rows: str,
    emit_engine: str | None,
    context_tokens: int,
    temperature: float,
    top: int,
) -> None:
    """One line per bad option value (the value and the valid choices in the message)."""
    if objective not in OBJECTIVES:
        raise InvalidInput(f"--objective {objective!r} is unknown; use {' | '.join(OBJECTIVES)}")
    if fmt not in FORMATS:
        raise InvalidInput(f"--format {fmt!r} is unknown; use {' | '.join(FORMATS)}")
    if model not in PRESETS:
        raise InvalidInput(f"--model {model!r} is unknown; use {' | '.join(sorted(PRESETS))}")
    if rows not in ("feasible", "all", "pareto"):
        raise InvalidInput(f"--rows {rows!r} is unknown; use feasible | all | pareto")
    if emit_engine is not None and emit_engine not in ENGINES:
        raise InvalidInput(f"--emit {emit_engine!r} is unknown; use {' | '.join(ENGINES)}")
    if emit_engine is not None and fmt == "csv":
        raise InvalidInput("--emit needs --format table or json")
    if context_tokens < 0 or temperature < 0:
        raise InvalidInput(
            f"--context-tokens {context_tokens} and --temperature {temperature} must be ≥ 0"
        )
    if top < 1:
        raise InvalidInput(f"--top {top} must be ≥ 1")


def _json_text(
    sel: Selection, top: int, found: SelectionExtras, deployment: Deployment | None
) -> str:
    doc = selection_record(sel, top, found.crossings)
    if found.pairs:
        doc["per_pair"] = _pair_record(sel, found.pairs)
    doc["breakeven"] = [b.__dict__ for b in found.breakeven]
    if deployment is not None:
        doc["deployment"] = {
            "engine": deployment.engine,
            "version": deployment.version,
            "commands": deployment.commands,
            "shell": deployment.shell(),
            "notes": deployment.notes,
        }
    return json.dumps(doc, indent=2) + "\n"


def _table_text(
    sel: Selection,
    top: int,
    found: SelectionExtras,
    deployment: Deployment | None,
    *,
    to_file: bool,
) -> str:
    """Render the tables: recorded and returned as text for a file, else printed ("")."""
    if to_file:
        with open(os.devnull, "w") as sink:
            out = Console(record=True, width=170, file=sink)
            _render_all(out, sel, top, found, deployment)
        return out.export_text()
    # Piped output has no width: give the table room instead of rich's 80 columns,
    # unless COLUMNS asks for a width.
    wide = None if console.is_terminal or "COLUMNS" in os.environ else 170
    out = console if console.is_terminal else Console(width=wide, highlight=False)
    _render_all(out, sel, top, found, deployment)
    return ""


def _render_all(
    out: Console,
    sel: Selection,
    top: int,
    found: SelectionExtras,
    deployment: Deployment | None,
) -> None:
    _render(sel, out, top, found.crossings)
    _render_per_pair(sel, out, found.pairs)
    _render_breakeven(out, found.breakeven)
    if deployment is not None:
        _render_deployment(out, deployment)


def _read_fingerprint(path: Path | None) -> dict[str, object]:
    if path is None:
        return installed_fingerprint()
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"--deployed-fingerprint {path}: cannot read JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise InvalidInput(f"--deployed-fingerprint {path} must hold a JSON object")
    return doc
