"""How fast ``configspec plan`` answers: 10 device classes × 50 candidate configurations.

Builds a synthetic profile set in memory from the illustrative example profiles: 10 edge
devices (the Raspberry Pi 5 profile with its drafting latency scaled 0.5×..2×), each
with 5 Gemma 3 270M drafters, K = 1..10 (5 × 10 = 50 candidates per class), the
``gemma-3-27b-it`` target with its batch dimension; then plans a fleet of 10 classes
(counts 50..5,000, RTT 10..150 ms, goodput SLOs 3..7.5 tok/s, p95 limits) with the default
six SLO levels of the trade-off. Target: under 1 s per plan. Prints a table and writes
JSON to ``benchmarks/results/bench_plan.json``; record the load average next to the
figure (shared host).

    python benchmarks/bench_plan.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from configspec.config import AlignmentEntry, Estimate  # noqa: E402
from configspec.model.fleet import GATHER_MODELS  # noqa: E402
from configspec.plan import parse_fleet, plan_fleet  # noqa: E402
from configspec.plan.candidates import build_candidates  # noqa: E402
from configspec.search.space import Profiles, read_profiles  # noqa: E402
from configspec.store import ProfileStore, atomic_write_json  # noqa: E402

N_CLASSES = 10
DRAFTERS = 5
K_MAX = 10


def synthetic_profiles() -> Profiles:
    """10 devices × 5 drafters against the batched example target (illustrative)."""
    base = read_profiles(ProfileStore(ROOT / "examples" / "profiles"))
    pi = next(d for d in base.devices if d.device.name == "rpi5-8gb")
    gemma_drafters = [d for d in pi.drafters if d.family == "gemma3"]
    extra = gemma_drafters[0].model_copy(
        update={"drafter": "gemma-3-270m-it-Q6_K", "quantization": "Q6_K"}
    )
    drafters = [*gemma_drafters, extra][:DRAFTERS]
    devices = []
    for i in range(N_CLASSES):
        scale = 0.5 + 1.5 * i / (N_CLASSES - 1)
        scaled = [
            d.model_copy(
                update={
                    "latency": [
                        p.model_copy(
                            update={
                                "per_token_ms": Estimate(
                                    mean=p.per_token_ms.mean * scale, source="illustrative"
                                )
                            }
                        )
                        for p in d.latency
                    ]
                }
            )
            for d in drafters
        ]
        devices.append(
            pi.model_copy(
                update={
                    "device": pi.device.model_copy(update={"name": f"edge-{i}"}),
                    "drafters": scaled,
                }
            )
        )
    align = next(a for a in base.alignments if a.target == "gemma-3-27b-it")
    q8 = next(e for e in align.entries if e.drafter.endswith("Q8_0"))
    entries: list[AlignmentEntry] = [
        *align.entries,
        q8.model_copy(update={"drafter": extra.drafter}),
    ]
    alignment = align.model_copy(update={"entries": entries})
    verification = [v for v in base.verifications if v.target == "gemma-3-27b-it"]
    return Profiles(devices, [alignment], verification, base.network)


def fleet_doc(gather: str = "sync") -> dict[str, object]:
    classes = []
    for i in range(N_CLASSES):
        classes.append(
            {
                "name": f"class-{i}",
                "device": f"edge-{i}",
                "count": [50, 200, 1000, 5000, 400][i % 5],
                "rtt_ms": 10 + 140 * i / (N_CLASSES - 1),
                "min_goodput_tok_s": 3 + (i % 4) * 1.5,
                "max_p95_itl_ms": 1500,
                "cloud_only": False,
            }
        )
    return {
        "verifier": {
            "target": "gemma-3-27b-it",
            "price_usd_per_hour": 0.8,
            "max_batch": 16,
            "gather": gather,
        },
        "classes": classes,
        "k_max": K_MAX,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--gather", choices=GATHER_MODELS, default="sync",
                    help="the verifier's gather (sync: a pool per class; mva: one shared "
                         "pool, chosen by best response)")  # fmt: skip
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/bench_plan.json")
    args = ap.parse_args()
    profiles = synthetic_profiles()
    spec = parse_fleet(fleet_doc(args.gather))
    cands, _ = build_candidates(spec, profiles)
    per_class = cands.valid.sum(axis=1).tolist()
    plan_fleet(spec, profiles)  # warm imports and caches
    times, cand_times, cpu_times = [], [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        build_candidates(spec, profiles)
        t1 = time.perf_counter()
        c1 = time.process_time()
        plan = plan_fleet(spec, profiles)
        cpu_times.append(time.process_time() - c1)
        t2 = time.perf_counter()
        cand_times.append(t1 - t0)
        times.append(t2 - t1)
    load = [round(x, 2) for x in os.getloadavg()]
    med = statistics.median(times)
    print(f"classes {N_CLASSES}, candidates per class {per_class}, SLO levels "
          f"{len(plan.scales)}, gather {args.gather}")  # fmt: skip
    print(f"{'':<26}{'median s':>10}{'min s':>10}")
    c_med, c_min = statistics.median(cand_times), min(cand_times)
    print(f"{'candidates (profiles)':<26}{c_med:>10.3f}{c_min:>10.3f}")
    print(f"{'whole plan (wall)':<26}{med:>10.3f}{min(times):>10.3f}")
    cpu = statistics.median(cpu_times)
    print(f"{'whole plan (CPU time)':<26}{cpu:>10.3f}{min(cpu_times):>10.3f}")
    print(f"replicas at the SLOs as written: {int(plan.replicas[plan.main])}; "
          f"feasible levels: {int(plan.feasible.sum())}/{len(plan.scales)}")  # fmt: skip
    print(
        f"target < 1 s: wall {'met' if med < 1.0 else 'NOT met'}, CPU time "
        f"{'met' if cpu < 1.0 else 'NOT met'} (load average {load}, shared host: on a busy "
        "host wall time waits for a core; CPU time is what a quiet machine would take)"
    )
    atomic_write_json(
        args.out,
        {
            "benchmark": "bench_plan",
            "classes": N_CLASSES,
            "gather": args.gather,
            "candidates_per_class": per_class,
            "slo_levels": len(plan.scales),
            "plan_s": times,
            "candidates_s": cand_times,
            "median_plan_s": med,
            "plan_cpu_s": cpu_times,
            "median_plan_cpu_s": cpu,
            "replicas": int(plan.replicas[plan.main]),
            "load_avg": load,
        },
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
