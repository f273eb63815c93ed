"""Plots in the paper's spirit (matplotlib ``Figure`` objects rendered by the Agg canvas,
no pyplot global state), written atomically as PNG.

Every figure says in its title which model preset produced it and that the inputs are
imported measurements, so a PNG taken out of context still says where it came from.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from configspec import records as R
from configspec.report.paper.findings import SIZE_B, Optimum
from configspec.store import atomic_write_bytes, safe_name

_SOURCE = "imported measurements, paper model"


def _save(fig: Figure, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
    return path


def goodput_vs_k(spec: pd.DataFrame, best: list[Optimum], out_dir: Path) -> list[Path]:
    """Goodput (tok/s) against K, one figure per target, one panel per device, one line
    per drafter; each line's K* is a dot, the device's optimum a star. Returns the paths."""
    paths = []
    for target, tgroup in spec.groupby(R.TARGET, sort=True):
        devices = sorted(tgroup[R.DEVICE].unique())
        fig = Figure(figsize=(4.2 * len(devices), 3.8))
        axes = fig.subplots(1, len(devices), squeeze=False)
        for ax, device in zip(axes[0], devices, strict=True):
            dgroup = tgroup[tgroup[R.DEVICE] == device]
            order = dgroup.groupby(R.DRAFTER)[SIZE_B].first().sort_values().index
            for drafter in order:
                line = dgroup[dgroup[R.DRAFTER] == drafter].sort_values(R.K)
                (handle,) = ax.plot(
                    line[R.K], line[R.GOODPUT_TOK_S], marker=".", lw=1.2, label=str(drafter)
                )
                top = line.loc[line[R.GOODPUT_TOK_S].idxmax()]
                ax.plot(top[R.K], top[R.GOODPUT_TOK_S], "o", color=handle.get_color(), ms=7)
            opt = next(
                (
                    o
                    for o in best
                    if o.target == target and o.device == device and o.objective == "goodput"
                ),
                None,
            )
            if opt is not None and opt.k is not None:
                ax.plot(
                    opt.k, opt.goodput_tok_s, "*", color="black", ms=16, label=f"optimum K*={opt.k}"
                )
            ax.set_title(str(device))
            ax.set_xlabel("K (drafted tokens per round)")
            ax.set_ylabel("goodput (accepted tok/s)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=6.5, loc="lower right")
        fig.suptitle(f"Goodput vs K, target {target} ({_SOURCE})", fontsize=10)
        paths.append(_save(fig, out_dir / f"goodput_vs_k_{safe_name(str(target))}.png"))
    return paths


def kstar_vs_verify_latency(sweep: pd.DataFrame, out_path: Path) -> Path:
    """K* of the goodput optimum against verification latency, one line per (target,
    device). ``sweep`` has columns target, device, verify_ms, k."""
    targets = sorted(sweep[R.TARGET].unique())
    fig = Figure(figsize=(5.2 * len(targets), 3.8))
    axes = fig.subplots(1, len(targets), squeeze=False)
    for ax, target in zip(axes[0], targets, strict=True):
        tsweep = sweep[sweep[R.TARGET] == target]
        for device, line in tsweep.groupby(R.DEVICE, sort=True):
            line = line.sort_values("verify_ms")
            ax.step(line["verify_ms"] / 1e3, line[R.K], where="mid", label=str(device))
        ax.axvline(0.5, color="grey", ls=":", lw=1, label="paper T_verify = 0.5 s")
        ax.set_xscale("log")
        ax.set_xlabel("verification latency T_verify (s)")
        ax.set_ylabel("K* (goodput optimum)")
        ax.set_title(str(target), fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"Optimal K* against verification latency ({_SOURCE})", fontsize=10)
    return _save(fig, out_path)


def efficiency_by_drafter(spec: pd.DataFrame, out_path: Path) -> Path:
    """Cost (tokens per USD) and energy (J per token) efficiency by drafter at each
    drafter's best K: one column of panels per target (bars grouped by device for energy)."""
    targets = sorted(spec[R.TARGET].unique())
    fig = Figure(figsize=(5.5 * len(targets), 7))
    axes = fig.subplots(2, len(targets), squeeze=False)
    for col, target in enumerate(targets):
        t = spec[spec[R.TARGET] == target]
        drafters = list(t.groupby(R.DRAFTER)[SIZE_B].first().sort_values().index)
        cost = t.groupby(R.DRAFTER)[R.TOKENS_PER_USD].max().reindex(drafters)
        ax = axes[0][col]
        bars = ax.bar(range(len(drafters)), cost.to_numpy() / 1e6, color="tab:green")
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
        ax.set_xticks(range(len(drafters)), drafters, rotation=40, ha="right", fontsize=7)
        ax.set_ylabel("accepted tokens per USD (millions)")
        ax.set_title(f"{target}: cost efficiency (best K)", fontsize=9)
        ax = axes[1][col]
        devices = sorted(
            d
            for d in t[R.DEVICE].unique()
            if t[t[R.DEVICE] == d][R.ENERGY_J_PER_TOKEN].notna().any()
        )
        width = 0.8 / max(1, len(devices))
        for i, device in enumerate(devices):
            energy = (
                t[t[R.DEVICE] == device]
                .groupby(R.DRAFTER)[R.ENERGY_J_PER_TOKEN]
                .min()
                .reindex(drafters)
            )
            ax.bar(
                np.arange(len(drafters)) + i * width, energy.to_numpy(), width, label=str(device)
            )
        missing = sorted(set(t[R.DEVICE].unique()) - set(devices))
        ax.set_xticks(
            np.arange(len(drafters)) + 0.4 - width / 2,
            drafters,
            rotation=40,
            ha="right",
            fontsize=7,
        )
        ax.set_ylabel("J per accepted token (drafting only)")
        title = f"{target}: energy (best K)"
        if missing:
            title += f"; no power data: {', '.join(map(str, missing))}"
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(f"Cost and energy efficiency by drafter ({_SOURCE})", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    return _save(fig, out_path)


def optimum_vs_parameter(
    table: pd.DataFrame, parameter: str, label: str, out_path: Path, log_x: bool = False
) -> Path:
    """For a robustness sweep: the goodput optimum's K (line) and drafter (annotated where
    it changes) against ``parameter``, one panel per target. ``table`` has columns target,
    device, ``parameter``, k, drafter."""
    targets = sorted(table[R.TARGET].unique())
    fig = Figure(figsize=(5.2 * len(targets), 3.8))
    axes = fig.subplots(1, len(targets), squeeze=False)
    for ax, target in zip(axes[0], targets, strict=True):
        for device, line in table[table[R.TARGET] == target].groupby(R.DEVICE, sort=True):
            line = line.sort_values(parameter)
            (h,) = ax.step(line[parameter], line[R.K], where="mid", label=str(device))
            changed = line[R.DRAFTER].ne(line[R.DRAFTER].shift())
            for _, row in line[changed].iterrows():
                ax.annotate(
                    str(row[R.DRAFTER]),
                    (row[parameter], row[R.K]),
                    fontsize=6,
                    color=h.get_color(),
                    xytext=(2, 3),
                    textcoords="offset points",
                )
        if log_x:
            ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("K* (goodput optimum)")
        ax.set_title(str(target), fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"Goodput optimum against {label} ({_SOURCE})", fontsize=10)
    return _save(fig, out_path)
