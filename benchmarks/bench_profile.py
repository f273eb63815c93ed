"""Wall time to profile the default family on this machine, and the CI widths achieved.

Profiles the five default drafters (Gemma 3 270M Q4_0, Q4_K_M, Q8_0, F16 and the n-gram
drafter) for K = 1..16 at the given context lengths, exactly as
``configspec profile device`` does, and checks the targets: whole run ≤ 5 minutes and
every point's 95% CI half-width ≤ 5% of its mean.

    PYTHONPATH=src python benchmarks/bench_profile.py [--threads 1] [--context 128 ...]

Prints a table and writes ``benchmarks/results/bench_profile.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from configspec._version import __version__, git_revision
from configspec.backends.models import prepare_family
from configspec.power import detect_meter
from configspec.profiling.device import DeviceProfiler, DeviceSweepSettings
from configspec.profiling.host import cpu_model
from configspec.store import ProfileStore

TARGET_WALL_S = 300.0
TARGET_REL_HALF_WIDTH = 0.05
RESULTS = Path(__file__).resolve().parent / "results" / "bench_profile.json"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k-max", type=int, default=16)
    parser.add_argument("--context", type=int, action="append", default=None)
    parser.add_argument("--threads", type=int, default=1)
    # K=16 samples take ~0.3 s each on this CPU: 5 s allow ~16 of them when the host is noisy
    parser.add_argument("--point-budget-s", type=float, default=5.0)
    parser.add_argument("--cache-dir", type=Path, default=os.environ.get("CONFIGSPEC_CACHE_DIR"))
    args = parser.parse_args()
    contexts = tuple(args.context or [128, 512])

    family = prepare_family(args.cache_dir)
    specs = [family.drafters[q].name for q in ("Q4_0", "Q4_K_M", "Q8_0", "F16")] + ["ngram"]
    settings = DeviceSweepSettings(
        k_max=args.k_max,
        context_tokens=contexts,
        threads=args.threads,
        point_budget_s=args.point_budget_s,
        idle_s=2.0,
    )
    meter = detect_meter()
    with tempfile.TemporaryDirectory() as tmp:
        profiler = DeviceProfiler(
            specs,
            ProfileStore(Path(tmp)),
            device="bench",
            settings=settings,
            meter=meter,
            cache_dir=family.cache_dir,
        )
        start = time.perf_counter()
        profile, _, report = profiler.run(
            lambda e: print(f"\r{e.label:24s} {e.done:3d}/{e.total} {e.detail:48s}", end="",
                            file=sys.stderr, flush=True)
        )  # fmt: skip
        wall_s = time.perf_counter() - start
        meter.close()
    print(file=sys.stderr)

    rows = []
    print(f"{'drafter':22s} {'points':>6s} {'≤5%':>5s} {'median hw':>9s} {'worst hw':>8s} "
          f"{'K=1 ms/tok':>10s} {'K=16 ms/tok':>11s}")  # fmt: skip
    for d in profile.drafters:
        pts = [p for p in report.points if p.drafter == d.drafter]
        hws = [p.rel_half_width for p in pts]
        first = min(d.latency, key=lambda p: (p.context_tokens, p.k))
        last = max(d.latency, key=lambda p: (p.k, -p.context_tokens))
        row = {
            "drafter": d.drafter,
            "points": len(pts),
            "converged": sum(p.converged for p in pts),
            "median_rel_half_width": statistics.median(hws),
            "worst_rel_half_width": max(hws),
            "k1_per_token_ms": first.per_token_ms.mean,
            "kmax_per_token_ms": last.per_token_ms.mean,
            "context_tokens": first.context_tokens,
        }
        rows.append(row)
        print(f"{d.drafter:22s} {row['points']:6d} {row['converged']:5d} "
              f"{row['median_rel_half_width']:9.1%} {row['worst_rel_half_width']:8.1%} "
              f"{row['k1_per_token_ms']:10.3g} {row['kmax_per_token_ms']:11.3g}")  # fmt: skip
    all_hw = [p.rel_half_width for p in report.points]
    ok_wall = wall_s <= TARGET_WALL_S
    ok_ci = max(all_hw) <= TARGET_REL_HALF_WIDTH
    print(
        f"\nwall time {wall_s:.0f} s (target ≤ {TARGET_WALL_S:.0f} s: "
        f"{'met' if ok_wall else 'MISSED'}); {sum(p.converged for p in report.points)}/"
        f"{len(report.points)} points ≤ {TARGET_REL_HALF_WIDTH:.0%} half-width, median "
        f"{statistics.median(all_hw):.1%}, worst {max(all_hw):.1%} "
        f"({'met' if ok_ci else 'MISSED'}); {settings.resolved_threads()} thread(s), "
        f"contexts {list(contexts)}, meter {profile.meter.name if profile.meter else 'none'}"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "benchmark": "bench_profile",
        "tool_version": __version__,
        "git_revision": git_revision(),
        "host": platform.node(),
        "cpu_model": cpu_model(),
        "load_average_1m": os.getloadavg()[0],
        "settings": settings.as_dict(),
        "drafters": specs,
        "wall_time_s": wall_s,
        "target_wall_time_s": TARGET_WALL_S,
        "points": len(report.points),
        "points_converged": sum(p.converged for p in report.points),
        "median_rel_half_width": statistics.median(all_hw),
        "worst_rel_half_width": max(all_hw),
        "target_rel_half_width": TARGET_REL_HALF_WIDTH,
        "wall_time_met": ok_wall,
        "ci_met": ok_ci,
        "per_drafter": rows,
    }, indent=2) + "\n")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
