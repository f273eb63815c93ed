"""Run records: built from a generation, stored atomically, read back, refused when bad."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from configspec.config import RoundTiming, RunConfig, RunRecord
from configspec.errors import ProfileError
from configspec.serving.client import Generation
from configspec.serving.record import build_run_record
from configspec.store import ProfileStore


def _gen(energy: bool) -> Generation:
    rounds = [
        RoundTiming(
            round=i, k=4, accepted=a, bonus=a == 4, draft_ms=10.0, verify_ms=20.0,
            server_ms=21.0, network_ms=2.0, round_ms=33.0, uplink_ms=1.0, downlink_ms=1.0,
            energy_j=0.5 if energy else None,
        )
        for i, a in enumerate([4, 2, 0, 3])
    ]  # fmt: skip
    return Generation(
        prompt_tokens=[1, 2],
        tokens=list(range(13)),
        text="",
        rounds=rounds,
        decode_s=0.140,
        prefill_ms=5.0,
        reconnects=0,
        stopped_by="max_tokens",
        target_name="t",
        target_family="f",
    )


CONFIG = RunConfig(drafter="d", target="t", k=4, added_rtt_ms=50.0)


def test_totals_goodput_and_acceptance() -> None:
    rec = build_run_record(_gen(energy=False), CONFIG, run_id="r1")
    assert rec.totals.rounds == 4
    assert rec.totals.accepted_tokens == 9 and rec.totals.draft_tokens == 16
    assert rec.goodput_tokens_per_s.mean == pytest.approx(13 / 0.140)
    assert rec.goodput_tokens_per_s.source == "measured"
    assert rec.goodput_tokens_per_s.low <= rec.goodput_tokens_per_s.mean
    assert rec.accepted_fraction is not None
    assert rec.accepted_fraction.mean == pytest.approx(9 / 16)
    assert 0 <= rec.accepted_fraction.low <= rec.accepted_fraction.high <= 1
    assert rec.tokens_per_joule is None and "no device power meter" in rec.energy_note


def test_energy_carries_the_meter_source() -> None:
    rec = build_run_record(_gen(energy=True), CONFIG, run_id="r2", energy_source="estimated")
    assert rec.totals.energy_j == pytest.approx(2.0)
    assert rec.tokens_per_joule is not None
    assert rec.tokens_per_joule.source == "estimated"
    assert rec.tokens_per_joule.mean == pytest.approx(13 / 2.0)


def test_store_round_trip_and_errors(tmp_path: Path) -> None:
    store = ProfileStore(tmp_path)
    assert store.runs() == []
    rec = build_run_record(_gen(energy=False), CONFIG, run_id="edge/1")
    path = store.save_run(rec)
    assert path.parent.name == "runs" and path.name == "edge_1.json"
    assert store.runs() == [RunRecord.model_validate_json(path.read_text())]
    raw = json.loads(path.read_text())
    raw["schema_version"] = 99
    path.write_text(json.dumps(raw))
    with pytest.raises(ProfileError, match="newer than this tool"):
        store.runs()
    raw["schema_version"] = 1
    raw["rounds"][0]["bogus"] = 1
    path.write_text(json.dumps(raw))
    with pytest.raises(ProfileError, match=r"malformed.*bogus"):
        store.runs()
