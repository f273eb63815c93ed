"""Adaptive K against static K under drift (issue 18), through the real runtime.

The scenario is fixed in advance (issue 18), so that it cannot be tuned to the result:

* drafters: the Q4_0 drafter and the n-gram drafter, each run separately;
* three phases of equal token counts; the proxy's one-way delay is 2.5 → 60 → 2.5 ms
  (5 → 120 → 5 ms RTT), switched by the benchmark at each phase start
  (:class:`~configspec.serving.proxy.DelaySchedule`); the prompts are from the code domain
  in phase 1 and from the chat domain in phases 2 and 3;
* arms: ``adaptive`` (``--k auto``, prior: the profiles for the code domain and the
  stored RTT), every static K in 1..K_max (their best per phase is the **oracle**), of
  which the **static pick** is ``select``'s goodput choice for 5 ms RTT and the code domain;
* a no-drift control at a constant 30 ms RTT on code prompts: adaptive against the static
  pick for those very conditions (``select`` at 30 ms, code), and against the drift
  scenario's static pick.

Every arm runs every prompt back to back (the arm order rotates per prompt), so all arms
see the same host load at about the same time; the adaptive policy keeps what it learnt
from one prompt to the next. Goodput is generated tokens over decode wall time (prefill
excluded; the policy's own time included). Greedy decoding: every arm generates the same
text. The policy's cost per round (choose + observe) is timed inside the adaptive runs.

Repeats (``--repeats R``, default 2): the whole scenario and the control run R times per
drafter, the adaptive arm with a fresh policy each time, the arm order running backwards
in odd repeats. One generation of one arm is a *cell* (repeat, phase, prompt); ratios are
taken over the cells two arms share (same prompt, same minute), with a 95% bootstrap CI
resampling cells and the ratio of every repeat listed (``_repeats.py``). The per-phase
**oracle is held out**: for each cell, the static K best on the phase's *other* cells,
scored on that cell (leave one cell out, which also works at R = 1). The best of eight
arms measured on the same cells — what the benchmark reported before — is biased upwards
by their noise (it is still printed, "in-sample"). The scenario itself (delays, prompts,
static pick, tokens) does not depend on R.

Adaptive arms side by side (``--adaptive-arms auto line shape``; default ``auto`` alone,
printed as ``adaptive``: the policy ``run edge --k auto`` runs for the drafter's kind, the
verification shape for a model drafter and the match-depth rule for a model-free one;
``line`` is the :class:`AdaptiveK` class defaults, the policy before those two won their
A/Bs): each listed variant (:data:`ADAPTIVE_ARMS`) is one more arm with its own fresh
policy every repeat, rotated with the static arms like any other. Each gets the full
table (per phase against the held-out oracle, the whole scenario against the static pick,
the no-drift control), and each later arm its goodput ratio over the first on the cells
both ran, with a bootstrap CI (``_adaptive_report.py``). ``auto-domain`` is the one arm told
the prompts' domains (it reseeds its policy with the chat prior where phase 2 starts; in the
all-code control it is ``auto`` again, an A/A check of the noise between two arms). One
more arm adds about 1/9 to the wall time. An arm that is the same policy as an earlier one
for the drafter is not run (``depth`` is ``line`` and ``auto`` is ``shape`` for a model
drafter; ``auto`` is ``depth`` for a model-free one); the options each arm ran with are
printed and stored.

Wall time on the benchmark host (2-core Xeon VM, quiet): one repeat of the Q4_0 drafter
≈ 13 min, of the n-gram drafter ≈ 11 min (2026-11-30, 00:27–00:51), so R = 2 with both
drafters ≈ 49 min, R = 3 ≈ 73 min; one drafter alone at R = 2 ≈ 26 min (Q4_0) / 23 min
(n-gram). After each repeat the benchmark prints its time and what is left.

Targets: adaptive ≥ 0.97 × oracle in every phase; ≥ 1.15 × the static pick over the
whole drift scenario; ≥ 0.98 × the static pick without drift; policy < 0.2 ms per round
(judged on the point estimates; the CIs say how far the run can resolve them).

One command on a quiet host (profiles this machine first, then runs everything):

    PYTHONPATH=src python benchmarks/bench_adaptive.py

Without ``--profiles`` the benchmark first runs ``configspec quickstart`` for the two
drafters (2 prompts per domain, so alignment has code and chat entries) into its work
directory and takes the profiles from there; ``--profiles DIR`` reuses device,
verification and alignment profiles of this machine instead (copied, never modified).
Prints a table, then the target ratios per drafter, and writes
``benchmarks/results/bench_adaptive.json`` (with every cell); ``--runs DIR`` also stores the
adaptive runs' records, one per repeat (for ``configspec report`` and
``replay_adaptive.py``), and the profiles the policies' prior came from (so ``--profiles
DIR`` rebuilds it in a replay). Exit status 0 when every target is met.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _adaptive_report import (  # noqa: E402
    CONTROL_ONE_WAY_MS,
    PHASE_ONE_WAY_MS,
    STATIC_PICK_RTT_MS,
    TARGET_NO_DRIFT,
    TARGET_POLICY_MS,
    TARGET_VS_ORACLE,
    TARGET_VS_STATIC,
    arm_ratios,
    fmt_load,
    print_arm_ratios,
    print_table,
)
from _repeats import Cell, goodput, heldout_oracle, oracle_cells, paired_ratio  # noqa: E402

from configspec import records as R  # noqa: E402
from configspec.backends.base import Drafter  # noqa: E402
from configspec.config import KChoice, RunConfig  # noqa: E402
from configspec.loop.runtime import Runtime, RuntimeSettings, merge_generations  # noqa: E402
from configspec.model.presets import get_preset  # noqa: E402
from configspec.profiling.prompts import Prompt, bundled_prompts  # noqa: E402
from configspec.search.select import best_per_pair, pick  # noqa: E402
from configspec.search.space import (  # noqa: E402
    Profiles,
    SearchSettings,
    read_profiles,
    space_from_profiles,
)
from configspec.serving.adaptive import (  # noqa: E402
    AdaptiveK,
    PolicyPrior,
    auto_options,
    model_free,
    prior_from_profiles,
)
from configspec.serving.client import EdgeClient, Generation  # noqa: E402
from configspec.serving.proxy import DelayProxy, DelaySchedule  # noqa: E402
from configspec.serving.record import build_run_record  # noqa: E402
from configspec.store import ProfileStore, atomic_write_json  # noqa: E402

ADAPTIVE_ARMS: dict[str, dict[str, object]] = {
    "auto": {},
    "line": {},
    "shape": {"verify_shape": True},
    "depth": {"match_depth": True},
    "depth-group": {"match_depth": True, "group_changes": True},
    "auto-domain": {},
}
"""``--adaptive-arms`` variant → the :class:`AdaptiveK` options of that arm: ``auto`` is
what ``run edge --k auto`` runs (:func:`~configspec.serving.adaptive.auto_options`: the
options of ``shape`` for a model drafter, of ``depth`` for a model-free one; resolved per
drafter by :func:`arm_options`), ``line`` the class defaults (verification a live line),
``shape`` reads the verification profile's per-width table (``verify_shape=True``),
``depth`` keeps a model-free drafter's deep positions off the first position's shift
(``match_depth=True``; the same as ``line`` for a model drafter); ``depth-group`` is
``depth`` with one change detector per group of positions (``AdaptiveK(group_changes=True)``,
experimental); ``auto-domain`` is ``auto`` told each prompt's domain: where it changes, the
policy takes that domain's alignment prior (:meth:`AdaptiveK.reseed`, the bundled prompts'
labels; the other arms know only the code domain they start in)."""
DOMAIN_LABELLED = frozenset({"auto-domain"})
"""The arms that are told each prompt's domain (:data:`ADAPTIVE_ARMS`)."""


class TimedPolicy(AdaptiveK):
    """The adaptive policy, timing its own choose + observe per round (seconds), by the wall
    clock and by the thread's CPU clock (on a shared host the wall clock also counts the
    time the process waited for a core)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.cost_s: list[float] = []
        self.cpu_s: list[float] = []
        self._pending = (0.0, 0.0)

    def choose(self) -> KChoice:
        t, c = time.perf_counter(), time.thread_time()
        out = super().choose()
        self._pending = (time.perf_counter() - t, time.thread_time() - c)
        return out

    def observe(self, **kwargs: object) -> None:  # type: ignore[override]
        t, c = time.perf_counter(), time.thread_time()
        super().observe(**kwargs)  # type: ignore[arg-type]
        self.cost_s.append(self._pending[0] + time.perf_counter() - t)
        self.cpu_s.append(self._pending[1] + time.thread_time() - c)


@dataclass
class Arm:
    """One way of choosing K, with its client and its generations: per phase, and per cell
    (repeat, phase, prompt; :class:`_repeats.Cell`). The adaptive arm gets a fresh policy
    (and client) every repeat: each repeat is the whole scenario again."""

    name: str
    client: EdgeClient
    variant: str = ""
    """The adaptive variant (:data:`ADAPTIVE_ARMS`); empty for a static K."""
    policy: TimedPolicy | None = None
    priors: dict[str, PolicyPrior] | None = None
    """Per domain, the prior a domain-labelled arm reseeds its policy with where the
    prompts' domain changes (:data:`DOMAIN_LABELLED`; None: the arm is not told)."""
    domain: str = "code"
    """The domain the arm's policy was last seeded for."""
    by_phase: dict[int, list[Generation]] = field(default_factory=dict)
    cells: list[Cell] = field(default_factory=list)
    by_repeat: dict[int, list[Generation]] = field(default_factory=dict)
    policies: list[TimedPolicy] = field(default_factory=list)

    def goodput(self, phase: int | None = None) -> float:
        """Tokens per second of decode time in ``phase`` (None: all phases)."""
        return goodput(c for c in self.cells if phase in (None, c.phase))


def static_pick(profiles: Profiles, drafter: str, rtt_ms: float, context: int, k_max: int) -> int:
    """``select``'s goodput-optimal K for ``drafter`` at ``rtt_ms`` in the code domain."""
    settings = SearchSettings(
        k_max=k_max, context_tokens=context, domain="code", drafters=(drafter,)
    )
    space = space_from_profiles(profiles, get_preset("configspec"), settings)
    sel = pick(space, profiles.network, "goodput", rtt_ms=rtt_ms)
    (best,) = [b for b in best_per_pair(sel) if b.objective == "goodput"]
    assert best.row is not None
    return int(sel.table[R.K].iloc[best.row])


def run_scenario(
    proxy: DelayProxy,
    arms: list[Arm],
    drafter: Drafter,
    phases: list[tuple[float, list[Prompt]]],
    max_tokens: int,
    repeat: int = 0,
) -> None:
    """Every arm on every prompt of every phase, the delay switched at each phase start.

    The arm order rotates by one per prompt and runs backwards in odd repeats, so over
    the repeats every arm runs early and late in a prompt's turn alike.
    """
    assert proxy.schedule is not None
    ordered = arms if repeat % 2 == 0 else arms[::-1]
    turn = repeat
    for phase, (one_way_ms, prompts) in enumerate(phases):
        proxy.schedule.set_delay_ms(one_way_ms)
        for i, prompt in enumerate(prompts):
            tokens = drafter.tokenize(prompt.text)
            order = ordered[turn % len(arms) :] + ordered[: turn % len(arms)]
            turn += 1
            for arm in order:
                priors, policy = arm.priors, arm.policy
                if priors is not None and policy is not None and prompt.domain != arm.domain:
                    policy.reseed(priors[prompt.domain])
                    arm.domain = prompt.domain
                gen = arm.client.generate(tokens, max_tokens)
                arm.by_phase.setdefault(phase, []).append(gen)
                arm.by_repeat.setdefault(repeat, []).append(gen)
                arm.cells.append(Cell(repeat, phase, i, len(gen.tokens), gen.decode_s))
        done = ", ".join(
            f"{a.name} {goodput(c for c in a.cells if c.key[:2] == (repeat, phase)):.1f}"
            for a in arms
        )
        print(f"    phase {phase + 1} (+{2 * one_way_ms:g} ms RTT): {done} tok/s", flush=True)


def replay_cost_ms(policy_factory: object, arm: Arm, repeats: int = 5) -> float:
    """The policy's cost per round (ms) replaying the adaptive arm's recorded rounds (of
    its first repeat) through a fresh policy, best of ``repeats`` passes (least disturbed
    by the host)."""
    rounds = [r for g in arm.by_repeat[0] for r in g.rounds]
    best = float("inf")
    for _ in range(repeats):
        policy = policy_factory()  # type: ignore[operator]
        t = time.perf_counter()
        for r in rounds:
            policy.choose()
            policy.observe(
                k_asked=r.k_limit or r.k, drafted=r.k, accepted=r.accepted,
                draft_ms=r.draft_ms, verify_ms=r.verify_ms, round_ms=r.round_ms,
            )  # fmt: skip
        best = min(best, (time.perf_counter() - t) / max(1, len(rounds)))
    return best * 1e3


def bench_prior(
    profiles: Profiles, name: str, context: int, k_max: int, domain: str = "code"
) -> PolicyPrior:
    """The adaptive arms' prior: the profiles for ``domain`` (where every arm starts: code)
    and the stored RTT."""
    return prior_from_profiles(
        profiles, drafter=name, domain=domain, k_max=k_max, context_tokens=context
    )


def arm_options(variant: str, prior: PolicyPrior) -> dict[str, object]:
    """The :class:`AdaptiveK` options of ``variant`` for the drafter behind ``prior``, only
    those that change its policy: ``auto`` resolved as ``run edge --k auto`` resolves it;
    ``match_depth`` and ``group_changes`` dropped for a model drafter (they act on a
    model-free drafter's proposal chain only). ``auto-domain`` has ``auto``'s options."""
    auto = variant == "auto" or variant in DOMAIN_LABELLED
    options = auto_options(prior) if auto else ADAPTIVE_ARMS[variant]
    free = model_free(prior)
    return {
        key: value
        for key, value in options.items()
        if value and (free or key not in {"match_depth", "group_changes"})
    }


def new_policy(
    profiles: Profiles, name: str, context: int, k_max: int, variant: str
) -> TimedPolicy:
    """A fresh policy for one adaptive arm (``variant``: a key of :data:`ADAPTIVE_ARMS`)."""
    prior = bench_prior(profiles, name, context, k_max)
    return TimedPolicy(prior, k_min=1, k_max=k_max, **arm_options(variant, prior))


def drafter_variants(asked: list[str], prior: PolicyPrior, name: str) -> list[str]:
    """The adaptive arms to run for one drafter: ``asked`` without those that are the same
    policy for it as an earlier one (for a model drafter ``depth`` is ``line`` and ``auto``
    is ``shape``; for a model-free one ``auto`` is ``depth``)."""
    out: list[str] = []
    seen: dict[tuple[tuple[str, object], ...], str] = {}
    for variant in asked:
        labelled = ("domain labels", variant in DOMAIN_LABELLED)
        key = (*sorted(arm_options(variant, prior).items()), labelled)
        if key in seen:
            print(f"  adaptive arm {variant} skipped: the same policy as {seen[key]} for "
                  f"{name}")  # fmt: skip
            continue
        seen[key] = variant
        out.append(variant)
    return out


def arm_name(variant: str, variants: list[str]) -> str:
    """``adaptive`` for the default arm alone (the output as before), else per variant."""
    return "adaptive" if variants == ["auto"] else f"adaptive-{variant}"


def main() -> int:
    """Run the scenario and the control, print the table, write the JSON."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--profiles", type=Path, default=None, help="default: profile this machine first"
    )
    ap.add_argument("--drafters", nargs="+", default=["gemma-3-270m-q4_0", "ngram"])
    ap.add_argument("--target", default="gemma-3-270m-f32")
    ap.add_argument("--k-max", type=int, default=8)
    ap.add_argument("--prompts-per-phase", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=64, help="tokens per prompt")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--repeats",
        type=int,
        default=2,
        help="runs of the whole scenario and control per drafter, arms interleaved (the "
        "oracle is chosen on the other cells and scored on each; ratios get a bootstrap CI)",
    )
    ap.add_argument("--runs", type=Path, default=None, help="store the adaptive run records")
    ap.add_argument(
        "--adaptive-arms", nargs="+", choices=sorted(ADAPTIVE_ARMS), default=["auto"],
        help="adaptive arms run side by side, each with its own fresh policy, interleaved "
        "with the static arms (auto: what run edge --k auto runs, the default; line: the "
        "AdaptiveK class defaults; shape: verification from the "
        "profile's per-width table; depth: an n-gram drafter's depth conditional on a match, "
        "AdaptiveK(match_depth=True); auto-domain: auto told each prompt's domain, "
        "AdaptiveK.reseed); ratios of each later arm over the first are printed",
    )  # fmt: skip
    ap.add_argument(
        "--verify-shape", action="store_true",
        help="the same as --adaptive-arms shape (the only adaptive arm)",
    )  # fmt: skip
    ap.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "bench_adaptive.json"
    )
    args = ap.parse_args()
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")
    asked = ["shape"] if args.verify_shape else list(dict.fromkeys(args.adaptive_arms))

    work = Path(tempfile.mkdtemp(prefix="bench-adaptive-"))
    source = args.profiles or quickstart_profiles(work, args)
    shutil.copytree(source, work / "profiles", ignore=shutil.ignore_patterns("runs"))
    store = ProfileStore(work / "profiles")
    profiles = read_profiles(store)
    if args.runs is not None:
        # the prior beside the records, so replay_adaptive*.py --profiles RUNS can rebuild
        # it after the work directory (and a quickstart made in it) is gone
        ignore = shutil.ignore_patterns("runs", "cache", "checkpoints")
        shutil.copytree(work / "profiles", args.runs, ignore=ignore, dirs_exist_ok=True)
    n = args.prompts_per_phase
    code = bundled_prompts(["code"])
    chat = bundled_prompts(["chat"])
    phases = [
        (PHASE_ONE_WAY_MS[0], code[:n]),
        (PHASE_ONE_WAY_MS[1], chat[:n]),
        (PHASE_ONE_WAY_MS[2], chat[n : 2 * n]),
    ]
    control = [(CONTROL_ONE_WAY_MS, code[n * i : n * (i + 1)]) for i in range(3)]
    settings = RuntimeSettings(
        target=args.target,
        prompts=tuple(code[:1]),
        max_tokens=args.max_tokens,
        threads=args.threads,
        device=profiles.devices[0].device.name,
        max_k=max(16, args.k_max),
        link="proxy",
    )
    load_before = os.getloadavg()
    started = time.perf_counter()
    results: dict[str, dict[str, object]] = {}
    with Runtime(settings) as runtime:
        upstream = ("127.0.0.1", int(runtime.url.rsplit(":", 1)[1]))
        for spec in args.drafters:
            drafter = runtime.drafter(spec)
            name = drafter.identity.name
            lengths = [len(drafter.tokenize(p.text)) for p in code[:n] + chat[: 2 * n]]
            context = round(statistics.fmean(lengths) + args.max_tokens / 2)
            pick5 = static_pick(profiles, name, STATIC_PICK_RTT_MS, context, args.k_max)
            pick30 = static_pick(profiles, name, 2 * CONTROL_ONE_WAY_MS, context, args.k_max)
            print(f"{name}: static pick K={pick5} (5 ms, code), K={pick30} (30 ms, code)")
            with DelayProxy(upstream, schedule=DelaySchedule()) as proxy:
                # warm the drafter, the connection and the verifier's slot (not recorded)
                warm = EdgeClient(proxy.url, drafter, k=2, timeout_s=120.0)
                warm.generate(drafter.tokenize(code[0].text), 4)
                warm.close()  # (the adaptive arms' placeholder client until repeat 1)
                prior = bench_prior(profiles, name, context, args.k_max)
                variants = drafter_variants(asked, prior, name)
                # per variant, the per-domain priors it is told (built once; None: not told)
                domain_priors = {
                    d: bench_prior(profiles, name, context, args.k_max, d)
                    for d in ("code", "chat")
                } if DOMAIN_LABELLED.intersection(variants) else {}  # fmt: skip
                told = {v: domain_priors if v in DOMAIN_LABELLED else None for v in variants}
                n_ad = len(variants)
                factories = {
                    v: functools.partial(new_policy, profiles, name, context, args.k_max, v)
                    for v in variants
                }
                for v in variants:
                    options = arm_options(v, prior) or "none"
                    print(f"  adaptive arm {v}: AdaptiveK options {options}")
                arms = [Arm(arm_name(v, asked), warm, v, priors=told[v]) for v in variants]
                arms += [
                    Arm(f"K={k}", EdgeClient(proxy.url, drafter, k=k, timeout_s=120.0))
                    for k in range(1, args.k_max + 1)
                ]
                control_arms = [
                    *(Arm(arm_name(v, asked), warm, v, priors=told[v]) for v in variants),
                    *(Arm(f"K={k}", EdgeClient(proxy.url, drafter, k=k, timeout_s=120.0))
                      for k in sorted({pick5, pick30})),
                ]  # fmt: skip
                t_drafter = time.perf_counter()
                for r in range(args.repeats):
                    runs = ((arms, "drift scenario", phases),
                            (control_arms, "no-drift control", control))  # fmt: skip
                    for group, label, plan in runs:
                        # a fresh policy every repeat: each repeat is the whole scenario
                        for arm in group[:n_ad]:
                            arm.policy = factories[arm.variant]()
                            arm.policies.append(arm.policy)
                            arm.domain = "code"
                            arm.client = EdgeClient(proxy.url, drafter, k=0, policy=arm.policy)
                        print(f"  {label}, repeat {r + 1}/{args.repeats}")
                        run_scenario(proxy, group, drafter, plan, args.max_tokens, repeat=r)
                        for arm in group[:n_ad]:
                            arm.client.close()
                    per = (time.perf_counter() - t_drafter) / (r + 1)
                    left = per * (args.repeats - r - 1)
                    print(f"  repeat {r + 1}/{args.repeats} done: {per:.0f} s per repeat, "
                          f"~{left:.0f} s left for {name}", flush=True)  # fmt: skip
                for arm in arms[n_ad:] + control_arms[n_ad:]:
                    arm.client.close()
            summaries = {}
            for i, v in enumerate(variants):
                res = summarise(arms[i], arms[n_ad:], control_arms[i], control_arms[n_ad:],
                                pick5, pick30)  # fmt: skip
                cost = res["policy_ms_per_round"]
                cost["replay_best_of_5"] = replay_cost_ms(factories[v], arms[i])  # type: ignore[index]
                summaries[v] = res
            # the first arm's figures where a single arm's always were (the default output)
            results[name] = {
                **summaries[variants[0]],
                "adaptive_arm": variants[0],
                "adaptive_options": {v: arm_options(v, prior) for v in variants},
            }
            results[name]["cells"] = {
                scenario: {
                    a.name: [[c.repeat, c.phase, c.prompt, c.tokens, c.decode_s] for c in a.cells]
                    for a in group
                }
                for scenario, group in (("drift", arms), ("control", control_arms))
            }
            if asked != ["auto"]:
                results[name]["arms"] = summaries
            if n_ad > 1:
                results[name]["arm_ratios"] = {
                    f"{v}/{variants[0]}": arm_ratios(arms[i].cells, arms[0].cells,
                                                     control_arms[i].cells,
                                                     control_arms[0].cells)
                    for i, v in enumerate(variants) if i
                }  # fmt: skip
            if args.runs is not None:
                for i, r in itertools.product(range(n_ad), range(args.repeats)):
                    tag = "" if arms[i].name == "adaptive" else f"-{arms[i].variant}"
                    save_adaptive(ProfileStore(args.runs), arms[i], name, args, "drift" + tag,
                                  context, r)  # fmt: skip
                    save_adaptive(ProfileStore(args.runs), control_arms[i], name, args,
                                  "control" + tag, context, r)  # fmt: skip
    wall_s = time.perf_counter() - started
    load_after = os.getloadavg()
    ok = print_table(
        {f"{name} [{v}]": s for name, res in results.items() for v, s in res["arms"].items()}  # type: ignore[attr-defined]
        if any("arms" in res for res in results.values())
        else results
    )
    if any("arm_ratios" in res for res in results.values()):
        print("adaptive arms side by side (ratio over shared cells [95% bootstrap CI]):")
        for name, res in results.items():
            print_arm_ratios(name, res.get("arm_ratios", {}))  # type: ignore[arg-type]
    print(f"load average (1, 5, 15 min): before {fmt_load(load_before)}, after "
          f"{fmt_load(load_after)}; wall {wall_s:.0f} s; {args.repeats} repeat(s)")  # fmt: skip
    payload = {
        "benchmark": "bench_adaptive",
        "targets": {
            "adaptive_vs_oracle_per_phase": TARGET_VS_ORACLE,
            "adaptive_vs_static_pick_drift": TARGET_VS_STATIC,
            "adaptive_vs_static_pick_no_drift": TARGET_NO_DRIFT,
            "policy_ms_per_round": TARGET_POLICY_MS,
        },
        "passed": ok,
        "scenario": {
            "one_way_delay_ms_by_phase": PHASE_ONE_WAY_MS,
            "domains_by_phase": ["code", "chat", "chat"],
            "control_one_way_delay_ms": CONTROL_ONE_WAY_MS,
            "prompts_by_phase": [[p.id for p in ps] for _, ps in phases],
            "control_prompts": [[p.id for p in ps] for _, ps in control],
            "tokens_per_prompt": args.max_tokens,
        },
        "load_average_before": load_before,
        "load_average_after": load_after,
        "wall_s": wall_s,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "drafters": results,
    }
    atomic_write_json(args.out, payload)
    print(f"wrote {args.out}")
    shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


def quickstart_profiles(work: Path, args: argparse.Namespace) -> Path:
    """Profile this machine for the benchmark's drafters (``configspec quickstart``)."""
    out = work / "quickstart"
    # the stored RTT (the policy's prior) is phase 1's; 2 prompts per domain give alignment
    # code and chat entries (as the profiles of the first run were made)
    cmd = [sys.executable, "-m", "configspec", "quickstart", "--out", str(out),
           "--rtt-ms", str(2 * PHASE_ONE_WAY_MS[0]), "--k-max", str(args.k_max),
           "--max-tokens", "48", "--prompts-per-domain", "2",
           "--threads", str(args.threads), "--link", "proxy"]  # fmt: skip
    for spec in args.drafters:
        cmd += ["--drafter", spec]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    print("profiling this machine first:", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True, env=env)
    return out / "profiles"


def summarise(
    adaptive: Arm, static_arms: list[Arm], control_adaptive: Arm, control_static: list[Arm],
    pick5: int, pick30: int,
) -> dict[str, object]:  # fmt: skip
    """The figures of one drafter (goodputs in tokens/s, ratios over paired cells).

    Per phase: adaptive against the held-out oracle (:func:`_repeats.heldout_oracle`) and
    against the static pick; the in-sample oracle (the best static K's goodput over all
    the phase's cells, biased upwards) for reference. Whole scenario: against the static
    pick, and the held-out oracle over all phases. No drift: against ``select``'s pick
    for 30 ms.
    """
    statics = {int(a.name[2:]): a.cells for a in static_arms}
    phases = []
    chosen: dict[tuple[int, int, int], int] = {}
    for p in range(3):
        choice = heldout_oracle(statics, p)
        chosen.update(choice)
        in_sample_k = max(statics, key=lambda k: goodput(c for c in statics[k] if c.phase == p))
        ks = [r.choice.k for g in adaptive.by_phase[p] for r in g.rounds if r.choice]
        ad_cells = [c for c in adaptive.cells if c.phase == p]
        oracle = oracle_cells(statics, choice)
        phases.append(
            {
                "adaptive": goodput(ad_cells),
                "oracle": goodput(oracle),
                "oracle_k_by_cell": {"/".join(map(str, key)): k for key, k in choice.items()},
                "vs_oracle": paired_ratio(ad_cells, oracle),
                "oracle_in_sample_k": in_sample_k,
                "oracle_in_sample": goodput(c for c in statics[in_sample_k] if c.phase == p),
                "static_pick": goodput(c for c in statics[pick5] if c.phase == p),
                "vs_static_pick": paired_ratio(
                    ad_cells, [c for c in statics[pick5] if c.phase == p]
                ),
                "by_k": {k: goodput(c for c in cs if c.phase == p) for k, cs in statics.items()},
                "adaptive_k_counts": dict(sorted(Counter(ks).items())),
            }
        )
    oracle_all = oracle_cells(statics, chosen)
    c_static = {int(a.name[2:]): a.cells for a in control_static}
    costs = [c for pol in adaptive.policies for c in pol.cost_s] or [0.0]
    cpus = [c for pol in adaptive.policies for c in pol.cpu_s] or [0.0]
    cost_ms = sorted(1e3 * c for c in costs)
    cpu_ms = sorted(1e3 * c for c in cpus)
    return {
        "static_pick_k": pick5,
        "repeats": 1 + max(c.repeat for c in adaptive.cells),
        "phases": phases,
        "whole": {
            "adaptive": adaptive.goodput(),
            "static_pick": goodput(statics[pick5]),
            "oracle": goodput(oracle_all),
            "vs_static_pick": paired_ratio(adaptive.cells, statics[pick5]),
            "vs_oracle": paired_ratio(adaptive.cells, oracle_all),
            "oracle_vs_static_pick": paired_ratio(oracle_all, statics[pick5]),
            "by_k": {k: goodput(cs) for k, cs in statics.items()},
        },
        "control": {
            "adaptive": control_adaptive.goodput(),
            "static_pick_30ms_k": pick30,
            "static_pick_30ms": goodput(c_static[pick30]),
            "static_pick_5ms": goodput(c_static[pick5]),
            "vs_static_pick_30ms": paired_ratio(control_adaptive.cells, c_static[pick30]),
            "vs_static_pick_5ms": paired_ratio(control_adaptive.cells, c_static[pick5]),
        },
        "policy_ms_per_round": {
            "mean": statistics.fmean(cost_ms),
            "median": statistics.median(cost_ms),
            "p95": cost_ms[int(0.95 * (len(cost_ms) - 1))],
            "cpu_median": statistics.median(cpu_ms),
            "cpu_p95": cpu_ms[int(0.95 * (len(cpu_ms) - 1))],
            "rounds": len(cost_ms),
        },
    }


def save_adaptive(
    store: ProfileStore,
    arm: Arm,
    name: str,
    args: argparse.Namespace,
    label: str,
    context: int,
    repeat: int = 0,
) -> None:
    """Store the adaptive arm's rounds of one repeat as a run record (for ``configspec
    report`` and ``replay_adaptive.py``)."""
    gen = merge_generations(arm.by_repeat[repeat])
    policy = arm.policies[repeat]
    config = RunConfig(
        drafter=name,
        target=gen.target_name,
        target_family=gen.target_family,
        k=policy.k_max,
        prompt_tokens=max(0, context - args.max_tokens // 2),
        max_tokens=args.max_tokens,
        k_policy="adaptive",
        k_min=policy.k_min,
        k_max=policy.k_max,
        objective=policy.objective,
    )
    record = build_run_record(
        gen,
        config,
        run_id=f"bench-adaptive-{label}-{name}" + (f"-r{repeat + 1}" if repeat else ""),
        settings={
            "scenario": label,
            "one_way_delay_ms_by_phase": PHASE_ONE_WAY_MS,
            "repeat": repeat + 1,
        },
        energy_note="energy not recorded (benchmark)",
    )
    print(f"  run record: {store.save_run(record)}")


if __name__ == "__main__":
    raise SystemExit(main())
