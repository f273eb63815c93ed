"""Replay stored adaptive run records through the current policy, offline (issue 18).

An adaptive run record (``bench_adaptive.py --runs DIR``) holds every round's K, outcome
(drafted, accepted) and measured times. This feeds those rounds, in order, to a fresh
policy built from a profile set as the benchmark builds it, and reports per phase which K
the policy *would* choose and how often it switches, next to what the recorded run chose.
"First move": the round of the phase (1-based) at which K first differs from the K the
phase began with (the RTT estimate, a median of 7 rounds, moves after 4). Open loop: each
round's outcome is the one measured at the recorded K, so the figures
show how the policy reads the evidence (how much it wanders), not what goodput it would
reach. No timing, no models: runs in a second.

With ``--calibration``, also per phase and recorded K (8 rounds or more): what the replayed
policy predicted at that K before each round against what the round then measured —
tokens per round E(K), positions verified (drafted + 1) and round time (ms) — and the
10th/50th/90th percentiles of its verification slope (ms/position). A model that is right
on average but over-predicts E at the K it picks shows the optimiser's curse there.

    PYTHONPATH=src python benchmarks/replay_adaptive.py RECORD.json --profiles DIR [--domain code]

Phases: the drift scenario's three phases of equal token counts (``--phases 3``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from configspec.search.space import read_profiles  # noqa: E402
from configspec.serving.adaptive import AdaptiveK, prior_from_profiles  # noqa: E402
from configspec.store import ProfileStore  # noqa: E402


def replay(record: dict, policy: AdaptiveK, phases: int) -> list[dict[str, object]]:
    """Per phase: the recorded and the replayed K counts and switch counts."""
    rounds = record["rounds"]
    total = sum(r["accepted"] + 1 for r in rounds)
    per_phase = total / phases
    out = [
        {"recorded": Counter(), "replayed": Counter(), "rec_switch": 0, "rep_switch": 0,
         "rounds": 0, "rec_move": None, "rep_move": None, "calibration": {}, "slope": []}
        for _ in range(phases)
    ]  # fmt: skip
    tokens = 0
    prev_rec = prev_rep = None
    entry: dict[int, tuple[int | None, int | None]] = {}  # phase → K (recorded, replayed) at entry
    for r in rounds:
        p = min(phases - 1, int(tokens // per_phase))
        _, e_k, round_k, positions_k, *_ = policy._goodput_rows()
        k_new = policy.choose().k
        k_rec = r["choice"]["k"] if r.get("choice") else r["k_limit"]
        ph = out[p]
        ph["slope"].append(policy.verify.b)  # type: ignore[attr-defined]
        i = r["k_limit"] - policy.k_min
        if r["k_limit"] >= 1 and 0 <= i < len(e_k):
            cal = ph["calibration"].setdefault(r["k_limit"], [])  # type: ignore[attr-defined]
            cal.append((e_k[i], r["accepted"] + 1, positions_k[i], r["k"] + 1, round_k[i],
                        r["round_ms"]))  # fmt: skip
        # the first round of the phase at which K differs from its K when the phase began
        start_rec, start_rep = entry.setdefault(p, (prev_rec, prev_rep))
        ph["rounds"] += 1  # type: ignore[operator]
        if ph["rec_move"] is None and start_rec is not None and k_rec != start_rec:
            ph["rec_move"] = ph["rounds"]
        if ph["rep_move"] is None and start_rep is not None and k_new != start_rep:
            ph["rep_move"] = ph["rounds"]
        ph["recorded"][k_rec] += 1  # type: ignore[index]
        ph["replayed"][k_new] += 1  # type: ignore[index]
        ph["rec_switch"] += int(prev_rec is not None and k_rec != prev_rec)  # type: ignore[operator]
        ph["rep_switch"] += int(prev_rep is not None and k_new != prev_rep)  # type: ignore[operator]
        prev_rec, prev_rep = k_rec, k_new
        policy.observe(
            k_asked=r["k_limit"] or r["k"], drafted=r["k"], accepted=r["accepted"],
            draft_ms=r["draft_ms"], verify_ms=r["verify_ms"], round_ms=r["round_ms"],
        )  # fmt: skip
        tokens += r["accepted"] + 1
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("records", nargs="+", type=Path)
    ap.add_argument("--profiles", type=Path, required=True)
    ap.add_argument("--domain", default="code", help="the prior's domain (the benchmark: code)")
    ap.add_argument("--phases", type=int, default=3)
    ap.add_argument("--switch-z", type=float, default=None, help="default: the policy's")
    ap.add_argument("--verify-shape", action="store_true", help="AdaptiveK(verify_shape=True)")
    ap.add_argument("--match-depth", action="store_true", help="AdaptiveK(match_depth=True)")
    ap.add_argument("--calibration", action="store_true", help="predicted vs measured per K")
    args = ap.parse_args()
    profiles = read_profiles(ProfileStore(args.profiles))
    for path in args.records:
        record = json.loads(path.read_text())
        cfg = record["config"]
        context = cfg["prompt_tokens"] + cfg["max_tokens"] // 2
        prior = prior_from_profiles(
            profiles, drafter=cfg["drafter"], domain=args.domain, k_max=cfg["k_max"],
            context_tokens=context,
        )  # fmt: skip
        extra: dict[str, object] = {} if args.switch_z is None else {"switch_z": args.switch_z}
        if args.verify_shape:
            extra["verify_shape"] = True
        if args.match_depth:
            extra["match_depth"] = True
        policy = AdaptiveK(prior, k_min=cfg["k_min"], k_max=cfg["k_max"], **extra)  # type: ignore[arg-type]
        print(f"{path.name}: {len(record['rounds'])} rounds, prior {prior.source}")
        for i, ph in enumerate(replay(record, policy, args.phases)):
            rec = " ".join(f"{k}:{c}" for k, c in sorted(ph["recorded"].items()))  # type: ignore[attr-defined]
            rep = " ".join(f"{k}:{c}" for k, c in sorted(ph["replayed"].items()))  # type: ignore[attr-defined]
            rec_move, rep_move = ph["rec_move"] or "-", ph["rep_move"] or "-"
            print(f"  phase {i + 1}: recorded {rec:<26} ({ph['rec_switch']} switches, first "
                  f"move at round {rec_move}) | replayed {rep:<26} "
                  f"({ph['rep_switch']} switches, first move at round {rep_move})")  # fmt: skip
            if args.calibration:
                b10, b50, b90 = np.percentile(ph["slope"], [10, 50, 90])
                print(f"    verify slope p10/50/90 {b10:.1f}/{b50:.1f}/{b90:.1f} ms/position")
                for k, rows in sorted(ph["calibration"].items()):  # type: ignore[attr-defined]
                    if len(rows) < 8:
                        continue
                    m = np.mean(rows, axis=0)
                    print(f"    K={k} ({len(rows)} rounds): E {m[0]:.2f} predicted, {m[1]:.2f} "
                          f"measured; positions {m[2]:.2f} / {m[3]:.2f}; round "
                          f"{m[4]:.0f} / {m[5]:.0f} ms")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
