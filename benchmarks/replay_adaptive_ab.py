"""Two revisions of the adaptive-K policy replayed on kept run records, side by side, with an
open-loop counterfactual goodput per phase (issue 18). No timing, no models: seconds.

Each record (``bench_adaptive.py --runs DIR``) is fed, round by round, to a fresh policy of
this checkout and one of ``--old-src`` (another revision's ``src``), built as ``run edge
--k auto`` builds it (the verification shape for a model drafter, the match-depth rule for
a model-free one; ``--arm`` overrides). Per phase (three of equal token counts) it prints
the K each would choose, its switches, and the goodput the choices would have given:

* tokens: the drafters are prefix-consistent, so at K' ≤ the recorded K the round drafts
  min(drafted, K') and accepts min(accepted, K') exactly; above it a drafter that proposed
  fewer than K proposes the same, a round with a rejection keeps its accepted count and
  drafts K' (an n-gram drafter's proposal chain reads ~1 past position 1 in the kept
  records), and a fully accepted round continues at the phase's measured depth rate
  (expected value);
* time: the round's measured time with its verification replaced by the phase's median
  verification at the new width (a line fitted on the phase where a width has < 3 rounds)
  and its drafting scaled to the tokens drafted at the new width (the round's own time per
  drafted token; the phase's median where the round drafted none). Until 2026-11-30 the
  drafting time stayed as measured, which favoured a model drafter's longer K: replayed at
  K = 8 throughout, phase 2 of the kept Q4_0 drift records read about 20 tok/s where K = 8
  measured 17.4 live.

Open loop: every round's outcome is the one measured at the recorded K, so the replayed
policy sees evidence its own choices would not always have produced. The ratios say which
revision reads the same evidence better, not what a live run would measure.

    PYTHONPATH=src python benchmarks/replay_adaptive_ab.py RUNS/runs/*.json --profiles P \
        --old-src OLD/src
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_adaptive import ADAPTIVE_ARMS  # noqa: E402
from old_policy import load_old  # noqa: E402

from configspec.search.space import read_profiles  # noqa: E402
from configspec.serving import adaptive as new_mod  # noqa: E402
from configspec.store import ProfileStore  # noqa: E402

PHASES = 3


def choices(mod: ModuleType, profiles: Any, record: dict[str, Any], arm: str) -> list[int]:
    """The K a fresh policy of ``mod`` chooses before each recorded round, fed the rounds."""
    cfg = record["config"]
    prior = mod.prior_from_profiles(
        profiles, drafter=cfg["drafter"], domain="code", k_max=cfg["k_max"],
        context_tokens=cfg["prompt_tokens"] + cfg["max_tokens"] // 2,
    )  # fmt: skip
    # the new tree's choice per drafter kind, also for the old revision's policy (the
    # options' meaning has not changed; an option the old one lacks fails loudly)
    options = new_mod.auto_options(prior) if arm == "auto" else ADAPTIVE_ARMS[arm]
    policy = mod.AdaptiveK(prior, k_min=cfg["k_min"], k_max=cfg["k_max"], **options)
    out = []
    for r in record["rounds"]:
        out.append(policy.choose().k)
        policy.observe(
            k_asked=r["k_limit"] or r["k"], drafted=r["k"], accepted=r["accepted"],
            draft_ms=r["draft_ms"], verify_ms=r["verify_ms"], round_ms=r["round_ms"],
        )  # fmt: skip
    return out


def phases_of(rounds: list[dict[str, Any]]) -> list[int]:
    """Each round's phase (0-based): three phases of equal token counts."""
    per = sum(r["accepted"] + 1 for r in rounds) / PHASES
    out, tokens = [], 0
    for r in rounds:
        out.append(min(PHASES - 1, int(tokens // per)))
        tokens += r["accepted"] + 1
    return out


def verify_model(rounds: list[dict[str, Any]]) -> Callable[[int], float]:
    """Verification time (ms) at a width: the median of the rounds at it (>= 3), else a line
    fitted on the rounds."""
    ok = [r for r in rounds if r["k_limit"] >= 1]
    pos = np.array([r["k"] + 1 for r in ok], dtype=np.float64)
    ms = np.array([r["verify_ms"] for r in ok], dtype=np.float64)
    if len(set(pos.tolist())) > 1:
        slope, icpt = np.polyfit(pos, ms, 1)
    else:
        slope, icpt = 0.0, float(np.median(ms))
    table = {int(p): float(np.median(ms[pos == p])) for p in set(pos) if (pos == p).sum() >= 3}
    return lambda p: table.get(p, float(icpt + slope * p))


def depth_rate(rounds: list[dict[str, Any]]) -> float:
    """Measured chance that a draft beyond position 1 is accepted, given the one before was."""
    ok = trials = 0
    for r in rounds:
        for j in range(2, r["k"] + 1):
            if j <= r["accepted"]:
                ok += 1
                trials += 1
            elif j == r["accepted"] + 1 and r["accepted"] >= 1:
                trials += 1
    return ok / trials if trials else 0.5


def draft_ms_per_token(rounds: list[dict[str, Any]]) -> float:
    """Median drafting time per drafted token (ms) over the rounds that drafted."""
    per = [r["draft_ms"] / r["k"] for r in rounds if r["k"] >= 1]
    return float(np.median(per)) if per else 0.0


def counterfactual(
    rounds: list[dict[str, Any]], phase: list[int], ks: list[int]
) -> list[tuple[float, float]]:
    """Per phase: (tokens, ms) had each round been run at ``ks`` (module docstring)."""
    verify = [verify_model([r for r, p in zip(rounds, phase, strict=True) if p == q])
              for q in range(PHASES)]  # fmt: skip
    rho = [depth_rate([r for r, p in zip(rounds, phase, strict=True) if p == q])
           for q in range(PHASES)]  # fmt: skip
    per_token = [draft_ms_per_token([r for r, p in zip(rounds, phase, strict=True) if p == q])
                 for q in range(PHASES)]  # fmt: skip
    out = [(0.0, 0.0)] * PHASES
    for r, p, k in zip(rounds, phase, ks, strict=True):
        kr, drafted, acc = r["k_limit"], r["k"], r["accepted"]
        chosen = r["choice"]["k"] if r.get("choice") else kr
        if kr < chosen or kr == 0:  # the token budget cut the round: as recorded
            k = kr
        if k <= kr:
            d2, a2 = min(drafted, k), float(min(acc, k))
        elif drafted < kr:  # the drafter proposed fewer than K: it would at K' too
            d2, a2 = drafted, float(acc)
        elif acc < drafted:  # a rejection ends the round at any K' (drafts K')
            d2, a2 = k, float(acc)
        else:  # fully accepted at the recorded K: continued at the measured depth rate
            d2 = k
            a2 = acc + sum(rho[p] ** j for j in range(1, k - kr + 1))
        # drafting scales with the tokens drafted (a model drafter's 8 drafts take about
        # 4x its 2; an n-gram drafter's take ~0 either way)
        draft = r["draft_ms"] * d2 / drafted if drafted else per_token[p] * d2
        ms = r["round_ms"] - verify[p](drafted + 1) + verify[p](d2 + 1) - r["draft_ms"] + draft
        tokens, time = out[p]
        out[p] = (tokens + a2 + 1.0, time + ms)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("records", nargs="+", type=Path)
    ap.add_argument("--profiles", type=Path, required=True, help="the runs' profiles")
    ap.add_argument("--old-src", type=Path, required=True, help="another revision's src/")
    ap.add_argument("--arm", choices=list(ADAPTIVE_ARMS), default="auto")
    args = ap.parse_args()
    old_mod = load_old(args.old_src)
    profiles = read_profiles(ProfileStore(args.profiles))
    summary = []
    for path in args.records:
        record = json.loads(path.read_text())
        rounds = record["rounds"]
        phase = phases_of(rounds)
        k_old = choices(old_mod, profiles, record, args.arm)
        k_new = choices(new_mod, profiles, record, args.arm)
        old = counterfactual(rounds, phase, k_old)
        new = counterfactual(rounds, phase, k_new)
        print(f"{path.parent.parent.name}/{path.name}")
        ratios = []
        for p in range(PHASES):
            ko = Counter(k for k, q in zip(k_old, phase, strict=True) if q == p)
            kn = Counter(k for k, q in zip(k_new, phase, strict=True) if q == p)
            go, gn = old[p][0] / old[p][1] * 1e3, new[p][0] / new[p][1] * 1e3
            ratios.append(gn / go)
            same = sum(1 for a, b, q in zip(k_old, k_new, phase, strict=True) if q == p and a == b)
            print(f"  phase {p + 1}: old {go:6.2f} tok/s K {_counts(ko):<22} new {gn:6.2f} tok/s "
                  f"K {_counts(kn):<22} new/old {gn / go:.3f} (same K in {same} of "
                  f"{sum(ko.values())} rounds)")  # fmt: skip
        whole = (sum(t for t, _ in new) / sum(m for _, m in new)) / (
            sum(t for t, _ in old) / sum(m for _, m in old)
        )
        summary.append((f"{path.parent.parent.name}/{path.name}", ratios, whole))
    print("\nnew / old goodput (open-loop counterfactual), per phase and whole record:")
    for name, ratios, whole in summary:
        print(f"  {name:<62} {' '.join(f'{x:.3f}' for x in ratios)}  whole {whole:.3f}")
    return 0


def _counts(c: Counter[int]) -> str:
    return " ".join(f"{k}:{n}" for k, n in sorted(c.items()))


if __name__ == "__main__":
    raise SystemExit(main())
