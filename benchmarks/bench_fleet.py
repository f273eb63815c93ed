"""Many edge devices, one verifier: batched against one-at-a-time verification (issue 16).

N concurrent edge clients (n-gram drafters, so clients cost little CPU; each its own
prompt) generate against one verifier with the F32 Gemma 3 270M target, directly (RTT 0)
or through the delay proxy (RTT ``--rtt-ms``). Two policies on the same server code and
the same multi-sequence target: ``batched`` (up to ``--max-batch-sessions`` sessions per
pass) and ``one-at-a-time`` (one session per pass; every session still keeps its own KV
sequence, so this baseline pays no session-switch prefill). The batched policy runs with
each ``--gather`` mode asked for: ``sync`` (default: the batcher waits for the sessions
expected back, so closed loops share passes) and/or ``fixed`` (``--max-gather-wait-ms``
after the first request; 0 = continuous batching, the old default). Every row records its
``gather`` mode and, from the verifier's own metrics over that run, the passes, mean
sessions per pass, and the gather decisions. Reported per (policy, gather, N, RTT):
aggregate generated tokens/s (all clients' tokens / wall time), the same in the *steady
window* in which every client was decoding (``steady_tokens_per_s``, its length and mean
sessions per pass: each client generates a fixed number of tokens and they finish at
different times, so the whole-run figure includes a tail with fewer clients; see
:func:`steady_window`), the batched/one-at-a-time ratio of both, per-client goodput
(tokens / decode time), p50/p99 round time, per-round overhead (round − draft − verify −
RTT; at N=1 it is the server path's own cost), and whether every client's tokens equal
what the same prompt gives alone on that server and policy, and target-only decoding
(K=0, alone).

Reusable: :func:`run_fleet` returns the rows (one dict per configuration) for other
tools, e.g. a queueing model validated against it. Writes
``benchmarks/results/bench_fleet.json`` and prints a table with the load average.

    PYTHONPATH=src python benchmarks/bench_fleet.py [--n 1 2 4 8 16] [--rtt-ms 0 30]
        [--tokens 48] [--k 4] [--gather sync fixed]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from _results import result_header  # benchmarks/_results.py

from configspec.backends.llamacpp_batch import LlamaCppBatchTarget
from configspec.backends.models import prepare_family
from configspec.backends.ngram import NgramDrafter
from configspec.profiling.prompts import bundled_prompts
from configspec.serving.batched import GATHER_STOPS, BatchedVerifierService, BatchPolicy
from configspec.serving.client import EdgeClient, Generation
from configspec.serving.proxy import DelayProxy
from configspec.serving.server import ServerThread
from configspec.serving.sessions import ServerLimits
from configspec.store import atomic_write_json

POLICIES = ("batched", "one-at-a-time")
GATHERS = ("sync", "fixed")


def _pass_counters(service: BatchedVerifierService) -> dict[str, float]:
    """Cumulative passes, sessions over passes and gather decisions from the service's
    metrics (differences of two readings describe the run between them)."""
    reg = service.metrics.registry
    out = {
        "passes": reg.get_sample_value("configspec_batch_sessions_count") or 0.0,
        "pass_sessions": reg.get_sample_value("configspec_batch_sessions_sum") or 0.0,
        "gather_wait_s": reg.get_sample_value("configspec_batch_gather_wait_seconds_sum") or 0.0,
    }
    for stop in GATHER_STOPS:
        out[f"stop_{stop}"] = (
            reg.get_sample_value("configspec_batch_gather_decisions_total", {"stop": stop}) or 0.0
        )
    return out


def _generate(
    url: str, target: LlamaCppBatchTarget, prompt: list[int], n: int, k: int
) -> Generation:
    with EdgeClient(url, NgramDrafter(target), k=k) as client:  # type: ignore[arg-type]
        return client.generate(prompt, n)


def _concurrent(
    url: str, target: LlamaCppBatchTarget, prompts: Sequence[list[int]], n: int, k: int
) -> tuple[list[Generation], float, list[float]]:
    """Every prompt's client at once; (generations, wall s, each client's end, perf_counter s)."""
    gens: list[Generation | None] = [None] * len(prompts)
    ends_s = [0.0] * len(prompts)
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(prompts))

    def run(i: int) -> None:
        try:
            barrier.wait()
            gens[i] = _generate(url, target, list(prompts[i]), n, k)
            ends_s[i] = time.perf_counter()
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall_s = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return [g for g in gens if g is not None], wall_s, ends_s


def steady_window(
    gens: Sequence[Generation], ends_s: Sequence[float], trace: Sequence[dict[str, Any]]
) -> dict[str, float]:
    """The part of a run in which every client was decoding: from the last client's first
    round to the first client's last round (round ends placed from each client's end
    time, its decode time and its round times). Tokens/s of the rounds ending inside it
    (accepted + 1 each), its length, and the mean sessions per pass of the passes that
    started inside it (from the verifier's pass trace). Clients finish a fixed number of
    tokens at different times (their acceptance differs), so the whole-run figure mixes
    N with fewer clients; this is the N-client steady state a fleet runs in."""
    round_ends = []
    for g, end_s in zip(gens, ends_s, strict=True):
        start_s = end_s - g.decode_s
        round_ends.append(start_s + np.cumsum([r.round_ms for r in g.rounds]) / 1e3)
    if any(len(e) == 0 for e in round_ends):
        return {"steady_tokens_per_s": float("nan"), "steady_s": 0.0, "steady_batch": float("nan")}
    lo = max(float(e[0]) for e in round_ends)
    hi = min(float(e[-1]) for e in round_ends)
    if hi <= lo:
        return {"steady_tokens_per_s": float("nan"), "steady_s": 0.0, "steady_batch": float("nan")}
    tokens = sum(
        r.accepted + 1
        for g, e in zip(gens, round_ends, strict=True)
        for r, t in zip(g.rounds, e, strict=True)
        if lo < t <= hi
    )
    sizes = [len(p["batch"]) for p in trace if lo <= p["started_s"] < hi]
    return {
        "steady_tokens_per_s": tokens / (hi - lo),
        "steady_s": hi - lo,
        "steady_batch": float(np.mean(sizes)) if sizes else float("nan"),
    }


def run_fleet(
    target: LlamaCppBatchTarget,
    prompts: Sequence[list[int]],
    *,
    ns: Sequence[int] = (1, 2, 4, 8, 16),
    rtts_ms: Sequence[float] = (0.0, 30.0),
    policies: Sequence[str] = POLICIES,
    gathers: Sequence[str] = ("sync",),
    max_gather_wait_ms: float = 0.0,
    tokens: int = 48,
    k: int = 4,
    max_batch_sessions: int = 16,
    max_positions_per_pass: int = 128,
    log: Any = None,
) -> list[dict[str, Any]]:
    """Measure every (policy, RTT, N); one row each (see the module docstring).

    ``target`` needs at least ``max(ns)`` free sequences; ``prompts`` at least
    ``max(ns)`` token lists. RTT is added by an in-process delay proxy (half each way).
    The batched policy runs once per gather mode in ``gathers`` (with
    ``max_gather_wait_ms``); one-at-a-time runs once (``fixed``, 0 ms: one session per
    pass never waits).
    """
    rows: list[dict[str, Any]] = []
    limits = ServerLimits(
        max_k=max(k, 1), max_sessions=target.n_seqs, max_context_tokens=target.n_ctx
    )
    runs = [(p, g) for p in policies for g in (gathers if p == "batched" else ("fixed",))]
    for policy, gather in runs:
        pol = BatchPolicy(
            max_sessions_per_batch=max_batch_sessions if policy == "batched" else 1,
            max_positions_per_pass=max_positions_per_pass,
            prefill_chunk_tokens=min(64, max_positions_per_pass),
            gather=gather,
            max_gather_wait_ms=max_gather_wait_ms if policy == "batched" else 0.0,
        )
        service = BatchedVerifierService(target, limits, pol)
        service.pass_trace = []  # per-pass sizes and times for the steady window
        with ServerThread(service) as srv:
            alone = {
                i: _generate(srv.url, target, list(p), tokens, k).tokens
                for i, p in enumerate(prompts[: max(ns)])
            }
            target_only = {
                i: _generate(srv.url, target, list(p), tokens, 0).tokens
                for i, p in enumerate(prompts[: max(ns)])
            }
            for rtt in rtts_ms:
                proxy = DelayProxy((srv.host, srv.port), delay_ms=rtt / 2).start() if rtt else None
                url = proxy.url if proxy else srv.url
                try:
                    for n in ns:
                        before = _pass_counters(service)
                        service.pass_trace = []
                        gens, wall_s, ends_s = _concurrent(url, target, prompts[:n], tokens, k)
                        after = _pass_counters(service)
                        steady = steady_window(gens, ends_s, service.pass_trace)
                        d = {key: after[key] - before[key] for key in after}
                        rounds = [r for g in gens for r in g.rounds]
                        round_ms = np.array([r.round_ms for r in rounds])
                        overhead = [r.round_ms - r.draft_ms - r.verify_ms - rtt for r in rounds]
                        row = {
                            "policy": policy,
                            "gather": gather,
                            "max_gather_wait_ms": pol.max_gather_wait_ms,
                            "rtt_ms": rtt,
                            "clients": n,
                            "tokens_per_client": tokens,
                            "k": k,
                            "wall_s": wall_s,
                            "aggregate_tokens_per_s": sum(len(g.tokens) for g in gens) / wall_s,
                            **steady,
                            "client_goodput_tokens_per_s": [
                                len(g.tokens) / g.decode_s for g in gens
                            ],
                            "round_ms_p50": float(np.percentile(round_ms, 50)),
                            "round_ms_p99": float(np.percentile(round_ms, 99)),
                            "overhead_ms_median": statistics.median(overhead),
                            "rounds": len(rounds),
                            "accepted_per_round": float(np.mean([r.accepted for r in rounds])),
                            "identical_to_alone": sum(
                                g.tokens == alone[i] for i, g in enumerate(gens)
                            ),
                            "identical_to_target_only": sum(
                                g.tokens == target_only[i] for i, g in enumerate(gens)
                            ),
                            "passes": d["passes"],
                            "mean_batch": d["pass_sessions"] / max(d["passes"], 1.0),
                            "mean_gather_wait_ms": d["gather_wait_s"] / max(d["passes"], 1.0) * 1e3,
                            "gather_stops": {s: d[f"stop_{s}"] for s in GATHER_STOPS},
                            "load_average_1m": os.getloadavg()[0],
                        }
                        rows.append(row)
                        if log:
                            log(row)
                finally:
                    if proxy:
                        proxy.stop()
    return rows


def _table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| policy | gather | RTT ms | N | aggregate tok/s | steady tok/s (s) | steady batch | "
        "client goodput tok/s (median) | "
        "round p50 / p99 ms | overhead ms (median) | mean batch | = alone | = target-only "
        "| load 1m |"
    )
    lines = [head, "|" + "---|" * 14]
    for r in rows:
        lines.append(
            f"| {r['policy']} | {r['gather']} | {r['rtt_ms']:g} | {r['clients']} | "
            f"{r['aggregate_tokens_per_s']:.1f} | "
            f"{r['steady_tokens_per_s']:.1f} ({r['steady_s']:.1f}) | {r['steady_batch']:.2f} | "
            f"{statistics.median(r['client_goodput_tokens_per_s']):.1f} | "
            f"{r['round_ms_p50']:.0f} / {r['round_ms_p99']:.0f} | "
            f"{r['overhead_ms_median']:.1f} | {r['mean_batch']:.2f} | "
            f"{r['identical_to_alone']}/{r['clients']} | "
            f"{r['identical_to_target_only']}/{r['clients']} | {r['load_average_1m']:.1f} |"
        )
    base = {(r["rtt_ms"], r["clients"]): r for r in rows if r["policy"] == "one-at-a-time"}
    for r in rows:
        b = base.get((r["rtt_ms"], r["clients"]))
        if r["policy"] == "batched" and b is not None:
            lines.append(
                f"batched {r['gather']} / one-at-a-time, RTT {r['rtt_ms']:g} ms, "
                f"N={r['clients']}: whole run "
                f"{r['aggregate_tokens_per_s'] / b['aggregate_tokens_per_s']:.2f}x, steady "
                f"{r['steady_tokens_per_s'] / b['steady_tokens_per_s']:.2f}x"
            )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    ap.add_argument("--rtt-ms", type=float, nargs="+", default=[0.0, 30.0])
    ap.add_argument("--policies", nargs="+", default=list(POLICIES), choices=POLICIES)
    ap.add_argument(
        "--gather",
        nargs="+",
        default=["sync"],
        choices=GATHERS,
        help="gather mode(s) of the batched policy (fixed + --max-gather-wait-ms 0 = the "
        "old continuous batching)",
    )
    ap.add_argument("--max-gather-wait-ms", type=float, default=0.0)
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-batch-sessions", type=int, default=16)
    ap.add_argument("--cache-dir", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/bench_fleet.json"))
    args = ap.parse_args()
    cache_dir = args.cache_dir or Path(
        os.environ.get("CONFIGSPEC_TEST_MODELS", "/work/.cache/configspec-test-models")
    )
    family = prepare_family(cache_dir)
    n_max = max(args.n)
    load_before = os.getloadavg()
    with LlamaCppBatchTarget(
        family.target_path,
        identity=family.target,
        n_seqs=n_max + 1,
        n_ctx=512,
        n_batch=128,
        n_threads=args.threads,
    ) as target:
        texts = [p.text for p in bundled_prompts()]
        prompts = [target.tokenize(t)[:200] for t in texts[:n_max]]
        rows = run_fleet(
            target,
            prompts,
            ns=args.n,
            rtts_ms=args.rtt_ms,
            policies=args.policies,
            gathers=args.gather,
            max_gather_wait_ms=args.max_gather_wait_ms,
            tokens=args.tokens,
            k=args.k,
            max_batch_sessions=args.max_batch_sessions,
            log=lambda r: print(
                f"{r['policy']:>13} {r['gather']:>5} RTT {r['rtt_ms']:g} N={r['clients']}: "
                f"{r['aggregate_tokens_per_s']:.1f} tok/s (steady {r['steady_tokens_per_s']:.1f}"
                f" over {r['steady_s']:.1f} s, batch {r['steady_batch']:.2f}), "
                f"mean batch {r['mean_batch']:.2f}, "
                f"load {r['load_average_1m']:.1f}",
                flush=True,
            ),
        )
    load_after = os.getloadavg()
    print(_table(rows))
    print(
        f"load average {load_before[0]:.2f} -> {load_after[0]:.2f} (1 min); host {platform.node()}"
    )
    out = {
        **result_header("bench_fleet", args, cache_dir, load_before, load_after),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, out)


if __name__ == "__main__":
    main()
