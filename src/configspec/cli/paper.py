"""``configspec paper``: reproduce the paper's analysis on imported profiles and stress it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
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


def _cell(text: str) -> str:
    if text in _MARK:
        return _MARK[text]
    if text.startswith("fails"):
        return f"[red]{text}[/]"
    return text


def _summary_table(report: dict[str, Any]) -> Table:
    table = Table(title="Paper's conclusions under moved assumptions (preset 'paper')")
    verify = report["sweeps"]["verify_ms"]["values"]
    rtt = report["sweeps"]["rtt_ms"]["values"]
    for col in (
        "finding",
        "baseline",
        f"T_verify {verify[0]:g}–{verify[-1]:g} ms",
        f"RTT {rtt[0]:g}–{rtt[-1]:g} ms",
        "GPU-time price",
        "α −1σ",
        "α +1σ",
        "adversarial α",
    ):
        table.add_column(col, overflow="fold")
    for s in report["summary"]:
        table.add_row(
            s["claim"],
            _cell(s["baseline"]),
            _cell(s["verify_latency"]),
            _cell(s["rtt"]),
            _cell(s["gpu_time_pricing"]),
            _cell(s["acceptance_low"]),
            _cell(s["acceptance_high"]),
            s["adversarial_acceptance"],
        )
    return table


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
    console.print(_optima_table(report))
    console.print(_summary_table(report))
    for key, label in (("verify_ms", "T_verify"), ("rtt_ms", "RTT")):
        n = len(report["sweeps"][key]["crossovers"])
        console.print(f"{n} optimum crossovers along {label} (see robustness.md)")
    console.print(f"wrote {len(paths)} files to {out}")
