"""Benchmark: reproduce the paper from its published data, end to end.

Imports the paper's data shipped in ``configspec/data/paper`` (or ``--data``) into a
temporary profile store, runs the full robustness report (T_verify and RTT sweeps with
bisected crossovers, GPU-time pricing, acceptance ±1 std) and times each stage. Prints a
table of the findings and writes ``benchmarks/results/bench_paper.json``. Target: the
whole report in < 30 s on a 2-core machine (it is an interactive command).

    PYTHONPATH=src python benchmarks/bench_paper.py [--data DIR]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

from configspec._version import __version__
from configspec.importers import import_paper_data, shipped_paper_data, write_import
from configspec.report.paper.report import build_report, write_report
from configspec.store import atomic_write_json

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "bench_paper.json"
TARGET_S = 30.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, default=None, help="CSV folder (default: the shipped copy)"
    )
    args = parser.parse_args()
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        if args.data is None:
            with shipped_paper_data() as folder:
                result = import_paper_data(folder)
        else:
            result = import_paper_data(args.data)
        write_import(result, Path(tmp) / "profiles")
        timings["import_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        report, frames = build_report(Path(tmp) / "profiles")
        timings["report_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        write_report(report, frames, Path(tmp) / "report")
        timings["plots_and_files_s"] = time.perf_counter() - t0
    total = sum(timings.values())
    print(f"{'stage':<22}{'seconds':>10}")
    for name, secs in timings.items():
        print(f"{name:<22}{secs:>10.2f}")
    print(
        f"{'total':<22}{total:>10.2f}   target < {TARGET_S:g} s: "
        f"{'PASS' if total < TARGET_S else 'FAIL'}"
    )
    print(f"model evaluations: {report['evaluations']}")
    print()
    print(f"{'finding':<34}{'baseline':<10}{'T_verify':<28}{'GPU-time':<10}{'α−1σ':<7}")
    for s in report["summary"]:
        print(
            f"{s['finding']:<34}{s['baseline']:<10}{s['verify_latency']:<28}"
            f"{s['gpu_time_pricing']:<10}{s['acceptance_low']:<7}"
        )
    atomic_write_json(
        RESULTS,
        {
            "benchmark": "bench_paper",
            "tool_version": __version__,
            "host": platform.node(),
            "python": platform.python_version(),
            "data": "shipped" if args.data is None else str(args.data),
            "timings_s": timings,
            "total_s": total,
            "target_s": TARGET_S,
            "passed": total < TARGET_S,
            "evaluations": report["evaluations"],
            "summary": report["summary"],
            "crossovers_verify_ms": report["sweeps"]["verify_ms"]["crossovers"],
            "crossovers_rtt_ms": report["sweeps"]["rtt_ms"]["crossovers"],
        },
    )
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
