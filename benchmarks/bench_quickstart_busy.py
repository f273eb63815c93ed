"""The quickstart's prediction error with and without a busy background process.

Runs the whole ``configspec quickstart`` loop (profile, select, run, validate) twice on
this machine, first as it is, then with ``--busy`` background processes spinning a core
each (``python -c "while True: pass"``, started here and always stopped at the end); then,
still busy, runs the first quickstart's configurations again on its profiles (profiled on
the host as it was, run on the host as it is: the case the contention probe is for; a host
busy the whole time is already in its own profiles and baseline). It prints the goodput
error of every arm under ``validate``'s default host-level rule (``runs``: each run levelled
by the earlier runs of the sweep, what the quickstart does), under the gated contention
probe and on raw profiles, from the same run records.
For every run it prints each ratio (run probe / baseline probe taken right after
profiling), whether it was applied and why (applied only when its bootstrap 95% interval
excludes 1, see ``configspec.loop.contention``).

Target (issue 14): with one busy process, median |goodput error| ≤ 5 %.

    PYTHONPATH=src python benchmarks/bench_quickstart_busy.py
    PYTHONPATH=src python benchmarks/bench_quickstart_busy.py --max-tokens 8 --validate-k 2 \
        --drafters ngram --out /tmp/smoke.json      # a short smoke, not a measurement
    PYTHONPATH=src:. python benchmarks/bench_quickstart_busy.py --keep-work   # then, no timing:
    PYTHONPATH=src:. python benchmarks/contention_rules.py /tmp/bench-qs-busy-XXXX  # every rule

Writes ``benchmarks/results/bench_quickstart_busy.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_validate import busy_processes, fmt_summary  # noqa: E402

from configspec.backends.specs import parse_spec, spec_of_name  # noqa: E402
from configspec.config import RunRecord  # noqa: E402
from configspec.loop.contention import DEFAULT_RULE  # noqa: E402
from configspec.loop.quickstart import (  # noqa: E402
    DEFAULT_DRAFTERS,
    QuickstartSettings,
    run_quickstart,
)
from configspec.loop.runs import run_plans  # noqa: E402
from configspec.loop.runtime import RunPlan, Runtime, RuntimeSettings  # noqa: E402
from configspec.loop.validate import validate  # noqa: E402
from configspec.profiling.prompts import bundled_prompts, select_prompts  # noqa: E402
from configspec.store import ProfileStore, atomic_write_json  # noqa: E402

MEDIAN_TARGET = 0.05


def fmt_pct(x: float | None) -> str:
    return "—" if x is None else f"{x:+.1%}"


def fmt_abs(x: float | None) -> str:
    return "—" if x is None else f"{x:.1%}"


def fmt_ratio(x: float | None) -> str:
    return "—" if x is None else f"×{x:.3f}"


def show(
    label: str, store: ProfileStore, records: list[RunRecord], load0: Any, wall_s: float
) -> dict[str, Any]:
    """Validate ``records`` under the default rule (what the quickstart does), the gated
    probe fold and raw; print all three and every ratio; return the figures."""
    result = validate(store, runs=records)
    gated = validate(store, runs=records, contention_rule="gated").summary["goodput"]
    raw = validate(store, runs=records, contention_rule="off")
    folded = result.summary["goodput"]
    unfolded = raw.summary["goodput"]
    load1 = os.getloadavg()
    print(f"{label}: load {load0[0]:.2f} -> {load1[0]:.2f}, {wall_s:.0f} s")
    print(f"    default rule ({DEFAULT_RULE}):  {fmt_summary(folded)}")
    print(f"    gated contention probe:    {fmt_summary(gated)}")
    print(f"    raw profiles (off):        {fmt_summary(unfolded)}")
    raw_rows = {r.run_id: r for r in raw.rows}
    for r in result.rows:
        g = r.objectives["goodput"]
        g_raw = raw_rows[r.run_id].objectives["goodput"]
        print(f"    {r.drafter:<20} K={r.k}: error ({DEFAULT_RULE}) {fmt_pct(g.error)} "
              f"(raw {fmt_pct(g_raw.error)})")  # fmt: skip
        if r.contention is not None:
            for what, c in (("draft", r.contention.draft), ("verify", r.contention.verify)):
                print(f"        {what:<6} level {fmt_ratio(c.measured)} -> "
                      f"applied ×{c.applied:.3f} ({c.reason})")  # fmt: skip
        else:
            print("        no contention probe in this run record")
    n_applied = sum(
        1
        for r in result.rows
        if r.contention is not None
        for c in (r.contention.draft, r.contention.verify)
        if c.applied != 1.0
    )
    print(f"    ratios applied: {n_applied} of {2 * len(result.rows)}")
    return {
        "load_average_before": load0,
        "load_average_after": load1,
        "wall_s": wall_s,
        "rule": DEFAULT_RULE,
        "folded": folded.__dict__,
        "gated": gated.__dict__,
        "unfolded": unfolded.__dict__,
        "rows": [dataclasses.asdict(r) for r in result.rows],
        "ratios_applied": n_applied,
    }


def one(label: str, settings: QuickstartSettings) -> tuple[dict[str, Any], ProfileStore]:
    """Run the whole quickstart once (profiles, baseline, runs); its figures and store."""
    load0 = os.getloadavg()
    t = time.perf_counter()
    result = run_quickstart(settings, lambda _: None, make_report=False)
    wall = time.perf_counter() - t
    return show(label, result.store, result.store.runs(), load0, wall), result.store


def runs_again(
    label: str, profiled: ProfileStore, dest: Path, s: QuickstartSettings
) -> dict[str, Any]:
    """The configurations ``profiled``'s quickstart ran, run again now on its profiles,
    baseline and runtime overhead (copied to ``dest``, never re-measured): profiled on the
    host as it was, run on the host as it is — the case the contention probe is for."""
    store = ProfileStore(dest)
    shutil.copytree(profiled.root, store.root, ignore=shutil.ignore_patterns("runs"))
    before = profiled.runs()
    prompts = s.run_prompts or tuple(select_prompts(bundled_prompts(), s.prompts_per_domain))
    settings = RuntimeSettings(
        target=s.target, prompts=prompts, max_tokens=s.max_tokens, threads=s.threads,
        device=before[0].config.device, cache_dir=s.cache_dir, max_k=max(16, s.k_max),
        link=s.link,
    )  # fmt: skip
    plans = [RunPlan(r.config.drafter, r.config.k, r.config.added_rtt_ms) for r in before]

    def spec_for(name: str) -> str:
        return next((d for d in s.drafters if parse_spec(d).matches(name)), spec_of_name(name))

    load0 = os.getloadavg()
    t = time.perf_counter()
    with Runtime(settings) as runtime:
        records = run_plans(runtime, plans, store, spec_for=spec_for)
    return show(label, store, records, load0, time.perf_counter() - t)


def main() -> int:
    """Quickstart quiet, then busy; print both; exit 0 when the busy target is met."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--busy", type=int, default=1)
    ap.add_argument("--rtt-ms", type=float, default=30.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--k-max", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--validate-k", nargs="+", type=int, default=[2, 6])
    ap.add_argument("--contexts", nargs="+", type=int, default=[64, 192])
    ap.add_argument("--drafters", nargs="+", default=list(DEFAULT_DRAFTERS))
    ap.add_argument(
        "--keep-work",
        action="store_true",
        help="keep the work directory (profiles and run records), e.g. to replay the rules",
    )
    ap.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "bench_quickstart_busy.json"
    )
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-qs-busy-"))

    def settings(name: str) -> QuickstartSettings:
        return QuickstartSettings(
            out=work / name, rtt_ms=args.rtt_ms, threads=args.threads, k_max=args.k_max,
            max_tokens=args.max_tokens, validate_ks=tuple(args.validate_k),
            contexts=tuple(args.contexts), drafters=tuple(args.drafters),
        )  # fmt: skip

    try:
        quiet, quiet_store = one("as is", settings("quiet"))
        with busy_processes(args.busy):
            busy, _ = one(f"{args.busy} busy process(es), whole quickstart", settings("busy"))
            later = runs_again(
                f"profiled as is, runs again with {args.busy} busy process(es)",
                quiet_store, work / "busy-runs" / "profiles", settings("quiet"),
            )  # fmt: skip
    finally:
        if args.keep_work:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    med_later = later["folded"]["median_abs_error"]
    print(f"profiled as is, run busy: median |error| {fmt_abs(med_later)} ({DEFAULT_RULE}), "
          f"{fmt_abs(later['unfolded']['median_abs_error'])} raw")  # fmt: skip
    med = busy["folded"]["median_abs_error"]
    ok = med is not None and med <= MEDIAN_TARGET
    print(f"busy: median |error| {med:.1%} (target ≤ {MEDIAN_TARGET:.0%}) -> "
          f"{'PASS' if ok else 'FAIL'}")  # fmt: skip
    atomic_write_json(
        args.out,
        {"benchmark": "bench_quickstart_busy", "busy_processes": args.busy, "passed": ok,
         "median_target": MEDIAN_TARGET, "as_is": quiet, "busy": busy,
         "profiled_as_is_run_busy": later},
    )  # fmt: skip
    print(f"wrote {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
