"""Compare the contention rules (configspec.loop.contention.ContentionRule) offline on kept
bench_validate work directories: no timing, the runs' stored probes replayed.

    PYTHONPATH=src:. python benchmarks/contention_rules.py /work/bench/heldout4_work \\
        /work/bench/validate_t8_work /work/bench/validate_t7_work

For every work directory (every ``rtt-*`` block in it) and every rule: goodput median and
max |error| per run, mean signed error, and how often the measured goodput fell inside the
run's 95% prediction interval. ``bracketed`` reads the probe after the run: a check, not a
prediction. ``timing`` is the goodput error with the run's measured E(K) (the modelled
round time alone: what a contention rule can change). Prints a table and writes JSON to
benchmarks/results/contention_rules.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from configspec.loop.contention import CONTENTION_RULES, PREDICTIVE_RULES  # noqa: E402
from configspec.loop.validate import validate  # noqa: E402
from configspec.store import ProfileStore  # noqa: E402


def compare(work: Path, rule: str) -> dict[str, Any]:
    """One rule over every block of ``work``: per-run goodput errors and 95% coverage."""
    errors: list[float] = []
    timing: list[float] = []
    inside = n_iv = 0
    for block_dir in sorted(work.glob("rtt-*")):
        block = ProfileStore(block_dir)
        runs = block.runs()
        if not runs:
            continue
        result = validate(block, runs=runs, contention_rule=rule)  # type: ignore[arg-type]
        for row in result.rows:
            err = row.objectives["goodput"].error
            if err is not None:
                errors.append(err)
            t_err = row.objectives["goodput_timing"].error
            if t_err is not None:
                timing.append(t_err)
            if row.prediction is not None and "95%" in row.prediction.goodput_inside:
                n_iv += 1
                inside += int(row.prediction.goodput_inside["95%"])
    e = np.abs(np.asarray(errors))
    t = np.abs(np.asarray(timing))
    return {
        "rule": rule,
        "prediction": rule in PREDICTIVE_RULES,
        "n": int(e.size),
        "median_abs_error": float(np.median(e)) if e.size else None,
        "max_abs_error": float(np.max(e)) if e.size else None,
        "mean_error": float(np.mean(errors)) if errors else None,
        "inside_95": [inside, n_iv],
        "timing_median_abs_error": float(np.median(t)) if t.size else None,
        "timing_max_abs_error": float(np.max(t)) if t.size else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("work", nargs="+", type=Path, help="kept bench_validate work directories")
    ap.add_argument("--rules", nargs="+", default=list(CONTENTION_RULES))
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/contention_rules.json")
    args = ap.parse_args()
    out: dict[str, list[dict[str, Any]]] = {}
    print(f"{'sweep':<20} {'rule':<10} {'n':>3} {'median':>7} {'max':>7} {'mean':>7} "
          f"{'in95':>6} {'timing med':>10} {'max':>7}")  # fmt: skip
    for work in args.work:
        out[str(work)] = []
        for rule in args.rules:
            r = compare(work, rule)
            out[str(work)].append(r)
            tag = "" if r["prediction"] else " (bracketed, not a prediction)"
            print(f"{work.name:<20} {rule:<10} {r['n']:>3} {r['median_abs_error']:>7.1%} "
                  f"{r['max_abs_error']:>7.1%} {r['mean_error']:>+7.1%} "
                  f"{r['inside_95'][0]:>3}/{r['inside_95'][1]} "
                  f"{r['timing_median_abs_error']:>10.1%} {r['timing_max_abs_error']:>7.1%}"
                  f"{tag}")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
