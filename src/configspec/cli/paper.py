"""``configspec paper``: reproduce the paper's analysis on imported profiles and stress it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich import box
from rich.console import RenderableType
from rich.table import Table

from configspec.cli._console import console, make_progress
from configspec.errors import InvalidInput
from configspec.report.paper.report import (
    build_report,
    default_rtt_values,
    default_verify_values,
    write_report,
)
from configspec.report.paper.robustness import GPU_USD_PER_HOUR_DEFAULT

paper_app = typer.Typer(
    name="paper",
    help="Reproduce the paper's analysis (imported profiles) and test its robustness.",
    no_args_is_help=True,
)

_MARK = {"holds": "[green]holds[/]", "fails": "[red]fails[/]"}
WIDE_COLUMNS = 130
"""Below this terminal width the tables are laid out to read at 80 columns: one small
table per (target, device) and per finding instead of one wide grid."""


def _cell(text: str) -> str:
    if text in _MARK:
        return _MARK[text]
    if text.startswith("fails"):
        return f"[red]{text}[/]"
    return text


_SUMMARY_TITLE = "Paper's conclusions under moved assumptions (preset 'paper')"


def _assumptions(report: dict[str, Any]) -> list[tuple[str, str]]:
    """(column heading, summary key) for every assumption the robustness run moves."""
    verify = report["sweeps"]["verify_ms"]["values"]
    rtt = report["sweeps"]["rtt_ms"]["values"]
    return [
        ("baseline", "baseline"),
        (f"T_verify {verify[0]:g}–{verify[-1]:g} ms", "verify_latency"),
        (f"RTT {rtt[0]:g}–{rtt[-1]:g} ms", "rtt"),
        ("GPU-time price", "gpu_time_pricing"),
        ("α −1σ", "acceptance_low"),
        ("α +1σ", "acceptance_high"),
        ("adversarial α", "adversarial_acceptance"),
    ]


def _summary_table(report: dict[str, Any]) -> Table:
    table = Table(title=_SUMMARY_TITLE)
    moved = _assumptions(report)
    table.add_column("finding", overflow="fold")
    for heading, _ in moved:
        table.add_column(heading, overflow="fold")
    for s in report["summary"]:
        table.add_row(
            s["claim"],
            *(s[key] if key == "adversarial_acceptance" else _cell(s[key]) for _, key in moved),
        )
    return table


def _summary_narrow(report: dict[str, Any]) -> list[RenderableType]:
    """The same findings, one two-column table each (reads at 80 columns)."""
    out: list[RenderableType] = [f"[bold]{_SUMMARY_TITLE}[/]"]
    moved = _assumptions(report)
    for i, s in enumerate(report["summary"], 1):
        table = Table(
            title=f"{i}. {s['claim']}", title_justify="left", box=box.SIMPLE, show_header=False
        )
        table.add_column("assumption moved", no_wrap=True)
        table.add_column("the finding")
        for heading, key in moved:
            table.add_row(heading, s[key] if key == "adversarial_acceptance" else _cell(s[key]))
        out.append(table)
    return out


def _optima_table(report: dict[str, Any]) -> Table:
    table = Table(title="Baseline optima (paper definitions; inputs imported, T_verify modelled)")
    for col in (
        "target",
        "device",
        "objective",
        "drafter",
        "K",
        "goodput tok/s",
        "tokens/USD",
        "J/token",
    ):
        table.add_column(col, overflow="fold")
    for o in report["baseline"]["optima"]:
        if o["drafter"] is None:
            table.add_row(
                o["target"], o["device"], o["objective"], f"[yellow]{o['note']}[/]", "", "", "", ""
            )
            continue
        table.add_row(
            o["target"],
            o["device"],
            o["objective"],
            o["drafter"],
            str(o["k"]),
            f"{o['goodput_tok_s']:.2f}",
            f"{o['tokens_per_usd']:,.0f}",
            "no power data"
            if o["energy_j_per_token"] is None
            else f"{o['energy_j_per_token']:.3f}",
        )
    return table


def _short(name: str) -> str:
    """A target's published name without its organisation prefix (``Qwen/Qwen3-32B``)."""
    return name.rsplit("/", 1)[-1]


def _optima_narrow(report: dict[str, Any]) -> list[RenderableType]:
    """The baseline optima, one small table per (target, device) (reads at 80 columns)."""
    title = "Baseline optima (paper definitions; inputs imported, T_verify modelled)"
    out: list[RenderableType] = [f"[bold]{title}[/]"]
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for o in report["baseline"]["optima"]:
        groups.setdefault((o["target"], o["device"]), []).append(o)
    for (target, device), rows in groups.items():
        table = Table(
            title=f"{_short(target)} · {device}",
            title_justify="left",
            box=box.SIMPLE_HEAD,
            pad_edge=False,
        )
        for col, right in (
            ("objective", False), ("drafter", False), ("K", True), ("tok/s", True),
            ("tok/USD", True), ("J/tok", True),
        ):  # fmt: skip
            table.add_column(col, justify="right" if right else "left", overflow="fold")
        for o in rows:
            if o["drafter"] is None:
                table.add_row(o["objective"], f"[yellow]{o['note']}[/]", "", "", "", "")
                continue
            energy = o["energy_j_per_token"]
            table.add_row(
                o["objective"], o["drafter"], str(o["k"]), f"{o['goodput_tok_s']:.2f}",
                f"{o['tokens_per_usd']:,.0f}", "n/a" if energy is None else f"{energy:.3f}",
            )  # fmt: skip
        out.append(table)
    out.append("J/tok n/a: the device has no power data.")
    return out


@paper_app.command("robustness")
def robustness(
    profiles: Path = typer.Option(
        ..., "--profiles", help="Profile directory (e.g. from `configspec import paper-data`)."
    ),
    out: Path = typer.Option(..., "--out", help="Folder for robustness.json/.md and PNGs."),
    verify_points: int = typer.Option(40, help="Log-spaced T_verify values in the range."),
    verify_min_ms: float = typer.Option(50.0, help="Smallest T_verify swept (ms)."),
    verify_max_ms: float = typer.Option(2000.0, help="Largest T_verify swept (ms)."),
    rtt_step_ms: float = typer.Option(10.0, help="RTT step (ms)."),
    rtt_max_ms: float = typer.Option(200.0, help="Largest RTT swept (ms); sweeps from 0."),
    gpu_usd_per_hour: float = typer.Option(
        GPU_USD_PER_HOUR_DEFAULT, help="Illustrative GPU price for the GPU-time variant."
    ),
) -> None:
    """Re-derive the paper's optima and findings while T_verify, RTT, pricing and
    acceptance move; report where each optimum changes (crossovers)."""
    if verify_points < 2:
        raise InvalidInput(f"--verify-points {verify_points} must be >= 2")
    if not 0 < verify_min_ms < verify_max_ms:
        raise InvalidInput(
            f"T_verify range {verify_min_ms:g}..{verify_max_ms:g} ms must satisfy "
            "0 < --verify-min-ms < --verify-max-ms"
        )
    if rtt_step_ms <= 0 or rtt_max_ms <= 0:
        raise InvalidInput(
            f"--rtt-step-ms {rtt_step_ms:g} and --rtt-max-ms {rtt_max_ms:g} must be > 0"
        )
    if gpu_usd_per_hour <= 0:
        raise InvalidInput(f"--gpu-usd-per-hour {gpu_usd_per_hour} must be > 0")
    verify_values = default_verify_values(verify_points, verify_min_ms, verify_max_ms)
    rtt_values = default_rtt_values(rtt_step_ms, rtt_max_ms)
    with make_progress(transient=True) as bar:
        task = bar.add_task("evaluating", total=len(verify_values) + len(rtt_values) + 1)
        report, frames = build_report(
            profiles,
            verify_values=verify_values,
            rtt_values=rtt_values,
            gpu_usd_per_hour=gpu_usd_per_hour,
            progress=lambda n: bar.advance(task, n),
        )
    paths = write_report(report, frames, out)
    if console.width >= WIDE_COLUMNS:
        console.print(_optima_table(report))
        console.print(_summary_table(report))
    else:
        for part in [*_optima_narrow(report), *_summary_narrow(report)]:
            console.print(part)
    for key, label in (("verify_ms", "T_verify"), ("rtt_ms", "RTT")):
        n = len(report["sweeps"][key]["crossovers"])
        console.print(f"{n} optimum crossovers along {label} (see robustness.md)")
    console.print(f"wrote {len(paths)} files to {out}")
