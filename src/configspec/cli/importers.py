"""``configspec import``: turn published measurements into profiles."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import typer
from rich.table import Table

from configspec.cli._console import console, err_console
from configspec.errors import InvalidInput
from configspec.importers import (
    PAPER_VERIFY_LATENCY_MS,
    import_paper_data,
    shipped_paper_data,
    write_import,
)

import_app = typer.Typer(
    name="import",
    help="Import measurements taken with other tools into a profile directory.",
    no_args_is_help=True,
)


def _pairs(values: list[str], option: str) -> dict[str, str]:
    out = {}
    for value in values:
        name, sep, rest = value.rpartition("=")
        if not sep or not name.strip() or not rest.strip():
            raise InvalidInput(f"{option} {value!r} is not NAME=VALUE")
        out[name.strip()] = rest.strip()
    return out


@import_app.command("paper-data")
def paper_data(
    src_dir: Path | None = typer.Argument(
        None,
        help="Folder with the published CSVs; default: the copy shipped with ConfigSpec "
        "(the paper's data, MIT licence).",
        show_default=False,
    ),
    out: Path = typer.Option(..., "--out", help="Profile directory to write into."),
    speeds: str = typer.Option(
        "table",
        help="Drafting speeds from the drafting-speed 'table' (the paper's analysis) "
        "or from the per-model 'device-csv' runs.",
    ),
    verify_latency_ms: float = typer.Option(
        PAPER_VERIFY_LATENCY_MS, help="Fixed verification latency of the paper's assumption."
    ),
    price: list[str] = typer.Option(
        [], help="Per-token price override, 'TARGET=USD_PER_MILLION' (repeatable)."
    ),
    device_map: list[str] = typer.Option(
        [], help="Name a speed-table device's run CSV device, 'RPi 5=raspberry_pi_5'."
    ),
    strict: bool = typer.Option(
        False, help="Refuse (instead of skipping) drafters that have no acceptance sweep."
    ),
    dry_run: bool = typer.Option(False, help="Validate and summarise; write nothing."),
) -> None:
    """Import the paper's device runs, acceptance sweeps and drafting speeds.

    Without SRC_DIR the paper's published CSVs shipped inside the package are used.
    Writes one device profile per device, one alignment profile per target and the
    paper's verification assumption (fixed latency, per-token price) per target.
    """
    if speeds not in ("table", "device-csv"):
        raise InvalidInput(f"--speeds {speeds!r} must be 'table' or 'device-csv'")
    if verify_latency_ms <= 0:
        raise InvalidInput(f"--verify-latency-ms {verify_latency_ms} must be > 0")
    prices = {}
    for name, value in _pairs(price, "--price").items():
        try:
            prices[name] = float(value)
        except ValueError:
            raise InvalidInput(f"--price {name}={value!r}: price is not a number") from None
    with shipped_paper_data() if src_dir is None else nullcontext(src_dir) as folder:
        result = import_paper_data(
            folder,
            speeds=speeds,  # type: ignore[arg-type]
            verify_latency_ms=verify_latency_ms,
            prices_usd_per_m=prices,
            device_map=_pairs(device_map, "--device-map"),
            strict=strict,
        )
    title = "the paper's data shipped with ConfigSpec" if src_dir is None else str(src_dir)
    table = Table(title=f"imported from {title}")
    for col in ("profile", "name", "contents", "power"):
        table.add_column(col)
    for dev in result.devices:
        with_power = sum(d.draft_power_w is not None for d in dev.drafters)
        power = (
            f"{dev.meter.name} ({with_power}/{len(dev.drafters)} drafters)"
            if dev.meter
            else "no power data"
        )
        table.add_row("device", dev.device.name, f"{len(dev.drafters)} drafters", power)
    for al in result.alignments:
        ks = sorted({p.k for e in al.entries for p in e.by_k or []})
        table.add_row(
            "alignment", al.target, f"{len(al.entries)} drafters, K={ks[0]}..{ks[-1]}", ""
        )
    for ver in result.verifications:
        price_m = getattr(ver.price, "price_usd_per_million_tokens", float("nan"))
        table.add_row(
            "verification (modelled)",
            ver.target,
            f"T_verify {ver.latency[0].latency_ms.mean:g} ms, USD {price_m:g}/1M drafted tokens",
            "",
        )
    console.print(table)
    if result.speed_mismatches:
        err_console.print(
            f"[dim]note:[/] {len(result.speed_mismatches)} drafting speeds in the speed table "
            "differ by more than 5% from the device runs (separate runs); the table is used. "
            "Run with -v to list them.",
            highlight=False,
            soft_wrap=True,
        )
    for note in result.notes:
        err_console.print(f"[dim]note:[/] {note}", highlight=False, soft_wrap=True)
    for warning in result.warnings:
        err_console.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    if dry_run:
        console.print("dry run: nothing written")
        return
    paths = write_import(result, out)
    console.print(f"wrote {len(paths)} profiles to {out}")
