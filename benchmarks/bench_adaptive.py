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

Targets: adaptive ≥ 0.97 × oracle in every phase; ≥ 1.15 × the static pick over the
whole drift scenario; ≥ 0.98 × the static pick without drift; policy < 0.2 ms per round.

One command on a quiet host (profiles this machine first, then runs everything):

    PYTHONPATH=src python benchmarks/bench_adaptive.py

Without ``--profiles`` the benchmark first runs ``configspec quickstart`` for the two
drafters (2 prompts per domain, so alignment has code and chat entries) into its work
directory and takes the profiles from there; ``--profiles DIR`` reuses device,
verification and alignment profiles of this machine instead (copied, never modified).
Prints a table, then the target ratios per drafter, and writes
``benchmarks/results/bench_adaptive.json``; ``--runs DIR`` also stores the adaptive runs'
records (for ``configspec report``). Exit status 0 when every target is met.
"""

from __future__ import annotations

import argparse
import functools
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
from configspec.serving.adaptive import AdaptiveK, prior_from_profiles  # noqa: E402
from configspec.serving.client import EdgeClient, Generation  # noqa: E402
from configspec.serving.proxy import DelayProxy, DelaySchedule  # noqa: E402
from configspec.serving.record import build_run_record  # noqa: E402
from configspec.store import ProfileStore, atomic_write_json  # noqa: E402

PHASE_ONE_WAY_MS = (2.5, 60.0, 2.5)
CONTROL_ONE_WAY_MS = 15.0
STATIC_PICK_RTT_MS = 5.0
TARGET_VS_ORACLE = 0.97
TARGET_VS_STATIC = 1.15
TARGET_NO_DRIFT = 0.98
TARGET_POLICY_MS = 0.2


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
    """One way of choosing K, with its client and the generations of every phase."""

    name: str
    client: EdgeClient
    policy: TimedPolicy | None = None
    by_phase: dict[int, list[Generation]] = field(default_factory=dict)

    def goodput(self, phase: int | None = None) -> float:
        """Tokens per second of decode time in ``phase`` (None: all phases)."""
        gens = [g for p, gs in self.by_phase.items() if phase in (None, p) for g in gs]
        tokens = sum(len(g.tokens) for g in gens)
        return tokens / sum(g.decode_s for g in gens)


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
) -> None:
    """Every arm on every prompt of every phase, the delay switched at each phase start."""
    assert proxy.schedule is not None
    turn = 0
    for phase, (one_way_ms, prompts) in enumerate(phases):
        proxy.schedule.set_delay_ms(one_way_ms)
        for prompt in prompts:
            tokens = drafter.tokenize(prompt.text)
            order = arms[turn % len(arms) :] + arms[: turn % len(arms)]
            turn += 1
            for arm in order:
                gen = arm.client.generate(tokens, max_tokens)
                arm.by_phase.setdefault(phase, []).append(gen)
        done = ", ".join(f"{a.name} {a.goodput(phase):.1f}" for a in arms)
        print(f"    phase {phase + 1} (+{2 * one_way_ms:g} ms RTT): {done} tok/s", flush=True)


def replay_cost_ms(policy_factory: object, arm: Arm, repeats: int = 5) -> float:
    """The policy's cost per round (ms) replaying the adaptive arm's recorded rounds
    through a fresh policy, best of ``repeats`` passes (least disturbed by the host)."""
    rounds = [r for gs in arm.by_phase.values() for g in gs for r in g.rounds]
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


def new_policy(profiles: Profiles, name: str, context: int, k_max: int) -> TimedPolicy:
    prior = prior_from_profiles(
        profiles, drafter=name, domain="code", k_max=k_max, context_tokens=context
    )
    return TimedPolicy(prior, k_min=1, k_max=k_max)


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
    ap.add_argument("--runs", type=Path, default=None, help="store the adaptive run records")
    ap.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "bench_adaptive.json"
    )
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-adaptive-"))
    source = args.profiles or quickstart_profiles(work, args)
    shutil.copytree(source, work / "profiles", ignore=shutil.ignore_patterns("runs"))
    store = ProfileStore(work / "profiles")
    profiles = read_profiles(store)
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
                warm.close()
                policy = new_policy(profiles, name, context, args.k_max)
                arms = [Arm("adaptive", EdgeClient(proxy.url, drafter, k=0, policy=policy),
                            policy)]  # fmt: skip
                arms += [
                    Arm(f"K={k}", EdgeClient(proxy.url, drafter, k=k, timeout_s=120.0))
                    for k in range(1, args.k_max + 1)
                ]
                print("  drift scenario")
                run_scenario(proxy, arms, drafter, phases, args.max_tokens)
                control_policy = new_policy(profiles, name, context, args.k_max)
                control_arms = [
                    Arm("adaptive", EdgeClient(proxy.url, drafter, k=0, policy=control_policy),
                        control_policy),
                    *(Arm(f"K={k}", EdgeClient(proxy.url, drafter, k=k, timeout_s=120.0))
                      for k in sorted({pick5, pick30})),
                ]  # fmt: skip
                print("  no-drift control")
                run_scenario(proxy, control_arms, drafter, control, args.max_tokens)
                for arm in arms + control_arms:
                    arm.client.close()
            results[name] = summarise(arms, control_arms, pick5, pick30)
            cost = results[name]["policy_ms_per_round"]
            cost["replay_best_of_5"] = replay_cost_ms(  # type: ignore[index]
                functools.partial(new_policy, profiles, name, context, args.k_max), arms[0]
            )
            if args.runs is not None:
                save_adaptive(ProfileStore(args.runs), arms[0], name, args, "drift", context)
                save_adaptive(ProfileStore(args.runs), control_arms[0], name, args, "control",
                              context)  # fmt: skip
    wall_s = time.perf_counter() - started
    load_after = os.getloadavg()
    ok = print_table(results)
    print(f"load average (1, 5, 15 min): before {fmt_load(load_before)}, after "
          f"{fmt_load(load_after)}; wall {wall_s:.0f} s; shared host, one run")  # fmt: skip
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


def summarise(arms: list[Arm], control: list[Arm], pick5: int, pick30: int) -> dict[str, object]:
    """The figures of one drafter (goodputs in tokens/s)."""
    adaptive = arms[0]
    statics = {int(a.name[2:]): a for a in arms[1:]}
    phases = []
    for p in range(3):
        best_k = max(statics, key=lambda k: statics[k].goodput(p))
        ks = [r.choice.k for g in adaptive.by_phase[p] for r in g.rounds if r.choice]
        phases.append(
            {
                "adaptive": adaptive.goodput(p),
                "oracle_k": best_k,
                "oracle": statics[best_k].goodput(p),
                "static_pick": statics[pick5].goodput(p),
                "by_k": {k: a.goodput(p) for k, a in statics.items()},
                "adaptive_k_counts": dict(sorted(Counter(ks).items())),
            }
        )
    # the oracle over the whole scenario: each phase's best static K, their tokens over
    # their decode time (the ceiling of adaptive / static pick on this host)
    best = [max(statics, key=lambda k: statics[k].goodput(p)) for p in range(3)]
    gens = [g for p, k in enumerate(best) for g in statics[k].by_phase[p]]
    oracle_whole = sum(len(g.tokens) for g in gens) / sum(g.decode_s for g in gens)
    c_adaptive = control[0].goodput()
    c_static = {int(a.name[2:]): a.goodput() for a in control[1:]}
    cost_ms = sorted(1e3 * c for c in adaptive.policy.cost_s) if adaptive.policy else [0.0]
    cpu_ms = sorted(1e3 * c for c in adaptive.policy.cpu_s) if adaptive.policy else [0.0]
    return {
        "static_pick_k": pick5,
        "phases": phases,
        "whole": {
            "adaptive": adaptive.goodput(),
            "static_pick": statics[pick5].goodput(),
            "oracle": oracle_whole,
            "oracle_vs_static_pick": oracle_whole / statics[pick5].goodput(),
            "by_k": {k: a.goodput() for k, a in statics.items()},
        },
        "control": {
            "adaptive": c_adaptive,
            "static_pick_30ms_k": pick30,
            "static_pick_30ms": c_static[pick30],
            "static_pick_5ms": c_static[pick5],
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


def print_table(results: dict[str, dict[str, object]]) -> bool:
    """Print the result table; True when every target is met."""
    ok = True
    print()
    print(f"{'drafter':<22} {'phase':<18} {'adaptive':>8} {'oracle':>12} {'static':>8} "
          f"{'ad/oracle':>9} {'ad/static':>9}  K chosen by adaptive")  # fmt: skip
    for name, res in results.items():
        pick5 = res["static_pick_k"]
        for i, ph in enumerate(res["phases"]):  # type: ignore[attr-defined]
            r_o = ph["adaptive"] / ph["oracle"]
            r_s = ph["adaptive"] / ph["static_pick"]
            ok &= r_o >= TARGET_VS_ORACLE
            rtt = 2 * PHASE_ONE_WAY_MS[i]
            label = f"{i + 1}: {rtt:g} ms {'code' if i == 0 else 'chat'}"
            ks = " ".join(f"{k}:{c}" for k, c in ph["adaptive_k_counts"].items())
            print(f"{name:<22} {label:<18} {ph['adaptive']:>8.2f} "
                  f"{ph['oracle']:>7.2f} K={ph['oracle_k']:<2} {ph['static_pick']:>8.2f} "
                  f"{r_o:>9.3f} {r_s:>9.3f}  {ks}")  # fmt: skip
        w = res["whole"]
        r_w = w["adaptive"] / w["static_pick"]  # type: ignore[index]
        ok &= r_w >= TARGET_VS_STATIC
        print(f"{name:<22} {'whole scenario':<18} {w['adaptive']:>8.2f} "  # type: ignore[index]
              f"{w['oracle']:>7.2f} {'':>4} "  # type: ignore[index]
              f"{w['static_pick']:>8.2f} {w['adaptive'] / w['oracle']:>9.3f} {r_w:>9.3f}  "  # type: ignore[index]
              f"static pick K={pick5}; oracle/static {w['oracle_vs_static_pick']:.3f}")  # type: ignore[index]  # fmt: skip
        c = res["control"]
        r_c = c["adaptive"] / c["static_pick_30ms"]  # type: ignore[index]
        ok &= r_c >= TARGET_NO_DRIFT
        print(f"{name:<22} {'no drift, 30 ms':<18} {c['adaptive']:>8.2f} {'':>12} "  # type: ignore[index]
              f"{c['static_pick_30ms']:>8.2f} {'':>9} {r_c:>9.3f}  static pick at 30 ms "  # type: ignore[index]
              f"K={c['static_pick_30ms_k']}; vs the 5 ms pick "  # type: ignore[index]
              f"{c['adaptive'] / c['static_pick_5ms']:.3f}")  # type: ignore[index]  # fmt: skip
        cost = res["policy_ms_per_round"]
        ok &= cost["replay_best_of_5"] < TARGET_POLICY_MS  # type: ignore[index]
        print(f"{name:<22} policy cost per round: live mean {cost['mean']:.3f} ms, median "  # type: ignore[index]
              f"{cost['median']:.3f} ms, p95 {cost['p95']:.3f} ms over {cost['rounds']} "  # type: ignore[index]
              f"rounds (CPU: median {cost['cpu_median']:.3f} ms, p95 {cost['cpu_p95']:.3f} ms); "  # type: ignore[index]
              f"replayed best of 5 {cost['replay_best_of_5']:.3f} ms")  # type: ignore[index]  # fmt: skip
    print()
    print("target ratios (one run, side by side):")
    for name, res in results.items():
        worst = min(ph["adaptive"] / ph["oracle"] for ph in res["phases"])  # type: ignore[attr-defined]
        w, c = res["whole"], res["control"]
        print(f"  {name}: adaptive/oracle worst phase {worst:.3f} (≥ {TARGET_VS_ORACLE}), "
              f"adaptive/static drift {w['adaptive'] / w['static_pick']:.3f} "  # type: ignore[index]
              f"(≥ {TARGET_VS_STATIC}; the per-phase oracle itself: "
              f"{w['oracle_vs_static_pick']:.3f}), "  # type: ignore[index]
              f"no drift {c['adaptive'] / c['static_pick_30ms']:.3f} "  # type: ignore[index]
              f"(≥ {TARGET_NO_DRIFT}), policy {res['policy_ms_per_round']['replay_best_of_5']:.3f} "  # type: ignore[index]
              f"ms/round (< {TARGET_POLICY_MS})")  # fmt: skip
    print(f"targets: adaptive/oracle ≥ {TARGET_VS_ORACLE} per phase, adaptive/static ≥ "
          f"{TARGET_VS_STATIC} over the scenario, ≥ {TARGET_NO_DRIFT} without drift, policy "
          f"< {TARGET_POLICY_MS} ms/round -> {'PASS' if ok else 'FAIL'}")  # fmt: skip
    return ok


def fmt_load(load: tuple[float, float, float]) -> str:
    return " ".join(f"{x:.2f}" for x in load)


def save_adaptive(
    store: ProfileStore, arm: Arm, name: str, args: argparse.Namespace, label: str, context: int
) -> None:
    """Store the adaptive arm's rounds as one run record (for ``configspec report``)."""
    gen = merge_generations([g for p in sorted(arm.by_phase) for g in arm.by_phase[p]])
    policy = arm.policy
    assert policy is not None
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
        run_id=f"bench-adaptive-{label}-{name}",
        settings={"scenario": label, "one_way_delay_ms_by_phase": PHASE_ONE_WAY_MS},
        energy_note="energy not recorded (benchmark)",
    )
    print(f"  run record: {store.save_run(record)}")


if __name__ == "__main__":
    raise SystemExit(main())
