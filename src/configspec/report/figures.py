"""The report's figures (matplotlib, Agg backend); each function returns a Figure.

Every figure says in its title or legend which numbers are measured (run records,
alignment profiles) and which are modelled (the model evaluated on the profiles).
"""

from __future__ import annotations

from dataclasses import replace

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from configspec import records as R
from configspec.config import AlignmentProfile, RunRecord
from configspec.model.evaluate import Bounded, Link, evaluate_grid
from configspec.model.presets import ModelPreset
from configspec.search.select import Selection
from configspec.search.space import Space

OBJ_LABELS = {
    R.GOODPUT_TOK_S: "goodput (tok/s)",
    R.TOKENS_PER_USD: "tokens per USD",
    R.TOKENS_PER_J: "tokens per J",
}


def goodput_vs_k(
    curves: dict[float, pd.DataFrame], runs: list[RunRecord], device: str | None = None
) -> Figure:
    """Modelled goodput against K (one line per drafter, one panel per RTT) with the
    measured runs as points with their 95% CI."""
    rtts = sorted(curves)
    width = max(8.0, 5.2 * len(rtts))
    fig, axes = plt.subplots(1, len(rtts), figsize=(width, 4.4), squeeze=False)
    colors: dict[str, str] = {}
    for ax, rtt in zip(axes[0], rtts, strict=True):
        table = curves[rtt]
        spec = table[table[R.MODE] == R.MODE_SPECULATIVE]
        n_dev = spec[R.DEVICE].nunique()
        for (dev, drafter), grp in spec.groupby([R.DEVICE, R.DRAFTER], observed=True):
            grp = grp.sort_values(R.K)
            where = f" @ {dev}" if n_dev > 1 else ""
            (line,) = ax.plot(
                grp[R.K], grp[R.GOODPUT_TOK_S], "-", label=f"{drafter}{where} (modelled)"
            )
            colors.setdefault(str(drafter), line.get_color())
            ax.fill_between(
                grp[R.K], grp[R.GOODPUT_TOK_S_LOW], grp[R.GOODPUT_TOK_S_HIGH],
                color=line.get_color(), alpha=0.15, linewidth=0,
            )  # fmt: skip
        for run in runs:
            if abs(run.config.added_rtt_ms - rtt) > 1e-6:
                continue
            g = run.goodput_tokens_per_s
            c = colors.get(run.config.drafter, "black")
            ax.errorbar(
                [run.config.k], [g.mean], yerr=[[g.mean - g.low], [g.high - g.mean]],
                fmt="o", color=c, markeredgecolor="black", capsize=3,
            )  # fmt: skip
        ax.set_title(f"added RTT {rtt:g} ms" + (f" — {device}" if device else ""))
        ax.set_xlabel("K (draft tokens per round)")
        ax.set_ylabel("goodput (tok/s)")
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    handles.append(Line2D([], [], marker="o", linestyle="", color="grey", mec="black"))
    labels.append("measured run (95% CI)")
    axes[0][-1].legend(handles, labels, fontsize=7, loc="best")
    fig.suptitle("Goodput vs K — lines: modelled from profiles; points: measured runs")
    fig.tight_layout()
    return fig


def pareto_views(sel: Selection) -> Figure:
    """Pairwise views of the three objectives: feasible configurations, the Pareto front,
    and the optimum of each objective marked (all modelled)."""
    t = sel.table
    mask = sel.feasible & (t[R.MODE] == R.MODE_SPECULATIVE).to_numpy()
    pairs = [
        (R.GOODPUT_TOK_S, R.TOKENS_PER_USD),
        (R.GOODPUT_TOK_S, R.TOKENS_PER_J),
        (R.TOKENS_PER_USD, R.TOKENS_PER_J),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    front = np.zeros(len(t), dtype=bool)
    front[sel.pareto] = True
    markers = {"goodput": "*", "cost": "D", "energy": "P"}
    est = (t[R.POWER_SOURCE].astype(str) == "estimated").to_numpy()
    estimated = " — estimated" if est[mask].any() else ""
    for ax, (x, y) in zip(axes, pairs, strict=True):
        xs, ys = t[x].to_numpy(), t[y].to_numpy()
        ax.scatter(xs[mask], ys[mask], s=10, color="0.7", label="configuration")
        ax.scatter(xs[front], ys[front], s=18, color="tab:red", label="Pareto front")
        for name, row in sel.best.items():
            if row is None:
                continue
            ax.scatter(
                [xs[row]], [ys[row]], s=140, marker=markers[name], edgecolor="black",
                facecolor="gold", label=f"best {name}", zorder=3,
            )  # fmt: skip
        ax.set_xlabel(OBJ_LABELS[x] + (estimated if x == R.TOKENS_PER_J else ""))
        ax.set_ylabel(OBJ_LABELS[y] + (estimated if y == R.TOKENS_PER_J else ""))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(
        "Pareto front over the three objectives (modelled, "
        f"RTT {float(np.mean(sel.link.rtt_ms)):g} ms)"
    )
    fig.tight_layout()
    return fig


def optimum_k_grid(
    space: Space,
    link: Link,
    preset: ModelPreset,
    drafter_code: int,
    rtts_ms: np.ndarray,
    speed_factors: np.ndarray,
) -> Figure:
    """The goodput-optimal K of one drafter over a grid of RTT and drafting speed
    (modelled: drafting latency divided by the speed factor)."""
    g = space.inputs
    sel = (g.mode == R.Mode.SPECULATIVE) & (space.drafter_code == drafter_code)
    idx = np.flatnonzero(sel)
    best_k = np.zeros((speed_factors.size, rtts_ms.size))
    for i, f in enumerate(speed_factors):
        d = g.draft_ms_per_token
        scaled = replace(
            g,
            draft_ms_per_token=Bounded(d.mean / f, d.low / f, d.high / f),
        )
        for j, rtt in enumerate(rtts_ms):
            cols = evaluate_grid(scaled, replace(link, rtt_ms=float(rtt)), preset)
            gp = np.asarray(cols[R.GOODPUT_TOK_S])[idx]
            best_k[i, j] = g.k[idx][int(np.nanargmax(gp))] if np.isfinite(gp).any() else np.nan
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    mesh = ax.pcolormesh(rtts_ms, speed_factors, best_k, shading="nearest", cmap="viridis")
    fig.colorbar(mesh, ax=ax, label="optimal K (goodput)")
    ax.set_yscale("log")
    ticks = [f for f in (0.25, 0.5, 1.0, 2.0, 4.0) if speed_factors[0] <= f <= speed_factors[-1]]
    ax.set_yticks(ticks, [f"{f:g}×" for f in ticks])
    ax.minorticks_off()
    ax.set_xlabel("RTT (ms)")
    ax.set_ylabel("drafting speed × profiled")
    title = f"Optimal K for {space.drafter_names[drafter_code]} (modelled)"
    k_top = int(g.k[idx].max()) if idx.size else 0
    if idx.size and (best_k == k_top).any():
        # the optimum sits on the edge of the search there: say so on the plot itself
        at_edge = best_k == k_top
        rr, ss = np.meshgrid(rtts_ms, speed_factors)
        ax.scatter(rr[at_edge], ss[at_edge], marker="x", s=14, color="white", linewidths=0.8)
        title += f"\n×: K={k_top} is the largest K searched — a larger K might be better"
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def acceptance_curves(profiles: list[AlignmentProfile]) -> Figure:
    """Per-position conditional acceptance and E(K) by drafter and domain (measured)."""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.2))
    styles = ["-", "--", ":", "-.", (0, (1, 3))]
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for prof in profiles:
        # colour = drafter, line style = domain ("all" pooled is solid)
        domains = sorted({e.domain for e in prof.entries}, key=lambda d: (d != "all", d))
        drafters = sorted({e.drafter for e in prof.entries})
        for e in prof.entries:
            ls = styles[domains.index(e.domain) % len(styles)]
            color = palette[drafters.index(e.drafter) % len(palette)]
            label = f"{e.drafter} / {e.domain}"
            if e.per_position:
                pos = np.arange(1, len(e.per_position) + 1)
                a1.plot(
                    pos, [p.mean for p in e.per_position], linestyle=ls, color=color,
                    marker=".", label=label,
                )  # fmt: skip
            if e.by_k:
                ks = [b.k for b in e.by_k]
                tpr = [
                    b.tokens_per_round.mean
                    if b.tokens_per_round
                    else b.k * b.accepted_fraction.mean + 1
                    for b in e.by_k
                ]
                a2.plot(ks, tpr, linestyle=ls, color=color, marker=".", label=label)
    a1.set_xlabel("draft position i")
    a1.set_ylabel("P(accept i | accepted < i)")
    a1.set_title("Acceptance by position (measured)")
    a2.set_xlabel("K")
    a2.set_ylabel("E(K): tokens per round")
    a2.set_title("Tokens per round by K (measured, simulated rounds)")
    for ax in (a1, a2):
        ax.grid(alpha=0.3)
    a2.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return fig


def adaptive_timeline(run: RunRecord, window: int = 9) -> Figure:
    """K chosen each round by the adaptive policy (``--k auto``) and the estimates that
    chose it, against what was measured, over the rounds of ``run``.

    Panels: K chosen; the link estimate (RTT) with the measured wait beyond drafting and
    verification; the policy's E(K) with the measured tokens per round (rolling mean over
    ``window`` rounds) and its per-position acceptance a_1, a_2; the predicted goodput of
    the chosen K with the measured one (rolling).
    """
    rounds = [r for r in run.rounds if r.choice is not None]
    x = np.arange(len(rounds))
    choice = [r.choice for r in rounds if r.choice is not None]

    def rolling(values: list[float]) -> np.ndarray:
        v = np.asarray(values, dtype=np.float64)
        if v.size == 0:
            return v
        kernel = np.ones(min(window, v.size)) / min(window, v.size)
        return np.convolve(v, kernel, mode="same")

    fig, axes = plt.subplots(4, 1, figsize=(9.0, 9.5), sharex=True)
    ax = axes[0]
    ax.step(x, [c.k for c in choice], where="mid", color="tab:blue", label="K chosen")
    ax.plot(x, [r.k for r in rounds], ".", ms=3, color="grey", label="tokens drafted (measured)")
    ax.set_ylabel("K")
    ax.legend(fontsize=7, loc="upper right")
    ax = axes[1]
    wait = [r.round_ms - r.draft_ms - r.verify_ms for r in rounds]
    ax.plot(x, wait, ".", ms=3, color="grey", label="round − draft − verify (measured)")
    ax.plot(x, [c.rtt_ms for c in choice], "-", color="tab:orange", label="RTT estimate")
    ax.set_ylabel("ms")
    ax.legend(fontsize=7, loc="upper right")
    ax = axes[2]
    measured_tpr = rolling([float(r.accepted + 1) for r in rounds])
    ax.plot(
        x, measured_tpr, "-", color="grey", label=f"tokens/round (measured, {window}-round mean)"
    )
    ax.plot(x, [c.tokens_per_round for c in choice], "-", color="tab:green", label="E(K) estimate")
    ax2 = ax.twinx()
    for i, style in ((0, "--"), (1, ":")):
        vals = [c.acceptance[i] if len(c.acceptance) > i else np.nan for c in choice]
        ax2.plot(x, vals, style, color="tab:purple", label=f"a_{i + 1} estimate")
    ax2.set_ylim(0, 1)
    ax2.set_ylabel("acceptance")
    ax.set_ylabel("tokens per round")
    handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    labels = ax.get_legend_handles_labels()[1] + ax2.get_legend_handles_labels()[1]
    ax.legend(handles, labels, fontsize=7, loc="upper right")
    ax = axes[3]
    measured_gp = rolling([(r.accepted + 1) * 1e3 / r.round_ms for r in rounds if r.round_ms > 0])
    ax.plot(
        x[: measured_gp.size], measured_gp, "-", color="grey", label="goodput (measured, rolling)"
    )
    ax.plot(x, [c.objective_value for c in choice], "-", color="tab:red",
            label=f"predicted {run.config.objective or 'goodput'} of the chosen K")  # fmt: skip
    ax.set_ylabel("tok/s")
    ax.set_xlabel("round")
    ax.legend(fontsize=7, loc="upper right")
    for a in axes:
        a.grid(alpha=0.3)
    fig.suptitle(
        f"Adaptive K — {run.config.drafter}, K {run.config.k_min}..{run.config.k_max}\n"
        f"run {run.run_id}: chosen K and estimates (modelled) vs measured",
        fontsize=10,
    )
    fig.tight_layout()
    return fig
