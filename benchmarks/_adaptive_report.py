"""The tables of ``bench_adaptive.py``: the scenario's constants and targets, the result
table per drafter (and per adaptive arm), and the ratios between adaptive arms run side
by side (``--adaptive-arms``). Pure; prints only (a benchmark's report)."""

from __future__ import annotations

from collections.abc import Sequence

from _repeats import Cell, paired_ratio

PHASE_ONE_WAY_MS = (2.5, 60.0, 2.5)
CONTROL_ONE_WAY_MS = 15.0
STATIC_PICK_RTT_MS = 5.0
TARGET_VS_ORACLE = 0.97
TARGET_VS_STATIC = 1.15
TARGET_NO_DRIFT = 0.98
TARGET_POLICY_MS = 0.2


def arm_ratios(
    num: Sequence[Cell], den: Sequence[Cell], num_control: Sequence[Cell],
    den_control: Sequence[Cell],
) -> dict[str, object]:  # fmt: skip
    """Goodput of one adaptive arm over another's on the cells both ran (same prompt, same
    minute): per phase, over the whole drift scenario and in the no-drift control, each
    with its 95% bootstrap CI (:func:`_repeats.paired_ratio`)."""
    return {
        "phases": [
            paired_ratio([c for c in num if c.phase == p], [c for c in den if c.phase == p])
            for p in range(len(PHASE_ONE_WAY_MS))
        ],
        "whole": paired_ratio(num, den),
        "control": paired_ratio(num_control, den_control),
    }


def print_arm_ratios(name: str, pairs: dict[str, dict[str, object]]) -> None:
    """One line per pair of adaptive arms (``"shape/line"`` → :func:`arm_ratios`)."""
    for pair, r in pairs.items():
        phases = "  ".join(
            f"phase {i + 1} {fmt_ratio(x)}"
            for i, x in enumerate(r["phases"])  # type: ignore[arg-type]
        )
        print(f"{name:<20} {pair}: {phases}  whole {fmt_ratio(r['whole'])}  "
              f"no drift {fmt_ratio(r['control'])}")  # fmt: skip


def fmt_ratio(r: object) -> str:
    """``ratio [ci_low, ci_high]`` of a :func:`_repeats.paired_ratio` result."""
    d = r  # a dict from paired_ratio
    return f"{d['ratio']:.3f} [{d['ci_low']:.3f}, {d['ci_high']:.3f}]"  # type: ignore[index]


def print_table(results: dict[str, dict[str, object]]) -> bool:
    """Print the result table; True when every target is met (on the point estimates)."""
    ok = True
    print()
    print(f"{'drafter':<20} {'phase':<17} {'adaptive':>8} {'oracle':>7} {'static':>7} "
          f"{'ad/oracle [95% CI]':>22} {'ad/static [95% CI]':>22}  per repeat (ad/oracle); "
          f"K chosen")  # fmt: skip
    for name, res in results.items():
        pick5 = res["static_pick_k"]
        for i, ph in enumerate(res["phases"]):  # type: ignore[attr-defined]
            vo, vs = ph["vs_oracle"], ph["vs_static_pick"]
            ok &= vo["ratio"] >= TARGET_VS_ORACLE
            rtt = 2 * PHASE_ONE_WAY_MS[i]
            label = f"{i + 1}: {rtt:g} ms {'code' if i == 0 else 'chat'}"
            ks = " ".join(f"{k}:{c}" for k, c in ph["adaptive_k_counts"].items())
            reps = " ".join(f"{x:.3f}" for x in vo["per_repeat"])
            print(f"{name:<20} {label:<17} {ph['adaptive']:>8.2f} {ph['oracle']:>7.2f} "
                  f"{ph['static_pick']:>7.2f} {fmt_ratio(vo):>22} {fmt_ratio(vs):>22}  "
                  f"{reps}; {ks}")  # fmt: skip
            print(f"{'':<20} {'':<17} in-sample oracle K={ph['oracle_in_sample_k']} "
                  f"{ph['oracle_in_sample']:.2f} (biased up); held-out K per cell: "
                  f"{' '.join(str(k) for k in ph['oracle_k_by_cell'].values())}")  # fmt: skip
        w = res["whole"]
        vs, vo, os_ = w["vs_static_pick"], w["vs_oracle"], w["oracle_vs_static_pick"]  # type: ignore[index]
        ok &= vs["ratio"] >= TARGET_VS_STATIC
        print(f"{name:<20} {'whole scenario':<17} {w['adaptive']:>8.2f} {w['oracle']:>7.2f} "  # type: ignore[index]
              f"{w['static_pick']:>7.2f} {fmt_ratio(vo):>22} {fmt_ratio(vs):>22}  "  # type: ignore[index]
              f"static pick K={pick5}; oracle/static {fmt_ratio(os_)}")  # fmt: skip
        c = res["control"]
        vc = c["vs_static_pick_30ms"]  # type: ignore[index]
        ok &= vc["ratio"] >= TARGET_NO_DRIFT
        print(f"{name:<20} {'no drift, 30 ms':<17} {c['adaptive']:>8.2f} {'':>7} "  # type: ignore[index]
              f"{c['static_pick_30ms']:>7.2f} {'':>22} {fmt_ratio(vc):>22}  static pick at "  # type: ignore[index]
              f"30 ms K={c['static_pick_30ms_k']}; vs the 5 ms pick "  # type: ignore[index]
              f"{fmt_ratio(c['vs_static_pick_5ms'])}")  # type: ignore[index]  # fmt: skip
        cost = res["policy_ms_per_round"]
        ok &= cost["replay_best_of_5"] < TARGET_POLICY_MS  # type: ignore[index]
        print(f"{name:<20} policy cost per round: live mean {cost['mean']:.3f} ms, median "  # type: ignore[index]
              f"{cost['median']:.3f} ms, p95 {cost['p95']:.3f} ms over {cost['rounds']} "  # type: ignore[index]
              f"rounds (CPU: median {cost['cpu_median']:.3f} ms, p95 {cost['cpu_p95']:.3f} ms); "  # type: ignore[index]
              f"replayed best of 5 {cost['replay_best_of_5']:.3f} ms")  # type: ignore[index]  # fmt: skip
    print()
    print("target ratios (point estimates over paired cells; 95% bootstrap CI over cells):")
    for name, res in results.items():
        worst = min(res["phases"], key=lambda ph: ph["vs_oracle"]["ratio"])  # type: ignore[arg-type,index]
        w, c = res["whole"], res["control"]
        print(f"  {name} ({res['repeats']} repeats): adaptive/oracle worst phase "
              f"{fmt_ratio(worst['vs_oracle'])} (≥ {TARGET_VS_ORACLE}), adaptive/static drift "
              f"{fmt_ratio(w['vs_static_pick'])} (≥ {TARGET_VS_STATIC}; the held-out oracle "  # type: ignore[index]
              f"itself: {fmt_ratio(w['oracle_vs_static_pick'])}), no drift "  # type: ignore[index]
              f"{fmt_ratio(c['vs_static_pick_30ms'])} (≥ {TARGET_NO_DRIFT}), policy "  # type: ignore[index]
              f"{res['policy_ms_per_round']['replay_best_of_5']:.3f} ms/round "  # type: ignore[index]
              f"(< {TARGET_POLICY_MS})")  # fmt: skip
    print(f"targets: adaptive/oracle ≥ {TARGET_VS_ORACLE} per phase, adaptive/static ≥ "
          f"{TARGET_VS_STATIC} over the scenario, ≥ {TARGET_NO_DRIFT} without drift, policy "
          f"< {TARGET_POLICY_MS} ms/round -> {'PASS' if ok else 'FAIL'}")  # fmt: skip
    return ok


def fmt_load(load: tuple[float, float, float]) -> str:
    return " ".join(f"{x:.2f}" for x in load)
