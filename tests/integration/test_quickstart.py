"""``configspec quickstart`` end to end with the smallest settings (real models, real
verifier subprocess, real delay proxy): it prints the three optima and the validation
table and writes profiles, run records and the report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from configspec.backends.models import PreparedFamily

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_quickstart_smallest(tmp_path: Path, model_family: PreparedFamily) -> None:
    out = tmp_path / "qs"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "COLUMNS": "200"}
    cmd = [
        sys.executable, "-m", "configspec", "quickstart", "--out", str(out),
        "--cache-dir", str(model_family.cache_dir), "--rtt-ms", "20",
        "--drafter", "gemma-3-270m-q4_0", "--drafter", "ngram",
        "--k-max", "3", "--context", "64", "--max-tokens", "12", "--validate-k", "2",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = proc.stdout
    for needle in ("best goodput", "best cost", "best energy", "validation: predicted"):
        assert needle in text, text[-3000:]
    assert "median |error|" in text
    assert "Traceback" not in proc.stderr
    profiles = out / "profiles"
    for sub in ("device", "alignment", "verification", "runs"):
        assert any((profiles / sub).glob("*.json")), sub
    network = json.loads((profiles / "network.json").read_text())
    assert network["rtt_ms"] == 20 and network["round_overhead_ms"] > 0
    summary = json.loads((out / "quickstart.json").read_text())
    runs = summary["validation"]["runs"]
    assert {r["drafter"].split("[")[0] for r in runs} >= {"gemma-3-270m-q4_0", "ngram"}
    assert all(r["objectives"]["goodput"]["measured"] > 0 for r in runs)
    assert all(r["added_rtt_ms"] == 20 for r in runs)
    # the baseline probe of every drafter, right after profiling, with its samples; every
    # run is compared with it like for like and says what was applied and why
    baseline = json.loads((profiles / "contention" / "baseline.json").read_text())
    assert {p["drafter"].split("[")[0] for p in baseline["probes"]} == {
        "gemma-3-270m-q4_0", "ngram"}  # fmt: skip
    assert all(len(p["verify_samples_ms"]) >= 3 for p in baseline["probes"])
    # the default host-level rule (runs): each run levelled by the sweep's runs that ended
    # before it started (drafting by the same drafter's), the first one raw
    assert summary["validation"]["contention_rule"] == "runs"
    reasons = [r["contention"][side]["reason"] for r in runs for side in ("draft", "verify")]
    assert "no earlier run" in reasons[0] and "no earlier run" in reasons[1]
    assert any(x.startswith("applied: mean of") for x in reasons)
    for r in runs:
        for side in ("draft", "verify"):
            c = r["contention"][side]
            assert c["applied"] == 1.0 if "no earlier run" in c["reason"] else c["measured"] > 0
    assert "host level (runs:" in " ".join(text.split())
    assert (out / "report" / "report.html").is_file()
