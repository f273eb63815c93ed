"""Replay a kept ``bench_fleet_model`` JSON with the current input rules (no timing).

``bench_fleet_model.py --reanalyze RUN.json`` recomputes the model's predictions at every
N of a stored run from what that run recorded -- the calibration's measurements, the
profiled pass curve, the output share, each window's pooled E -- with the model inputs
taken by the current rules (:func:`bench_fleet_model.predict`), and compares them with the
run's measured figures and with the predictions the run stored (the rules of its day).
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
    replayed predictions and their relative errors; plus the replayed think time (ms)."""
    from bench_fleet_model import err, predict

    calib = doc["calibration"]
    inputs = doc["model_inputs"]
    settings = doc["settings"]
    curve = curve_from_doc(doc)
    batched = curve is not None
    max_batch = int(settings["max_batch"]) if batched else 1
    share = float(inputs.get("output_share") or 0.0) if batched else 0.0
    rtt_ms = float(settings["rtt_ms"])
    out_rows = []
    think = float("nan")
    for r in doc["rows"]:
        n, m = int(r["clients"]), r["measured"]
        e_pool = r["predicted"].get("e_tokens_per_round")
        pp = predict(calib, n, curve, max_batch, inputs["gather_model"], e_pool, rtt_ms, share)
        think = pp["think_ms"][0]
        client = statistics.fmean(m["per_client_tok_s"])
        out_rows.append({
            "clients": n,
            "measured": {"aggregate_tok_s": m["aggregate_tok_s"], "per_client_tok_s": client,
                         "round_ms": m["round_ms"]},
            "stored": {"aggregate_tok_s": r["predicted"]["aggregate_tok_s"],
                       "round_ms": r["predicted"]["round_ms"], "error": r["error"]},
            "replayed": {
                "aggregate_tok_s": pp["aggregate_tok_s"][n - 1],
                "per_client_tok_s": pp["per_client_tok_s"][n - 1],
                "round_ms": pp["round_ms"][n - 1],
                "error": {
                    "aggregate": err(pp["aggregate_tok_s"][n - 1], m["aggregate_tok_s"]),
                    "per_client": err(pp["per_client_tok_s"][n - 1], client),
                    "round": err(pp["round_ms"][n - 1], m["round_ms"]),
                },
            },
        })  # fmt: skip
    worst = max(
        max(abs(x["replayed"]["error"]["aggregate"]), abs(x["replayed"]["error"]["per_client"]))
        for x in out_rows
    )
    return {
        "think_ms": {"stored": inputs["think_ms"], "replayed": think},
        "rows": out_rows,
        "max_abs_error": worst,
    }


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
    return lines
