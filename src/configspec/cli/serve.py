"""``configspec serve``: the cloud verifier and the network delay proxy."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from configspec.cli._console import console, err_console
from configspec.errors import InvalidInput
from configspec.records import K_LIMIT

if TYPE_CHECKING:
    from configspec.serving.launch import VerifierSetup

app = typer.Typer(help="Run the cloud verifier or a network delay proxy.", no_args_is_help=True)


def _host_port(text: str, what: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise InvalidInput(f"{what} {text!r} is not HOST:PORT (e.g. 127.0.0.1:8001)")
    return host.strip("[]") or "127.0.0.1", int(port)


# The verifier's options whose declaration does not fit on one line (the command's
# signature stays short enough to read; defaults stay in the signature).
_Target = Annotated[
    str,
    typer.Option(
        help="Target: registered model, GGUF path, or URL of an OpenAI-compatible server."
    ),
]
_Tokenizer = Annotated[
    str | None, typer.Option(help="GGUF or registered model with the vocabulary of a URL target.")
]
_Slots = Annotated[
    int, typer.Option(min=1, help="Target instances (each keeps one session's cache warm).")
]
_Offload = Annotated[
    bool,
    typer.Option(
        "--offload/--inline",
        help="Model calls in a worker thread (default: health and other sessions answer "
        "during compute) or inline in the event loop (two fewer thread hand-offs per "
        "round, but one long prompt freezes the server).",
    ),
]
_ApiKey = Annotated[
    str | None,
    typer.Option(
        envvar="CONFIGSPEC_API_KEY",
        show_envvar=True,
        help="Require 'Authorization: Bearer KEY' on every path but /health (prefer the "
        "environment variable: a command line is visible to other users).",
    ),
]
_HeaderTimeoutS = Annotated[
    float,
    typer.Option(min=0.1, max=3600, help="Seconds a client may take to send request headers."),
]
_BodyTimeoutS = Annotated[
    float,
    typer.Option(min=0.1, max=3600, help="Seconds a client may take to send a request body."),
]
_KeepAliveS = Annotated[
    float,
    typer.Option(min=0.1, max=3600, help="Seconds an idle connection is kept between requests."),
]
_MaxConnections = Annotated[
    int, typer.Option(min=1, help="Most open connections; more are answered 503 and closed.")
]
_Batch = Annotated[
    bool,
    typer.Option(
        "--batch/--no-batch",
        help="Verify concurrent sessions together: in shared target passes (local GGUF "
        "target; one KV sequence per session) or, for a server URL, as concurrent requests "
        "the engine batches; --no-batch: one session at a time per --slots instance.",
    ),
]
_Gather = Annotated[
    str,
    typer.Option(
        help="Batching: 'sync' waits before a pass for the active sessions expected back "
        "(from each one's measured think time; never for a lone, new or quiet session) so "
        "closed-loop clients stay in shared passes; 'fixed' waits --max-gather-wait-ms after "
        "the first request (0: continuous batching, which closed loops desynchronise).",
    ),
]
_MaxGatherWaitMs = Annotated[
    float,
    typer.Option(
        min=0.0,
        max=1000.0,
        help="Batching: with --gather sync, the most ms a pass waits for expected sessions "
        "(0: the mean recent pass time); with --gather fixed, ms to wait for more sessions "
        "after the first request (0: take whatever queued while the previous pass ran).",
    ),
]
_MaxBatchPositions = Annotated[
    int, typer.Option(min=2, help="Batching: most positions in one pass (padding included).")
]
_PrefillChunk = Annotated[
    int, typer.Option(min=2, help="Batching: prompt tokens per pass, so long prompts interleave.")
]


@app.command()
def verifier(
    target: _Target,
    tokenizer: _Tokenizer = None,
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8000, min=0, max=65535, help="Port to listen on."),
    n_ctx: int = typer.Option(4096, "--n-ctx", min=16, help="Target context window (tokens)."),
    threads: int = typer.Option(2, min=1, help="Threads per target instance."),
    slots: _Slots = 1,
    max_sessions: int = typer.Option(32, min=1, help="Most sessions open at once."),
    max_k: int = typer.Option(16, min=1, max=K_LIMIT, help="Largest K accepted per round."),
    session_ttl_s: float = typer.Option(300.0, min=0.1, help="Idle seconds before expiry."),
    offload: _Offload = True,
    cache_dir: Path | None = typer.Option(None, help="Model cache (see `configspec models`)."),
    api_key: _ApiKey = None,
    header_timeout_s: _HeaderTimeoutS = 10.0,
    body_timeout_s: _BodyTimeoutS = 30.0,
    keep_alive_s: _KeepAliveS = 15.0,
    max_connections: _MaxConnections = 256,
    max_body_mb: float = typer.Option(32.0, min=0.001, help="Largest request body (MB)."),
    batch: _Batch = True,
    max_batch_sessions: int = typer.Option(
        8, min=1, help="Batching: most sessions in one target pass."
    ),
    gather: _Gather = "sync",
    max_gather_wait_ms: _MaxGatherWaitMs = 0.0,
    max_batch_positions: _MaxBatchPositions = 256,
    prefill_chunk: _PrefillChunk = 64,
) -> None:
    """Serve speculative verification over HTTP (Ctrl+C stops)."""
    from configspec.serving.batched import GATHER_MODES, BatchPolicy
    from configspec.serving.guard import ConnectionLimits
    from configspec.serving.launch import VerifierSetup, open_verifier_service
    from configspec.serving.server import bind_socket, run_server
    from configspec.serving.sessions import ServerLimits

    if gather not in GATHER_MODES:
        raise InvalidInput(f"--gather {gather!r} is not one of {', '.join(GATHER_MODES)}")
    connection_limits = ConnectionLimits(
        header_timeout_s=header_timeout_s,
        body_timeout_s=body_timeout_s,
        keep_alive_timeout_s=keep_alive_s,
        max_connections=max_connections,
        max_body_bytes=int(max_body_mb * 1e6),
    )
    sock = bind_socket(host, port)  # a taken port fails before loading any weights
    try:
        setup = VerifierSetup(
            target=target,
            limits=ServerLimits(
                max_sessions=max_sessions,
                max_k=max_k,
                max_context_tokens=n_ctx,
                session_ttl_s=session_ttl_s,
                offload_compute=offload,
            ),
            policy=BatchPolicy(
                max_sessions_per_batch=max_batch_sessions,
                max_gather_wait_ms=max_gather_wait_ms,
                gather=gather,
                max_positions_per_pass=max_batch_positions,
                prefill_chunk_tokens=min(prefill_chunk, max_batch_positions),
            ),
            tokenizer=tokenizer,
            cache_dir=cache_dir,
            n_threads=threads,
            slots=slots,
            batch=batch,
        )
        with err_console.status(f"loading {target}"):
            service = open_verifier_service(setup)
    except BaseException:
        sock.close()
        raise
    banner = _verifier_banner(service.info.name, setup, host, port, bool(api_key))
    err_console.print(banner, highlight=False)
    run_server(service, host, port, limits=connection_limits, api_key=api_key, sock=sock)


def _verifier_banner(name: str, setup: VerifierSetup, host: str, port: int, auth: bool) -> str:
    limits, policy = setup.limits, setup.policy
    return (
        f"verifying with {name} on http://{host}:{port} "
        f"(K<={limits.max_k}, {limits.max_sessions} sessions, context "
        f"{limits.max_context_tokens}; "
        + ("API key required" if auth else "no API key (open to anyone who can connect)")
        + "; "
        + (
            f"batched: <={policy.max_sessions_per_batch} sessions, "
            f"<={policy.max_positions_per_pass} positions per pass, gather "
            + _gather_text(policy.gather, policy.max_gather_wait_ms)
            if setup.batched
            else "sessions sent to the engine concurrently"
            if setup.concurrent
            else "one session at a time"
        )
        + "); /health, /metrics"
    )


def _gather_text(gather: str, wait_ms: float) -> str:
    if gather == "sync":
        cap = f"{wait_ms:g} ms" if wait_ms > 0 else "the mean pass time"
        return f"sync (waits for expected sessions, at most {cap})"
    return f"fixed {wait_ms:g} ms" + (" (continuous)" if wait_ms == 0 else "")


@app.command()
def proxy(
    listen: str = typer.Option("127.0.0.1:8001", help="HOST:PORT to listen on (loopback)."),
    upstream: str = typer.Option("127.0.0.1:8000", help="HOST:PORT of the verifier."),
    delay_ms: float = typer.Option(0.0, help="One-way delay added in each direction (ms)."),
    jitter_ms: float = typer.Option(0.0, help="Uniform jitter ± this much per chunk (ms)."),
    bandwidth_mbps: float | None = typer.Option(
        None,
        help="Bandwidth cap per direction of the link (Mbit/s), shared by all connections; "
        "default uncapped.",
    ),
    seed: int | None = typer.Option(None, help="Seed of the jitter."),
    schedule: str | None = typer.Option(
        None,
        help="One-way delay by phase, START_S:DELAY_MS,... (e.g. 0:2.5,30:60,60:2.5: 2.5 ms, "
        "60 ms from 30 s, 2.5 ms from 60 s); replaces --delay-ms.",
    ),
) -> None:
    """Forward TCP to the verifier, adding delay, jitter and a bandwidth cap (Ctrl+C stops)."""
    from configspec.serving.proxy import DelaySchedule, LinkSettings, serve_proxy

    phases = DelaySchedule.parse(schedule) if schedule is not None else None

    l_host, l_port = _host_port(listen, "--listen")
    u_host, u_port = _host_port(upstream, "--upstream")
    link = LinkSettings(delay_ms=delay_ms, jitter_ms=jitter_ms, bandwidth_mbps=bandwidth_mbps)
    cap = (
        f"{bandwidth_mbps:g} Mbit/s each way, shared by all connections"
        if bandwidth_mbps
        else "uncapped"
    )

    def banner() -> None:  # only once the upstream answered and the listener is bound
        console.print(
            f"proxy {l_host}:{l_port} -> {u_host}:{u_port}: +{delay_ms:g}±{jitter_ms:g} ms "
            f"each way (RTT +{2 * delay_ms:g} ms), {cap}",
            highlight=False,
        )
        if phases is not None:
            steps = ", ".join(f"{d:g} ms from {t:g} s" for t, d in phases.phases)
            console.print(f"one-way delay schedule: {steps}", highlight=False)

    asyncio.run(
        serve_proxy(
            l_host, l_port, u_host, u_port, link, link,
            seed=seed, on_ready=banner, schedule=phases,
        )
    )  # fmt: skip
