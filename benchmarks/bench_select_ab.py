"""Benchmark: bench_select's evaluate + select + Pareto step at two git revisions, side by side.

Each revision is checked out into a temporary ``git worktree``; child processes then
alternate between the two (A, B, A, B, ...), each building the same synthetic space
through that revision's own ``benchmarks/bench_select.py`` and timing the three steps
``--inner`` times. Both wall-clock and process CPU time are recorded: on a shared host
CPU time is the steadier of the two. The table gives, per revision, the median over
rounds of each round's best time and configurations/s, and the ratio B/A of the medians.
It also checks that both revisions produce the same table (column names, dtypes, values),
so a difference in speed is not a difference in what is computed. Writes
``benchmarks/results/bench_select_ab.json``.

    PYTHONPATH=src python benchmarks/bench_select_ab.py 3bf5c27 HEAD [--rounds 6]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _results import result_header

from configspec.store import atomic_write_json

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "bench_select_ab.json"

CHILD = r"""
import hashlib, importlib.util, json, resource, sys, tempfile, time
from pathlib import Path
import pandas as pd
inner = int(sys.argv[1]); sys.argv = [sys.argv[0]]
spec = importlib.util.spec_from_file_location("bs", "benchmarks/bench_select.py")
bs = importlib.util.module_from_spec(spec); spec.loader.exec_module(bs)
from configspec import records as R
from configspec.model import CONFIGSPEC
from configspec.search import Constraints, evaluate_space, feasible_mask, link_from_network
from configspec.search.select import best_row, pareto_rows
from configspec.search.space import SearchSettings, load_space
from configspec.store import ProfileStore
with tempfile.TemporaryDirectory() as tmp:
    bs.write_profiles(Path(tmp), 25, 5, 20, 25)
    space, network = load_space(ProfileStore(Path(tmp)), CONFIGSPEC, SearchSettings(k_max=16))
link = link_from_network(network)
wall, cpu, faults = [], [], []
for _ in range(inner):
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    w0, c0 = time.perf_counter(), time.process_time()
    table = evaluate_space(space, link, CONFIGSPEC)
    mask = feasible_mask(table, Constraints(min_goodput_tok_s=1.0))
    best = {n: best_row(table, col, mask) for n, col in R.OBJECTIVE_COLUMNS.items()}
    front = pareto_rows(table, mask)
    wall.append(time.perf_counter() - w0); cpu.append(time.process_time() - c0)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
h = hashlib.sha256(repr(list(zip(table.columns, map(str, table.dtypes)))).encode())
h.update(pd.util.hash_pandas_object(table, index=False).to_numpy().tobytes())
print(json.dumps({"n": len(space), "wall_s": min(wall), "cpu_s": min(cpu),
                  "minor_page_faults": min(faults),
                  "front": int(front.size), "table_sha256": h.hexdigest()}))
"""


def run_child(tree: Path, inner: int) -> dict[str, float | int | str]:
    env = dict(os.environ, PYTHONPATH=str(tree / "src"))
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(inner)],
        cwd=tree,
        env=env,
        check=False,
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        sys.exit(f"the child at {tree} failed:\n{out.stderr.strip()}")
    parsed: dict[str, float | int | str] = json.loads(out.stdout.strip().splitlines()[-1])
    return parsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rev_a", help="baseline revision (e.g. the commit before a refactoring)")
    ap.add_argument("rev_b", help="revision to compare (e.g. HEAD)")
    ap.add_argument("--rounds", type=int, default=6, help="alternating child runs per revision")
    ap.add_argument("--inner", type=int, default=5, help="timed repetitions inside each child")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()

    load_before = os.getloadavg()
    runs: dict[str, list[dict[str, float | int | str]]] = {"a": [], "b": []}
    with tempfile.TemporaryDirectory() as tmp:
        trees: dict[str, Path] = {}
        try:
            for key, rev in (("a", args.rev_a), ("b", args.rev_b)):
                tree = Path(tmp) / key
                added = subprocess.run(
                    ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), rev],
                    capture_output=True,
                    text=True,
                )
                if added.returncode != 0:
                    sys.exit(f"cannot check out revision {rev!r}: {added.stderr.strip()}")
                trees[key] = tree
            for i in range(args.rounds):
                for key in ("a", "b") if i % 2 == 0 else ("b", "a"):
                    r = run_child(trees[key], args.inner)
                    runs[key].append(r)
                    print(
                        f"round {i + 1} {key}: wall {float(r['wall_s']):.3f} s, "
                        f"cpu {float(r['cpu_s']):.3f} s, "
                        f"minor page faults {r['minor_page_faults']}",
                        flush=True,
                    )
        finally:
            for tree in trees.values():
                subprocess.run(
                    ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                    check=False,
                    capture_output=True,
                )
    n = int(runs["a"][0]["n"])
    summary: dict[str, dict[str, float]] = {}
    for key in ("a", "b"):
        wall = statistics.median(float(r["wall_s"]) for r in runs[key])
        cpu = statistics.median(float(r["cpu_s"]) for r in runs[key])
        summary[key] = {
            "wall_s_median": wall,
            "cpu_s_median": cpu,
            "configs_per_s_wall": n / wall,
            "configs_per_s_cpu": n / cpu,
        }
    same = {r["table_sha256"] for r in runs["a"] + runs["b"]}
    result = {
        **result_header("bench_select_ab", args, None, load_before, os.getloadavg()),
        "rev_a": args.rev_a,
        "rev_b": args.rev_b,
        "configurations": n,
        "rounds": args.rounds,
        "inner": args.inner,
        "runs": runs,
        "summary": summary,
        "ratio_b_over_a_configs_per_s_wall": summary["b"]["configs_per_s_wall"]
        / summary["a"]["configs_per_s_wall"],
        "ratio_b_over_a_configs_per_s_cpu": summary["b"]["configs_per_s_cpu"]
        / summary["a"]["configs_per_s_cpu"],
        "same_table": len(same) == 1,
    }
    atomic_write_json(args.out, result)
    print(f"{'':<36}{args.rev_a[:12]:>14}{args.rev_b[:12]:>14}{'B/A':>8}")
    for label, field in (
        ("configs/s, wall (median of bests)", "configs_per_s_wall"),
        ("configs/s, CPU time", "configs_per_s_cpu"),
    ):
        a, b = summary["a"][field], summary["b"][field]
        print(f"{label:<36}{a:>14,.0f}{b:>14,.0f}{b / a:>8.3f}")
    print(f"same table at both revisions: {len(same) == 1}")
    print(f"load average (1 min) before/after: {load_before[0]:.1f}/{os.getloadavg()[0]:.1f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
