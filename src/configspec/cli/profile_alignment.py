"""``configspec profile alignment``, registered on the ``profile`` group of ``cli.profile``."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from configspec.cli._console import console, progress_events
from configspec.cli.profile import profile_app
from configspec.config import AlignmentEntry
from configspec.profiling.alignment import AlignmentResult, AlignmentSettings, profile_alignment
from configspec.profiling.prompts import prompt_set
from configspec.store import ProfileStore

REMOTE_TOP_K = 20
"""Log-probs asked per position from a server: vLLM's default ``--max-logprobs``."""


def _row(e: AlignmentEntry, k: int) -> list[str]:
    assert e.alpha is not None and e.by_k is not None
    at = e.by_k[k - 1]
    tpr = at.tokens_per_round
    assert tpr is not None and at.tokens_per_round_iid and at.tokens_per_round_positional
    return [
        e.drafter,
        e.domain,
        f"{e.temperature:g}",
        f"{e.alpha.mean:.3f}",
        f"{e.alpha.low:.2f}-{e.alpha.high:.2f}",
        f"{tpr.mean:.2f}",
        f"{at.tokens_per_round_iid.mean:.2f}",
        f"{at.tokens_per_round_positional.mean:.2f}",
    ]


@profile_app.command("alignment")
def alignment(
    target: str = typer.Option(
        ...,
        "--target",
        "-t",
        help="Target: registered name, GGUF, or OpenAI-compatible server URL.",
    ),
    tokenizer: str | None = typer.Option(
        None, "--tokenizer", help="Vocabulary of a server target (registered name or GGUF)."
    ),
    target_name: str | None = typer.Option(
        None, "--target-name", help="Profile name (default: model name / server model id)."
    ),
    concurrency: int = typer.Option(
        4, "--concurrency", help="Reference requests in flight to a server target."
    ),
    drafter: list[str] = typer.Option(
        ..., "--drafter", "-d", help="Drafter: registered name, GGUF or ngram[:MIN-MAX]."
    ),
    prompts_file: Path | None = typer.Option(
        None, "--prompts", help="Your prompts (JSONL: prompt, optional domain, id)."
    ),
    domain: list[str] = typer.Option([], "--domain", help="Bundled domains (default all)."),
    per_domain: int | None = typer.Option(None, "--per-domain", help="Prompts per domain."),
    tokens: int = typer.Option(128, "--tokens", help="Reference tokens per prompt."),
    temperature: list[float] = typer.Option(
        [0.0], "--temperature", "-T", help="Sampling temperature (repeatable; 0 = greedy)."
    ),
    k_max: int = typer.Option(8, "--k-max", help="Longest speculative length simulated."),
    top_k: int | None = typer.Option(
        None,
        "--top-k",
        help="Target ids kept per position at T>0 (default 256; 20 for a server: vLLM's cap).",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed for sampled references and bootstrap."),
    bootstrap: int = typer.Option(1000, "--bootstrap", help="Bootstrap resamples."),
    threads: int = typer.Option(2, "--threads", help="llama.cpp threads."),
    n_ctx: int = typer.Option(1024, "--n-ctx", help="llama.cpp context window (tokens)."),
    profiles: Path = typer.Option(Path("profiles"), "--profiles", help="Profile directory."),
    cache_dir: Path | None = typer.Option(
        None, "--cache-dir", help="Model cache (default $CONFIGSPEC_CACHE_DIR)."
    ),
) -> None:
    """Measure how often each drafter's tokens are accepted by the target (per domain, T, K)."""
    from configspec.backends.specs import is_url

    settings = AlignmentSettings(
        n_tokens=tokens,
        temperatures=tuple(temperature),
        k_max=k_max,
        top_k=top_k if top_k is not None else (REMOTE_TOP_K if is_url(target) else 256),
        concurrency=concurrency,
        seed=seed,
        n_boot=bootstrap,
        n_ctx=n_ctx,
        n_threads=threads,
    )
    prompts, source = prompt_set(prompts_file, domain, per_domain)
    store = ProfileStore(profiles)
    with progress_events() as on_event:
        result = profile_alignment(
            target,
            drafter,
            prompts,
            store,
            settings=settings,
            cache_dir=cache_dir,
            progress=on_event,
            prompt_source=source,
            tokenizer=tokenizer,
            target_name=target_name,
        )
    _render(result, settings, len(prompts))
    console.print(f"wrote {store.alignment_path(result.profile.target)}")


def _render(result: AlignmentResult, settings: AlignmentSettings, n_prompts: int) -> None:
    """The fresh entries (α, E(K) at K = min(4, K_max), fits), timings and α bounds."""
    k_show = min(4, settings.k_max)
    table = Table(
        title=(
            f"alignment vs {result.profile.target}: {n_prompts} prompts × "
            f"≤{settings.n_tokens} tokens; "
            f"α and E(K={k_show}) measured (95% bootstrap CI over prompts), i.i.d. and "
            "per-position columns are fitted predictions"
        ),
        title_justify="left",
    )
    for col in ("drafter", "domain", "T", "α", "α 95% CI", f"E({k_show})", "i.i.d.", "per-pos"):
        if col in ("drafter", "domain"):  # names fold; numbers are never cut
            table.add_column(col, overflow="fold")
        else:
            table.add_column(col, justify="right", no_wrap=True, min_width=len(col) + 1)
    fresh = set(result.summaries)
    rows = [e for e in result.profile.entries if (e.drafter, e.domain, e.temperature) in fresh]
    rows.sort(key=lambda e: (e.temperature, e.domain != "all", e.domain, e.drafter))
    for e in rows:
        table.add_row(*_row(e, k_show))
    console.print(table)
    console.print(
        f"target reference: {result.n_references_computed} computed, "
        f"{result.n_references_cached} from cache ({result.reference_s:.1f} s); drafters: "
        + ", ".join(f"{n} {s:.1f} s" for n, s in result.drafter_s.items())
    )
    wide = {k: v for k, v in result.alpha_bounds.items() if k[1] == "all" and v[1] - v[0] > 0}
    if result.endpoint is not None and wide:
        console.print(
            f"α bounds from the server's top-{settings.top_k} (mass outside it at worst / best): "
            + ", ".join(f"{d} T={t:g} {lo:.3f}-{hi:.3f}" for (d, _, t), (lo, hi) in wide.items()),
            highlight=False,
        )
