"""Prediction accuracy of the model against the real runtime.

Runs every drafter × K × added RTT (× temperature) through the real runtime on this machine
(verifier subprocess, netem or the TCP delay proxy, edge client with real llama.cpp /
n-gram drafters) and compares the measured goodput with the model's prediction from the
profiles (``configspec.loop.validate``). Per RTT block the device and verification profiles
are re-taken right before the runs and the runtime's per-round overhead is measured with
K=0 rounds (explicit model inputs, never fitted to the validated runs); each run also
carries a contention probe taken right before it, which ``validate`` folds in.

Modes:

* ``--mode workload`` (default): alignment is profiled on the very prompts the runs decode
  (the profiled workload). Targets (issue 7): median |error| ≤ 5 %, max ≤ 15 %.
* ``--mode heldout``: alignment is profiled on ``--profile-prompts`` prompts per domain of
  every bundled domain but ``--left-out`` (default ``code``); the runs decode a disjoint
  set of ``--run-prompts`` prompts per domain of every domain, one run record per domain,
  so the error is reported per domain. Targets (issue 14): median ≤ 3 %, max ≤ 10 % over
  the held-out workload: each configuration's runs over the profiled domains together
  (total tokens / total time, the traffic a user deploys on). The left-out domain and
  every single run are reported, not judged: one domain's run holds too few prompts for a
  per-run bound, and the report says how often a model exact in expectation would keep
  every run within the target (acceptance varying between prompts alone,
  ``loop.prediction.within_probability``).
* ``--temperatures 0 0.8``: every configuration also runs sampled at T = 0.8 (seeded); the
  device and verification profiles time sampled drafting/verifying, alignment is profiled
  at each T; the runs of one configuration at every T are taken back to back, so the host's
  drift over the sweep falls on both temperatures alike. Target at T > 0 (issue 14): median
  ≤ 5 %, max ≤ 15 %.

**Prediction intervals.** Next to the median/max error it reports the coverage of the
modelled prediction intervals (the fraction of runs whose measured goodput / E(K) fell inside
the nominal 90% / 95% interval for a run of that many prompts: between-prompt variance of
acceptance, cluster bootstrap over the profiled prompts, ``configspec.loop.prediction``),
split by domain and for the left-out domain, and the error of the **pooled** figure: all
held-out runs of one configuration together (total tokens / total time, measured, against
the model's time for those tokens), which is what averaging over a user's traffic gives.
``--analyze DIR --refresh-alignment`` re-profiles alignment in DIR (target references are
cached, so only the drafters run) when its profile predates per-prompt records.

For every (drafter, RTT, temperature) group it also judges the K the model recommends:
the modelled-best K among the K run is compared with the measured-best K; the group passes
when the recommended K's measured goodput is within 3 % of the best (regret = 1 − that
ratio). ``--busy N`` keeps N busy-looping background processes running for the whole
benchmark (started by it, always stopped at the end).

    PYTHONPATH=src python benchmarks/bench_validate.py --profiles configspec-quickstart/profiles
    PYTHONPATH=src python benchmarks/bench_validate.py --profiles P --mode heldout
    PYTHONPATH=src python benchmarks/bench_validate.py --profiles P --temperatures 0 0.8

``--profiles`` must hold device and verification profiles of this machine (e.g. from
``configspec quickstart``); they are copied, never modified. Prints tables and writes
``benchmarks/results/bench_validate[-MODE][-T...].json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import numpy as np  # noqa: E402

from configspec.config import AlignmentProfile, NetworkSettings, RunRecord  # noqa: E402
from configspec.loop.contention import CONTENTION_RULES, take_baseline  # noqa: E402
from configspec.loop.prediction import (  # noqa: E402
    PooledFigure,
    alignment_entry,
    coverage,
    pooled_by_config,
    within_probability,
)
from configspec.loop.runtime import RunPlan, Runtime, RuntimeSettings  # noqa: E402
from configspec.loop.validate import (  # noqa: E402
    ObjectiveSummary,
    ValidationRow,
    steady_rounds,
    summarize,
    validate,
)
from configspec.profiling.prompts import (  # noqa: E402
    BUNDLED_DOMAINS,
    Prompt,
    bundled_prompts,
    select_prompts,
)
from configspec.stats import bootstrap_interval, bootstrap_ratio_draws  # noqa: E402
from configspec.store import ProfileStore, atomic_write_json  # noqa: E402

TARGETS = {  # (median, max) of |goodput error|
    "workload": (0.05, 0.15),
    "heldout": (0.03, 0.10),
    "sampled": (0.05, 0.15),
}
K_WITHIN = 0.03
SEED = 1234


@contextmanager
def busy_processes(n: int) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``n`` background processes spinning a core each; stopped (by their own handles) on
    exit, whatever happens."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(max(0, n))]
    try:
        yield procs
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)


def split_prompts(
    args: argparse.Namespace,
) -> tuple[list[Prompt], dict[str, list[Prompt]]]:
    """(alignment prompts, run prompts per domain) for the mode (see the module doc)."""
    every = bundled_prompts()
    if args.mode == "workload":
        chosen = select_prompts(every, args.prompts_per_domain)
        return chosen, {"workload": chosen}
    by_domain: dict[str, list[Prompt]] = defaultdict(list)
    for p in every:
        by_domain[p.domain].append(p)
    train: list[Prompt] = []
    runs: dict[str, list[Prompt]] = {}
    for domain in BUNDLED_DOMAINS:
        ps = by_domain[domain]
        if domain != args.left_out:
            train += ps[: args.profile_prompts]
        # disjoint: runs take prompts from the end of each domain's file
        runs[domain] = ps[-args.run_prompts :]
        assert not {p.id for p in runs[domain]} & {p.id for p in train}
    return train, runs


def reprofile(store: ProfileStore, args: argparse.Namespace, device: str) -> None:
    """Re-take the device and verification profiles now, so that profiles and runs see the
    same host load (this machine is shared; its load moves by 2x within minutes)."""
    from configspec.profiling.device import DeviceProfiler, DeviceSweepSettings
    from configspec.profiling.verification import VerificationProfiler, VerifySweepSettings

    common: dict[str, Any] = {
        "k_max": max(args.ks),
        "context_tokens": tuple(args.contexts),
        "min_repeats": 5,
        "max_repeats": 30,
        "rel_half_width": 0.05,
        "point_budget_s": args.point_budget_s,
        "threads": args.threads,
        "temperatures": tuple(args.temperatures),
    }
    t = time.perf_counter()
    DeviceProfiler(
        args.drafters,
        store,
        device=device,
        settings=DeviceSweepSettings(**common, idle_s=1.0),
        tokenizer=args.target,
        restart=True,
    ).run()
    price = store.verification_profiles()[0].price
    VerificationProfiler(
        args.target, store, price=price, settings=VerifySweepSettings(**common), restart=True
    ).run()
    print(f"re-profiled device and verification in {time.perf_counter() - t:.0f} s", flush=True)


def profile_alignment_on(
    store: ProfileStore, prompts: list[Prompt], args: argparse.Namespace
) -> None:
    """Alignment of every drafter on ``prompts`` at every temperature (into ``store``)."""
    from configspec.profiling.alignment import AlignmentSettings, profile_alignment

    t = time.perf_counter()
    profile_alignment(
        args.target,
        args.drafters,
        prompts,
        store,
        settings=AlignmentSettings(
            n_tokens=args.max_tokens,
            k_max=max(args.ks),
            n_threads=args.threads,
            n_boot=300,
            temperatures=tuple(args.temperatures),
            seed=SEED,
        ),
    )
    ids = ", ".join(p.id for p in prompts)
    print(f"profiled alignment on {len(prompts)} prompts ({ids}) in "
          f"{time.perf_counter() - t:.0f} s", flush=True)  # fmt: skip


def fmt_summary(s: ObjectiveSummary) -> str:
    if s.n == 0 or s.median_abs_error is None or s.max_abs_error is None:
        return "no runs"
    return f"median |error| {s.median_abs_error:.1%}, max {s.max_abs_error:.1%} over {s.n} runs"


def passes(s: ObjectiveSummary, target: tuple[float, float]) -> bool:
    return (
        s.n > 0
        and s.median_abs_error is not None
        and s.max_abs_error is not None
        and s.median_abs_error <= target[0]
        and s.max_abs_error <= target[1]
    )


def judge_k(
    rows: Sequence[ValidationRow], runs: dict[str, RunRecord] | None = None
) -> list[dict[str, Any]]:
    """Per (drafter, RTT, T): the modelled-best K among those run vs the measured best.

    With the run records (``runs`` by run id) the regret also gets a 95% interval: each
    run's steady-state rounds are resampled (``stats.bootstrap_ratio_draws``), the group's
    measured goodput per K recomputed, and the regret of the recommended K against the best
    K *of that resample* taken (``stats.bootstrap_interval``). ``within_noise`` says that
    3% lies inside that interval: the recommended and the best K are not told apart by the
    runs' own timing noise (within a run; drift between runs is not in it). ``model_margin``
    is how much better the model thought its K was than the measured best K.
    """
    groups: dict[tuple[str, float, float], dict[int, list[ValidationRow]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for r in rows:
        g = r.objectives["goodput"]
        if g.measured is None or g.predicted is None:
            continue
        groups[(r.drafter, r.added_rtt_ms, r.temperature)][r.k].append(r)
    out = []
    for (drafter, rtt, temp), by_k in sorted(groups.items()):
        if len(by_k) < 2:
            continue
        meas = {
            k: statistics.fmean(r.objectives["goodput"].measured or 0.0 for r in v)
            for k, v in by_k.items()
        }
        mod = {
            k: statistics.fmean(r.objectives["goodput"].predicted or 0.0 for r in v)
            for k, v in by_k.items()
        }
        k_rec = max(mod, key=lambda k: mod[k])
        k_best = max(meas, key=lambda k: meas[k])
        regret = 1.0 - meas[k_rec] / meas[k_best]
        ci: tuple[float, float] | None = None
        meas_ci: dict[str, list[float]] = {}
        if runs is not None and all(r.run_id in runs for v in by_k.values() for r in v):
            draws = {}
            for k, v in by_k.items():
                per_run = []
                for i, r in enumerate(v):
                    steady, _ = steady_rounds(runs[r.run_id])
                    tokens = np.asarray([x.accepted + 1 for x in steady], dtype=np.float64)
                    ms = np.asarray([x.round_ms for x in steady], dtype=np.float64)
                    per_run.append(bootstrap_ratio_draws(tokens, ms, 1e3, seed=1000 * k + i))
                draws[k] = np.mean(per_run, axis=0)
                lo_k, hi_k = bootstrap_interval(meas[k], draws[k])
                meas_ci[str(k)] = [lo_k, hi_k]
            best_draw = np.max(np.vstack(list(draws.values())), axis=0)
            ci = bootstrap_interval(regret, 1.0 - draws[k_rec] / best_draw)
        out.append({
            "drafter": drafter, "added_rtt_ms": rtt, "temperature": temp,
            "recommended_k": k_rec, "best_measured_k": k_best, "regret": regret,
            "regret_ci95": list(ci) if ci is not None else None,
            "within": regret <= K_WITHIN,
            "within_noise": ci is not None and ci[0] <= K_WITHIN,
            "model_margin": mod[k_rec] / mod[k_best] - 1.0,
            "measured_tok_s": {str(k): v for k, v in sorted(meas.items())},
            "measured_tok_s_ci95": dict(sorted(meas_ci.items())),
            "modelled_tok_s": {str(k): v for k, v in sorted(mod.items())},
        })  # fmt: skip
    return out


def print_rows(rows: Sequence[ValidationRow]) -> None:
    print(f"{'drafter':<20} {'K':>2} {'RTT':>4} {'T':>4} {'domain':<13} {'E(K) meas':>9} "
          f"{'mod':>5} {'meas tok/s':>10} {'mod tok/s':>9} {'mod 90% PI':>15} {'error':>7} "
          f"{'timing':>7} {'cont d/v':>9}")  # fmt: skip
    for r in rows:
        g, tm = r.objectives["goodput"], r.objectives["goodput_timing"]
        domain = ("/".join(r.domains) or "-") + ("*" if r.acceptance_domain == "all" else "")
        pi = "-"
        if r.prediction is not None:
            lo, hi = r.prediction.goodput_tok_s["90%"]
            pi = f"{lo:.1f}-{hi:.1f} {'in' if r.prediction.goodput_inside['90%'] else 'OUT'}"
        cont = (
            f"{r.contention_draft:.2f}/{r.contention_verify:.2f}"
            if r.contention_draft is not None and r.contention_verify is not None
            else "—"
        )
        print(
            f"{r.drafter:<20} {r.k:>2} {r.added_rtt_ms:>4g} {r.temperature:>4g} "
            f"{domain:<13} {r.tokens_per_round.measured or float('nan'):>9.2f} "
            f"{r.tokens_per_round.predicted or float('nan'):>5.2f} "
            f"{g.measured or float('nan'):>10.2f} {g.predicted or float('nan'):>9.2f} "
            f"{pi:>15} {g.error if g.error is not None else float('nan'):>+7.1%} "
            f"{tm.error if tm.error is not None else float('nan'):>+7.1%} {cont:>9}"
        )


def print_components(rows: Sequence[ValidationRow]) -> None:
    """The round split per run: measured against modelled drafting, verification and the
    rest (link, HTTP, client), ms per steady-state round; the term behind a timing error
    is the one whose excess makes up the round's (see ``bench_sampled_round.py`` for the
    T-specific part, side by side with the profilers)."""
    print(f"{'round components (ms)':<28}{'T':>4}  {'draft meas/mod':>15} {'verify meas/mod':>16} "
          f"{'link meas/mod':>14} {'round meas/mod':>15} {'excess d/v/l':>19}")  # fmt: skip
    for r in rows:
        cells, excess = [], []
        for c in (r.draft_ms, r.verify_ms, r.link_ms, r.round_ms):
            m, p = c.measured, c.predicted
            cells.append(f"{m or float('nan'):.1f}/{p or float('nan'):.1f}")
            excess.append((m - p) if m is not None and p is not None else float("nan"))
        print(f"{r.drafter[:20] + ' K=' + str(r.k):<28}{r.temperature:>4g}  {cells[0]:>15} "
              f"{cells[1]:>16} {cells[2]:>14} {cells[3]:>15} "
              f"{excess[0]:>+6.1f}/{excess[1]:>+6.1f}/{excess[2]:>+5.1f}")  # fmt: skip


def fmt_e_k(rows: Sequence[ValidationRow]) -> str:
    """Median and maximum |modelled/measured − 1| of tokens per round over ``rows``."""
    errs = [
        abs(r.tokens_per_round.predicted / r.tokens_per_round.measured - 1)
        for r in rows
        if r.tokens_per_round.predicted and r.tokens_per_round.measured
    ]
    if not errs:
        return "n/a"
    return f"median |error| {statistics.median(errs):.1%}, max {max(errs):.1%}"


def fmt_coverage(rows: Sequence[ValidationRow]) -> tuple[str, dict[str, Any]]:
    """Coverage of the modelled prediction intervals over ``rows`` (goodput and E(K)), as
    text and as JSON."""
    preds = [r.prediction for r in rows]
    out: dict[str, Any] = {}
    parts = []
    for what, label in (("goodput", "goodput"), ("tokens_per_round", "E(K)")):
        cov = coverage(preds, what)
        out[what] = {k: {"inside": a, "n": n, "fraction": a / n if n else None}
                     for k, (a, n) in cov.items()}  # fmt: skip
        if cov:
            parts.append(f"{label} " + ", ".join(f"{k}: {a}/{n} ({a / n:.0%})"
                                                 for k, (a, n) in cov.items()))  # fmt: skip
    text = "; ".join(parts) if parts else "no prediction intervals (no per-prompt records)"
    return "measured inside the modelled prediction interval: " + text, out


def pooled_summary(pooled: Sequence[PooledFigure]) -> tuple[str, dict[str, Any]]:
    """Median/max |error| of the pooled figures and their interval coverage."""
    if not pooled:
        return "no runs", {}
    errs = [abs(p.error) for p in pooled]
    e_errs = [abs(p.tokens_per_round_error) for p in pooled]
    cov: dict[str, list[int]] = {}
    e_cov: dict[str, list[int]] = {}
    for p in pooled:
        for counts, flags in ((cov, p.inside), (e_cov, p.tokens_per_round_inside)):
            for k, inside in (flags or {}).items():
                c = counts.setdefault(k, [0, 0])
                c[0] += int(inside)
                c[1] += 1
    text = (
        f"goodput median |error| {statistics.median(errs):.1%}, max {max(errs):.1%}; E(K) "
        f"median |error| {statistics.median(e_errs):.1%}, max {max(e_errs):.1%} over "
        f"{len(pooled)} configurations ({pooled[0].n_prompts} prompts each)"
    )
    if cov:
        text += "; measured inside the modelled prediction interval for that many prompts: "
        text += "goodput " + ", ".join(f"{k}: {a}/{n}" for k, (a, n) in cov.items())
        text += "; E(K) " + ", ".join(f"{k}: {a}/{n}" for k, (a, n) in e_cov.items())
    data = {
        "median_abs_error": statistics.median(errs),
        "max_abs_error": max(errs),
        "tokens_per_round_median_abs_error": statistics.median(e_errs),
        "tokens_per_round_max_abs_error": max(e_errs),
        "n_configurations": len(pooled),
        "inside_prediction": cov,
        "tokens_per_round_inside_prediction": e_cov,
        "configurations": [dataclasses.asdict(p) for p in pooled],
    }
    return text, data


def pooled_passes(summary: dict[str, Any], target: tuple[float, float]) -> bool:
    """The median and max |goodput error| of a :func:`pooled_summary` (its data) are
    within ``target``; no figures do not pass."""
    return (
        bool(summary)
        and summary["median_abs_error"] <= target[0]
        and summary["max_abs_error"] <= target[1]
    )


def sampling_limit(
    rows: Sequence[ValidationRow], alignments: list[AlignmentProfile], tolerance: float
) -> dict[str, Any]:
    """How far the per-run figures can be judged at ``tolerance``: the probability that a
    model exact in expectation measures every run's E(K) within ±``tolerance``, with only
    acceptance varying between the run's own number of prompts
    (:func:`~configspec.loop.prediction.within_probability`, runs independent; timing
    noise would lower it further), and the widest 95% prediction interval of a run."""
    probs, widths = [], []
    for r in rows:
        entry = alignment_entry(alignments, r.target, r.drafter, r.acceptance_domain,
                                r.temperature)  # fmt: skip
        p = within_probability(entry, r.k, r.n_prompts, tolerance) if entry else None
        if p is not None:
            probs.append(p)
        iv = r.prediction.tokens_per_round.get("95%") if r.prediction else None
        if iv and r.tokens_per_round.predicted:
            widths.append(max(iv[1], 2 * r.tokens_per_round.predicted - iv[0])
                          / r.tokens_per_round.predicted - 1)  # fmt: skip
    if not probs:
        return {"text": "no per-prompt records: the per-run sampling limit is unknown"}
    all_within = float(np.prod(probs))
    widest = max(widths) if widths else float("nan")
    text = (
        f"a model exact in expectation keeps all {len(probs)} runs' E(K) within "
        f"±{tolerance:.0%} with probability {all_within:.0%} (estimated: the prediction "
        f"intervals' cluster bootstrap, acceptance varying between prompts alone; the "
        f"widest run's modelled 95% prediction interval is ±{widest:.1%})"
    )
    return {"text": text, "runs": len(probs), "all_within_probability": all_within,
            "per_run_within_probability": probs, "widest_95_half_width": widest}  # fmt: skip


def refresh_alignment(work: Path, train: list[Prompt], args: argparse.Namespace) -> None:
    """Re-profile alignment in ``work`` (and every RTT block) on the training prompts when
    its profile has no per-prompt records (profiles written before they existed). Target
    references come from the cache, so only the drafters run; at T = 0 the pooled figures
    are unchanged."""
    store = ProfileStore(work / "profiles")
    if all(e.per_prompt for a in store.alignment_profiles() for e in a.entries):
        return
    profile_alignment_on(store, train, args)
    for rtt in args.rtts:
        block = work / f"rtt-{rtt:g}" / "alignment"
        shutil.copytree(store.root / "alignment", block, dirs_exist_ok=True)


def main() -> int:
    """Run the sweep, print the tables, write the JSON; exit 0 when every target is met."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profiles", type=Path, required=True)
    ap.add_argument("--mode", choices=["workload", "heldout"], default="workload")
    ap.add_argument(
        "--drafters", nargs="+", default=["gemma-3-270m-q4_0", "gemma-3-270m-q8_0", "ngram"]
    )
    ap.add_argument("--ks", nargs="+", type=int, default=list(range(1, 9)))
    ap.add_argument("--rtts", nargs="+", type=float, default=[0.0, 30.0, 100.0])
    ap.add_argument("--temperatures", nargs="+", type=float, default=[0.0])
    ap.add_argument("--target", default="gemma-3-270m-f32")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--prompts-per-domain", type=int, default=1, help="workload mode")
    ap.add_argument("--profile-prompts", type=int, default=3, help="heldout: per domain")
    ap.add_argument("--run-prompts", type=int, default=2, help="heldout: per domain")
    ap.add_argument("--left-out", default="code", choices=list(BUNDLED_DOMAINS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--link", choices=["auto", "netem", "proxy"], default="auto")
    ap.add_argument("--busy", type=int, default=0, help="busy background processes")
    ap.add_argument(
        "--contention-rule",
        choices=CONTENTION_RULES,
        default=None,
        help="how each run's probes are folded in (configspec.loop.contention.ContentionRule;"
        " default: gated with --fold-contention, else runs); running = the host's level from "
        "every probe up to the run's start (a prediction); bracketed reads the probe after",
    )
    ap.add_argument(
        "--fold-contention",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="scale profiled latencies by the contention probe around each run over the "
        "baseline probe (= --contention-rule gated, as in validate)",
    )
    ap.add_argument(
        "--reprofile",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="re-take device and verification profiles right before each RTT block",
    )
    ap.add_argument("--contexts", nargs="+", type=int, default=[64, 128])
    ap.add_argument("--point-budget-s", type=float, default=2.0)
    ap.add_argument(
        "--keep-work",
        action="store_true",
        help="keep the work directory (profiles and run records) for --analyze",
    )
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument(
        "--refresh-alignment",
        action="store_true",
        help="with --analyze: re-profile alignment in the work directory (cached "
        "references) when it has no per-prompt records, for the prediction intervals",
    )
    ap.add_argument(
        "--analyze",
        type=Path,
        default=None,
        help="skip running: validate the run records a (possibly interrupted) earlier sweep "
        "left in this work directory (printed at its start) with the same settings",
    )
    args = ap.parse_args()
    suffix = ("" if args.mode == "workload" else f"-{args.mode}") + "".join(
        f"-T{t:g}" for t in args.temperatures if t > 0
    )
    out = args.out or ROOT / "benchmarks" / "results" / f"bench_validate{suffix}.json"

    if args.analyze is not None:
        work = args.analyze
    else:
        work = Path(tempfile.mkdtemp(prefix="bench-validate-"))
        shutil.copytree(args.profiles, work / "profiles", ignore=shutil.ignore_patterns("runs"))
        print(f"work directory {work} (kept if interrupted: rerun with --analyze {work})")
    store = ProfileStore(work / "profiles")
    device = store.device_profiles()[0].device.name
    train, run_groups = split_prompts(args)
    load_before = os.getloadavg()
    started = time.perf_counter()
    rows: list[ValidationRow] = []
    overheads: dict[float, float] = {}
    warnings: list[str] = []
    blocks: list[tuple[ProfileStore, list[Any], float]] = []  # for the per-domain comparison
    total = len(args.rtts) * len(args.temperatures) * len(args.drafters) * len(args.ks)
    total *= len(run_groups)
    done = 0
    with busy_processes(0 if args.analyze else args.busy):
        if args.analyze is None:
            profile_alignment_on(store, train, args)
        elif args.refresh_alignment:
            refresh_alignment(work, train, args)
        for rtt in args.rtts:
            if args.analyze is not None:
                block = ProfileStore(work / f"rtt-{rtt:g}")
                runs = block.runs()
                overheads[rtt] = block.network().round_overhead_ms
                result = validate(
                    block,
                    runs=runs,
                    fold_contention=args.fold_contention,
                    contention_rule=args.contention_rule,
                )
                blocks.append((block, runs, overheads[rtt]))
                rows += result.rows
                warnings += [w for w in result.warnings if w not in warnings]
                continue
            block = ProfileStore(work / f"rtt-{rtt:g}")
            shutil.copytree(store.root, block.root, ignore=shutil.ignore_patterns("runs"))
            if args.reprofile:
                reprofile(block, args, device)
            records = []
            base = RuntimeSettings(
                target=args.target,
                prompts=tuple(next(iter(run_groups.values()))),
                max_tokens=args.max_tokens,
                threads=args.threads,
                device=device,
                max_k=max(16, max(args.ks)),
                link=args.link,
            )
            with Runtime(base) as runtime:
                # the baseline probe of every run's point, right after (re)profiling: the
                # runs' probes are divided by it (configspec.loop.contention)
                for prompts in run_groups.values():
                    runtime.settings = dataclasses.replace(base, prompts=tuple(prompts))
                    take_baseline(runtime, [
                        RunPlan(d, 1, rtt, t, SEED if t else None)
                        for t, d in itertools.product(args.temperatures, args.drafters)
                    ], block)  # fmt: skip
                runtime.settings = base
                over = runtime.calibrate_overhead(args.drafters[0], rtt)
                overheads[rtt] = over.mean
                net = block.network().model_dump()
                block.save_network(NetworkSettings(**{**net, "round_overhead_ms": over.mean}))
                print(f"RTT +{rtt:g} ms: runtime overhead {over.mean:.1f} ms/round "
                      f"(95% CI {over.low:.1f}..{over.high:.1f}, K=0)")  # fmt: skip
                # every temperature of one configuration back to back, so the T
                # comparison is not the host's drift between a greedy block of runs and a
                # sampled block minutes later (as the profilers time them)
                for drafter, k, (group, prompts), temp in itertools.product(
                    args.drafters, args.ks, run_groups.items(), args.temperatures
                ):
                    # one verifier and one set of loaded drafters serve every prompt group
                    runtime.settings = dataclasses.replace(base, prompts=tuple(prompts))
                    record = runtime.run(RunPlan(drafter, k, rtt, temp, SEED if temp else None))
                    block.save_run(record)
                    records.append(record)
                    done += 1
                    gp = record.goodput_tokens_per_s.mean
                    print(f"  [{done}/{total}] {group} {record.config.drafter} "
                          f"K={k} T={temp:g}: {gp:.2f} tok/s", flush=True)  # fmt: skip
            result = validate(
                block,
                runs=records,
                overhead_ms_by_rtt={rtt: overheads[rtt]},
                fold_contention=args.fold_contention,
                contention_rule=args.contention_rule,
            )
            blocks.append((block, records, overheads[rtt]))
            rows += result.rows
            warnings += [w for w in result.warnings if w not in warnings]
    wall_s = time.perf_counter() - started
    load_after = os.getloadavg()

    print()
    print_rows(rows)
    print()
    print_components(rows)
    print()
    report: dict[str, Any] = {}
    ok = True
    # the same runs modelled with each run's own domain's acceptance, once for every T
    per_domain_rows = (
        [
            r
            for block, runs, over in blocks
            for r in validate(
                block,
                runs=runs,
                overhead_ms_by_rtt={runs[0].config.added_rtt_ms: over} if runs else None,
                fold_contention=args.fold_contention,
                contention_rule=args.contention_rule,
                acceptance_domain="run",
            ).rows
        ]
        if args.mode == "heldout"
        else []
    )
    alignments: list[AlignmentProfile] = blocks[0][0].alignment_profiles() if blocks else []
    for temp in args.temperatures:
        at_t = [r for r in rows if r.temperature == temp]
        kind = "sampled" if temp > 0 else args.mode
        if args.mode == "heldout":
            profiled = [r for r in at_t if args.left_out not in r.domains]
            left = [r for r in at_t if args.left_out in r.domains]
            target = TARGETS["heldout"] if temp == 0 else TARGETS["sampled"]
            # the held-out workload: each configuration's runs over the profiled domains
            # together (the traffic a user deploys on); a single domain's run holds too
            # few prompts for a per-run bound (see sampling_limit)
            text, workload_data = pooled_summary(pooled_by_config(profiled, alignments))
            good = pooled_passes(workload_data, target)
            ok &= good
            print(f"T={temp:g} held-out workload, profiled domains (each configuration's "
                  f"held-out runs together: measured total tokens / total time vs modelled): "
                  f"{text} (target ≤ {target[0]:.0%} / ≤ {target[1]:.0%}) -> "
                  f"{'PASS' if good else 'FAIL'}")  # fmt: skip
            s = summarize(profiled)["goodput"]
            limit = sampling_limit(profiled, alignments, target[1])
            print(f"    per run (one domain's held-out prompts each; reported): goodput "
                  f"{fmt_summary(s)}; {limit['text']}")  # fmt: skip
            sl = summarize(left)["goodput"]
            cov_text, cov_p = fmt_coverage(profiled)
            print(f"    profiled domains, per run: {cov_text}")
            print(f"T={temp:g} left-out domain {args.left_out!r} (reported, no target): "
                  f"goodput {fmt_summary(sl)}")  # fmt: skip
            cov_text, cov_l = fmt_coverage(left)
            print(f"    left-out domain, per run: {cov_text}")
            by_domain = {}
            for domain in run_groups:
                in_domain = [r for r in at_t if domain in r.domains]
                sd = summarize(in_domain)
                cov_text, cov_d = fmt_coverage(in_domain)
                by_domain[domain] = {k: v.__dict__ for k, v in sd.items()}
                by_domain[domain]["prediction_coverage"] = cov_d
                print(f"    {domain:<14} goodput {fmt_summary(sd['goodput'])}; "
                      f"timing-only {fmt_summary(sd['goodput_timing'])}")  # fmt: skip
                print(f"    {'':<14} {cov_text}")
            report[f"T={temp:g}"] = {
                "profiled_domains": s.__dict__, "left_out": sl.__dict__, "by_domain": by_domain,
                "sampling_limit": {k: v for k, v in limit.items() if k != "text"},
                "prediction_coverage": {"profiled_domains": cov_p, "left_out": cov_l},
            }  # fmt: skip
            pooled_report = {"profiled domains": workload_data}
            for label, subset in (
                (f"left-out domain {args.left_out!r}", left),
                ("every domain", at_t),
            ):
                text, data = pooled_summary(pooled_by_config(subset, alignments))
                pooled_report[label] = data
                print(f"    pooled goodput, {label} (each configuration's runs together: "
                      f"measured total tokens / total time vs modelled): {text}")  # fmt: skip
            report[f"T={temp:g}"]["pooled"] = pooled_report
            per_domain = [
                r
                for r in per_domain_rows
                if r.temperature == temp and args.left_out not in r.domains
            ]
            sp = summarize(per_domain)["goodput"]
            print(f"    same runs, each with its own domain's acceptance (validate "
                  f"--acceptance-domain run): goodput {fmt_summary(sp)}; "
                  f"E(K) {fmt_e_k(per_domain)}")  # fmt: skip
            print(f"    pooled acceptance (the runs above): E(K) {fmt_e_k(profiled)}")
            report[f"T={temp:g}"]["profiled_domains_per_domain_acceptance"] = sp.__dict__
        else:
            summ = summarize(at_t)
            s = summ["goodput"]
            target = TARGETS[kind]
            good = passes(s, target)
            ok &= good
            print(f"T={temp:g} goodput: {fmt_summary(s)} (target ≤ {target[0]:.0%} / "
                  f"≤ {target[1]:.0%}) -> {'PASS' if good else 'FAIL'}")  # fmt: skip
            print(f"    timing-only (measured E(K)): {fmt_summary(summ['goodput_timing'])}; "
                  f"end-to-end: {fmt_summary(summ['goodput_end_to_end'])}")  # fmt: skip
            report[f"T={temp:g}"] = {k: v.__dict__ for k, v in summ.items()}
            cov_text, cov = fmt_coverage(at_t)
            print(f"    per run: {cov_text}")
            text, data = pooled_summary(pooled_by_config(at_t, alignments))
            print(f"    pooled goodput (each configuration's runs together): {text}")
            report[f"T={temp:g}"]["prediction_coverage"] = cov
            report[f"T={temp:g}"]["pooled"] = data
        e_err = [
            abs(r.tokens_per_round.predicted / r.tokens_per_round.measured - 1)
            for r in at_t
            if r.tokens_per_round.predicted and r.tokens_per_round.measured
        ]
        if e_err:
            print(f"    E(K) at T={temp:g}: median |error| {statistics.median(e_err):.1%}, "
                  f"max {max(e_err):.1%}")  # fmt: skip
            report[f"T={temp:g}"]["e_k_abs_error"] = {
                "median": statistics.median(e_err), "max": max(e_err),
            }  # fmt: skip
    run_records = {run.run_id: run for _, runs, _ in blocks for run in runs}
    judged = judge_k(rows, run_records)
    if judged:
        n_in = sum(j["within"] for j in judged)
        regrets = [j["regret"] for j in judged]
        print()
        med, mx = statistics.median(regrets), max(regrets)
        print(f"recommended K within {K_WITHIN:.0%} of the measured best in {n_in}/{len(judged)} "
              f"groups; regret median {med:.1%}, max {mx:.1%}")  # fmt: skip
        for j in judged:
            ci = j["regret_ci95"]
            ci_text = f" (95% CI {ci[0]:.1%}..{ci[1]:.1%})" if ci else ""
            verdict = (
                ""
                if j["within"]
                else ("  <- miss, within noise" if j["within_noise"] else "  <- miss")
            )
            print(f"    {j['drafter']:<20} +{j['added_rtt_ms']:g} ms T={j['temperature']:g}: "
                  f"model K={j['recommended_k']}, measured best K={j['best_measured_k']}, "
                  f"regret {j['regret']:.1%}{ci_text}; model margin "
                  f"{j['model_margin']:+.1%}{verdict}")  # fmt: skip
            meas_text = ", ".join(
                f"K={k} {v:.2f}" + (
                    f" [{j['measured_tok_s_ci95'][k][0]:.2f}-{j['measured_tok_s_ci95'][k][1]:.2f}]"
                    if k in j["measured_tok_s_ci95"] else "")
                for k, v in j["measured_tok_s"].items())  # fmt: skip
            mod_text = ", ".join(f"K={k} {v:.2f}" for k, v in j["modelled_tok_s"].items())
            print(f"        measured tok/s {meas_text}")
            print(f"        modelled tok/s {mod_text}")
        n_noise = sum(j["within_noise"] and not j["within"] for j in judged)
        if n_noise:
            print(
                f"    {n_noise} miss(es) within the runs' timing noise: 3% lies inside the "
                "regret's 95% CI (rounds resampled within each run)"
            )
        ok &= n_in == len(judged)
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} "
          f"(1 min); busy processes {args.busy}; {wall_s:.0f} s")  # fmt: skip
    for w in warnings:
        print(f"warning: {w}")
    payload = {
        "benchmark": "bench_validate",
        "mode": args.mode,
        "targets": {k: {"median": v[0], "max": v[1]} for k, v in TARGETS.items()},
        "k_within": K_WITHIN,
        "passed": ok,
        "wall_s": wall_s,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "alignment_prompts": [p.id for p in train],
        "run_prompts": {g: [p.id for p in ps] for g, ps in run_groups.items()},
        "overhead_ms_by_rtt": {str(k): v for k, v in overheads.items()},
        "summary": report,
        "k_judgement": judged,
        "rows": [dataclasses.asdict(r) for r in rows],
        "warnings": warnings,
    }
    # every contention rule replayed on these very runs (no timing: the runs' own probes
    # and rounds), side by side: benchmarks/contention_rules.py
    from contention_rules import compare, print_table

    rules = {str(work): [compare(work, rule, args.left_out) for rule in CONTENTION_RULES]}
    print()
    print_table(rules)
    payload["contention_rules"] = rules[str(work)]
    atomic_write_json(out, payload)
    print(f"wrote {out}")
    if args.analyze is None and not args.keep_work:
        shutil.rmtree(work, ignore_errors=True)
    elif args.analyze is None:
        print(f"work directory kept: {work} (re-validate with --analyze {work})")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
