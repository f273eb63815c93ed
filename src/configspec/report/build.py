"""``configspec report``: a self-contained HTML page plus PNG plots from a profile directory.

The page embeds every plot as a base64 PNG (so it can be mailed or archived as one file)
and the same PNGs are written beside it. Sections: the optima and the Pareto front,
goodput against K (modelled curves, measured runs), the optimum K over RTT × drafting
speed, acceptance by position and domain, the validation table when runs exist, and a
provenance table of every profile and run.
"""

from __future__ import annotations

import base64
import html
import io
import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.figure import Figure

from configspec import records as R
from configspec.errors import ProfileMissing
from configspec.model.presets import get_preset
from configspec.progress import NO_PROGRESS, ProgressEvent, ProgressFn
from configspec.search.evaluate import evaluate_space, link_from_network
from configspec.search.export import energy_provenance
from configspec.search.select import Selection, largest_k_searched, pick
from configspec.search.space import (
    Profiles,
    SearchSettings,
    Space,
    read_profiles,
    space_from_profiles,
)
from configspec.store import ProfileStore, atomic_write_bytes, atomic_write_text
from configspec.store.profiles import safe_name

if TYPE_CHECKING:
    from configspec.config import Provenance, RunRecord
    from configspec.loop.validate import ValidationResult

log = logging.getLogger(__name__)

MAX_ADAPTIVE_FIGURES = 4
"""At most this many adaptive (``--k auto``) runs get a K-over-time figure."""

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3} td:first-child,th:first-child{text-align:left}
img{max-width:100%;border:1px solid #eee} .src{color:#666;font-size:12px}
.tag{display:inline-block;padding:0 6px;border-radius:3px;font-size:11px;background:#eef}
"""


def _png(fig: Figure) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(x: object, digits: int = 3) -> str:
    try:
        v = float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(x)
    return "—" if not np.isfinite(v) else f"{v:.{digits}g}"


def write_report(
    store: ProfileStore,
    out: Path,
    *,
    rtt_ms: float | None = None,
    progress: ProgressFn = NO_PROGRESS,
) -> Path:
    """Write ``out/report.html`` and ``out/*.png``; return the HTML path.

    ``rtt_ms`` sets the RTT of the modelled selection (default: the stored network's).
    Raises :class:`ProfileMissing` (naming the profile command) when profiles are missing.
    """
    from configspec.loop.validate import validate
    from configspec.report import figures as F

    out = Path(out)
    profiles = read_profiles(store)
    runs = store.runs()
    preset = get_preset("configspec")
    spec_runs = [r for r in runs if r.config.k > 0 and r.config.k_policy == "static"]
    adaptive_runs = [r for r in runs if r.config.k_policy == "adaptive"]
    space = space_from_profiles(
        profiles, preset, SearchSettings(context_tokens=_runs_context_tokens(spec_runs))
    )
    sel = pick(space, profiles.network, "goodput", preset, rtt_ms=rtt_ms)
    steps = 6
    progress(ProgressEvent("report", 0, steps, "selection"))
    images = _figures(sel, space, profiles, spec_runs, lambda i, what: progress(
        ProgressEvent("report", i, steps, what)))  # fmt: skip
    for run in adaptive_runs[:MAX_ADAPTIVE_FIGURES]:
        images.append((
            f"adaptive_{safe_name(run.run_id)}.png",
            f"Run {run.run_id} with --k auto: the K chosen each round and the live estimates "
            "that chose it (modelled), against what each round measured.",
            _png(F.adaptive_timeline(run)),
        ))  # fmt: skip
    sections = [_optima_html(sel)]
    for name, caption, data in images:
        atomic_write_bytes(out / name, data)
        b64 = base64.b64encode(data).decode("ascii")
        sections.append(
            f'<figure><img src="data:image/png;base64,{b64}" alt="{html.escape(name)}" '
            f'data-file="{html.escape(name)}"><figcaption class="src">{html.escape(caption)}'
            "</figcaption></figure>"
        )
    if spec_runs:
        try:
            sections.append(_validation_html(validate(store)))
        except ProfileMissing as exc:
            sections.append(f"<p>Validation unavailable: {html.escape(str(exc))}</p>")
    progress(ProgressEvent("report", 5, steps, "validation"))
    sections.append(_provenance_html(profiles, runs))
    path = out / "report.html"
    atomic_write_text(path, _page(store, sections))
    progress(ProgressEvent("report", steps, steps, str(path)))
    return path


def _runs_context_tokens(spec_runs: Sequence[RunRecord]) -> int:
    """The median mean decoding context (tokens) of the runs; 256 without runs."""
    if not spec_runs:
        return 256
    return int(
        np.median(
            [
                R.mean_decoding_context_tokens(r.config.prompt_tokens, r.config.max_tokens)
                for r in spec_runs
            ]
        )
    )


def _figures(
    sel: Selection,
    space: Space,
    profiles: Profiles,
    spec_runs: Sequence[RunRecord],
    done: Callable[[int, str], None],
) -> list[tuple[str, str, bytes]]:
    """(file name, caption, PNG bytes) of every plot; ``done(i, what)`` after plot i."""
    from configspec.loop.validate import UNCAPPED_MBPS
    from configspec.report import figures as F

    preset = sel.preset
    images: list[tuple[str, str, bytes]] = []
    rtts = sorted({r.config.added_rtt_ms for r in spec_runs}) or [float(np.mean(sel.link.rtt_ms))]
    link0 = link_from_network(profiles.network)
    curves = {}
    for rtt in rtts:
        link = replace(link0, rtt_ms=rtt)
        if spec_runs:  # the runs go through the delay proxy with no bandwidth cap: model that
            link = replace(link, uplink_mbps=UNCAPPED_MBPS, downlink_mbps=UNCAPPED_MBPS)
        curves[rtt] = evaluate_space(space, link, preset)
    images.append((
        "goodput_vs_k.png",
        "Goodput against K per drafter on this device: lines are modelled from the profiles "
        "(band: propagated 95% CIs), points are measured runs of the real runtime (95% CI).",
        _png(F.goodput_vs_k(curves, list(spec_runs))),
    ))  # fmt: skip
    done(1, "goodput vs K")
    estimated = (sel.table[R.POWER_SOURCE].astype(str) == "estimated").any()
    images.append((
        "pareto.png",
        "Pareto front over goodput, tokens/USD and tokens/J (modelled); the optimum of each "
        "objective is marked."
        + (f" Tokens/J are estimated: {energy_provenance('estimated')}." if estimated else ""),
        _png(F.pareto_views(sel)),
    ))  # fmt: skip
    done(2, "Pareto front")
    best = sel.best.get("goodput")
    if best is not None and sel.table[R.MODE].iloc[best] == R.MODE_SPECULATIVE:
        code = sel.space.drafter_names.index(str(sel.table[R.DRAFTER].iloc[best]))
        images.append((
            "optimum_k.png",
            "Goodput-optimal K of the best drafter as RTT and drafting speed vary (modelled: "
            "profiled per-token latency divided by the speed factor). Cells marked × have the "
            "largest K searched as their optimum: there a larger K might be better.",
            _png(F.optimum_k_grid(space, sel.link, preset, code,
                                  np.linspace(0, 200, 21), np.geomspace(0.25, 4, 13))),
        ))  # fmt: skip
    done(3, "optimum K grid")
    images.append((
        "acceptance.png",
        "Acceptance by draft position and E(K) by domain (measured along the target's own "
        "outputs by the alignment profiler).",
        _png(F.acceptance_curves(profiles.alignments)),
    ))  # fmt: skip
    done(4, "acceptance")
    return images


def _page(store: ProfileStore, sections: Sequence[str]) -> str:
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<title>ConfigSpec report</title>"
        f"<style>{_CSS}</style></head><body><h1>ConfigSpec report</h1>"
        f"<p class='src'>Profiles: {html.escape(str(store.root))}. Labels: "
        "<span class='tag'>measured</span> from hardware or the runtime, "
        "<span class='tag'>estimated</span> by a power estimator, "
        "<span class='tag'>modelled</span> by the model from the profiles.</p>"
        + "".join(sections)
        + "</body></html>\n"
    )


def _optima_html(sel: Selection) -> str:
    t = sel.table
    edge = largest_k_searched(t)
    rows = []
    for name in ("goodput", "cost", "energy"):
        row = sel.best.get(name)
        if row is None:
            rows.append([f"best {name}", "no data", "", "", "", ""])
            continue
        r = t.iloc[row]
        estimated = " estimated" if str(r[R.POWER_SOURCE]) == "estimated" else ""
        k_note = " (largest K searched: a larger K might be better)" if edge[row] else ""
        rows.append([
            f"best {name}",
            str(r[R.DRAFTER]) if r[R.MODE] == R.MODE_SPECULATIVE else str(r[R.MODE]),
            f"{int(r[R.K])}{k_note}",
            f"{_fmt(r[R.GOODPUT_TOK_S])} ({_fmt(r[R.GOODPUT_TOK_S_LOW])}.."
            f"{_fmt(r[R.GOODPUT_TOK_S_HIGH])})", _fmt(r[R.TOKENS_PER_USD]),
            _fmt(r[R.TOKENS_PER_J]) + estimated,
        ])  # fmt: skip
    net = sel.network
    return (
        f"<h2>Optima (modelled, RTT {_fmt(sel.link.rtt_ms)} ms)</h2>"
        + _table(
            ["objective", "drafter", "K", "goodput tok/s (range)", "tokens/USD", "tokens/J"], rows
        )
        + f"<p class='src'>Network: source {net.source}; runtime overhead per round "
        f"{net.round_overhead_ms:.2f} ms; Pareto front: {len(sel.pareto)} configurations. "
        + (
            "Tokens/J marked <span class='tag'>estimated</span>: "
            f"{html.escape(energy_provenance('estimated'))}."
            if (t[R.POWER_SOURCE].astype(str) == "estimated").any()
            else ""
        )
        + "</p>"
    )


def _validation_html(result: ValidationResult) -> str:
    rows = []
    for r in result.rows:
        g = r.objectives["goodput"]
        pi = "—"
        if r.prediction is not None and "90%" in r.prediction.goodput_tok_s:
            lo, hi = r.prediction.goodput_tok_s["90%"]
            pi = f"{_fmt(lo)}–{_fmt(hi)} {'in' if r.prediction.goodput_inside['90%'] else 'OUT'}"
        rows.append([
            r.drafter, str(r.k), f"{r.added_rtt_ms:g}", _fmt(r.tokens_per_round.measured),
            _fmt(r.tokens_per_round.predicted), _fmt(g.measured), _fmt(g.predicted), pi,
            "—" if g.error is None else f"{g.error:+.1%}",
            "—" if r.objectives["cost"].error is None else f"{r.objectives['cost'].error:+.1%}",
        ])  # fmt: skip
    s = result.summary["goodput"]
    summary = (
        f"goodput median |error| {s.median_abs_error:.1%}, max {s.max_abs_error:.1%} "
        f"over {s.n} runs"
        if s.n and s.median_abs_error is not None and s.max_abs_error is not None
        else "no comparable runs"
    )
    summary += "".join(
        f"; measured inside the modelled {level} prediction interval in {n_in}/{n}"
        for level, (n_in, n) in s.inside_prediction.items()
    )
    return (
        "<h2>Validation: predicted vs measured</h2>"
        + _table(["drafter", "K", "+RTT ms", "E(K) measured", "E(K) modelled",
                  "goodput measured", "goodput modelled", "goodput modelled 90% PI",
                  "error", "tokens/USD error"], rows)
        + f"<p class='src'>{html.escape(summary)}; error = modelled / measured − 1; PI = "
        "prediction interval for a run of that many prompts (between-prompt variance of "
        "acceptance, cluster bootstrap over the profiled prompts; not the timing model's "
        "error).</p>"
    )  # fmt: skip


def _provenance_html(profiles: Profiles, runs: Sequence[RunRecord]) -> str:
    rows = []
    items: list[tuple[str, str, Provenance]] = [
        *[("device", d.device.name, d.provenance) for d in profiles.devices],
        *[("alignment", a.target, a.provenance) for a in profiles.alignments],
        *[("verification", v.target, v.provenance) for v in profiles.verifications],
    ]
    for kind, name, p in items:
        rows.append([
            kind, name, p.source, str(p.created_at)[:19], p.tool_version,
            str(p.git_revision or "")[:10], str(p.host or ""), str(p.backend or ""),
        ])  # fmt: skip
    run_list = list(runs)
    if run_list:
        first = run_list[0].provenance
        rows.append([
            "runs", f"{len(run_list)} run records", first.source, str(first.created_at)[:19],
            first.tool_version, str(first.git_revision or "")[:10], str(first.host or ""),
            str(first.backend or ""),
        ])  # fmt: skip
    return "<h2>Provenance</h2>" + _table(
        ["kind", "name", "source", "created (UTC)", "tool", "git", "host", "backend"], rows
    )
