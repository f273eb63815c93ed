"""``configspec run``: execute a configuration for real (the edge side of the runtime)."""

from __future__ import annotations

import os
import statistics
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from configspec.cli._console import console, err_console
from configspec.errors import InvalidInput
from configspec.records import K_LIMIT

if TYPE_CHECKING:
    from configspec.config import RunRecord

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
    k: str = typer.Option(
        ...,
        "--k",
        help=f"Draft tokens per round (K, 0..{K_LIMIT}), or auto: chosen every round from live "
        "estimates with the --profiles as prior.",
    ),
    k_min: int = typer.Option(1, "--k-min", min=1, max=K_LIMIT, help="Smallest K for --k auto."),
    k_max: int | None = typer.Option(
        None,
        "--k-max",
        min=1,
        max=K_LIMIT,
        help="Largest K for --k auto (default: profiled range).",
    ),
    objective: str = typer.Option(
        "goodput", help="What --k auto maximises: goodput, cost or energy."
    ),
    domain: str = typer.Option(
        "all", help="Prompt domain whose acceptance seeds --k auto (as profiled)."
    ),
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
        None,
        "--profiles",
        help="Profile directory to write the run record to (and, with --k auto, the prior).",
    ),
    threads: int = typer.Option(2, min=1, help="Drafter threads."),
    n_ctx: int = typer.Option(4096, "--n-ctx", min=16, help="Drafter context window."),
    cache_dir: Path | None = typer.Option(None, help="Model cache (see `configspec models`)."),
    meter: str = typer.Option(
        "auto", help="Edge power meter (auto, rapl, nvml, jetson, rpi, hwmon, estimate, none)."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Do not stream the text."),
    api_key_env: str = typer.Option(
        "CONFIGSPEC_API_KEY",
        help="Environment variable holding the verifier's API key (sent as a bearer "
        "token when set; a key never goes on the command line).",
    ),
) -> None:
    """Draft locally, verify on SERVER, stream the text and record every round."""
    from configspec.loop.runs import EdgeRun, run_edge
    from configspec.store import ProfileStore

    run = EdgeRun(
        server=server,
        drafter=drafter,
        k=parse_k(k),
        k_min=k_min,
        k_max=k_max,
        objective=objective,
        domain=domain,
        prior_rtt_ms=added_rtt_ms or None,
        prompt=_prompt_text(prompt, prompt_file),
        max_tokens=max_tokens,
        tokenizer=tokenizer,
        temperature=temperature,
        seed=seed,
        draft_top_k=draft_top_k,
        added_rtt_ms=added_rtt_ms,
        device=device,
        threads=threads,
        n_ctx=n_ctx,
        cache_dir=cache_dir,
        meter=meter,
        api_key=os.environ.get(api_key_env) or None,
    )
    record, path = run_edge(
        run,
        on_text=None if quiet else (lambda s: console.print(s, end="", highlight=False)),
        status=err_console.status,
        store=ProfileStore(profiles) if profiles is not None else None,
    )
    if not quiet:
        console.print()
    _summary(record)
    if path is not None:
        err_console.print(f"run record: {path}", highlight=False)


def _prompt_text(prompt: str | None, prompt_file: Path | None) -> str:
    """The prompt of ``--prompt`` or ``--prompt-file`` (one at most), else the default."""
    if prompt is not None and prompt_file is not None:
        raise InvalidInput("give --prompt or --prompt-file, not both")
    if prompt_file is not None:
        try:
            return prompt_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidInput(f"cannot read --prompt-file {prompt_file}: {exc.strerror}") from None
    return prompt if prompt is not None else DEFAULT_PROMPT


def parse_k(text: str) -> int | None:
    """``--k``: an integer 0..K_LIMIT, or ``auto`` (None)."""
    if text.strip().lower() == "auto":
        return None
    try:
        k = int(text)
    except ValueError:
        raise InvalidInput(f"--k {text!r} is neither a number nor auto") from None
    if not 0 <= k <= K_LIMIT:
        raise InvalidInput(f"K={k} is out of range (0..{K_LIMIT})")
    return k


def _summary(record: RunRecord) -> None:
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
    chosen = [r.choice.k for r in rounds if r.choice is not None]
    if chosen:
        counts = Counter(chosen)
        table.add_row(
            "K chosen (--k auto)",
            ", ".join(f"K={k}: {n}" for k, n in sorted(counts.items())),
        )
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
