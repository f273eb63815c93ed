"""Re-time the pass-curve cells an N-client run's model reads, right before that run.

``bench_fleet_model.py --policy batched`` profiles the server-path curve S(B, P) once,
before the runs; the runs then take ~15 minutes, over which this shared VM's speed drifts
by 15-20%. Sampling the profile in turns shares drift *within* the profile, but the
profile as a whole is still one moment, and each N run reads one row of it: in
fleet_model8.json the B = 4 row read 15-27% above the previous run's at P = 3-5 and the
N = 4 prediction missed by 11.3% while the timing-only error stayed within 4.5%.

So before each N run (never with that run's own data) the cells that run's model reads
are timed again, in turns, for ``--retime-s`` seconds on the same path as the profile (an
in-process batched verifier on the same target, threads and context, B sessions per pass,
:func:`configspec.profiling.server_path.running_verifier`), and the run's model is also
solved with those fresh cells in place of the profile's (:func:`patched_curve`). Which
cells: under the lockstep gathers (``sync``, ``continuous``) an N-client run's passes
hold ``b = N / ceil(N / max_batch)`` sessions, and a pass costs the mean over its
widest block less the output rows the rounds do not yield (``model.fleet.padded_pass_ms``);
``w`` is its effective width, the positions at which ``S(b, ·)`` costs that mean
(``bench_fleet_model.effective_width``). ``S(b, w)``
:class:`configspec.model.fleet.BatchLatency` interpolates bilinearly from at most four
cells; :func:`read_cells` names those with a non-zero weight (for N = 1, 2, 4, 8, 16 and
profiled B levels 1, 2, 4, 8, 16 that is row B = N, columns floor(w) and ceil(w)).
Replacing exactly those cells makes the re-timed model read fresh cells where most of the
padded pass's weight lies; the padded pass's less likely widths, and every other reading,
keep the profile's cells. The profile's cells stay in
the record next to the fresh ones, with the fresh/profile ratio (weighted as the model
weighs the cells) and each cell's time stamps.

Why in-process and not through the live verifier: the live one runs the ``sync`` gather,
which cannot be told to make passes of exactly B of the timing sessions; the profile's
procedure can, so the fresh cells differ from the profile's only in *when* they were
timed. The live verifier's own pass times are compared with both curves in the
timing-only variant (``curve_scale`` and ``curve_scale_retimed``).

Nothing here prints; the bench prints the record.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from configspec.model.fleet import BatchLatency
from configspec.profiling.stats import stop_sampling
from configspec.stats import relative_half_width

Cell = tuple[int, int]
"""A curve cell: (profiled batch level B, positions P)."""

Sampler = Callable[[int, int], float]
"""One pass of B sessions x P positions: its time (ms)."""

OpenSampler = Callable[[Sequence[int]], AbstractContextManager[Sampler]]
"""``open_sampler(batch levels)``: a context giving a :data:`Sampler` for those levels."""

WEIGHT_EPS = 1e-9
"""Interpolation weights at or below this are not a read (the cell does not matter)."""


def read_cells(curve: BatchLatency, batch: float, positions: float) -> dict[Cell, float]:
    """The cells ``curve(batch, positions)`` reads and their bilinear weights (summing to
    1), the same clamping and brackets as :meth:`BatchLatency.__call__`: batch clamped to
    the profiled levels, positions 1..the table's last column (beyond it: ValueError,
    the curve gives NaN there)."""
    levels = curve.batches
    assert levels is not None
    last = curve.table_ms.shape[1] - 1
    p = float(positions)
    if not 1.0 <= p <= last:
        raise ValueError(f"positions={p} is outside the curve's 1..{last}")
    p0 = min(int(p), last - 1)
    cols = {p0: 1.0 - (p - p0), p0 + 1: p - p0}
    b = min(max(float(batch), 1.0), float(levels[-1]))
    if levels.size == 1:
        rows = {int(levels[0]): 1.0}
    else:
        i = min(int(np.searchsorted(levels, b, side="right")) - 1, levels.size - 2)
        wb = (b - levels[i]) / (levels[i + 1] - levels[i])
        rows = {int(levels[i]): 1.0 - wb, int(levels[i + 1]): wb}
    return {
        (rb, pc): wr * wc
        for rb, wr in rows.items()
        for pc, wc in cols.items()
        if wr * wc > WEIGHT_EPS
    }


READ_MIN = 1e-3
"""A padded pass's reading of lower weight than this is not re-timed (its cells keep the
profile's values: at most this share of the pass)."""


def run_cells(pred: dict[str, Any], n: int, curve: BatchLatency) -> dict[Cell, float]:
    """The cells the N-client prediction ``pred`` (``bench_fleet_model.predict``) reads for
    its throughput and round time: ``S(pass_batch[N-1], p)`` at each position count ``p``
    a padded pass reads (``pass_reads``, :func:`configspec.model.fleet.padded_pass_reads`;
    readings under :data:`READ_MIN` left out), else at ``pass_width[N-1]``."""
    b = pred["pass_batch"][n - 1]
    reads = pred.get("pass_reads")
    if not reads:
        return read_cells(curve, b, pred["pass_width"][n - 1])
    cells: dict[Cell, float] = {}
    for p, share in enumerate(reads[n - 1], start=1):
        if share < READ_MIN:
            continue
        for cell, weight in read_cells(curve, b, p).items():
            cells[cell] = cells.get(cell, 0.0) + share * weight
    return cells


@dataclass
class RetimedCell:
    """One cell timed again: its (B, P), the model's weight on it, the profile's value
    (ms), the fresh passes (ms) and their wall-clock span (Unix s), and whether the
    stopping rule met its CI target (else the budget ended it)."""

    batch: int
    positions: int
    weight: float
    profile_ms: float
    samples_ms: list[float] = field(default_factory=list)
    spent_s: float = 0.0
    first_unix_s: float = float("nan")
    last_unix_s: float = float("nan")
    converged: bool = False
    done: bool = False

    @property
    def mean_ms(self) -> float:
        """The fresh cell: the mean of its passes (ms)."""
        return float(np.mean(self.samples_ms)) if self.samples_ms else float("nan")

    def record(self) -> dict[str, Any]:
        """As JSON data (times in ms, time stamps Unix seconds and UTC ISO)."""
        return {
            "batch": self.batch,
            "positions": self.positions,
            "weight": self.weight,
            "profile_ms": self.profile_ms,
            "retimed_ms": self.mean_ms,
            "ratio": self.mean_ms / self.profile_ms,
            "passes": len(self.samples_ms),
            "rel_half_width": relative_half_width(self.samples_ms)
            if len(self.samples_ms) > 1
            else float("nan"),
            "converged": self.converged,
            "samples_ms": [round(x, 2) for x in self.samples_ms],
            "first_unix_s": self.first_unix_s,
            "last_unix_s": self.last_unix_s,
            "first_utc": _utc(self.first_unix_s),
            "last_utc": _utc(self.last_unix_s),
        }


def _utc(unix_s: float) -> str:
    if not np.isfinite(unix_s):
        return ""
    return datetime.fromtimestamp(unix_s, timezone.utc).isoformat(timespec="seconds")


def retime_cells(
    sample: Sampler,
    cells: dict[Cell, float],
    curve: BatchLatency,
    *,
    budget_s: float,
    warmup: int = 2,
    min_repeats: int = 5,
    max_repeats: int = 60,
    rel_half_width: float = 0.02,
    clock: Callable[[], float] = time.perf_counter,
    wall: Callable[[], float] = time.time,
) -> list[RetimedCell]:
    """Time ``cells`` ({(B, P): weight}, :func:`read_cells`) again with ``sample``, in
    turns: ``warmup`` discarded passes of each first, then one pass of every unfinished
    cell per turn until each cell's stopping rule holds (the profile's,
    :func:`~configspec.profiling.stats.stop_sampling`: ``rel_half_width`` CI target,
    ``min_repeats``..``max_repeats`` passes, its share ``budget_s / len(cells)`` of the
    seconds). In turns, so a drift during the few seconds lands on every cell alike.
    ``curve`` gives each cell's profiled value for the record."""
    if not cells:
        raise ValueError("no cells to re-time")
    if budget_s <= 0:
        raise ValueError(f"budget_s={budget_s} must be positive")
    levels = [int(b) for b in curve.batches] if curve.batches is not None else []
    out = [
        RetimedCell(b, p, w, float(curve.table_ms[levels.index(b), p]))
        for (b, p), w in sorted(cells.items())
    ]
    share_s = budget_s / len(out)
    for c in out:
        for _ in range(warmup):
            sample(c.batch, c.positions)
    todo = list(out)
    while todo:
        for c in todo:
            t0 = clock()
            stamp = wall()
            ms = float(sample(c.batch, c.positions))
            c.spent_s += clock() - t0
            c.samples_ms.append(ms)
            if not c.samples_ms[:-1]:
                c.first_unix_s = stamp
            c.last_unix_s = wall()
            done = stop_sampling(c.samples_ms, c.spent_s, rel_half_width=rel_half_width,
                                 min_repeats=min_repeats, max_repeats=max_repeats,
                                 budget_s=share_s)  # fmt: skip
            if done is not None:
                c.done, c.converged = True, done.converged
        todo = [c for c in todo if not c.done]
    return out


def patched_curve(curve: BatchLatency, cells: Sequence[RetimedCell]) -> BatchLatency:
    """``curve`` with the re-timed cells in place of the profile's (every other cell, and
    so the shape everywhere else, from the full profile)."""
    return _with_cells(curve, [(c.batch, c.positions, c.mean_ms) for c in cells])


def _with_cells(curve: BatchLatency, cells: Sequence[tuple[int, int, float]]) -> BatchLatency:
    """A copy of ``curve`` with each (batch, positions, ms) cell in place."""
    assert curve.batches is not None
    levels = [int(b) for b in curve.batches]
    table = np.array(curve.table_ms, dtype=np.float64, copy=True)
    for batch, positions, ms in cells:
        table[levels.index(batch), positions] = ms
    return BatchLatency(table, curve.batches)


def retime_record(
    n: int,
    cells: Sequence[RetimedCell],
    started_unix_s: float,
    ended_unix_s: float,
    load_avg: Sequence[float],
    setup_s: float,
) -> dict[str, Any]:
    """The JSON record of one run's re-timing: the cells (profile and fresh values, the
    ratio, passes, time stamps), the model-weighted fresh/profile ratio
    ``sum(w * fresh) / sum(w * profile)`` (= fresh S(b, w) over the profile's: what the
    re-timed model's pass time is against the profile model's), the wall time (s, with
    ``setup_s`` of it starting the in-process verifier and opening its sessions) and
    the load average."""
    fresh = sum(c.weight * c.mean_ms for c in cells)
    old = sum(c.weight * c.profile_ms for c in cells)
    records = [c.record() for c in cells]
    return {
        "clients": n,
        "cells": records,
        "read_ratio": fresh / old if old > 0 else float("nan"),
        "trend": halves_trend(records),
        "started_unix_s": started_unix_s,
        "ended_unix_s": ended_unix_s,
        "started_utc": _utc(started_unix_s),
        "ended_utc": _utc(ended_unix_s),
        "wall_s": ended_unix_s - started_unix_s,
        "setup_s": setup_s,
        "load_avg": list(load_avg),
    }


def halves_trend(cells: Sequence[dict[str, Any]]) -> float:
    """How the host's speed moved *while* a re-timing ran: the model-weighted ratio of the
    later half of each cell's passes to its earlier half, ``sum(w * mean(late)) /
    sum(w * mean(early))`` over the cell records (:meth:`RetimedCell.record`: ``weight``,
    ``samples_ms`` in the order timed). 1: steady; below 1: the host sped up during it, so
    the cell's mean sits above the level the run after it meets. NaN when a cell has
    fewer than 4 passes (or a record keeps none). A diagnostic, not a correction: nothing
    reads it into the model. (fleet_model9.json, N = 1: 0.803, the re-timing straddled a
    host speed-up; N = 2, 4: 0.97, 1.06.)"""
    late = early = 0.0
    for c in cells:
        xs = [float(x) for x in c.get("samples_ms") or []]
        if len(xs) < 4:
            return float("nan")
        half = len(xs) // 2
        w = float(c.get("weight", 1.0))
        early += w * float(np.mean(xs[:half]))
        late += w * float(np.mean(xs[len(xs) - half :]))
    return late / early if early > 0 else float("nan")


def bracket(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """One run's cells re-timed before it (``before``) and again right after it
    (``after``), both :func:`retime_record` records of the same cells: each cell's value is
    the mean of its two re-timed values (the two moments weigh alike, however many passes
    each took), so a change in the host's speed during the run is read at its midpoint
    instead of at its start. Neither timing uses the run's own data. ``drift`` is the
    model-weighted after/before ratio (1: the host held its speed over the run);
    ``read_ratio`` the bracketed S(b, w) over the profile's."""
    by_cell = {(int(c["batch"]), int(c["positions"])): c for c in after["cells"]}
    want = {(int(c["batch"]), int(c["positions"])) for c in before["cells"]}
    if set(by_cell) != want:
        raise ValueError(f"after re-timed {sorted(by_cell)}, before {sorted(want)}")
    cells = []
    for c in before["cells"]:
        a = by_cell[(int(c["batch"]), int(c["positions"]))]
        b_ms, a_ms = float(c["retimed_ms"]), float(a["retimed_ms"])
        cells.append({"batch": int(c["batch"]), "positions": int(c["positions"]),
                      "weight": float(c["weight"]), "profile_ms": float(c["profile_ms"]),
                      "before_ms": b_ms, "after_ms": a_ms,
                      "retimed_ms": 0.5 * (b_ms + a_ms)})  # fmt: skip
    w_before = sum(c["weight"] * c["before_ms"] for c in cells)
    w_after = sum(c["weight"] * c["after_ms"] for c in cells)
    w_mid = sum(c["weight"] * c["retimed_ms"] for c in cells)
    w_prof = sum(c["weight"] * c["profile_ms"] for c in cells)
    return {
        "clients": before["clients"],
        "cells": cells,
        "drift": w_after / w_before if w_before > 0 else float("nan"),
        "read_ratio": w_mid / w_prof if w_prof > 0 else float("nan"),
        "after": after,
    }


def curve_from_record(curve: BatchLatency, record: dict[str, Any]) -> BatchLatency:
    """``curve`` with the cells of a re-timing record (:func:`retime_record` or
    :func:`bracket`: each cell's ``retimed_ms``) in place."""
    return _with_cells(
        curve,
        [(int(c["batch"]), int(c["positions"]), float(c["retimed_ms"])) for c in record["cells"]],
    )


def retime_run(
    open_sampler: OpenSampler,
    curve: BatchLatency,
    cells: dict[Cell, float],
    n: int,
    budget_s: float,
    load_avg: Callable[[], Sequence[float]],
) -> tuple[BatchLatency, dict[str, Any]]:
    """Re-time ``cells`` for the N = ``n`` run: ``open_sampler(batch levels)`` gives the
    sampler (e.g. :func:`server_path_retimer`'s), :func:`retime_cells` times them for
    ``budget_s`` seconds of passes; returns the curve with the fresh cells
    (:func:`patched_curve`) and the record (:func:`retime_record`; ``load_avg`` is read
    when the timing ends)."""
    started = time.time()
    with open_sampler(sorted({b for b, _ in cells})) as sample:
        setup_s = time.time() - started
        out = retime_cells(sample, cells, curve, budget_s=budget_s)
    ended = time.time()
    return patched_curve(curve, out), retime_record(n, out, started, ended, load_avg(), setup_s)


def retime_lines(record: dict[str, Any]) -> list[str]:
    """A run's re-timing as printable lines (the bench prints them)."""
    lines = [
        f"  re-timed for N={record['clients']} at {record['started_utc']}..{record['ended_utc']} "
        f"({record['wall_s']:.1f} s, {record['setup_s']:.1f} s of it setup; load "
        f"{record['load_avg']}): S(b, w) fresh/profile {record['read_ratio']:.3f}, "
        f"late/early half {record.get('trend', float('nan')):.3f}"
    ]
    for c in record["cells"]:
        lines.append(
            f"    S(B={c['batch']:>2}, P={c['positions']}) weight {c['weight']:.2f}: profile "
            f"{c['profile_ms']:.1f} ms, re-timed {c['retimed_ms']:.1f} ms ({c['ratio']:.3f}; "
            f"{c['passes']} passes, +-{c['rel_half_width']:.1%})"
        )
    return lines


def max_abs_error(rows: Sequence[dict[str, Any]], key: str) -> float:
    """The largest |aggregate| or |per-client| error under ``key`` over the rows that
    have it (NaN when none does)."""
    errs = [max(abs(r[key]["aggregate"]), abs(r[key]["per_client"])) for r in rows if key in r]
    return max(errs) if errs else float("nan")


def summary_lines(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The bench's rows as printable lines, the error with the profiled curve and with the
    re-timed cells side by side, labelled, with the fresh/profile ratio of what the model
    reads, when the cells were timed, and the live passes' level against each curve (the
    timing-only ``curve_scale``: 1 is the live verifier's level)."""
    lines = [
        "error with the curve profiled before the runs | with the cells re-timed right "
        "before each run (aggregate, per client, round; E pooled over the run's prompts)",
        f"{'N':>3} {'profiled: agg':>13} {'client':>7} {'round':>7} | {'re-timed: agg':>13} "
        f"{'client':>7} {'round':>7} | {'S fresh/prof':>12} {'live/prof':>9} "
        f"{'live/fresh':>10}  re-timed (UTC)",
    ]
    for r in rows:
        if "error_retimed" not in r:
            continue
        e, f, rt = r["error"], r["error_retimed"], r["retime"]
        tim = r.get("predicted_timing_only", {})
        lines.append(
            f"{r['clients']:>3} {e['aggregate']:>+13.1%} {e['per_client']:>+7.1%} "
            f"{e['round']:>+7.1%} | {f['aggregate']:>+13.1%} {f['per_client']:>+7.1%} "
            f"{f['round']:>+7.1%} | {rt['read_ratio']:>12.3f} "
            f"{tim.get('curve_scale', float('nan')):>9.3f} "
            f"{tim.get('curve_scale_retimed', float('nan')):>10.3f}  "
            f"{rt['started_utc'][11:]}..{rt['ended_utc'][11:]}"
        )
    if any("error_bracketed" in r for r in rows):
        lines.append(
            "with each run's cells re-timed before AND right after it (each cell the mean of "
            "the two; drift = after/before, 1: the host held its speed over the run):"
        )
        for r in rows:
            if "error_bracketed" not in r:
                continue
            f, br = r["error_bracketed"], r["retime_bracket"]
            lines.append(
                f"{r['clients']:>3} bracketed: agg {f['aggregate']:>+7.1%} client "
                f"{f['per_client']:>+7.1%} round {f['round']:>+7.1%} | drift "
                f"{br['drift']:.3f}, before-run trend {r['retime'].get('trend', float('nan')):.3f}"
            )
    both = max_abs_error(rows, "error_bracketed")
    lines.append(
        f"max |error| (aggregate, per client): profiled curve {max_abs_error(rows, 'error'):.1%}, "
        f"re-timed cells {max_abs_error(rows, 'error_retimed'):.1%}"
        + (f", bracketed {both:.1%}" if np.isfinite(both) else "")
        + " (target <= 10%)"
    )
    return lines


@contextlib.contextmanager
def server_path_retimer(
    target: str,
    *,
    levels: Sequence[int],
    k: int,
    context_tokens: int,
    threads: int | None,
    verifier_url: str | None = None,
    tokenizer: object | None = None,
) -> Iterator[OpenSampler]:
    """The re-timing verifier, opened once for the sweep: yields an :data:`OpenSampler`
    whose samplers time passes on the server path as the profile does (the pass time the
    verifier reports; only passes of exactly B of the timing sessions count).

    An in-process batched verifier on ``target`` (``threads``; at most B sessions per
    pass), built for the profile's batch ``levels`` (as many KV sequences as the
    profile's), or the verifier at ``verifier_url`` (tests; ``tokenizer`` then names its
    vocabulary). Opened once, not per run, so every re-timing meets a verifier that has
    run before (a fresh one's first passes can be slow, and the profile's cells average
    over minutes of passes); it idles while the runs go (no pass, no thread polling).
    Each ``open_sampler(batches)`` (re)opens ``max(batches)`` sessions holding
    ``context_tokens`` tokens (idle sessions expire on the verifier in minutes); a B-pass
    uses the first B, sequences 0..B-1, as the profile's did (its other sessions sat
    idle in streams a pass does not read)."""
    from configspec.config import GpuTimePrice
    from configspec.profiling.device import build_context
    from configspec.profiling.server_path import ServerPathBench, running_verifier
    from configspec.profiling.verification import VerificationProfiler, VerifySweepSettings
    from configspec.store import ProfileStore

    settings = VerifySweepSettings(k_max=k, context_tokens=(context_tokens,), threads=threads,
                                   batch_sizes=tuple(sorted({int(b) for b in levels})))  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        prof = VerificationProfiler(
            target, ProfileStore(Path(tmp)), price=GpuTimePrice(price_usd_per_hour=1.0),
            settings=settings, tokenizer=tokenizer,  # type: ignore[arg-type]
            verifier_url=verifier_url, target_name="retime",
        )  # fmt: skip
        v = stack.enter_context(running_verifier(prof))
        vocab = v.identity.vocab_size
        if not vocab:
            raise ValueError(f"{v.identity.name} reports no vocabulary size")
        bench = stack.enter_context(ServerPathBench(v.url, vocab_size=vocab, on_open=v.on_open))
        pools = {b: stack.enter_context(ThreadPoolExecutor(max_workers=b))
                 for b in settings.batch_sizes if b > 1}  # fmt: skip
        context = build_context(v.tokenizer, context_tokens)

        def sample(b: int, p: int) -> float:
            if b not in settings.batch_sizes:
                raise ValueError(f"B={b} is not one of the levels {list(settings.batch_sizes)}")
            v.set_batch(b)
            return bench.sample(p, pools.get(b), sessions=b).pass_ms

        @contextlib.contextmanager
        def open_sampler(batches: Sequence[int]) -> Iterator[Sampler]:
            bench.open_sessions(context, max(int(b) for b in batches), 0.0)
            yield sample

        yield open_sampler


__all__ = [
    "Cell",
    "OpenSampler",
    "RetimedCell",
    "Sampler",
    "bracket",
    "curve_from_record",
    "halves_trend",
    "max_abs_error",
    "patched_curve",
    "read_cells",
    "retime_cells",
    "retime_lines",
    "retime_record",
    "retime_run",
    "run_cells",
    "server_path_retimer",
    "summary_lines",
]
