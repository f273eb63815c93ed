"""Replay a kept ``bench_fleet_model`` JSON with the current input rules (no timing).

``bench_fleet_model.py --reanalyze RUN.json`` recomputes the model's predictions at every
N of a stored run from what that run recorded -- the calibration's measurements, the
profiled pass curve, the output share, each window's pooled E -- with the model inputs
taken by the current rules (:func:`bench_fleet_model.predict`), and compares them with the
run's measured figures and with the predictions the run stored (the rules of its day).
A run that re-timed its curve cells before each N (``--retime-s``) is replayed both ways:
with the profiled curve and with each row's re-timed cells in place (``retimed``, with the
re-timing's own late/early-half ``trend``, :func:`fleet_retime.halves_trend`), and a run
that re-timed them after each N too (``--retime-after``) also with each cell the mean of
the two (``bracketed``, with the ``drift`` over the run).
Nothing is re-measured, so a change of input rule can be judged on old data before the
lead reruns the benchmark on a quiet host.
"""

from __future__ import annotations

import statistics
from typing import Any

import numpy as np

from configspec.model.fleet import BatchLatency


def curve_from_doc(doc: dict[str, Any]) -> BatchLatency | None:
    """The pass-latency curve a run stored (``model_inputs.batch_curve``), or None for a
    one-at-a-time run."""
    c = doc["model_inputs"].get("batch_curve")
    if not c:
        return None
    table = np.array([[np.nan if x is None else x for x in row] for row in c["table_ms"]])
    return BatchLatency(table, np.asarray(c["batches"], dtype=np.float64))


def reanalyze(doc: dict[str, Any]) -> dict[str, Any]:
    """The stored run ``doc`` re-predicted with the current input rules: per N the
    measured aggregate and per-client goodput (tok/s) and round (ms), the stored and the
    replayed predictions and their relative errors (``retimed``: the same with the row's
    re-timed cells, when it has them); plus the replayed think time (ms)."""
    from bench_fleet_model import predict, row_errors, window_churn
    from fleet_retime import curve_from_record, halves_trend

    def replay(c: BatchLatency | None, n: int, e_pool: float | None, m: dict[str, Any],
               client: float) -> dict[str, Any]:  # fmt: skip
        k_win = m.get("k_counts") if e_pool is not None else None
        # the window's churn from its prompts alone, where the run kept them (since
        # 2026-12-01); older runs replay with the calibration's
        churn = None
        if e_pool is not None and solo_prefill and solo_rounds:
            churn = window_churn(m["round_keys"], solo_rounds, solo_prefill)
        pp = predict(calib, n, c, max_batch, inputs["gather_model"], e_pool, share, k_win, churn)
        return {
            "aggregate_tok_s": pp["aggregate_tok_s"][n - 1],
            "per_client_tok_s": pp["per_client_tok_s"][n - 1],
            "round_ms": pp["round_ms"][n - 1],
            "think_ms": pp["think_ms"][0],
            "error": row_errors(pp, n, m, client),
        }

    calib = doc["calibration"]
    inputs = doc["model_inputs"]
    settings = doc["settings"]
    curve = curve_from_doc(doc)
    batched = curve is not None
    max_batch = int(settings["max_batch"]) if batched else 1
    share = float(inputs.get("output_share") or 0.0) if batched else 0.0
    solo_prefill = {int(p): v for p, v in (inputs.get("solo_prefill_ms") or {}).items()}
    solo_rounds = {int(p): v for p, v in (inputs.get("solo_rounds") or {}).items()}
    out_rows = []
    think = float("nan")
    for r in doc["rows"]:
        n, m = int(r["clients"]), r["measured"]
        e_pool = r["predicted"].get("e_tokens_per_round")
        client = statistics.fmean(m["per_client_tok_s"])
        replayed = replay(curve, n, e_pool, m, client)
        think = replayed.pop("think_ms")
        out_rows.append({
            "clients": n,
            "measured": {"aggregate_tok_s": m["aggregate_tok_s"], "per_client_tok_s": client,
                         "round_ms": m["round_ms"]},
            "stored": {"aggregate_tok_s": r["predicted"]["aggregate_tok_s"],
                       "round_ms": r["predicted"]["round_ms"], "error": r["error"]},
            "replayed": replayed,
        })  # fmt: skip
        if curve is not None and r.get("retime"):
            again = replay(curve_from_record(curve, r["retime"]), n, e_pool, m, client)
            again.pop("think_ms")
            out_rows[-1]["retimed"] = {**again, "read_ratio": r["retime"].get("read_ratio"),
                                       "trend": halves_trend(r["retime"]["cells"])}  # fmt: skip
        if curve is not None and r.get("retime_bracket"):
            both = replay(curve_from_record(curve, r["retime_bracket"]), n, e_pool, m, client)
            both.pop("think_ms")
            out_rows[-1]["bracketed"] = {**both, "drift": r["retime_bracket"]["drift"]}
    worst = _worst(out_rows, "replayed")
    return {
        "think_ms": {"stored": inputs["think_ms"], "replayed": think},
        "rows": out_rows,
        "max_abs_error": worst,
        "max_abs_error_retimed": _worst(out_rows, "retimed"),
        "max_abs_error_bracketed": _worst(out_rows, "bracketed"),
    }


def _worst(rows: list[dict[str, Any]], key: str) -> float | None:
    """The largest |aggregate| or |per-client| error under ``key`` (None: no row has it)."""
    errs = [max(abs(x[key]["error"]["aggregate"]), abs(x[key]["error"]["per_client"]))
            for x in rows if key in x]  # fmt: skip
    return max(errs) if errs else None


def table(result: dict[str, Any]) -> list[str]:
    """The replay as printable lines (the bench prints them; this module never does)."""
    t = result["think_ms"]
    lines = [f"think time: stored {t['stored']:.1f} ms, replayed {t['replayed']:.1f} ms",
             f"{'N':>3} {'agg meas':>9} {'stored':>8} {'err':>7} {'replayed':>9} {'err':>7} "
             f"{'client err':>10} {'round meas':>10} {'replayed':>9} {'err':>7}"]  # fmt: skip
    for r in result["rows"]:
        m, s, p = r["measured"], r["stored"], r["replayed"]
        lines.append(
            f"{r['clients']:>3} {m['aggregate_tok_s']:>9.1f} {s['aggregate_tok_s']:>8.1f} "
            f"{s['error']['aggregate']:>+7.1%} {p['aggregate_tok_s']:>9.1f} "
            f"{p['error']['aggregate']:>+7.1%} {p['error']['per_client']:>+10.1%} "
            f"{m['round_ms']:>10.1f} {p['round_ms']:>9.1f} {p['error']['round']:>+7.1%}"
        )
    lines.append(f"max |error| replayed (aggregate, per-client): {result['max_abs_error']:.1%}")
    if result.get("max_abs_error_retimed") is not None:
        lines.append("with each row's re-timed cells (taken right before its run):")
        for r in result["rows"]:
            if "retimed" in r:
                t = r["retimed"]
                lines.append(
                    f"{r['clients']:>3} aggregate {t['aggregate_tok_s']:.1f} "
                    f"({t['error']['aggregate']:+.1%}), per client {t['error']['per_client']:+.1%}"
                    f", round {t['round_ms']:.1f} ms ({t['error']['round']:+.1%}); S(b, w) "
                    f"fresh/profile {t['read_ratio']:.3f}, late/early half {t['trend']:.3f}"
                )
        lines.append(f"max |error| re-timed: {result['max_abs_error_retimed']:.1%}")
    if result.get("max_abs_error_bracketed") is not None:
        lines.append("with each cell the mean of its re-timings before and after the run:")
        for r in result["rows"]:
            if "bracketed" in r:
                t = r["bracketed"]
                lines.append(
                    f"{r['clients']:>3} aggregate {t['aggregate_tok_s']:.1f} "
                    f"({t['error']['aggregate']:+.1%}), per client {t['error']['per_client']:+.1%}"
                    f"; drift over the run {t['drift']:.3f}"
                )
        lines.append(f"max |error| bracketed: {result['max_abs_error_bracketed']:.1%}")
    return lines
