"""``configspec run``: execute a configuration for real (the edge side of the runtime)."""

from __future__ import annotations

import statistics
from pathlib import Path

import typer
from rich.table import Table

from configspec.cli._console import console, err_console
from configspec.errors import InvalidInput

app = typer.Typer(help="Run a configuration against a verifier.", no_args_is_help=True)

DEFAULT_PROMPT = "Explain in three sentences why the sky is blue."


@app.command()
def edge(
    server: str = typer.Option(..., help="Verifier URL, e.g. http://127.0.0.1:8000."),
    drafter: str = typer.Option(..., help="Drafter model: registered name or GGUF path."),
    k: int = typer.Option(..., "--k", min=0, max=64, help="Draft tokens per round (K)."),
    temperature: float = typer.Option(0.0, min=0.0, help="0 = greedy, > 0 = sampling."),
    max_tokens: int = typer.Option(128, min=1, help="Tokens to generate."),
    prompt: str | None = typer.Option(None, help="Prompt text."),
    prompt_file: Path | None = typer.Option(None, help="Read the prompt from this file."),
    seed: int | None = typer.Option(None, help="Seed for drafting and verification sampling."),
    draft_top_k: int = typer.Option(64, min=1, help="Draft distribution entries sent (sampling)."),
    added_rtt_ms: float = typer.Option(
        0.0, min=0.0, help="RTT you injected between edge and server (recorded, not added)."
    ),
    device: str | None = typer.Option(None, help="Edge device name for the run record."),
    profiles: Path | None = typer.Option(
        None, "--profiles", help="Profile directory to write the run record to."
    ),
    threads: int = typer.Option(2, min=1, help="Drafter threads."),
    n_ctx: int = typer.Option(4096, "--n-ctx", min=16, help="Drafter context window."),
    cache_dir: Path | None = typer.Option(None, help="Model cache (see `configspec models`)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Do not stream the text."),
) -> None:
    """Draft locally, verify on SERVER, stream the text and record every round."""
    from configspec.config import RunConfig
    from configspec.serving.client import EdgeClient
    from configspec.serving.loaders import load_drafter
    from configspec.serving.record import build_run_record
    from configspec.store import ProfileStore

    if prompt is not None and prompt_file is not None:
        raise InvalidInput("give --prompt or --prompt-file, not both")
    if prompt_file is not None:
        try:
            prompt = prompt_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidInput(f"cannot read --prompt-file {prompt_file}: {exc.strerror}") from None
    text = prompt if prompt is not None else DEFAULT_PROMPT
    with err_console.status(f"loading {drafter}"):
        model = load_drafter(drafter, n_ctx=n_ctx, n_threads=threads, cache_dir=cache_dir)
    prompt_tokens = model.tokenize(text)
    with EdgeClient(
        server, model, k=k, temperature=temperature, seed=seed, draft_top_k=draft_top_k
    ) as client:
        gen = client.generate(
            prompt_tokens,
            max_tokens,
            on_text=None if quiet else (lambda s: console.print(s, end="", highlight=False)),
        )
    if not quiet:
        console.print()
    ident = model.identity
    config = RunConfig(
        drafter=ident.name,
        drafter_family=ident.family,
        target=gen.target_name,
        target_family=gen.target_family,
        k=k,
        temperature=temperature,
        added_rtt_ms=added_rtt_ms,
        server_url=server,
        device=device,
        prompt_tokens=len(prompt_tokens),
        max_tokens=max_tokens,
        seed=seed,
        draft_top_k=draft_top_k if temperature > 0 else None,
    )
    record = build_run_record(
        gen,
        config,
        backend="llama.cpp",
        model_sha256={ident.name: ident.file_sha256} if ident.file_sha256 else {},
        energy_note="energy not recorded: no device power meter is wired into the edge client",
    )
    _summary(record)
    if profiles is not None:
        path = ProfileStore(profiles).save_run(record)
        err_console.print(f"run record: {path}", highlight=False)


def _summary(record: object) -> None:
    from configspec.config import RunRecord

    assert isinstance(record, RunRecord)
    t, rounds = record.totals, record.rounds
    g = record.goodput_tokens_per_s
    table = Table(title=f"run {record.run_id} (measured)", title_justify="left")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_row("generated tokens", f"{t.generated_tokens} ({t.stopped_by})")
    table.add_row("rounds", str(t.rounds))
    table.add_row("goodput", f"{g.mean:.1f} tok/s (95% CI {g.low:.1f}..{g.high:.1f})")
    if record.accepted_fraction is not None:
        a = record.accepted_fraction
        table.add_row("accepted fraction", f"{a.mean:.3f} (95% CI {a.low:.3f}..{a.high:.3f})")
    if rounds:
        for name, vals in (
            ("draft ms / round (median)", [r.draft_ms for r in rounds]),
            ("verify ms / round (median)", [r.verify_ms for r in rounds]),
            ("network ms / round (median)", [r.network_ms for r in rounds]),
            ("round ms (median)", [r.round_ms for r in rounds]),
        ):
            table.add_row(name, f"{statistics.median(vals):.2f}")
    table.add_row("reconnects", str(t.reconnects))
    table.add_row("energy", f"{t.energy_j:.2f} J" if t.energy_j is not None else record.energy_note)
    err_console.print(table)
