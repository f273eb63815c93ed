"""Does the profiled pass curve S(B, P) predict the batched verifier's live passes?

``bench_fleet_model --policy batched`` models the verifier with a curve profiled on the
server path (B sessions sent at once, each at ``--profile-context`` tokens, sequence ids
0..B-1). This checks it pass by pass: it profiles the curve exactly as bench_fleet_model
does, then serves a verifier configured like ``configspec serve verifier --batch``
(``--n-ctx``, 48 sessions, ``--max-batch`` per pass, the sync gather) in this process with
the per-pass trace on, while ``--clients`` edge clients (n-gram drafters, a subprocess,
the RTT injected by the delay proxy) loop on the bundled prompts. For every traced pass of
rounds it predicts the pass from its own shape: sessions (plus the gap fillers the target
adds), the widest block (every block is padded to it), and one curve call per
llama.cpp micro-batch left (runs of consecutive sequence ids), and reports live / predicted
per pass and over the window, with the shape statistics (contexts, widths, runs, prefill
passes). Nothing is fitted: the curve comes from the profile alone.

Prints a table and writes JSON to ``benchmarks/results/pass_trace.json``. Timing on a
shared host is noisy: the load average is reported next to every figure.

    CONFIGSPEC_CACHE_DIR=~/.cache/configspec python benchmarks/bench_pass_trace.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from bench_fleet_model import (  # noqa: E402
    batch_curve,
    block_weights,
    effective_width,
    load,
    measure_output_share,
)

from configspec.backends.llamacpp_batch import gap_fillers  # noqa: E402
from configspec.model.fleet import (  # noqa: E402
    ANCHOR_POSITIONS,
    BatchLatency,
    anchor_weight,
    padded_pass_ms,
)
from configspec.serving.batched import BatchPolicy, seq_run_lengths, seq_runs  # noqa: E402
from configspec.store import atomic_write_json  # noqa: E402


def run_clients(args: argparse.Namespace) -> None:
    """The clients' process: ``--clients`` threads looping generations for ``--duration-s``."""
    from configspec.backends.factory import open_drafter, open_tokenizer
    from configspec.profiling.prompts import bundled_prompts
    from configspec.serving.client import EdgeClient

    tok = open_tokenizer(args.target)
    prompts = [tok.tokenize(p.text) for p in bundled_prompts()]
    end = time.perf_counter() + args.duration_s

    def client(i: int) -> None:
        drafter = open_drafter(args.drafter, tokenizer=tok)
        with EdgeClient(args.clients_only, drafter, k=args.k, timeout_s=300) as c:
            j = i * 7
            while time.perf_counter() < end:
                c.generate(prompts[j % len(prompts)], args.max_tokens)
                j += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def predict_pass(
    curve: BatchLatency, ids: list[int], width: int, outputs: float | None = None,
    output_share: float = 0.0,
) -> float:
    """The curve's time (ms) of a pass over sequence ``ids`` (the gap fillers the target
    adds included) with blocks ``width`` wide: one curve call per micro-batch, i.e. per
    run of consecutive ids. ``outputs``: mean output rows per block (``max(2, p)`` for a
    round of ``p`` positions); the missing rows are priced as
    :func:`configspec.model.fleet.anchor_weight` prices them."""
    alpha = 0.0 if outputs is None else float(anchor_weight(width, outputs, output_share))
    return float(sum((1.0 - alpha) * curve(float(b), float(width))
                     + alpha * curve(float(b), float(ANCHOR_POSITIONS))
                     for b in seq_run_lengths(ids)))  # fmt: skip


def analyse(trace: list[dict[str, Any]], curve: BatchLatency, k: int, n_batch: int,
            skip_s: float, output_share: float = 0.0) -> dict[str, Any]:  # fmt: skip
    """Live / predicted per pass of rounds, and the window's shape statistics."""
    t0 = trace[0]["started_s"] + skip_s if trace else 0.0
    passes = [p for p in trace if p["started_s"] >= t0 and "pass_s" in p]
    rounds = [p for p in passes if all(p["shape"]["rounds"])]
    prefills = [p for p in passes if not any(p["shape"]["rounds"])]
    rows = []
    for p in rounds:
        sh = p["shape"]
        width = max(2, *sh["positions"])
        filled = sh["seqs"] + gap_fillers(sh["seqs"], width, n_batch)
        # fillers yield no outputs but cost their rows: count them as outputs (upper bound)
        outs = [max(2, q) for q in sh["positions"]] + [width] * (len(filled) - len(sh["seqs"]))
        pred = predict_pass(curve, filled, width, statistics.fmean(outs), output_share)
        rows.append({"sessions": len(sh["seqs"]), "width": width, "runs": sh["runs"],
                     "runs_filled": seq_runs(filled), "fillers": len(filled) - len(sh["seqs"]),
                     "live_ms": p["pass_s"] * 1e3, "predicted_ms": pred,
                     "context_tokens": sh["context_tokens"]})  # fmt: skip
    by_b: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_b[r["sessions"]].append(r)
    widths = [p for r in rounds for p in r["shape"]["positions"]]
    counts = np.bincount(np.clip(widths, 1, k + 1) - 1, minlength=k + 1) if widths else None
    b_mean = statistics.fmean(r["sessions"] for r in rows) if rows else float("nan")
    live = [r["live_ms"] for r in rows]
    ctx = [c for r in rows for c in r["context_tokens"]]
    out: dict[str, Any] = {
        "round_passes": len(rows),
        "prefill_passes": len(prefills),
        "prefill_pass_ms": statistics.fmean(p["pass_s"] * 1e3 for p in prefills)
        if prefills else None,
        "mean_sessions": b_mean,
        "mean_widest": statistics.fmean(r["width"] for r in rows) if rows else None,
        "mean_positions": statistics.fmean(widths) if widths else None,
        "mean_runs": statistics.fmean(r["runs"] for r in rows) if rows else None,
        "mean_runs_filled": statistics.fmean(r["runs_filled"] for r in rows) if rows else None,
        "context_tokens": [min(ctx), statistics.fmean(ctx), max(ctx)] if ctx else None,
        "live_mean_ms": statistics.fmean(live) if live else None,
        "predicted_mean_ms": statistics.fmean(r["predicted_ms"] for r in rows) if rows else None,
        "ratio_median": statistics.median(r["live_ms"] / r["predicted_ms"] for r in rows)
        if rows else None,
        "by_sessions": {
            str(b): {"passes": len(v), "live_median_ms": statistics.median(x["live_ms"] for x in v),
                     "predicted_median_ms": statistics.median(x["predicted_ms"] for x in v)}
            for b, v in sorted(by_b.items())
        },
        "passes": rows,
    }  # fmt: skip
    if counts is not None and rows:
        # what bench_fleet_model's timing-only does: the window's mean pass against the
        # model's pass of the mean sessions, padded to the widest of the window's rounds
        at = float(padded_pass_ms(curve, b_mean, block_weights(counts), output_share))
        w = float(effective_width(curve, b_mean, at))
        out["curve_at_mean"] = {"sessions": b_mean, "width": w, "curve_ms": at,
                                "scale": statistics.fmean(live) / at}  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", default="gemma-3-270m-f32")
    ap.add_argument("--drafter", default="ngram")
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=60)
    ap.add_argument("--duration-s", type=float, default=40.0)
    ap.add_argument("--skip-s", type=float, default=3.0, help="trace start left out")
    ap.add_argument("--rtt-ms", type=float, default=30.0)
    ap.add_argument("--link", default="proxy")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n-ctx", type=int, default=1024)
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--profile-context", type=int, default=160)
    ap.add_argument("--profile-budget-s", type=float, default=4.0)
    ap.add_argument("--verify-profile", type=Path, default=None)
    ap.add_argument("--output-share", type=float, default=None,
                    help="an output row's share of a position's pass cost (default: timed)")
    ap.add_argument("--no-reprofile", dest="reprofile", action="store_false",
                    help="skip profiling the curve again after the live run")  # fmt: skip
    ap.add_argument("--clients-only", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/pass_trace.json")
    args = ap.parse_args()
    if args.clients_only:
        run_clients(args)
        return
    from configspec.serving.launch import VerifierSetup, open_verifier_service
    from configspec.serving.netem import open_link
    from configspec.serving.server import ServerThread
    from configspec.serving.sessions import ServerLimits

    started_load = load()
    curve, curve_doc = batch_curve(args)
    share_doc = None
    if args.output_share is None:
        share_doc = measure_output_share(args)
        args.output_share = share_doc["share"]
        print(f"output share {args.output_share:.3f}: {share_doc} (load {load()})", flush=True)
    setup = VerifierSetup(
        target=args.target,
        limits=ServerLimits(max_sessions=48, max_context_tokens=args.n_ctx),
        policy=BatchPolicy(max_sessions_per_batch=args.max_batch, gather="sync"),
        n_threads=args.threads,
    )
    service = open_verifier_service(setup)
    service.pass_trace = []  # type: ignore[attr-defined]
    n_batch = service.batch_target.n_batch  # type: ignore[attr-defined]
    with (
        ServerThread(service) as srv,
        open_link(args.link, ("127.0.0.1", srv.port), delay_ms=args.rtt_ms / 2) as link,
    ):
        load_live = load()
        cmd = [sys.executable, __file__, "--clients-only", link.url, "--clients",
               str(args.clients), "--max-tokens", str(args.max_tokens), "--duration-s",
               str(args.duration_s), "--k", str(args.k), "--target", args.target,
               "--drafter", args.drafter]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
        subprocess.run(cmd, check=True, env=env)
        load_end = load()
    trace = service.pass_trace  # type: ignore[attr-defined]
    res = analyse(trace, curve, args.k, n_batch, args.skip_s, args.output_share)
    after = None
    if args.reprofile and args.verify_profile is None:
        # the host's speed drifts on a shared machine: the same profile again right after
        # the live run brackets it (the live verifier is idle by now)
        curve2, doc2 = batch_curve(args)
        res2 = analyse(trace, curve2, args.k, n_batch, args.skip_s, args.output_share)
        after = {"batch_curve": doc2, "predicted_mean_ms": res2["predicted_mean_ms"],
                 "ratio_median": res2["ratio_median"], "load_avg": load()}  # fmt: skip
    print(f"load: start {started_load}, live run {load_live} -> {load_end} (shared host)")
    print(f"{res['round_passes']} passes of rounds, {res['prefill_passes']} prefill passes "
          f"(mean {res['prefill_pass_ms'] or 0:.0f} ms); sessions {res['mean_sessions']:.2f}, "
          f"widest {res['mean_widest']:.2f} (mean block {res['mean_positions']:.2f}), runs "
          f"{res['mean_runs']:.2f} ({res['mean_runs_filled']:.2f} after fillers), contexts "
          f"{res['context_tokens']}")  # fmt: skip
    print(f"{'B':>3} {'passes':>6} {'live ms':>8} {'curve ms':>8} {'ratio':>6}")
    for b, v in res["by_sessions"].items():
        live_ms, pred_ms = v["live_median_ms"], v["predicted_median_ms"]
        print(f"{b:>3} {v['passes']:>6} {live_ms:>8.0f} {pred_ms:>8.0f} {live_ms / pred_ms:>6.2f}")
    print(f"all: live {res['live_mean_ms']:.0f} ms, curve {res['predicted_mean_ms']:.0f} ms per "
          f"pass (mean); median live/curve {res['ratio_median']:.2f}")  # fmt: skip
    if after is not None:
        print(f"the curve profiled again after the run (load {after['load_avg']}): "
              f"{after['predicted_mean_ms']:.0f} ms per pass (mean); median live/curve "
              f"{after['ratio_median']:.2f}")  # fmt: skip
    if "curve_at_mean" in res:
        c = res["curve_at_mean"]
        print(f"bench_fleet_model's timing-only scale: live mean / S({c['sessions']:.2f}, "
              f"{c['width']:.2f}) = {c['scale']:.2f}")  # fmt: skip
    doc = {
        "benchmark": "bench_pass_trace",
        "settings": {k: str(v) for k, v in vars(args).items()},
        "batch_curve": curve_doc,
        "output_share": args.output_share,
        "output_share_timing": share_doc,
        "after": after,
        "load_avg": {"start": started_load, "live": load_live, "end": load_end},
        **res,
        "note": "shared host: compare ratios; rerun on a quiet machine",
    }
    atomic_write_json(args.out, doc)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
