"""Compare the contention rules (configspec.loop.contention.ContentionRule) offline on kept
bench_validate and bench_quickstart_busy work directories: no timing, the runs' stored
probes replayed.

    PYTHONPATH=src:. python benchmarks/contention_rules.py /work/bench/heldout4_work \\
        /work/bench/validate_t8_work /work/bench/validate_t7_work
    PYTHONPATH=src:. python benchmarks/contention_rules.py /tmp/bench-qs-busy-XXXX  # each arm

A bench_quickstart_busy directory (``--keep-work``) is read arm by arm (``quiet``,
``busy``, ``busy-runs``): its arms are different experiments, not blocks of one sweep.

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

from configspec.loop.contention import (  # noqa: E402
    CONTENTION_RULES,
    PREDICTIVE_RULES,
    ContentionRule,
)
from configspec.loop.validate import ValidationRow, validate  # noqa: E402
from configspec.store import ProfileStore  # noqa: E402


def _stats(rows: list[ValidationRow]) -> dict[str, Any]:
    """Per-run goodput |error| (median, max, signed mean), timing-only |error| and how many
    runs' measured goodput fell inside their 95% prediction interval."""
    errors = [e for r in rows if (e := r.objectives["goodput"].error) is not None]
    timing = [e for r in rows if (e := r.objectives["goodput_timing"].error) is not None]
    flags = [
        r.prediction.goodput_inside["95%"]
        for r in rows
        if r.prediction is not None and "95%" in r.prediction.goodput_inside
    ]
    e, t = np.abs(np.asarray(errors)), np.abs(np.asarray(timing))
    return {
        "n": int(e.size),
        "median_abs_error": float(np.median(e)) if e.size else None,
        "max_abs_error": float(np.max(e)) if e.size else None,
        "mean_error": float(np.mean(errors)) if errors else None,
        "inside_95": [sum(flags), len(flags)],
        "timing_median_abs_error": float(np.median(t)) if t.size else None,
        "timing_max_abs_error": float(np.max(t)) if t.size else None,
    }


def _stores(sweep: Path) -> list[Path]:
    """The profile stores of one kept sweep: bench_validate's ``rtt-*`` blocks, or a
    bench_quickstart_busy arm's ``profiles`` (empty: not a sweep)."""
    return sorted(sweep.glob("rtt-*")) or [p for p in (sweep / "profiles",) if p.is_dir()]


def sweeps(work: Path) -> list[Path]:
    """The sweeps in a kept work directory: itself when it is one (:func:`_stores`), else
    each bench_quickstart_busy arm in it."""
    if _stores(work):
        return [work]
    return sorted(p.parent for p in work.glob("*/profiles"))


def compare(work: Path, rule: ContentionRule, left_out: str | None = None) -> dict[str, Any]:
    """One rule over every ``rtt-*`` block of ``work`` (or its ``profiles`` store: a
    quickstart arm): :func:`_stats` over every run and, with ``left_out``, over the runs of
    the profiled domains only (``profiled``)."""
    rows: list[ValidationRow] = []
    for block_dir in _stores(work):
        block = ProfileStore(block_dir)
        runs = block.runs()
        if runs:
            rows += validate(block, runs=runs, contention_rule=rule).rows
    out = {"rule": rule, "prediction": rule in PREDICTIVE_RULES, **_stats(rows)}
    if left_out is not None:
        out["profiled"] = _stats([r for r in rows if left_out not in r.domains])
    return out


def _label(sweep: Path) -> str:
    """A sweep's name in the table: the work directory's, or a quickstart arm's with the end
    of its work directory's (``ihfk/busy-runs``)."""
    if (sweep / "profiles").is_dir():
        return f"{sweep.parent.name[-4:]}/{sweep.name}"[:20]
    return sweep.name[:20]


def print_table(results: dict[str, list[dict[str, Any]]]) -> None:
    """The rule x sweep table (every run; profiled domains only when reported)."""
    print(f"{'sweep':<20} {'rule':<16} {'n':>3} {'median':>7} {'max':>7} {'mean':>7} "
          f"{'in95':>6} {'timing med':>10} {'max':>7}")  # fmt: skip
    for name, rules in results.items():
        for r in rules:
            for label, s in (("", r), (" prof.", r.get("profiled"))):
                if s is None or not s["n"]:
                    continue
                tag = "" if r["prediction"] else " (bracketed, not a prediction)"
                print(f"{_label(Path(name)):<20} {r['rule'] + label:<16} {s['n']:>3} "
                      f"{s['median_abs_error']:>7.1%} {s['max_abs_error']:>7.1%} "
                      f"{s['mean_error']:>+7.1%} {s['inside_95'][0]:>3}/{s['inside_95'][1]:<2} "
                      f"{s['timing_median_abs_error']:>10.1%} {s['timing_max_abs_error']:>7.1%}"
                      f"{tag}")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("work", nargs="+", type=Path, help="kept work directories (see above)")
    ap.add_argument("--rules", nargs="+", default=list(CONTENTION_RULES))
    ap.add_argument(
        "--left-out",
        default="code",
        help="held-out sweeps: also report the runs outside this domain (profiled domains)",
    )
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/contention_rules.json")
    args = ap.parse_args()
    each = [sweep for w in args.work for sweep in sweeps(w)]
    if not each:
        raise SystemExit("no kept sweep in the directories given (rtt-* blocks or */profiles)")
    out = {str(w): [compare(w, rule, args.left_out) for rule in args.rules] for w in each}
    print_table(out)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
