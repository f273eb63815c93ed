"""Does a call run slower after the process has been idle? Verification and drafting timed
after 0 .. 300 ms of sleep, interleaved.

The profilers time calls back to back; in a run the verifier sleeps while the edge drafts
and the link carries the request, and the drafter sleeps while the cloud verifies (issue
14: on this VM a run's verification measured 10-35% slower than profiled, and the sampled
rounds more). This benchmark isolates that one factor: the same target call (the
verification profiler's ``_time_batch`` on ``--positions`` positions after a cached
context) and the same drafter call (the device profiler's ``DraftTimer``, one token), each
timed right after sleeping ``idle`` ms, the idle levels taken in a shuffled order per
repeat so host drift falls on every level alike. It prints, per idle level, the median and
its 95% CI (bootstrap over calls) and the ratio to back to back (idle 0). Run it on a quiet
host; the load average is printed and stored.

    PYTHONPATH=src python benchmarks/bench_idle_wake.py
    PYTHONPATH=src python benchmarks/bench_idle_wake.py --idle-ms 0 5 30 100 --repeats 30

Writes ``benchmarks/results/bench_idle_wake.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import result_header

from configspec.backends.factory import LlamaSettings, open_drafter, open_target
from configspec.profiling.device import DraftTimer, build_context
from configspec.profiling.verification import _time_batch
from configspec.stats import bootstrap_median, bootstrap_ratio_of_medians


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--target", default="gemma-3-270m-f32")
    ap.add_argument("--drafter", default="gemma-3-270m-q8_0")
    ap.add_argument("--idle-ms", nargs="+", type=float, default=[0, 2, 10, 30, 100, 300])
    ap.add_argument("--positions", type=int, default=3)
    ap.add_argument("--context", type=int, default=93)
    ap.add_argument("--repeats", type=int, default=20, help="calls per idle level and part")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    args.out = args.out or Path(__file__).parent / "results" / "bench_idle_wake.json"
    load_before = os.getloadavg()
    t_start = time.perf_counter()
    settings = LlamaSettings(n_threads=args.threads, n_ctx=1024)
    target = open_target(args.target, settings=settings)
    drafter = open_drafter(args.drafter, tokenizer=target, settings=settings)
    full = build_context(target, args.context + args.positions)
    context, tokens = full[: args.context], full[args.context :]
    timer = DraftTimer(drafter, build_context(drafter, args.context), 1)
    calls: dict[str, Any] = {
        "verify": lambda: _time_batch([target], context, tokens, None),
        "draft": lambda: timer.per_token_ms(1),
    }
    for fn in calls.values():  # warm-up
        fn(), fn()
    samples: dict[tuple[str, float], list[float]] = {}
    rng = random.Random(0)
    for rep in range(args.repeats):
        order = [(part, idle) for part in calls for idle in args.idle_ms]
        rng.shuffle(order)
        for part, idle in order:
            time.sleep(idle / 1e3)
            samples.setdefault((part, idle), []).append(float(calls[part]()))
        if (rep + 1) % 5 == 0:
            print(f"  repeat {rep + 1}/{args.repeats}, load {os.getloadavg()[0]:.2f}", flush=True)
    rows = []
    print(f"\n{'part':<7} {'idle ms':>8} {'median ms':>10} {'95% CI':>15} "
          f"{'vs idle ' + format(args.idle_ms[0], 'g'):>12} {'95% CI':>13}")  # fmt: skip
    for part in calls:
        base = samples[(part, args.idle_ms[0])]
        for idle in args.idle_ms:
            xs = samples[(part, idle)]
            med = bootstrap_median(xs)
            ratio = bootstrap_ratio_of_medians(xs, base)
            rows.append({"part": part, "idle_ms": idle, "median_ms": med.model_dump(),
                         "ratio_to_first": ratio.model_dump(), "calls": len(xs)})  # fmt: skip
            print(f"{part:<7} {idle:>8g} {med.mean:>10.2f} {med.ci_low:>7.2f}..{med.ci_high:<7.2f} "
                  f"{ratio.mean:>11.3f}x {ratio.ci_low:>6.3f}..{ratio.ci_high:<6.3f}")  # fmt: skip
    load_after = os.getloadavg()
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1 min); "
          f"{time.perf_counter() - t_start:.0f} s")  # fmt: skip
    doc = result_header("bench_idle_wake", args, None, load_before, load_after)
    doc["rows"] = rows
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2))
    tmp.replace(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
