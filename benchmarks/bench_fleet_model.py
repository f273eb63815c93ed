"""Validate the fleet model (``configspec.model.fleet``) against real load.

N = 1, 2, 4, 8, 16 edge clients (threads, n-gram drafters, each starting at a different
prompt of the bundled set) loop speculative decoding against ONE real verifier
(``configspec serve verifier`` in a subprocess, the RTT injected by netem or the delay
proxy). The model predicts aggregate throughput, per-client goodput and round time for
each N from inputs measured *once, on a separate single-client calibration run* (the
think time outside the verifier, the verifier's service time per request); nothing is
fitted to the multi-client runs. E (tokens per round) is pooled over the rounds each run
counted, each (prompt, round index) taken from that prompt's generation alone after the
runs (greedy output does not depend on timing or batch partners, so only the mix comes
from the run: which prompts, and which part of their generations the window cut out; an
n-gram drafter accepts more late in a generation, and weighting whole prompts by their
rounds put the pooled E 15% above the window's own at N = 16), because the
clients' prompts differ from the calibration client's; the figures with the calibration
client's E are kept as ``predicted_calibration_e``. The verifier runs one evaluation at
a time and has one target copy per client (``--slots``: no session-switch prefill), so this is the
one-at-a-time (batch = 1) case of the model: exact MVA with one delay station and one
FCFS queueing station. ``--server-arg`` passes further options to the server.

``--policy batched`` validates the batched case instead (issue 16's verifier: up to
``--max-batch`` sessions per pass, one KV sequence per session). The model's service time
is then the pass latency against sessions per batch x positions, measured on the real
server path before the runs (``configspec profile verify`` with B = 1, 2, 4, ... up to
``--max-batch``, in-process, at ``--profile-context`` tokens; or read from
``--verify-profile``); the think time is the calibration's own split, round minus the
verifier's time for the same requests (after a discarded warm-up run, ``--verifier-warmup-s``;
see :func:`predict`); ``--reanalyze RUN.json`` replays a kept run with these rules. The
profile times sessions 0..B-1 at one width; live passes match it because the verifier
gives a prefill chunk a pass of its own and the target fills gaps between sequence ids
(one llama.cpp micro-batch per pass; ``bench_pass_trace.py`` checks the curve against
each traced live pass, ``docs/fleet.md`` has the measurements). A pass
pads every session's block to the widest, so a pass of N clients' rounds costs the mean
over the widest of N draws from the calibration's distribution of drafted tokens (not
the pass at the mean width), read at fewer positions for the output rows the rounds do
not yield (``model.fleet.padded_pass_ms``; the output rows' share of a position's cost is
timed side by side before the runs, ``--output-share`` sets it; each row also reports the
error without it); session churn (rounds per generation, prefill time) comes from the
calibration too. The window opens once every client has started (two rounds of its first
generation) and the warm-up has passed. The
timing-only variant rescales that curve to the pass time and mean batch the verifier
reported in the same run (``/metrics``). ``--gather`` is the batched verifier's gather
mode (``sync``, the default, or ``fixed`` with ``--max-gather-wait-ms``; ``fixed`` with 0
is the old continuous batching); the model's batch-formation branch follows it
(``sync`` -> ``sync``, ``fixed`` 0 ms -> ``continuous``, ``fixed`` > 0 ms -> ``mva``;
``--model-gather`` overrides). The JSON records both. Right before each N run the curve
cells that run's model reads are timed again for ``--retime-s`` seconds (the profile's
procedure; ``fleet_retime.py``), and every row reports its errors with the profiled
curve (``error``) and with the re-timed cells (``error_retimed``), the cells and their
time stamps (``retime``); ``--retime-s 0`` turns it off. The same cells are timed again
right after each run (``--retime-after``, default on): ``error_bracketed`` reads each cell
at the mean of the two re-timings and ``retime_bracket.drift`` (after/before) shows how far
the host's speed moved over the run, which no model input can know (fleet_model9's N = 1
miss: the live verifier's one-client passes went from 173 to 131 ms within a minute;
``fleet_b1_paths.py`` times both paths side by side).

Then the replica check: a small emulated fleet (``--fleet-clients`` devices) gets an SLO
between what 1 and 2 replicas can give; ``configspec.plan`` picks the replica count
from profiles written from the calibration measurements, and the runtime runs the fleet
with that many verifier processes (and with one fewer) to see whether the SLO holds.

Prints a table and writes JSON to ``benchmarks/results/fleet_model.json``. Timing on a
shared host is noisy: every figure is reported with the load average at the time.

    CONFIGSPEC_CACHE_DIR=~/.cache/configspec python benchmarks/bench_fleet_model.py
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from numpy.typing import ArrayLike

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from configspec.backends.factory import open_drafter, open_tokenizer  # noqa: E402
from configspec.model.fleet import (  # noqa: E402
    GATHER_MODELS,
    BatchLatency,
    mean_pass_sessions,
    padded_pass_ms,
    padded_pass_reads,
    solve_population,
)
from configspec.profiling.prompts import bundled_prompts  # noqa: E402
from configspec.serving.client import EdgeClient  # noqa: E402
from configspec.serving.netem import open_link  # noqa: E402
from configspec.serving.server import free_port  # noqa: E402
from configspec.store import atomic_write_json  # noqa: E402


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


@contextmanager
def verifier(args: argparse.Namespace, slots: int, policy: str = "") -> Iterator[int]:
    """A verifier subprocess on a free port; yields the port. One-at-a-time: ``slots``
    target copies, one evaluation at a time; batched: one multi-sequence target, up to
    ``--max-batch`` sessions per pass."""
    port = free_port()
    if (policy or args.policy) == "batched":
        mode = [
            "--batch", "--max-batch-sessions", str(args.max_batch), "--max-sessions", "48",
            "--gather", args.gather, "--max-gather-wait-ms", str(args.max_gather_wait_ms),
        ]  # fmt: skip
    else:
        mode = ["--no-batch", "--slots", str(slots), "--max-sessions", "64"]
    cmd = [
        sys.executable, "-m", "configspec", "serve", "verifier", "--target", args.target,
        "--host", "127.0.0.1", "--port", str(port), "--threads", str(args.threads),
        "--n-ctx", str(args.n_ctx), *mode, *args.server_arg,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in the finally below
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"verifier exited: {log.read().decode()[-400:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("verifier did not start in 300 s")
            time.sleep(0.3)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@dataclass
class ClientResult:
    tokens: int
    rounds: int
    decode_s: float
    round_ms: float
    server_ms: float
    verify_ms: float
    drafted: float
    tokens_per_round: float

    @property
    def goodput_tok_s(self) -> float:
        return self.tokens / self.decode_s if self.decode_s > 0 else 0.0


SETTLE_ROUNDS = 2
"""A client counts as started once this many rounds of its first generation are done."""


Round = tuple[float, int, int, float, float, float, int, int]
"""One counted round: (end s, prompt, round index, round ms, server ms, verify ms,
drafted, tokens)."""
Report = tuple[list[Round], list[tuple[float, int]], BaseException | str | None]
"""What a client hands back: its rounds, its generations (prefill ms, rounds), and the
error that stopped it (None: it ran to the window's end)."""


def _client(
    i: int,
    url: str,
    prompts: list[list[int]],
    tokenizer: object,
    args: argparse.Namespace,
    go: Any,
    started: Any,
    window: Any,
    send: Callable[[Report], None],
) -> None:
    """Client ``i`` of :func:`run_clients`: warm its connection, start with the others
    (``go``), loop generations until the window's end (``window[1]``), then ``send`` its
    :data:`Report`; ``started`` is set once its first generation has done
    :data:`SETTLE_ROUNDS` rounds (or when it fails, which also breaks ``go``)."""
    done: list[Round] = []
    sessions: list[tuple[float, int]] = []
    err: BaseException | None = None
    try:
        drafter = open_drafter(args.drafter, tokenizer=tokenizer)  # type: ignore[arg-type]
        with EdgeClient(url, drafter, k=args.k, timeout_s=300) as c:
            c.generate(prompts[i % len(prompts)], max_tokens=3)  # warm connection
            go.wait()
            j = i * 7
            seen = [0]

            def on_text(_: str) -> None:
                seen[0] += 1
                if seen[0] >= SETTLE_ROUNDS:
                    started.set()

            while time.perf_counter() < window[1]:
                gen = c.generate(prompts[j % len(prompts)], args.max_tokens,
                                 on_text=None if started.is_set() else on_text)  # fmt: skip
                started.set()  # (a generation shorter than SETTLE_ROUNDS)
                sessions.append((gen.prefill_ms, len(gen.rounds)))
                start = time.perf_counter() - gen.decode_s
                ends = start + np.cumsum([r.round_ms for r in gen.rounds]) / 1e3
                for idx, (r, end) in enumerate(zip(gen.rounds, ends, strict=True)):
                    if r.k_limit in (None, args.k):
                        row = (r.round_ms, r.server_ms, r.verify_ms, r.k, r.accepted + 1)
                        done.append((float(end), j % len(prompts), idx, *row))
                j += 1
    except BaseException as exc:
        err = exc
        started.set()
        with contextlib.suppress(threading.BrokenBarrierError):
            go.abort()
    send((done, sessions, err))


def _client_process(
    i: int,
    url: str,
    prompts: list[list[int]],
    tokenizer: object,
    args: argparse.Namespace,
    go: Any,
    started: Any,
    window: Any,
    conn: Any,
) -> None:
    """:func:`_client` in a forked process, its report sent through ``conn`` (the error
    as one line: an exception need not pickle)."""

    def send(report: Report) -> None:
        rows, sessions, err = report
        conn.send((rows, sessions, None if err is None else f"{type(err).__name__}: {err}"))
        conn.close()

    _client(i, url, prompts, tokenizer, args, go, started, window, send)


def run_clients(
    urls: Sequence[str],
    n: int,
    prompts: list[list[int]],
    tokenizer: object,
    args: argparse.Namespace,
    duration_s: float,
    warmup_s: float | None = None,
    probe: Callable[[], tuple[float, ...]] | None = None,
) -> dict[str, object]:
    """``n`` clients (client i on ``urls[i % len(urls)]``) for ``duration_s``; rounds that
    end inside the window are counted. ``probe`` (e.g. the verifier's pass counters) is
    read at both ends of the window; ``window_probe`` is the difference.

    The clients warm their connections, then start together; the window opens
    ``warmup_s`` after that, or once every client has done :data:`SETTLE_ROUNDS` rounds
    of its first generation, whichever is later (at most ``--max-window-s`` later). A
    fixed warm-up is too short at large N: 16 clients' first prompts are prefilled one
    pass each (a prompt's chunk never shares a pass with rounds), ~4-6 s on one CPU
    thread, and the passes after them are still out of step, so a 4 s warm-up put ~20
    prefill passes and the ragged start in the N = 16 window (10.0 sessions per pass
    against 16 in every pass of the steady state, traced)."""
    warm = args.warmup_s if warmup_s is None else warmup_s
    results: list[ClientResult | None] = [None] * n
    procs = getattr(args, "clients_in", "threads") == "processes"
    ctx = mp.get_context("fork")
    reports: list[Report | None] = [None] * n
    started = [ctx.Event() if procs else threading.Event() for _ in range(n)]
    t0 = ctx.Value("d", 0.0)
    # [lo, hi], set once every client has started (shared memory: clients read hi)
    window = ctx.Array("d", [float("inf"), float("inf")])

    def stamp() -> None:
        t0.value = time.perf_counter()

    go = (ctx.Barrier(n + 1, action=stamp) if procs
          else threading.Barrier(n + 1, action=stamp))  # fmt: skip
    probed: list[tuple[float, ...]] = []

    def open_window() -> None:
        with contextlib.suppress(threading.BrokenBarrierError):
            go.wait()
        for ev in started:
            ev.wait(timeout=max(0.0, t0.value + args.max_window_s - time.perf_counter()))
        lo = max(time.perf_counter(), t0.value + warm)
        time.sleep(max(0.0, lo - time.perf_counter()))
        if probe is not None:
            probed.append(probe())
        window[:] = [lo, lo + duration_s]
        time.sleep(max(0.0, window[1] - time.perf_counter()))
        if probe is not None:
            probed.append(probe())

    opener = threading.Thread(target=open_window, daemon=True)
    if procs:
        # a process per client, as separate devices would be: client threads share one
        # interpreter lock, and a sync pass answers all N at once, so their per-round
        # Python work ran one after another (16 clients: think 33 -> 43 ms, and the
        # gather waited for the last of them)
        pipes = [ctx.Pipe(duplex=False) for _ in range(n)]
        workers = [
            ctx.Process(target=_client_process, daemon=True, args=(
                i, urls[i % len(urls)], prompts, tokenizer, args, go, started[i], window,
                pipes[i][1]))
            for i in range(n)
        ]  # fmt: skip
        for w in workers:
            w.start()
        opener.start()
        reports = [recv.recv() for recv, _ in pipes]
        for w in workers:
            w.join()
        opener.join()
    else:
        threads = [
            threading.Thread(target=_client, daemon=True, args=(
                i, urls[i % len(urls)], prompts, tokenizer, args, go, started[i], window,
                lambda r, i=i: reports.__setitem__(i, r)))
            for i in range(n)
        ]  # fmt: skip
        threads.append(opener)
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    # every round of every client (:data:`Round`); the window is cut below
    done: list[list[Round]] = []
    sessions: list[tuple[float, int]] = []  # (client's prefill ms, rounds) per generation
    for report in reports:
        assert report is not None
        rows, sess, err = report
        if isinstance(err, BaseException):
            raise err
        if err is not None:
            raise RuntimeError(f"a client failed: {err}")
        done.append(rows)
        sessions.extend(sess)
    lo, hi = float(window[0]), float(window[1])
    used: list[tuple[int, int]] = []  # (prompt, round index) of every counted round
    drafted_k: list[int] = []  # tokens drafted in every counted round
    for i, rows in enumerate(done):
        kept = [r for r in rows if lo <= r[0] <= hi]
        used.extend((r[1], r[2]) for r in kept)
        drafted_k.extend(r[6] for r in kept)
        arr = np.asarray([r[3:] for r in kept], dtype=np.float64).reshape(-1, 5)
        results[i] = ClientResult(
            tokens=int(arr[:, 4].sum()),
            rounds=len(arr),
            decode_s=float(arr[:, 0].sum() / 1e3),
            round_ms=float(arr[:, 0].mean()) if len(arr) else float("nan"),
            server_ms=float(arr[:, 1].mean()) if len(arr) else float("nan"),
            verify_ms=float(arr[:, 2].mean()) if len(arr) else float("nan"),
            drafted=float(arr[:, 3].mean()) if len(arr) else float("nan"),
            tokens_per_round=float(arr[:, 4].mean()) if len(arr) else float("nan"),
        )
    res = [r for r in results if r is not None]
    span_s = hi - lo
    total_tokens = sum(r.tokens for r in res)
    total_rounds = sum(r.rounds for r in res)
    return {
        "clients": n,
        "window_s": span_s,
        "aggregate_tok_s": sum(r.goodput_tok_s for r in res),
        "aggregate_wall_tok_s": total_tokens / span_s,
        "per_client_tok_s": [r.goodput_tok_s for r in res],
        "round_ms": sum(r.round_ms * r.rounds for r in res) / max(total_rounds, 1),
        "server_ms": sum(r.server_ms * r.rounds for r in res) / max(total_rounds, 1),
        "verify_ms": sum(r.verify_ms * r.rounds for r in res) / max(total_rounds, 1),
        "drafted": sum(r.drafted * r.rounds for r in res) / max(total_rounds, 1),
        "tokens_per_round": total_tokens / max(total_rounds, 1),
        "rounds": total_rounds,
        "load_avg": load(),
        "window_probe": (
            [b - a for a, b in zip(probed[0], probed[1], strict=True)] if len(probed) == 2 else None
        ),
        "k_counts": np.bincount(drafted_k, minlength=args.k + 1).tolist(),
        "prompt_ids": sorted({p for p, _ in used}),
        "prompt_rounds": {str(p): n for p, n in sorted(Counter(p for p, _ in used).items())},
        "round_keys": sorted(used),
        "prefill_ms": float(np.mean([x[0] for x in sessions])) if sessions else float("nan"),
        "session_rounds": float(np.mean([x[1] for x in sessions])) if sessions else float("inf"),
        "per_client": [asdict(r) for r in res],
    }


def acceptance_alone(
    url: str,
    ids: Sequence[int],
    prompts: list[list[int]],
    tokenizer: object,
    args: argparse.Namespace,
    cache: dict[int, list[int | None]],
    prefills: dict[int, float] | None = None,
) -> None:
    """Each prompt of ``ids`` not yet in ``cache`` generated alone (one client, ``url``,
    ``--max-tokens``): ``cache[id]`` = the tokens (accepted + 1) of each of its rounds in
    order, None for a round the windows do not count (K limited below ``--k``). Greedy
    output does not depend on timing or batch partners, so this is each prompt's
    acceptance round by round without any multi-client timing. ``prefills[id]``: the
    verifier's compute time for the prompt's prefill (ms, every chunk), timed alone."""
    drafter = open_drafter(args.drafter, tokenizer=tokenizer)  # type: ignore[arg-type]
    with EdgeClient(url, drafter, k=args.k, timeout_s=300) as c:
        for pid in ids:
            if pid in cache:
                continue
            gen = c.generate(prompts[pid], args.max_tokens)
            if prefills is not None:
                prefills[pid] = gen.prefill_ms
            cache[pid] = [
                r.accepted + 1 if r.k_limit in (None, args.k) else None for r in gen.rounds
            ]


def calibrate(
    url: str, prompts: list[list[int]], tokenizer: object, args: argparse.Namespace
) -> dict[str, object]:
    """The one-client calibration on ``url``, after a discarded one-client run of
    ``--verifier-warmup-s`` seconds: the N-client runs meet a verifier that has served
    rounds for minutes, and a just-started one answered the calibration ~19 ms a request
    slower than the N = 1 run a minute later (fleet_model6.json)."""
    if args.verifier_warmup_s > 0:
        run_clients([url], 1, prompts, tokenizer, args, args.verifier_warmup_s)
    return run_clients([url], 1, prompts, tokenizer, args, args.calibration_s)


def pooled_e(round_keys: Sequence[Sequence[int]], cache: dict[int, list[int | None]]) -> float:
    """Tokens per round over a run's counted rounds, each ``(prompt, round index)`` taken
    from that prompt's generation alone (``cache``): the window's mix of prompts *and* of
    positions in their generations (an n-gram drafter accepts more late in a generation
    than early, and a window cuts generations at both ends), not the run's timing. A key
    the generation alone does not have (or did not count) is left out."""
    got = [
        cache[p][i]
        for p, i in round_keys
        if p in cache and i < len(cache[p]) and cache[p][i] is not None
    ]
    return float(np.mean(got)) if got else float("nan")


def window_churn(
    round_keys: Sequence[Sequence[int]],
    solo_rounds: Mapping[int, int],
    prefills: Mapping[int, float],
) -> tuple[float, float]:
    """(rounds per session, prefill ms per session) of a run's window from its prompts'
    generations alone: a prompt whose generation has ``n_p`` rounds and ``c_p`` of them in
    the window contributes ``c_p / n_p`` of a session and that share of its prefill (the
    verifier's compute, every chunk). Like :func:`pooled_e`, only the mix comes from the
    run: which prompts, and how much of each. A 130-token summarisation prompt is
    prefilled in three chunks, a 16-token chat prompt in one, so the N = 16 windows (whose
    clients reach the summarisation prompts) prefilled 175-197 ms per session where the
    calibration's chat prompts took 64-82 (fleet_model11-15)."""
    counted = Counter(p for p, _ in round_keys if solo_rounds.get(p) and p in prefills)
    share = {p: c / solo_rounds[p] for p, c in counted.items()}
    sessions = sum(share.values())
    if sessions <= 0:
        return float("inf"), 0.0
    rounds = sum(counted.values()) / sessions
    prefill = sum(f * prefills[p] for p, f in share.items()) / sessions
    return float(rounds), float(prefill)


def think_ms(run: dict[str, object]) -> float:
    """The think time (ms) from a run's own measured split (the calibration's, or an
    N-client window's for the timing-only variants): mean round minus the mean time the
    verifier reported for the same requests (``server_ms``). See :func:`predict`."""
    return float(run["round_ms"]) - float(run["server_ms"])  # type: ignore[arg-type]


def block_weights(k_counts: ArrayLike) -> np.ndarray:
    """A run's counts of rounds by drafted tokens as the weights of the blocks the
    batched verifier sends: a round that drafted nothing still sends 2 positions (a
    single row takes its neighbour with it), so its count moves to one drafted token."""
    w = np.asarray(k_counts, dtype=np.float64).copy()
    if w.size > 1:
        w[1] += w[0]
        w[0] = 0.0
    return w


def effective_width(curve: BatchLatency, batch: ArrayLike, pass_ms: ArrayLike) -> np.ndarray:
    """The positions at which ``curve`` at ``batch`` costs ``pass_ms`` (a padded pass of
    mixed widths as one width: the cells the re-timing re-measures), to 0.01 position."""
    grid = np.arange(1.0, curve.table_ms.shape[1] - 1 + 1e-9, 0.01)
    cost = curve(np.asarray(batch)[..., None], grid)
    out: np.ndarray = grid[np.nanargmin(np.abs(cost - np.asarray(pass_ms)[..., None]), axis=-1)]
    return out


def predict(
    calib: dict[str, object],
    max_n: int,
    curve: BatchLatency | None = None,
    max_batch: int = 1,
    gather: str = "mva",
    e_tokens_per_round: float | None = None,
    output_share: float = 0.0,
    k_counts: ArrayLike | None = None,
    churn: tuple[float, float] | None = None,
) -> dict[str, list[float]]:
    """The model's figures for N = 1..max_n from the calibration run's measurements
    (``e_tokens_per_round``: E instead of the calibration client's, e.g. pooled over the
    clients' own prompts; ``k_counts``: the rounds' drafted counts instead of the
    calibration client's, from the same prompts as that E: a model-free drafter's widths
    move with the prompts as its E does; ``churn``: (rounds per session, prefill ms per
    session) instead of the calibration client's, from the same prompts,
    :func:`window_churn`).

    One-at-a-time (``curve`` None): the service time is the calibration's time in the
    server per request. Batched: ``curve`` is the profiled pass latency (sessions x
    positions). ``gather`` is the model's batch-formation branch (one-at-a-time: always
    ``mva``, exact there).

    The think time (the delay station) is the calibration's own measured split: its mean
    client round minus the mean time the verifier reported spending on those requests
    (``server_ms``), i.e. drafting, both link legs and the client's overhead, measured on
    the same rounds (the timing-only variant takes it the same way). It used to be the
    calibration's round minus the *profiled* S(1, p): that pushes any difference between
    the profile's and the calibration verifier's speed into the think time, which no
    device-side cost explains (the 2026-11-30 run, fleet_model6.json: the calibration's
    verifier took 173.5 ms a request against the profile's 154.5 ms and the N = 1 run's
    157 ms a minute later, so the think time read 56.5 ms where the calibration's own
    rounds measured 37.5 ms and the N = 1 run 36 ms). The service time stays the
    profile's: that is the input under test, read at each N's batch shape."""
    e = float(calib["tokens_per_round"])  # type: ignore[arg-type]
    if e_tokens_per_round is not None:
        e = e_tokens_per_round
    positions = float(calib["drafted"]) + 1.0  # type: ignore[arg-type]
    if curve is None:
        service = float(calib["server_ms"])  # type: ignore[arg-type]
        table = np.full((1, 66), service)
        table[:, 0] = np.nan
        curve = BatchLatency(table)
    else:
        service = float(curve(1.0, positions))
    think = think_ms(calib)
    # session churn (lockstep branches): a new session every session_rounds rounds, its
    # prompt prefilled in passes of its own. prefill_ms is the verifier's compute for the
    # prompt (OpenSessionResponse.prefill_ms, every chunk), which holds no link time: until
    # 2026-12-01 the RTT was subtracted from it, which read 52 ms as 22 (fleet_model15)
    rounds_per_session = float(calib.get("session_rounds", np.inf))  # type: ignore[arg-type]
    prefill = max(float(calib.get("prefill_ms", 0.0)), 0.0)  # type: ignore[arg-type]
    if churn is not None:
        rounds_per_session, prefill = churn
    if not np.isfinite(prefill):
        prefill, rounds_per_session = 0.0, np.inf
    # A batched pass pads every session's block to the widest, so a pass of b sessions
    # costs the mean over the widest of b rounds drawn from the calibration's drafted
    # counts (lockstep branches), but a block yields only its own round's output rows,
    # which cost output_share of a profiled position (model.fleet.padded_pass_ms)
    if k_counts is None:
        k_counts = calib.get("k_counts")  # type: ignore[assignment]
    weights = None
    if k_counts is not None and len(k_counts) and gather != "mva" and max_batch > 1:  # type: ignore[arg-type]
        weights = block_weights(k_counts)
    sol = solve_population(max_n, think, positions, e, curve, max_batch, gather=gather,
                           session_rounds=rounds_per_session, prefill_ms=prefill,
                           drafted_weights=weights, output_share=output_share)  # fmt: skip
    # the weights of a padded pass's readings S(b, p), p = 1.., at each N
    reads = None
    if weights is not None:
        reads = padded_pass_reads(sol.batch[0], weights, output_share)
    # one scenario: column N - 1 is the network of N clients
    return {
        "aggregate_tok_s": sol.replica_goodput_tok_s[0].tolist(),
        "per_client_tok_s": sol.goodput_tok_s[0].tolist(),
        "round_ms": sol.round_ms[0].tolist(),
        "p95_round_ms": sol.p95_round_ms[0].tolist(),
        "utilisation": sol.utilisation[0].tolist(),
        "pass_width": effective_width(curve, sol.batch[0], sol.pass_ms[0]).tolist(),
        "pass_batch": sol.batch[0].tolist(),
        "pass_reads": None if reads is None else reads.tolist(),
        "think_ms": [think],
        "service_ms": [service],
        "session_rounds": [rounds_per_session],
        "prefill_ms": [prefill],
        "mean_pass_sessions": mean_pass_sessions(
            np.arange(1, max_n + 1), max_batch, rounds_per_session
        ).tolist(),
    }


def predict_timing_only(calib: dict[str, object], meas: dict[str, object]) -> dict[str, float]:
    """The model at N = ``meas['clients']`` with the service and think times measured in
    that same run (per request, not per queue): service = the target's compute per request
    (``verify_ms``) plus the server's own handling measured alone (calibration
    ``server_ms - verify_ms``); think = round - time inside the server. On a loaded host
    the verifier's speed drifts between runs; this separates the queueing model from that
    drift (like ``validate``'s timing-only column)."""
    n = int(meas["clients"])  # type: ignore[call-overload]
    handling = float(calib["server_ms"]) - float(calib["verify_ms"])  # type: ignore[arg-type]
    service = float(meas["verify_ms"]) + handling  # type: ignore[arg-type]
    think = think_ms(meas)
    e = float(meas["tokens_per_round"])  # type: ignore[arg-type]
    table = np.full((1, 66), service)
    table[:, 0] = np.nan
    sol = solve_population(n, think, 2.0, e, BatchLatency(table), 1, gather="mva")
    return {
        "aggregate_tok_s": float(sol.replica_goodput_tok_s[0, -1]),
        "per_client_tok_s": float(sol.goodput_tok_s[0, -1]),
        "round_ms": float(sol.round_ms[0, -1]),
        "service_ms": service,
        "think_ms": think,
    }


def batch_curve(args: argparse.Namespace) -> tuple[BatchLatency, dict[str, object]]:
    """The pass latency against sessions x positions (T = 0, the context closest to
    ``--profile-context``): from ``--verify-profile``, else profiled now on the real server
    path (a batched verifier in this process, same target and threads)."""
    from configspec.config import GpuTimePrice, VerificationProfile
    from configspec.profiling.verification import VerificationProfiler, VerifySweepSettings
    from configspec.store import ProfileStore, load_profile

    levels = sorted({b for b in (1, 2, 4, 8, 16, 32) if b < args.max_batch} | {args.max_batch})
    if args.verify_profile is not None:
        profile = load_profile(args.verify_profile, VerificationProfile)
    else:
        settings = VerifySweepSettings(
            k_max=args.k, context_tokens=(args.profile_context,), batch_sizes=tuple(levels),
            threads=args.threads, min_repeats=3, max_repeats=30,
            point_budget_s=args.profile_budget_s,
        )  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.time()
            print(f"profiling passes on the server path: B = {levels}, P = 1..{args.k + 1}, "
                  f"context {args.profile_context} (load {load()})", flush=True)  # fmt: skip
            profile, _, _ = VerificationProfiler(
                args.target, ProfileStore(Path(tmp)), price=GpuTimePrice(price_usd_per_hour=1.0),
                settings=settings,
            ).run()  # fmt: skip
            print(f"  done in {time.time() - t0:.0f} s (load {load()})", flush=True)
    pts = [p for p in profile.latency if p.temperature == 0.0]
    ctx = min({p.context_tokens for p in pts}, key=lambda c: abs(c - args.profile_context))
    batches = sorted({p.batch for p in pts if p.context_tokens == ctx})
    width = max(p.positions for p in pts) + 1
    table = np.full((len(batches), width), np.nan)
    for p in pts:
        if p.context_tokens == ctx:
            table[batches.index(p.batch), p.positions] = p.latency_ms.mean
    if batches[0] != 1 or np.isnan(table[:, 1 : args.k + 2]).any():
        raise SystemExit(f"the verification profile lacks B=1 or P=1..{args.k + 1} at ctx={ctx}")
    rows = [[None if np.isnan(x) else float(x) for x in row] for row in table]
    doc = {"context_tokens": ctx, "batches": batches, "table_ms": rows}
    for b, row in zip(batches, table, strict=True):
        cells = " ".join(f"{x:7.1f}" for x in row[1 : args.k + 2])
        print(f"  S(B={b:>2}, P=1..{args.k + 1}) ms: {cells}", flush=True)
    return BatchLatency(table, np.asarray(batches, dtype=np.float64)), doc


def measure_output_share(args: argparse.Namespace, repeats: int = 5) -> dict[str, float]:
    """How much of a position's cost in a pass is its output row (the ``output_share`` of
    :func:`configspec.model.fleet.padded_pass_ms`), timed on the target the verifier
    runs (``--threads``, ``--n-ctx``): ``--max-batch`` blocks of ``--k`` + 1 positions
    with every row an output (the profile's pass), the same with one block drafting and
    the rest not (live rounds that drafted nothing: 2 output rows each, padded to the
    width), and blocks of 2 (K = 0). Shapes alternate, ``repeats`` times; medians.
    ``share = [(full - one) / (B - 1)] / [(full - narrow) / B]``."""
    from configspec.backends.factory import LlamaSettings, open_batch_target
    from configspec.backends.llamacpp_batch import SeqRequest
    from configspec.profiling.device import build_context

    b, k = args.max_batch, args.k
    if b < 2 or k < 2:
        return {"share": 0.0}
    settings = LlamaSettings(n_threads=args.threads, n_ctx=args.n_ctx)
    engine = open_batch_target(args.target, n_seqs=b, max_positions_per_pass=256,
                               settings=settings)  # fmt: skip
    try:
        ctx = build_context(engine, args.profile_context)
        seqs = [engine.new_sequence() for _ in range(b)]
        for s in seqs:
            engine.evaluate_many([SeqRequest(s, ctx, [], probs=False)])
        rng = np.random.default_rng(0)
        vocab = engine.n_vocab
        shapes = {"full": [k] * b, "one": [k] + [0] * (b - 1), "narrow": [0] * b}

        def timed(drafts: list[int]) -> float:
            reqs = [SeqRequest(s, ctx, [int(t) for t in rng.integers(vocab // 2, vocab, size=d)],
                               probs=False) for s, d in zip(seqs, drafts, strict=True)]  # fmt: skip
            t = time.perf_counter()
            engine.evaluate_many(reqs)
            ms = (time.perf_counter() - t) * 1e3
            for s in seqs:
                engine.rollback(s, len(ctx))
            return ms

        ms: dict[str, list[float]] = {name: [] for name in shapes}
        for d in shapes.values():
            timed(d)  # warm-up
        for r in range(repeats):
            for name in list(shapes)[:: 1 if r % 2 == 0 else -1]:
                ms[name].append(timed(shapes[name]))
    finally:
        engine.close()
    med = {name: statistics.median(v) for name, v in ms.items()}
    per_output = (med["full"] - med["one"]) / (b - 1)
    per_position = (med["full"] - med["narrow"]) / b
    share = float(np.clip(per_output / per_position, 0.0, 1.0)) if per_position > 0 else 0.0
    return {"share": share, **{f"{name}_ms": v for name, v in med.items()}}


def pass_stats(url: str) -> tuple[float, float, float]:
    """(passes, sessions summed over passes, pass seconds summed) from a batched verifier's
    ``/metrics``; differences of two readings give a window's mean batch and pass time."""
    text = httpx.get(url + "/metrics", timeout=10).text
    vals = {}
    for line in text.splitlines():
        for key in ("configspec_batch_sessions_count", "configspec_batch_sessions_sum",
                    "configspec_batch_pass_seconds_sum"):  # fmt: skip
            if line.startswith(key + " "):
                vals[key] = float(line.split()[-1])
    return (vals.get("configspec_batch_sessions_count", 0.0),
            vals.get("configspec_batch_sessions_sum", 0.0),
            vals.get("configspec_batch_pass_seconds_sum", 0.0))  # fmt: skip


def predict_timing_only_batched(
    curve: BatchLatency,
    max_batch: int,
    meas: dict[str, object],
    passes: tuple[float, ...],
    gather: str,
    output_share: float = 0.0,
) -> dict[str, float]:
    """Batched timing-only: think = round - time in the server (same run); the profiled
    curve rescaled so that the model's pass of the mean batch is the mean pass time the
    verifier reported in the window (prefill passes included, a small bias): the mean
    over the widest block of that many of the run's own rounds (the pass pads to it; the
    mean positions would understate the pass and inflate the scale), less what the
    rounds' missing output rows save (``output_share``, :func:`measure_output_share`;
    ``model.fleet.padded_pass_ms``)."""
    n = int(meas["clients"])  # type: ignore[call-overload]
    n_pass, n_sess, pass_s = passes
    b_mean = n_sess / n_pass if n_pass else 1.0
    p = float(meas["drafted"]) + 1.0  # type: ignore[arg-type]
    k_counts = meas.get("k_counts")
    weights = None
    if k_counts and gather != "mva" and max_batch > 1:
        weights = block_weights(k_counts)  # type: ignore[arg-type]
    model_ms = (float(curve(b_mean, p)) if weights is None
                else float(padded_pass_ms(curve, b_mean, weights, output_share)))  # fmt: skip
    scale = (pass_s * 1e3 / n_pass) / model_ms if n_pass else 1.0
    assert curve.batches is not None
    scaled = BatchLatency(curve.table_ms * scale, curve.batches)
    think = think_ms(meas)
    e = float(meas["tokens_per_round"])  # type: ignore[arg-type]
    sol = solve_population(n, think, p, e, scaled, max_batch, gather=gather,
                           drafted_weights=weights, output_share=output_share)  # fmt: skip
    return {
        "aggregate_tok_s": float(sol.replica_goodput_tok_s[0, -1]),
        "per_client_tok_s": float(sol.goodput_tok_s[0, -1]),
        "round_ms": float(sol.round_ms[0, -1]),
        "service_ms": float(pass_s * 1e3 / n_pass) if n_pass else float("nan"),
        "think_ms": think,
        "mean_batch": b_mean,
        "pass_width": float(effective_width(curve, b_mean, model_ms)) if n_pass else p,
        "curve_scale": scale,
    }


def retimer(
    args: argparse.Namespace, curve_doc: dict[str, object] | None
) -> contextlib.AbstractContextManager[Callable[[Sequence[int]], Any] | None]:
    """The re-timing verifier for the sweep (``fleet_retime.server_path_retimer``: the
    profile's target, threads, context and batch levels, in this process), or None when
    ``--retime-s`` is 0 or there is no curve."""
    if curve_doc is None or args.retime_s <= 0:
        return contextlib.nullcontext(None)
    from fleet_retime import server_path_retimer

    print(f"starting the re-timing verifier (load {load()})", flush=True)
    return server_path_retimer(
        args.target, k=args.k, threads=args.threads,
        levels=curve_doc["batches"],  # type: ignore[arg-type]
        context_tokens=int(curve_doc["context_tokens"]),  # type: ignore[call-overload]
    )  # fmt: skip


def retime_before(
    args: argparse.Namespace,
    open_sampler: Callable[[Sequence[int]], Any],
    curve: BatchLatency,
    pred: dict[str, list[float]],
    n: int,
    when: str = "before",
) -> tuple[BatchLatency, dict[str, object]]:
    """Right before the N = ``n`` run (none of its data; ``when="after"``: right after
    it, for :func:`fleet_retime.bracket`): the curve cells its model reads (``pred``, the
    calibration's prediction) timed again for ``--retime-s`` seconds on the profile's path
    (``open_sampler``, :func:`retimer`); returns the curve with them in place and the
    record (``fleet_retime.py``). Prints the cells."""
    from fleet_retime import retime_lines, retime_run, run_cells

    cells = run_cells(pred, n, curve)
    print(f"re-timing S(B, P) at {sorted(cells)} {when} N={n} ({args.retime_s:g} s of "
          f"passes, load {load()})", flush=True)  # fmt: skip
    patched, record = retime_run(open_sampler, curve, cells, n, args.retime_s, load)
    print("\n".join(retime_lines(record)), flush=True)
    return patched, record


def err(pred: float, meas: float) -> float:
    return pred / meas - 1.0 if meas else float("nan")


def row_errors(
    pp: dict[str, Any], n: int, measured: dict[str, Any], per_client_tok_s: float
) -> dict[str, float]:
    """The N = ``n`` row of prediction ``pp`` (:func:`predict`) against a run's measured
    figures: aggregate, per-client (against ``per_client_tok_s``, the clients' mean) and
    round relative errors."""
    return {
        "aggregate": err(pp["aggregate_tok_s"][n - 1], measured["aggregate_tok_s"]),
        "per_client": err(pp["per_client_tok_s"][n - 1], per_client_tok_s),
        "round": err(pp["round_ms"][n - 1], measured["round_ms"]),
    }


def replica_check(
    args: argparse.Namespace,
    prompts: list[list[int]],
    tokenizer: object,
    drafter_name: str,
    family: str,
    target_name: str,
) -> dict[str, object]:
    """Plan a small emulated fleet from profiles written from a fresh single-client
    calibration; run it with the planned replica count and with one fewer.

    Replicas do not interact (the balancer gives each ``devices / R`` of them), so one
    replica with ``ceil(devices / R)`` clients is what every replica of the fleet does;
    each replica count is emulated that way on one verifier (a 2-core host cannot give
    several verifier processes a core each)."""
    n_dev = args.fleet_clients
    stack = ExitStack()
    port = stack.enter_context(verifier(args, slots=n_dev, policy="one-at-a-time"))
    link = stack.enter_context(open_link(args.link, ("127.0.0.1", port), delay_ms=args.rtt_ms / 2))
    with stack:
        calib = calibrate(link.url, prompts, tokenizer, args)
        return _replica_runs(args, calib, prompts, tokenizer, drafter_name, family, target_name,
                             link.url)  # fmt: skip


def _replica_runs(
    args: argparse.Namespace,
    calib: dict[str, object],
    prompts: list[list[int]],
    tokenizer: object,
    drafter_name: str,
    family: str,
    target_name: str,
    url: str,
) -> dict[str, object]:
    from configspec.config import (
        AcceptanceAtK,
        AlignmentEntry,
        AlignmentProfile,
        DeviceInfo,
        DeviceProfile,
        DrafterOnDevice,
        DraftLatencyPoint,
        Estimate,
        GpuTimePrice,
        NetworkSettings,
        Provenance,
        VerificationProfile,
        VerifyLatencyPoint,
    )
    from configspec.plan import parse_fleet, plan_fleet
    from configspec.search.space import read_profiles
    from configspec.store import ProfileStore

    n_dev = args.fleet_clients
    pred = predict(calib, n_dev)
    # An SLO between what 2 and 3 devices per replica get: 1 replica cannot meet it.
    per = pred["per_client_tok_s"]
    per_replica = max(2, (n_dev + 1) // 2)
    slo = 0.5 * (per[per_replica - 1] + per[min(per_replica, n_dev - 1)]) * 0.97
    k = args.k
    e = float(calib["tokens_per_round"])  # type: ignore[arg-type]
    drafted = float(calib["drafted"])  # type: ignore[arg-type]
    service = float(calib["server_ms"])  # type: ignore[arg-type]
    think = float(calib["round_ms"]) - service  # type: ignore[arg-type]
    prov = Provenance.here("measured", notes="written by bench_fleet_model from a calibration run")
    m = lambda x: Estimate(mean=x, source="measured")  # noqa: E731
    with tempfile.TemporaryDirectory() as tmp:
        store = ProfileStore(Path(tmp))
        # n-gram drafting is charged as runtime overhead (in the think time): ~0 ms/token
        store.save(DeviceProfile(
            device=DeviceInfo(name="emulated-edge", emulated=True),
            drafters=[DrafterOnDevice(
                drafter=drafter_name, family=family, memory_bytes=0,
                latency=[DraftLatencyPoint(k=k, context_tokens=0, per_token_ms=m(1e-3))],
            )],
            provenance=prov,
        ))  # fmt: skip
        store.save(AlignmentProfile(
            target=target_name, target_family=family,
            entries=[AlignmentEntry(drafter=drafter_name, by_k=[AcceptanceAtK(
                k=k, accepted_fraction=m(min(1.0, (e - 1.0) / max(drafted, 1e-9))),
                tokens_per_round=m(e), drafted_per_round=m(drafted),
            )])],
            provenance=prov,
        ))  # fmt: skip
        store.save(VerificationProfile(
            target=target_name, target_family=family,
            latency=[VerifyLatencyPoint(positions=p, context_tokens=0, latency_ms=m(service))
                     for p in range(1, k + 2)],
            price=GpuTimePrice(price_usd_per_hour=1.0),
            provenance=prov,
        ))  # fmt: skip
        # Everything outside the verifier is the measured think time, charged as overhead.
        store.save_network(NetworkSettings(
            rtt_ms=0.0, uplink_mbps=1e6, downlink_mbps=1e6, bytes_per_token=0,
            bytes_per_message=0, round_overhead_ms=think, source="measured",
        ))  # fmt: skip
        spec = parse_fleet({
            "verifier": {"target": target_name, "price_usd_per_hour": 1.0, "max_batch": 1,
                         "max_replicas": n_dev},
            "classes": [{"name": "emulated", "device": "emulated-edge", "count": n_dev,
                         "rtt_ms": 0.0, "min_goodput_tok_s": slo, "cloud_only": False}],
            "k_max": k, "slo_scales": [1.0],
        })  # fmt: skip
        plan = plan_fleet(spec, read_profiles(store))
    replicas = int(plan.replicas[plan.main])
    runs = {}
    for r in sorted({replicas, max(1, replicas - 1)}):
        per_replica = -(-n_dev // r)
        round_s = pred["round_ms"][per_replica - 1] / 1e3
        window = min(max(args.duration_s, args.min_rounds * round_s), args.max_window_s)
        warm = max(args.warmup_s, 2 * round_s)
        res = run_clients([url], per_replica, prompts, tokenizer, args, window, warm)
        per_client = res["per_client_tok_s"]
        mean = statistics.fmean(per_client)  # type: ignore[arg-type]
        runs[str(r)] = {
            "replicas": r,
            "devices_per_replica": per_replica,
            "mean_client_tok_s": mean,
            "min_client_tok_s": min(per_client),  # type: ignore[type-var]
            "predicted_client_tok_s": pred["per_client_tok_s"][per_replica - 1],
            "slo_met_on_mean": mean >= slo,
            "load_avg": res["load_avg"],
        }
    return {"devices": n_dev, "slo_tok_s": slo, "planned_replicas": replicas, "runs": runs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", default="gemma-3-270m-f32")
    ap.add_argument("--drafter", default="ngram")
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--rtt-ms", type=float, default=30.0)
    ap.add_argument("--clients", default="1,2,4,8,16")
    ap.add_argument("--duration-s", type=float, default=25.0)
    ap.add_argument("--calibration-s", type=float, default=30.0)
    ap.add_argument("--warmup-s", type=float, default=4.0)
    ap.add_argument("--verifier-warmup-s", type=float, default=20.0,
                    help="a discarded one-client run before the calibration, so it "
                         "meets a verifier as warm as the N-client runs do")  # fmt: skip
    ap.add_argument("--min-rounds", type=int, default=15, help="rounds per client per window")
    ap.add_argument("--clients-in", choices=("processes", "threads"), default="processes",
                    help="run each emulated client in a process of its own (default, as "
                         "separate devices would be) or all as threads of this one")  # fmt: skip
    ap.add_argument("--max-window-s", type=float, default=150.0)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n-ctx", type=int, default=1024)
    ap.add_argument("--link", default="auto")
    ap.add_argument("--server-arg", action="append", default=[])
    ap.add_argument("--policy", choices=("one-at-a-time", "batched"), default="one-at-a-time")
    ap.add_argument("--max-batch", type=int, default=16, help="batched: sessions per pass")
    ap.add_argument("--gather", choices=("sync", "fixed"), default="sync",
                    help="batched: the verifier's gather mode")  # fmt: skip
    ap.add_argument("--max-gather-wait-ms", type=float, default=0.0,
                    help="batched: sync cap (0 = mean pass time) or fixed wait")  # fmt: skip
    ap.add_argument("--model-gather", choices=GATHER_MODELS, default=None,
                    help="the model's batch formation (default: follows --gather)")  # fmt: skip
    ap.add_argument("--profile-context", type=int, default=160)
    ap.add_argument("--profile-budget-s", type=float, default=4.0)
    ap.add_argument("--verify-profile", type=Path, default=None)
    ap.add_argument("--retime-s", type=float, default=10.0,
                    help="batched: seconds of passes re-timing, right before each N run, the "
                         "curve cells its model reads (0: off; see fleet_retime.py)")  # fmt: skip
    ap.add_argument("--retime-after", action=argparse.BooleanOptionalAction, default=True,
                    help="batched: re-time the same cells again right after each run "
                         "(rows then report error_bracketed; fleet_retime.bracket)")  # fmt: skip
    ap.add_argument("--output-share", type=float, default=None,
                    help="batched: an output row's share of a position's pass cost "
                         "(default: timed before the runs)")  # fmt: skip
    ap.add_argument("--fleet-clients", type=int, default=6)
    ap.add_argument("--no-replica-check", action="store_true")
    ap.add_argument("--only-replica-check", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/fleet_model.json")
    ap.add_argument("--reanalyze", type=Path, default=None, metavar="JSON",
                    help="replay a kept run's JSON with the current input rules (no timing; "
                         "see fleet_reanalyze.py); --out writes the replay")  # fmt: skip
    args = ap.parse_args()
    if args.reanalyze is not None:
        from fleet_reanalyze import reanalyze, table

        replay = reanalyze(json.loads(args.reanalyze.read_text()))
        print("\n".join(table(replay)))
        if "--out" in sys.argv:
            atomic_write_json(args.out, {"benchmark": "bench_fleet_model --reanalyze",
                                         "source": str(args.reanalyze),
                                         "figures": "measured: the kept run's measurements; "
                                         "stored, replayed: modelled (the model's predictions "
                                         "under the run's rules and the current ones)",
                                         **replay})  # fmt: skip
            print(f"wrote {args.out}")
        return
    ns = [int(x) for x in args.clients.split(",")]
    started = time.time()
    tokenizer = open_tokenizer(args.target)
    prompts = [tokenizer.tokenize(p.text) for p in bundled_prompts()]
    drafter0 = open_drafter(args.drafter, tokenizer=tokenizer)
    ident = drafter0.identity
    rows = []
    print(f"load average at start: {load()}", flush=True)
    if args.only_replica_check:
        check = replica_check(
            args, prompts, tokenizer, ident.name, ident.family,
            tokenizer.identity.name,  # type: ignore[attr-defined]
        )  # fmt: skip
        print(f"replica check: {json.dumps(check, indent=1)}", flush=True)
        doc = {"benchmark": "bench_fleet_model", "replica_check": check, "load_avg_end": load(),
               "settings": {k: str(v) for k, v in vars(args).items()}}  # fmt: skip
        atomic_write_json(args.out, doc)
        print(f"wrote {args.out}")
        return
    batched = args.policy == "batched"
    curve, curve_doc = batch_curve(args) if batched else (None, None)
    share_doc: dict[str, float] | None = None
    if batched and args.output_share is None:
        print(f"timing the output rows' share of a pass (load {load()})", flush=True)
        share_doc = measure_output_share(args)
        args.output_share = share_doc["share"]
        print(f"  output share {args.output_share:.3f}: {share_doc} (load {load()})", flush=True)
    share = float(args.output_share or 0.0) if batched else 0.0
    if not batched:
        gather_model = "mva"  # exact for one session per pass
    elif args.model_gather:
        gather_model = args.model_gather
    elif args.gather == "sync":
        gather_model = "sync"
    else:
        gather_model = "continuous" if args.max_gather_wait_ms == 0 else "mva"
    print(f"verifier gather: {args.gather if batched else '-'}; model: {gather_model}")
    with (
        retimer(args, curve_doc) as open_sampler,
        verifier(args, slots=max(ns)) as port,
        open_link(args.link, ("127.0.0.1", port), delay_ms=args.rtt_ms / 2.0) as link,
    ):
        described = link.describe()
        direct = f"http://127.0.0.1:{port}"
        if args.verifier_warmup_s > 0:
            print(f"warming the verifier: 1 client for {args.verifier_warmup_s:.0f} s "
                  f"(discarded; load {load()})", flush=True)  # fmt: skip
        calib = calibrate(link.url, prompts, tokenizer, args)
        pred = predict(calib, max(ns), curve, args.max_batch if batched else 1, gather_model,
                       output_share=share)  # fmt: skip
        print(
            f"calibration (1 client, {calib['rounds']} rounds): think {pred['think_ms'][0]:.1f} "
            f"ms, service {pred['service_ms'][0]:.1f} ms, E {calib['tokens_per_round']:.2f}, "
            f"drafted {calib['drafted']:.2f}; link: {described}",
            flush=True,
        )
        fresh: dict[int, BatchLatency] = {}  # N -> the curve with its re-timed cells
        bracketed: dict[int, BatchLatency] = {}  # N -> ... re-timed before and after it
        for n in ns:
            if curve is not None and open_sampler is not None:
                fresh[n], retimed = retime_before(args, open_sampler, curve, pred, n)
            # Long enough for every client to finish --min-rounds rounds at the predicted
            # round time (a loaded host makes rounds slow), capped at --max-window-s.
            round_s = pred["round_ms"][n - 1] / 1e3
            window = min(max(args.duration_s, args.min_rounds * round_s), args.max_window_s)
            warm = max(args.warmup_s, 2 * round_s)
            probe = (lambda: pass_stats(direct)) if batched else None
            meas = run_clients([link.url], n, prompts, tokenizer, args, window, warm, probe)
            after: dict[str, object] | None = None
            if n in fresh and args.retime_after:
                # the same cells again right after the run: the host's speed can move
                # within a run (fleet_retime.bracket)
                assert curve is not None
                _, after = retime_before(args, open_sampler, curve, pred, n, when="after")
            i = n - 1
            per = meas["per_client_tok_s"]
            row = {
                "clients": n,
                "measured": {k: v for k, v in meas.items() if k != "per_client"},
                "predicted": {
                    "aggregate_tok_s": pred["aggregate_tok_s"][i],
                    "per_client_tok_s": pred["per_client_tok_s"][i],
                    "round_ms": pred["round_ms"][i],
                    "p95_round_ms": pred["p95_round_ms"][i],
                    "utilisation": pred["utilisation"][i],
                },
            }
            row["error"] = {
                "aggregate": err(pred["aggregate_tok_s"][i], meas["aggregate_tok_s"]),  # type: ignore[arg-type]
                "aggregate_wall": err(pred["aggregate_tok_s"][i], meas["aggregate_wall_tok_s"]),  # type: ignore[arg-type]
                "per_client": err(pred["per_client_tok_s"][i], statistics.fmean(per)),  # type: ignore[arg-type]
                "round": err(pred["round_ms"][i], meas["round_ms"]),  # type: ignore[arg-type]
            }
            if curve is not None and meas["window_probe"] is not None:
                delta = tuple(meas["window_probe"])  # type: ignore[arg-type]
                tim = predict_timing_only_batched(curve, args.max_batch, meas, delta,
                                                  gather_model, share)  # fmt: skip
            else:
                tim = predict_timing_only(calib, meas)
            if n in fresh and meas["window_probe"] is not None:
                # the live passes against the re-timed curve (1: its level is the live one)
                again = predict_timing_only_batched(fresh[n], args.max_batch, meas, delta,
                                                    gather_model, share)  # fmt: skip
                tim["curve_scale_retimed"] = again["curve_scale"]
            if n in fresh:
                row["retime"] = retimed
            if after is not None and curve is not None:
                from fleet_retime import bracket, curve_from_record

                row["retime_bracket"] = bracket(retimed, after)
                bracketed[n] = curve_from_record(curve, row["retime_bracket"])
                print(f"  drift over the run (after/before re-timing): "
                      f"{row['retime_bracket']['drift']:.3f}", flush=True)  # fmt: skip
            row["predicted_timing_only"] = tim
            row["error_timing_only"] = {
                "aggregate": err(tim["aggregate_tok_s"], meas["aggregate_tok_s"]),  # type: ignore[arg-type]
                "per_client": err(tim["per_client_tok_s"], statistics.fmean(per)),  # type: ignore[arg-type]
                "round": err(tim["round_ms"], meas["round_ms"]),  # type: ignore[arg-type]
            }
            rows.append(row)
            e = row["error"]
            print(
                f"N={n:>2}: aggregate {meas['aggregate_tok_s']:.1f} meas / "
                f"{pred['aggregate_tok_s'][i]:.1f} model ({e['aggregate']:+.1%}); per client "
                f"{statistics.fmean(per):.2f} [{min(per):.2f}..{max(per):.2f}] / "  # type: ignore[type-var]
                f"{pred['per_client_tok_s'][i]:.2f} ({e['per_client']:+.1%}); round "
                f"{meas['round_ms']:.0f} / {pred['round_ms'][i]:.0f} ms ({e['round']:+.1%}); "
                f"load {meas['load_avg']}",
                flush=True,
            )
        # The model's E pooled over the prompts the clients ran in each window, each
        # prompt's acceptance from a generation alone (direct: E does not depend on RTT)
        cache: dict[int, list[int | None]] = {}
        prefills: dict[int, float] = {}
        ids = sorted({p for r in rows for p in r["measured"]["prompt_ids"]})
        print(f"acceptance alone over the clients' {len(ids)} prompts (load {load()})", flush=True)
        acceptance_alone(direct, ids, prompts, tokenizer, args, cache, prefills)
        solo_rounds = {p: len(cache[p]) for p in sorted(cache)}
        for r in rows:
            n, m = r["clients"], r["measured"]
            e_pool = pooled_e(m["round_keys"], cache)
            # E, the drafted widths and the session churn from the window's own prompts
            # (none depends on timing or batch partners: a prompt's rounds and its
            # prefill are the same alone)
            k_win = m.get("k_counts")
            churn = window_churn(m["round_keys"], solo_rounds, prefills)
            pp = predict(calib, n, curve, args.max_batch if batched else 1, gather_model, e_pool,
                         share, k_win, churn)  # fmt: skip
            r["predicted_calibration_e"], r["error_calibration_e"] = r["predicted"], r["error"]
            r["predicted"] = {
                "aggregate_tok_s": pp["aggregate_tok_s"][n - 1],
                "per_client_tok_s": pp["per_client_tok_s"][n - 1],
                "round_ms": pp["round_ms"][n - 1],
                "p95_round_ms": pp["p95_round_ms"][n - 1],
                "utilisation": pp["utilisation"][n - 1],
                "e_tokens_per_round": e_pool,
                "session_rounds": churn[0],
                "prefill_ms": churn[1],
                "prompts": len(m["prompt_ids"]),
                "mean_pass_sessions": pp["mean_pass_sessions"][n - 1],
            }
            client = statistics.fmean(m["per_client_tok_s"])
            r["error"] = {
                **row_errors(pp, n, m, client),
                "aggregate_wall": err(pp["aggregate_tok_s"][n - 1], m["aggregate_wall_tok_s"]),
            }
            if r["clients"] in fresh:
                # the same with the cells re-timed right before this run (fleet_retime.py)
                pr = predict(calib, n, fresh[n], args.max_batch, gather_model, e_pool,
                             share, k_win, churn)  # fmt: skip
                r["predicted_retimed"] = {
                    "aggregate_tok_s": pr["aggregate_tok_s"][n - 1],
                    "per_client_tok_s": pr["per_client_tok_s"][n - 1],
                    "round_ms": pr["round_ms"][n - 1],
                    "utilisation": pr["utilisation"][n - 1],
                }
                r["error_retimed"] = row_errors(pr, n, m, client)
            if r["clients"] in bracketed:
                # the same with each cell the mean of its re-timings before and after it
                pb = predict(calib, n, bracketed[n], args.max_batch, gather_model, e_pool,
                             share, k_win, churn)  # fmt: skip
                r["predicted_bracketed"] = {
                    "aggregate_tok_s": pb["aggregate_tok_s"][n - 1],
                    "per_client_tok_s": pb["per_client_tok_s"][n - 1],
                    "round_ms": pb["round_ms"][n - 1],
                }
                r["error_bracketed"] = row_errors(pb, n, m, client)
            if batched and share > 0:
                # the same without the output rows' share (the widest block alone), so one
                # run shows both readings of the curve
                p0 = predict(calib, n, curve, args.max_batch, gather_model, e_pool,
                             0.0, k_win, churn)  # fmt: skip
                r["error_no_output_share"] = {
                    "aggregate": err(p0["aggregate_tok_s"][n - 1], m["aggregate_tok_s"]),
                    "round": err(p0["round_ms"][n - 1], m["round_ms"]),
                }
    check = None
    if not args.no_replica_check:
        check = replica_check(
            args, prompts, tokenizer, ident.name, ident.family,
            tokenizer.identity.name,  # type: ignore[attr-defined]
        )  # fmt: skip
        print(f"replica check: {json.dumps(check)}", flush=True)
    print()
    print("the model with E pooled over each run's own prompts (each prompt's E from a "
          "generation alone); calibration-client E in brackets:")  # fmt: skip
    for r in rows:
        ec, ep = r["error_calibration_e"], r["error"]
        print(
            f"{r['clients']:>3} E {r['predicted']['e_tokens_per_round']:.3f} pooled over "
            f"{r['predicted']['prompts']} prompts (measured {r['measured']['tokens_per_round']:.3f}"
            f"); aggregate error {ep['aggregate']:+.1%} ({ec['aggregate']:+.1%}), per client "
            f"{ep['per_client']:+.1%} ({ec['per_client']:+.1%}); sessions per pass model "
            f"{r['predicted']['mean_pass_sessions']:.2f}, measured "
            f"{r['predicted_timing_only'].get('mean_batch', float('nan')):.2f}; per session "
            f"{r['predicted']['session_rounds']:.1f} rounds, prefill "
            f"{r['predicted']['prefill_ms']:.0f} ms (measured {r['measured']['session_rounds']:.1f}"
            f", {r['measured']['prefill_ms']:.0f})"
        )
    print(f"{'N':>3} {'agg meas':>9} {'agg model':>9} {'err':>7} {'client meas':>11} "
          f"{'model':>7} {'err':>7} {'round meas':>10} {'model':>7} {'err':>7}  load")  # fmt: skip
    for r in rows:
        m, p, e = r["measured"], r["predicted"], r["error"]
        print(
            f"{r['clients']:>3} {m['aggregate_tok_s']:>9.1f} {p['aggregate_tok_s']:>9.1f} "
            f"{e['aggregate']:>+7.1%} {statistics.fmean(m['per_client_tok_s']):>11.2f} "
            f"{p['per_client_tok_s']:>7.2f} {e['per_client']:>+7.1%} {m['round_ms']:>10.1f} "
            f"{p['round_ms']:>7.1f} {e['round']:>+7.1%}  {m['load_avg']}"
        )
    print("timing-only (service and think time measured in the same run):")
    for r in rows:
        t, e = r["predicted_timing_only"], r["error_timing_only"]
        print(
            f"{r['clients']:>3} aggregate {t['aggregate_tok_s']:.1f} ({e['aggregate']:+.1%}), "
            f"per client {t['per_client_tok_s']:.2f} ({e['per_client']:+.1%}), round "
            f"{t['round_ms']:.0f} ms ({e['round']:+.1%}); service {t['service_ms']:.0f} ms, "
            f"think {t['think_ms']:.0f} ms"
        )
    if any("error_no_output_share" in r for r in rows):
        print(f"without the output share ({share:.3f}): aggregate error " + ", ".join(
            f"N={r['clients']} {r['error_no_output_share']['aggregate']:+.1%}"
            for r in rows if "error_no_output_share" in r))  # fmt: skip
    worst = max(max(abs(r["error"]["aggregate"]), abs(r["error"]["per_client"])) for r in rows)
    worst_t = max(
        max(abs(r["error_timing_only"]["aggregate"]), abs(r["error_timing_only"]["per_client"]))
        for r in rows
    )
    print(f"max |error| (aggregate, per-client): {worst:.1%}; timing-only {worst_t:.1%} "
          "(target <= 10%)")  # fmt: skip
    worst_r = worst_b = None
    if any("error_retimed" in r for r in rows):
        from fleet_retime import max_abs_error, summary_lines

        print("\n".join(summary_lines(rows)))
        worst_r = max_abs_error(rows, "error_retimed")
        worst_b = max_abs_error(rows, "error_bracketed")
    doc = {
        "benchmark": "bench_fleet_model",
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "link": described,
        "calibration": {k: v for k, v in calib.items() if k != "per_client"},
        "model_inputs": {
            "think_ms": pred["think_ms"][0],
            "service_ms": pred["service_ms"][0],
            "session_rounds": pred["session_rounds"][0],
            "prefill_ms": pred["prefill_ms"][0],
            "policy": args.policy,
            "gather": args.gather if batched else None,
            "max_gather_wait_ms": args.max_gather_wait_ms if batched else None,
            "gather_model": gather_model,
            "batch_curve": curve_doc,
            "output_share": share,
            "output_share_timing": share_doc,
            "solo_prefill_ms": {str(p): v for p, v in sorted(prefills.items())},
            "solo_rounds": {str(p): v for p, v in solo_rounds.items()},
        },
        "rows": rows,
        "max_abs_error": worst,
        "max_abs_error_timing_only": worst_t,
        "max_abs_error_retimed": worst_r,
        "max_abs_error_bracketed": worst_b,
        "errors": {
            "error": "model with the curve profiled before the runs (and E pooled over each "
            "run's prompts)",
            "error_retimed": "the same model with the curve cells it reads re-timed right "
            "before that run (row 'retime': cells, profile and fresh values, time stamps)",
            "error_bracketed": "the same with each cell the mean of its re-timings right "
            "before and right after that run (row 'retime_bracket': both values, drift)",
            "error_timing_only": "service and think time measured in the run itself",
        },
        "replica_check": check,
        "elapsed_s": time.time() - started,
        "load_avg_end": load(),
        "note": "shared host: compare ratios; rerun on a quiet machine to judge the model",
    }
    atomic_write_json(args.out, doc)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
