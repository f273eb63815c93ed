"""The verifier's own sampled work per round, in-process: what a T > 0 round adds to a greedy one.

Issue 14: sampled rounds' verification ran above the profile. The batched verifier's pass
is timed here as the server runs it (``LlamaCppBatchTarget.evaluate_many`` in a worker
thread, then the decision), three ways, arms shuffled and interleaved per repeat:

* ``greedy`` — the pass without probabilities, argmax only (a T = 0 round);
* ``pass_at_t`` — the pass with the softmax at the sampling temperature, the decision
  using those probabilities as they are (what the verifier does since this benchmark was
  written);
* ``retemper`` — the pass with the softmax at T = 1, the decision re-tempering the K + 1
  rows in float64 (``serving.verify.apply_temperature``: what the verifier did before,
  and still does for targets that return T = 1 probabilities or top-k).

Per arm and K it reports the thread's CPU time (ms; robust to other processes taking the
cores, not to them sharing memory bandwidth), the wall time and the minor page faults per
round: fresh (K + 1) x 262k float64 temporaries fault on every round.

    PYTHONPATH=src python benchmarks/bench_sampled_decision.py
    PYTHONPATH=src python benchmarks/bench_sampled_decision.py --ks 1 2 4 --repeats 20

Writes ``benchmarks/results/bench_sampled_decision.json``.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import result_header

from configspec.backends.factory import LlamaSettings, open_batch_target
from configspec.backends.llamacpp_batch import SeqRequest
from configspec.profiling.prompts import bundled_prompts, select_prompts
from configspec.serving.verify import sampled_decision, target_probs_at
from configspec.store import atomic_write_json

ARMS = ("greedy", "pass_at_t", "retemper")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--target", default="gemma-3-270m-f32")
    ap.add_argument("--ks", nargs="+", type=int, default=[1, 4])
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--repeats", type=int, default=12)
    ap.add_argument("--idle-ms", type=float, default=100.0, help="sleep before each round")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    args.out = args.out or Path(__file__).parent / "results" / "bench_sampled_decision.json"
    load_before = os.getloadavg()
    # the verifier's target as `serve verifier` opens it for the runtime
    settings = LlamaSettings(n_threads=args.threads, n_ctx=1024)
    target = open_batch_target(
        args.target, n_seqs=32, max_positions_per_pass=256, settings=settings
    )
    seq = target.new_sequence()
    vocab = target.n_vocab
    ids = target.tokenize(select_prompts(bundled_prompts(), 1)[0].text)
    rng = np.random.default_rng(0)
    temp = args.temperature

    def one_round(arm: str, k: int) -> tuple[float, float, float]:
        ctx, toks = ids[:-k], ids[-k:]
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        w0, c0 = time.perf_counter(), time.thread_time()
        if arm == "greedy":
            target.evaluate_many([SeqRequest(seq, ctx, toks, probs=False)])
        else:
            at = temp if arm == "pass_at_t" else 1.0
            ev = target.evaluate_many([SeqRequest(seq, ctx, toks, True, at)])[0]
            p, _ = target_probs_at(ev.probs, None, None, k + 1, temp, vocab, at)
            sampled_decision(toks, None, p, vocab, rng)
        cpu, wall = (time.thread_time() - c0) * 1e3, (time.perf_counter() - w0) * 1e3
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
        target.rollback(seq, len(ctx))
        return cpu, wall, float(faults)

    cells = [(a, k) for a in ARMS for k in args.ks]
    samples: dict[tuple[str, int], list[tuple[float, float, float]]] = {c: [] for c in cells}
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:  # the verifier's worker thread
            for c in cells:  # warm-up
                pool.submit(one_round, *c).result()
            for _ in range(args.repeats):
                random.shuffle(cells)
                for c in cells:
                    time.sleep(args.idle_ms / 1e3)
                    samples[c].append(pool.submit(one_round, *c).result())
    finally:
        target.close()
    load_after = os.getloadavg()
    rows: list[dict[str, Any]] = []
    print(f"{'K':>2} {'arm':<10}{'cpu ms':>8}{'wall ms':>9}{'faults':>8}{'cpu over greedy':>17}")
    for k in args.ks:
        greedy_cpu = statistics.median(s[0] for s in samples[("greedy", k)])
        for a in ARMS:
            s = samples[(a, k)]
            cpu, wall = statistics.median(x[0] for x in s), statistics.median(x[1] for x in s)
            faults = statistics.median(x[2] for x in s)
            print(f"{k:>2} {a:<10}{cpu:8.1f}{wall:9.1f}{faults:8.0f}{cpu - greedy_cpu:+17.1f}")
            rows.append({"k": k, "arm": a, "cpu_ms": cpu, "wall_ms": wall, "faults": faults,
                         "cpu_over_greedy_ms": cpu - greedy_cpu, "samples": s})  # fmt: skip
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1 min)")
    doc = result_header("bench_sampled_decision", args, None, load_before, load_after)
    doc["source"] = "measured"  # medians of the timed rounds; every sample is kept
    doc["rows"] = rows
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, doc)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
