"""The adaptive-K policy's own cost per round (issue 18: < 0.2 ms), without models or servers.

A policy is fed a synthetic round stream (i.i.d. acceptance, a fixed link; drift every
``--drift-every`` rounds, so the change detector and the K switches are exercised too) and
every ``choose()`` and ``observe()`` is timed, by the wall clock (``perf_counter_ns``: what a
round pays on a quiet host) and by the thread's CPU clock (``thread_time_ns``: what it
costs even on a shared host, where the wall clock also counts time the process waited
for a core). Cases: a model
drafter and an n-gram-like drafter (which also learns its proposal chain), at K_max 8 and
16, for the goodput objective (the default) and the cost objective.

    PYTHONPATH=src python benchmarks/bench_adaptive_policy.py

Prints a table (median, p99 and mean of choose + observe per round, µs, wall and CPU)
with the load average, and writes ``benchmarks/results/bench_adaptive_policy.json``.
CPU-light (a few seconds of one core); figures from a loaded host are upper bounds.

``--old-src DIR`` (another revision's ``src/``, e.g. from ``git worktree add /tmp/old
REV``) also runs that revision's policy, round by round interleaved with this one's (the
order alternating, each on its own stream of the same seed), and prints the ratio new /
old of every figure: both run under the same host load, so the ratio is fair on a
shared host where the absolute figures are not.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from configspec.model.evaluate import Link  # noqa: E402
from configspec.serving.adaptive import AdaptiveK, PolicyPrior  # noqa: E402
from configspec.store import atomic_write_json  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from old_policy import load_old  # noqa: E402

TARGET_US = 200.0


def make_prior(k_max: int, proposal: float) -> PolicyPrior:
    """A prior like a profiled 270M pair: α 0.7, 4 ms per draft token, 30 + 2 ms/position."""
    positions = np.arange(k_max + 2, dtype=np.float64)
    verify = 30.0 + 2.0 * positions
    verify[0] = np.nan
    return PolicyPrior(
        acceptance=np.full(k_max, 0.7),
        proposal=np.full(k_max, proposal),
        draft_ms_per_token=np.full(k_max, 4.0),
        verify_ms=verify,
        link=Link(rtt_ms=20.0),
        catchup_ms=1.0,
        price_usd_per_hour=1.0,
    )


def stream(
    rounds: int,
    k_max: int,
    proposal: float,
    drift_every: int,
    seed: int,
    thrash_kb: int = 0,
    classes: tuple[type, ...] = (AdaptiveK,),
) -> list[tuple[list[float], list[float]]]:
    """Run one policy of each class in ``classes`` over ``rounds`` synthetic rounds, round
    by round interleaved (the order alternating), each on its own stream of ``seed``;
    per policy, per-round cost (µs), wall and CPU.

    ``thrash_kb`` > 0: between rounds (untimed) write a buffer of that many KiB and run a
    little unrelated Python, so each round starts from caches as cold as a live decode
    round (drafting, network, parsing) leaves them.
    """
    buf = np.zeros(max(1, thrash_kb * 128))
    junk = {str(i): i for i in range(2000)}
    n = len(classes)
    rngs = [np.random.default_rng(seed) for _ in classes]
    policies = [cls(make_prior(k_max, proposal), k_max=k_max) for cls in classes]
    alphas, rtts = [0.7] * n, [20.0] * n
    out: list[tuple[list[float], list[float]]] = [([], []) for _ in classes]
    clock, cpu = time.perf_counter_ns, time.thread_time_ns
    gc.disable()  # a collection would land on one round at random; time the policy itself
    try:
        for i in range(rounds):
            order = range(n) if i % 2 == 0 else range(n - 1, -1, -1)
            for j in order:
                rng, policy = rngs[j], policies[j]
                if drift_every and i and i % drift_every == 0:
                    alphas[j] = float(rng.uniform(0.3, 0.9))
                    rtts[j] = float(rng.choice([5.0, 30.0, 120.0]))
                if thrash_kb:
                    buf += 1.0
                    sum(v for v in junk.values() if v % 3)
                c0, t0 = cpu(), clock()
                k = policy.choose().k
                t1, c1 = clock(), cpu()
                drafted = 0
                while drafted < k and rng.random() < proposal:
                    drafted += 1
                accepted = 0
                while accepted < drafted and rng.random() < alphas[j]:
                    accepted += 1
                draft_ms = 4.0 * drafted
                verify_ms = 30.0 + 2.0 * (drafted + 1)
                if thrash_kb:
                    buf += 1.0
                    sum(v for v in junk.values() if v % 3)
                c2, t2 = cpu(), clock()
                policy.observe(
                    k_asked=k, drafted=drafted, accepted=accepted, draft_ms=draft_ms,
                    verify_ms=verify_ms, round_ms=draft_ms + verify_ms + rtts[j],
                )  # fmt: skip
                t3, c3 = clock(), cpu()
                out[j][0].append(((t1 - t0) + (t3 - t2)) / 1e3)
                out[j][1].append(((c1 - c0) + (c3 - c2)) / 1e3)
    finally:
        gc.enable()
    return out


def figures(costs: list[float], warmup: int) -> dict[str, float]:
    """Median, p99 and mean (µs) of the per-round costs after ``warmup`` rounds."""
    kept = sorted(costs[warmup:])
    return {
        "median_us": statistics.median(kept),
        "p99_us": kept[int(0.99 * (len(kept) - 1))],
        "mean_us": statistics.fmean(kept),
    }


def main() -> int:
    """Time every case, print the table, write the JSON; exit 1 if a median misses."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5000)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--drift-every", type=int, default=300)
    ap.add_argument(
        "--thrash-kb", type=int, default=0,
        help="write this many KiB between rounds (cold caches, as in a live run; e.g. 8192)",
    )  # fmt: skip
    ap.add_argument(
        "--old-src", type=Path, default=None,
        help="another revision's src/: its policy timed side by side, with ratios new / old",
    )  # fmt: skip
    ap.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "bench_adaptive_policy.json"
    )
    args = ap.parse_args()
    load_before = os.getloadavg()
    cases: list[dict[str, object]] = []
    print(f"{'case':<30} {'wall: median':>12} {'p99':>8} {'mean':>8}   "
          f"{'CPU: median':>11} {'p99':>8} {'mean':>8}  (µs per round)")  # fmt: skip
    classes: tuple[type, ...] = (AdaptiveK,)
    if args.old_src is not None:
        classes = (AdaptiveK, load_old(args.old_src).AdaptiveK)
    for drafter, proposal in (("model drafter", 1.0), ("n-gram drafter", 0.8)):
        for k_max in (8, 16):
            runs = stream(
                args.rounds + args.warmup, k_max, proposal, args.drift_every, 0,
                args.thrash_kb, classes,
            )  # fmt: skip
            row: dict[str, object] = {"drafter": drafter, "k_max": k_max, "rounds": args.rounds}
            for label, (wall, cpu) in zip(("", "old "), runs, strict=False):
                line = f"{label + drafter + ', K_max ' + str(k_max):<30}"
                for clock, costs in (("wall", wall), ("cpu", cpu)):
                    fig = figures(costs, args.warmup)
                    row[label.strip() + "_" + clock if label else clock] = fig
                    line += (
                        f" {fig['median_us']:>12.1f} {fig['p99_us']:>8.1f} {fig['mean_us']:>8.1f}  "
                    )
                print(line)
            if len(runs) == 2:
                line = f"{'  new / old':<30}"
                for clock in ("wall", "cpu"):
                    new, old = row[clock], row["old_" + clock]
                    ratio = {
                        key: new[key] / old[key]  # type: ignore[index]
                        for key in ("median_us", "p99_us", "mean_us")
                    }
                    row["ratio_" + clock] = ratio
                    line += (
                        f" {ratio['median_us']:>12.3f} {ratio['p99_us']:>8.3f} "
                        f"{ratio['mean_us']:>8.3f}  "
                    )
                print(line)
            cases.append(row)
    load_after = os.getloadavg()
    ok = all(c["wall"]["median_us"] < TARGET_US for c in cases)  # type: ignore[index]
    print(f"target: choose + observe < {TARGET_US:g} µs per round (wall-clock median) -> "
          f"{'PASS' if ok else 'FAIL'}; on a loaded host read the CPU columns")  # fmt: skip
    print(f"load average (1, 5, 15 min): before {' '.join(f'{x:.2f}' for x in load_before)}, "
          f"after {' '.join(f'{x:.2f}' for x in load_after)}")  # fmt: skip
    atomic_write_json(
        args.out,
        {
            "benchmark": "bench_adaptive_policy",
            "target_us_per_round": TARGET_US,
            "passed": ok,
            "cases": cases,
            "load_average_before": load_before,
            "load_average_after": load_after,
            "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        },
    )
    print(f"wrote {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
