"""Where a sampled round's time goes: the runtime's components against the profilers'.

At T > 0 the modelled goodput is optimistic because sampled rounds are slower than the
profiles say (issue 14). This benchmark splits the round, side by side and interleaved in
time, so that host drift falls on both sides alike:

* **runtime** — a short real run (``Runtime``: verifier subprocess, delay proxy, edge
  client, as ``validate --run`` and ``bench_validate`` run) per (drafter, K, T), T = 0 and
  the sampled T taking turns. Per round: ``draft_ms`` (drafting plus, at T > 0, building
  the top-k draft distributions), ``verify_ms`` (the verifier's forward pass plus its
  sampling decision), split into the **pass** (the verifier's
  ``configspec_verify_latency_seconds`` histogram, read from ``/metrics`` around the run)
  and the **decision** (``verify_ms`` minus the pass: tempering the target rows, the
  accept/residual draws), and the **link** (the rest of the round: injected RTT, HTTP,
  JSON of the request and its distributions, the client's bookkeeping). Only rounds that
  drafted the full K are compared, so the verifier's positions are K + 1 on both sides.
* **profile path** — right after each run, in this process: the device profiler's timer
  (:class:`~configspec.profiling.device.DraftTimer`, sampled drafting plus
  ``build_request`` at T) on the same drafter object, and the verification profiler's
  timed call (``_time_batch``: ``LlamaCppTarget.evaluate`` plus, at T > 0, the sampling
  decision with the target's own top-k distributions) at K + 1 positions and the runs'
  mean context; and once more with the verifier idle before each call for as long as a
  run's verifier idles between rounds (the run's round minus its verification: drafting
  and link), ``verify_idle_ms`` — the profiler times back to back, a run does not.

The table prints runtime, profile path and their difference per component, then the
T-specific part of each (T minus T = 0, runtime against profile path): the term that makes
up the sampled rounds' excess is the row where the runtime's T-delta exceeds the
profile's. Measure on a quiet host; the load average is printed and stored.

    PYTHONPATH=src python benchmarks/bench_sampled_round.py
    PYTHONPATH=src python benchmarks/bench_sampled_round.py --drafters ngram --ks 1 2 4

Writes ``benchmarks/results/bench_sampled_round.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import result_header

from configspec.backends.factory import LlamaSettings, open_target
from configspec.loop.runtime import RunPlan, Runtime, RuntimeSettings
from configspec.profiling.device import DraftTimer, build_context, inner_repeats
from configspec.profiling.prompts import bundled_prompts, select_prompts
from configspec.profiling.verification import (
    _SampledDecision,
    _time_batch,
    draft_distributions,
)

COMPONENTS = ("draft_ms", "verify_ms", "verify_idle_ms", "pass_ms", "decision_ms", "link_ms",
              "round_ms")  # fmt: skip
_PASS_RE = re.compile(r"^configspec_verify_latency_seconds_(sum|count) ([0-9.e+-]+)$", re.M)


def pass_totals(url: str) -> tuple[float, float]:
    """(sum in s, count) of the verifier's forward-pass histogram."""
    text = httpx.get(url + "/metrics", timeout=10.0, trust_env=False).text
    got = {m.group(1): float(m.group(2)) for m in _PASS_RE.finditer(text)}
    return got.get("sum", 0.0), got.get("count", 0.0)


def runtime_side(rt: Runtime, plan: RunPlan) -> dict[str, float]:
    """One short run; its full-K rounds' mean components (ms) and the pass split."""
    s0, n0 = pass_totals(rt.url)
    rec = rt.run(plan)
    s1, n1 = pass_totals(rt.url)
    full = [r for r in rec.rounds if r.k == plan.k] or list(rec.rounds)
    mean = statistics.fmean
    pass_ms = (s1 - s0) / max(n1 - n0, 1.0) * 1e3  # every round of the run (warm-up too)
    all_verify = mean(r.verify_ms for r in rec.rounds)
    out = {
        "draft_ms": mean(r.draft_ms for r in full),
        "verify_ms": mean(r.verify_ms for r in full),
        "verify_idle_ms": mean(r.verify_ms for r in full),
        "pass_ms": pass_ms,
        "decision_ms": all_verify - pass_ms,
        "link_ms": mean(r.round_ms - r.draft_ms - r.verify_ms for r in full),
        "round_ms": mean(r.round_ms for r in full),
        "rounds": float(len(full)),
        "all_rounds": float(len(rec.rounds)),
    }
    return out


def profile_side(
    rt: Runtime, target: Any, plan: RunPlan, ctx: int, top_k: int, samples: int, idle_ms: float
) -> dict[str, float]:
    """The device and verification profilers' timings of the same configuration (ms); also
    the verification timed after ``idle_ms`` of sleep each time (``verify_idle_ms``: the
    verifier of a run idles for the drafting and the link between its rounds, the
    profiler times back to back)."""
    drafter = rt.drafter(plan.drafter)
    timer = DraftTimer(drafter, build_context(drafter, ctx), plan.k, plan.temperature, top_k)
    timer.once()
    inner = inner_repeats(timer)
    draft = [timer.per_token_ms(inner) * plan.k for _ in range(samples)]
    full = build_context(target, ctx + plan.k)
    context, tokens = full[:ctx], full[ctx : ctx + plan.k]
    decide = None
    if plan.temperature > 0:
        vocab = target.identity.vocab_size or 1
        dists = draft_distributions(target, context, tokens, plan.temperature, top_k)
        decide = _SampledDecision(plan.temperature, vocab, dists)
    _time_batch([target], context, tokens, None, decide)  # warm-up
    verify = [_time_batch([target], context, tokens, None, decide) for _ in range(samples)]
    ev_only = [_time_batch([target], context, tokens, None, None) for _ in range(samples)]
    after_idle = []
    for _ in range(samples):
        time.sleep(idle_ms / 1e3)
        after_idle.append(_time_batch([target], context, tokens, None, decide))
    return {
        "verify_idle_ms": float(np.median(after_idle)),
        "draft_ms": float(np.median(draft)),
        "verify_ms": float(np.median(verify)),
        "pass_ms": float(np.median(ev_only)),
        "decision_ms": float(np.median(verify) - np.median(ev_only)),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--drafters", nargs="+", default=["gemma-3-270m-q8_0", "ngram"])
    ap.add_argument("--ks", nargs="+", type=int, default=[1, 4])
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--rtt", type=float, default=30.0)
    ap.add_argument("--repeats", type=int, default=2, help="T=0 / T runs per configuration")
    ap.add_argument("--samples", type=int, default=8, help="profile-path samples per point")
    ap.add_argument("--target", default="gemma-3-270m-f32")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--link", choices=["auto", "netem", "proxy"], default="auto")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    args.out = args.out or Path(__file__).parent / "results" / "bench_sampled_round.json"
    load_before = os.getloadavg()
    t_start = time.perf_counter()
    prompts = tuple(select_prompts(bundled_prompts(), 1))
    settings = RuntimeSettings(
        target=args.target, prompts=prompts, max_tokens=args.max_tokens, threads=args.threads,
        link=args.link, probe_contention=False,
    )  # fmt: skip
    temps = (0.0, args.temperature)
    acc: dict[tuple[str, int, float, str], dict[str, list[float]]] = {}
    target = open_target(args.target, settings=LlamaSettings(n_threads=args.threads, n_ctx=1024))
    try:
        with Runtime(settings) as rt:
            lengths = [len(rt.drafter(args.drafters[0]).tokenize(p.text)) for p in prompts]
            ctx = round(statistics.fmean(lengths) + args.max_tokens / 2)
            for rep in range(args.repeats):
                for d in args.drafters:
                    for k in args.ks:
                        # alternate which temperature goes first, so drift is shared
                        for t in temps if rep % 2 == 0 else temps[::-1]:
                            plan = RunPlan(d, k, args.rtt, t, 1234 if t > 0 else None)
                            run = runtime_side(rt, plan)
                            idle = run["round_ms"] - run["verify_ms"]
                            prof = profile_side(rt, target, plan, ctx, 64, args.samples, idle)
                            name = rt.drafter(d).identity.name
                            for side, vals in (("runtime", run), ("profile", prof)):
                                slot = acc.setdefault((name, k, t, side), {})
                                for c, v in vals.items():
                                    slot.setdefault(c, []).append(v)
                            print(f"  {name} K={k} T={t:g} rep {rep + 1}: runtime verify "
                                  f"{run['verify_ms']:.1f} ms (pass {run['pass_ms']:.1f}), "
                                  f"profile path {prof['verify_ms']:.1f} ms; load "
                                  f"{os.getloadavg()[0]:.2f}", flush=True)  # fmt: skip
    finally:
        close = getattr(target, "close", None)
        if callable(close):
            close()
    rows = report(acc, temps)
    load_after = os.getloadavg()
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1 min); "
          f"{time.perf_counter() - t_start:.0f} s")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    doc = result_header("bench_sampled_round", args, None, load_before, load_after)
    doc["context_tokens"] = ctx
    doc["rows"] = rows
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2))
    tmp.replace(args.out)
    print(f"wrote {args.out}")
    return 0


def report(
    acc: dict[tuple[str, int, float, str], dict[str, list[float]]], temps: tuple[float, float]
) -> list[dict[str, Any]]:
    """Print the component table and the T-specific deltas; the rows for the JSON."""
    mean = statistics.fmean
    rows: list[dict[str, Any]] = []
    configs = sorted({(n, k) for n, k, _, _ in acc})
    print(f"\n{'drafter':<22}{'K':>2} {'T':>4} {'component':<12}{'runtime':>9}{'profile':>9}"
          f"{'excess':>9}")  # fmt: skip
    for name, k in configs:
        for t in temps:
            run, prof = acc[(name, k, t, "runtime")], acc[(name, k, t, "profile")]
            for c in COMPONENTS:
                r = mean(run[c])
                p = mean(prof[c]) if c in prof else None
                ex = f"{r - p:+9.1f}" if p is not None else f"{'':>9}"
                ps = f"{p:9.1f}" if p is not None else f"{'—':>9}"
                print(f"{name:<22}{k:>2} {t:>4g} {c:<12}{r:9.1f}{ps}{ex}")
                rows.append({"drafter": name, "k": k, "temperature": t, "component": c,
                             "runtime_ms": r, "profile_ms": p, "runtime_samples": run[c],
                             "profile_samples": prof.get(c)})  # fmt: skip
    print(f"\nT-specific part (T={temps[1]:g} minus T=0), runtime against the profile path:")
    for name, k in configs:
        for c in ("draft_ms", "verify_ms", "verify_idle_ms", "pass_ms", "decision_ms", "link_ms"):
            hot, cold = acc[(name, k, temps[1], "runtime")], acc[(name, k, 0.0, "runtime")]
            r = mean(hot[c]) - mean(cold[c])
            if c in acc[(name, k, 0.0, "profile")]:
                p = mean(acc[(name, k, temps[1], "profile")][c]) - mean(
                    acc[(name, k, 0.0, "profile")][c]
                )
                print(f"  {name:<22}K={k} {c:<12} runtime {r:+7.1f} ms, profile {p:+7.1f} ms, "
                      f"unmodelled {r - p:+7.1f} ms")  # fmt: skip
            else:
                print(f"  {name:<22}K={k} {c:<12} runtime {r:+7.1f} ms (not profiled)")
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
