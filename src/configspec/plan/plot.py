"""The fleet plan's report figure (matplotlib, Agg): the cost-versus-SLO trade-off."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from configspec.plan.search import FleetPlan


def tradeoff_figure(plan: FleetPlan) -> Figure:
    """Left: cost per 1M tokens (billed and busy-time share) and replicas against the SLO
    level. Right: each class's modelled goodput per device against its SLO, per level.
    Every figure is modelled; the title says so."""
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11.5, 4.4))
    s = plan.scales
    ok = plan.feasible
    ax.plot(s[ok], plan.cost_usd_per_mtok[ok], "o-", label="cost, replicas billed (USD/1M tok)")
    ax.plot(s[ok], plan.shared_cost_usd_per_mtok[ok], "s--", label="busy GPU time shared")
    if (~ok).any():
        top = np.nanmax(plan.cost_usd_per_mtok[ok]) if ok.any() else 1.0
        ax.plot(s[~ok], np.full((~ok).sum(), top), "x", color="red", label="infeasible")
    ax.set_xlabel("SLO level (× min goodput, ÷ max p95)")
    ax.set_ylabel("USD per 1M tokens")
    twin = ax.twinx()
    twin.bar(s[ok], plan.replicas[ok], width=0.08, alpha=0.25, color="grey")
    twin.set_ylabel("verifier replicas (bars)")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title("fleet cost against the SLO level (modelled)")
    for c, name in enumerate(plan.candidates.class_names):
        (line,) = ax2.plot(s[ok], plan.goodput_tok_s[ok, c], "o-", label=f"{name} (modelled)")
        ax2.plot(s, plan.candidates.min_goodput_tok_s[c] * s, ":", color=line.get_color())
    ax2.set_xlabel("SLO level")
    ax2.set_ylabel("goodput per device (tok/s)")
    ax2.set_title("per-device goodput; dotted: the SLO")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    return fig


def save_tradeoff(plan: FleetPlan, path: str) -> None:
    """Write :func:`tradeoff_figure` as a PNG to ``path`` (written to a temp file and
    renamed, so a reader never sees half a file)."""
    import os
    import tempfile
    from pathlib import Path

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig = tradeoff_figure(plan)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".png", dir=out.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, out)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)


__all__ = ["save_tradeoff", "tradeoff_figure"]
