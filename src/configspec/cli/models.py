"""``configspec models``: prepare the embedded family, list and register GGUF models."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from configspec.backends.models import DRAFTER_QUANTS, TARGET_QUANT, ModelRegistry, quant_ftype
from configspec.backends.specs import is_ngram, is_url
from configspec.cli._console import console, make_progress

app = typer.Typer(help="Prepare, list and register GGUF models.", no_args_is_help=True)

_CACHE_OPT = typer.Option(
    None,
    "--cache-dir",
    help="Model cache (default $CONFIGSPEC_CACHE_DIR or ~/.cache/configspec).",
)


def _size(n_bytes: int | None) -> str:
    return "?" if n_bytes is None else f"{n_bytes / 1e6:,.0f} MB"


def _params(n: int | None) -> str:
    if n is None:
        return "?"
    return f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.0f} M"


@app.command()
def prepare(
    cache_dir: Path | None = _CACHE_OPT,
    quant: list[str] = typer.Option(
        list(DRAFTER_QUANTS), "--quant", "-q", help="Drafter quantisation (repeatable)."
    ),
    target_quant: str = typer.Option(TARGET_QUANT, help="Quantisation of the target."),
    threads: int = typer.Option(2, min=1, help="Threads for quantisation."),
    verify: bool = typer.Option(
        False, "--verify", help="Re-hash every file instead of trusting size and mtime."
    ),
) -> None:
    """Write the Gemma 3 270M drafter variants and target into the cache (idempotent)."""
    registry = ModelRegistry(cache_dir)
    for q in [*quant, target_quant]:
        quant_ftype(q)  # fail on a bad name before drawing a progress bar
    with make_progress() as progress:
        task = progress.add_task("preparing", total=None)

        def on_step(i: int, total: int, description: str) -> None:
            progress.update(task, completed=i, total=total, description=description)

        family = registry.prepare_family(
            quant, target_quant=target_quant, n_threads=threads, verify=verify, on_step=on_step
        )
    built = set(family.built)
    for identity in [*family.drafters.values(), family.target]:
        state = "written" if identity.name in built else "up to date"
        console.print(f"{identity.name:<24} {state:<11} {identity.path}", highlight=False)
    console.print(f"registry: {registry.registry_path}", highlight=False)


@app.command("list")
def list_models(
    cache_dir: Path | None = _CACHE_OPT,
    as_json: bool = typer.Option(False, "--json", help="Print the registry entries as JSON."),
) -> None:
    """Show the registered models with their GGUF metadata."""
    registry = ModelRegistry(cache_dir)
    entries = registry.entries()
    if as_json:
        typer.echo(json.dumps([e.to_dict() for e in entries], indent=2))
        return
    if not entries:
        console.print(
            f"no models in {registry.cache_dir}; run `configspec models prepare` or "
            "`configspec models register PATH`",
            highlight=False,
        )
        return
    table = Table(title=f"models in {registry.cache_dir}", title_justify="left")
    table.add_column("name", no_wrap=True)
    for col in ("family", "arch", "quant", "params", "ctx", "vocab", "size", "sha256", "source"):
        right = col in ("params", "ctx", "vocab", "size")
        table.add_column(col, justify="right" if right else "left", no_wrap=col != "family")
    for entry in entries:
        ident = entry.identity
        table.add_row(
            ident.name,
            ident.family,
            ident.architecture,
            ident.quantization or "?",
            _params(ident.parameter_count),
            f"{ident.context_length:,}" if ident.context_length else "?",
            f"{ident.vocab_size:,}",
            _size(ident.file_size_bytes),
            (ident.file_sha256 or "?")[:8],
            entry.source,
        )
    console.print(table)


@app.command("register")
def register_model(
    path: Path = typer.Argument(..., help="A GGUF model file."),
    name: str | None = typer.Option(None, help="Name to register (default: from metadata)."),
    cache_dir: Path | None = _CACHE_OPT,
) -> None:
    """Validate, hash and register your own GGUF file."""
    registry = ModelRegistry(cache_dir)
    with console.status(f"hashing {path}"):
        ident = registry.register(path, name=name)
    console.print(
        f"registered {ident.name} ({ident.architecture}, {ident.quantization}, family "
        f"{ident.family}) from {ident.path}",
        highlight=False,
    )


@app.command("check")
def check_pair(
    drafter: str = typer.Argument(..., help="Drafter: registered name, GGUF path or ngram."),
    target: str = typer.Argument(..., help="Target: registered name, GGUF path or http(s) URL."),
    tokenizer: str | None = typer.Option(
        None, help="For a URL target: registered name or GGUF path with its vocabulary."
    ),
    cache_dir: Path | None = _CACHE_OPT,
) -> None:
    """Check that a drafter and a target can be paired (same tokenizer; server reachable)."""
    from configspec.backends.factory import (
        check_compatible,
        open_target,
        open_tokenizer,
        resolve_identity,
    )
    from configspec.backends.ngram import NgramDrafter

    if is_url(target):
        with console.status(f"contacting {target}"):
            remote = open_target(target, tokenizer=tokenizer, cache_dir=cache_dir)
        target_id = remote.identity
    else:
        target_id = resolve_identity(target, cache_dir=cache_dir)
    if is_ngram(drafter):
        tok = open_tokenizer(tokenizer or str(target_id.path), cache_dir=cache_dir)
        drafter_id = NgramDrafter(tok).identity
    else:
        drafter_id = resolve_identity(drafter, cache_dir=cache_dir)
    check_compatible(drafter_id, target_id)
    for role, ident in (("drafter", drafter_id), ("target", target_id)):
        console.print(
            f"{role:<8} {ident.name} ({ident.architecture}, {ident.quantization or '-'}, "
            f"family {ident.family})",
            highlight=False,
        )
    console.print("compatible: same tokenizer", highlight=False)
