"""``configspec run``: execute a configuration for real (the edge side of the runtime)."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from configspec.cli._console import console, err_console
from configspec.errors import InvalidInput

if TYPE_CHECKING:
    from configspec.power import PowerMeter

app = typer.Typer(help="Run a configuration against a verifier.", no_args_is_help=True)

DEFAULT_PROMPT = "Explain in three sentences why the sky is blue."


@app.command()
def edge(
    server: str = typer.Option(..., help="Verifier URL, e.g. http://127.0.0.1:8000."),
    drafter: str = typer.Option(
        ..., help="Drafter: registered model, GGUF path, or ngram[:MIN-MAX]."
    ),
    tokenizer: str | None = typer.Option(
        None, help="GGUF or registered model whose vocabulary the ngram drafter uses."
    ),
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
    meter: str = typer.Option(
        "auto", help="Edge power meter (auto, rapl, nvml, jetson, rpi, hwmon, estimate, none)."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Do not stream the text."),
) -> None:
    """Draft locally, verify on SERVER, stream the text and record every round."""
    from configspec.backends.factory import LlamaSettings, open_drafter, resolve_identity
    from configspec.config import RunConfig
    from configspec.serving.client import EdgeClient, check_drafter, probe_server
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
    # fail fast, before loading any weights: is the server there, and do we match it?
    info = probe_server(server)
    if k > info.max_k:
        raise InvalidInput(f"K={k} is above the verifier's limit ({info.max_k}); lower --k")
    is_ngram = drafter.startswith("ngram")
    if is_ngram and tokenizer is None:
        raise InvalidInput(
            f"the ngram drafter needs --tokenizer (a GGUF of the target's family, "
            f"{info.target.family})"
        )
    if not is_ngram:
        check_drafter(resolve_identity(drafter, cache_dir=cache_dir), info, k)
    energy_meter = _open_meter(meter)
    with err_console.status(f"loading {drafter}"):
        model = open_drafter(
            drafter,
            tokenizer=tokenizer,
            cache_dir=cache_dir,
            settings=LlamaSettings(n_threads=threads, n_ctx=n_ctx),
        )
    check_drafter(model.identity, info, k)
    prompt_tokens = model.tokenize(text)
    energy_note = "no device power meter was used (--meter none); energy not recorded"
    if energy_meter is not None:
        energy_meter.begin_window("edge-run")
        energy_note = (
            f"edge energy from the {energy_meter.name} meter ({energy_meter.source}); it "
            "meters the whole host, so a verifier on the same host is included"
        )
    try:
        with EdgeClient(
            server,
            model,
            k=k,
            temperature=temperature,
            seed=seed,
            draft_top_k=draft_top_k,
            energy_j=(lambda: energy_meter.sample().energy_j) if energy_meter else None,
        ) as client:
            gen = client.generate(
                prompt_tokens,
                max_tokens,
                on_text=None if quiet else (lambda s: console.print(s, end="", highlight=False)),
            )
    finally:
        if energy_meter is not None:
            energy_meter.end_window("edge-run")
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
        backend="ngram" if is_ngram else "llama.cpp",
        model_sha256={ident.name: ident.file_sha256} if ident.file_sha256 else {},
        energy_note=energy_note,
        energy_source=energy_meter.source if energy_meter is not None else "measured",
        settings={"meter": energy_meter.name if energy_meter else None},
    )
    _summary(record)
    if profiles is not None:
        path = ProfileStore(profiles).save_run(record)
        err_console.print(f"run record: {path}", highlight=False)


def _open_meter(name: str) -> PowerMeter | None:
    """The edge power meter named ``name`` (probed), or None for ``none``."""
    if name == "none":
        return None
    from configspec.power import make_meter

    meter = make_meter(name)
    meter.probe()
    return meter


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
    if t.energy_j is not None and record.tokens_per_joule is not None:
        tpj = record.tokens_per_joule
        table.add_row(
            f"energy ({tpj.source})",
            f"{t.energy_j:.2f} J, {tpj.mean:.2f} tok/J (95% CI {tpj.low:.2f}..{tpj.high:.2f})",
        )
    else:
        table.add_row("energy", record.energy_note)
    err_console.print(table)
