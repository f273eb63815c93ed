"""bench_fleet_model's model inputs and its offline replay (no timing, no models)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from bench_fleet_model import predict, window_churn
from fleet_reanalyze import reanalyze, table

from configspec.model.fleet import BatchLatency

CURVE_MS = [[None, 100.0, 110.0, 120.0], [None, 150.0, 170.0, 190.0]]


def _calib(server_ms: float) -> dict[str, Any]:
    # a calibration whose verifier was slower than the profile (S(1, 2) = 110 ms)
    return {"round_ms": server_ms + 40.0, "server_ms": server_ms, "verify_ms": server_ms - 1,
            "drafted": 1.0, "tokens_per_round": 2.0, "k_counts": [0, 10, 0]}  # fmt: skip


def _curve() -> BatchLatency:
    table_ms = np.array([[np.nan if x is None else x for x in r] for r in CURVE_MS])
    return BatchLatency(table_ms, np.array([1.0, 2.0]))


def test_think_time_is_the_calibrations_own_split_not_round_minus_the_profile() -> None:
    # the old rule (round - S(1, p)) read 170 - 110 = 60 ms; the rounds measured 40 ms
    pred = predict(_calib(130.0), 2, _curve(), max_batch=2, gather="sync")
    assert pred["think_ms"][0] == pytest.approx(40.0)
    assert pred["round_ms"][0] == pytest.approx(40.0 + 110.0)  # N = 1: think + S(1, p)


def test_replay_recomputes_a_kept_run_with_the_current_rules() -> None:
    calib = _calib(130.0)
    doc = {
        "settings": {"max_batch": 2, "rtt_ms": 30.0},
        "calibration": calib,
        "model_inputs": {"think_ms": 60.0, "gather_model": "sync", "output_share": 0.0,
                         "batch_curve": {"batches": [1, 2], "table_ms": CURVE_MS}},
        "rows": [{"clients": 1,
                  "measured": {"aggregate_tok_s": 2.0 / 0.150, "per_client_tok_s": [2.0 / 0.150],
                               "round_ms": 150.0},
                  "predicted": {"aggregate_tok_s": 2.0 / 0.170, "round_ms": 170.0,
                                "e_tokens_per_round": 2.0},
                  "error": {"aggregate": 150 / 170 - 1}}],
    }  # fmt: skip
    out = reanalyze(doc)
    assert out["think_ms"] == {"stored": 60.0, "replayed": pytest.approx(40.0)}
    row = out["rows"][0]["replayed"]
    assert row["round_ms"] == pytest.approx(150.0)
    assert abs(row["error"]["aggregate"]) < 1e-9 and out["max_abs_error"] < 1e-9
    assert "replayed 40.0 ms" in table(out)[0]


def test_window_churn_weighs_each_prompt_by_the_share_of_its_generation_counted() -> None:
    solo_rounds = {0: 40, 1: 20}
    prefills = {0: 60.0, 1: 180.0}  # a short prompt (one chunk) and a long one (three)
    # the window holds all of prompt 0's rounds and half of prompt 1's
    keys = [(0, i) for i in range(40)] + [(1, i) for i in range(10)]
    rounds, prefill = window_churn(keys, solo_rounds, prefills)
    # 1 + 0.5 sessions over 50 rounds; prefill weighted 1 : 0.5
    assert rounds == pytest.approx(50 / 1.5)
    assert prefill == pytest.approx((60.0 + 0.5 * 180.0) / 1.5)
    # a prompt without a generation alone is left out; no prompt at all: no churn
    assert window_churn([*keys, (7, 0)], solo_rounds, prefills) == (rounds, prefill)
    assert window_churn([(7, 0)], solo_rounds, prefills) == (float("inf"), 0.0)


def test_churn_prefill_is_the_verifiers_compute_with_no_link_time_taken_off() -> None:
    # a prefill (server compute, 80 ms) longer than the think time (40 ms) overruns it
    # by 40 ms once per session: 2 clients, a session every 10 rounds
    calib = {**_calib(130.0), "prefill_ms": 80.0, "session_rounds": 10.0}
    base = predict({**_calib(130.0)}, 2, _curve(), max_batch=2, gather="sync")
    pred = predict(calib, 2, _curve(), max_batch=2, gather="sync")
    assert pred["prefill_ms"][0] == 80.0
    assert pred["round_ms"][1] == pytest.approx(base["round_ms"][1] + 2 / 10 * 40.0)
    # the window's own churn replaces the calibration's
    own = predict(calib, 2, _curve(), max_batch=2, gather="sync", churn=(20.0, 140.0))
    assert own["round_ms"][1] == pytest.approx(base["round_ms"][1] + 2 / 20 * 100.0)
