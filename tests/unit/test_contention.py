"""The contention probe, like for like: a run's probe over the baseline probe, applied
only when the ratio is distinguishable from 1 (synthetic probe samples)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _run_records import DRAFTER, run_record

from configspec.config import (
    ContentionBaseline,
    ContentionProbe,
    Provenance,
    RunRecord,
)
from configspec.errors import ProfileError
from configspec.loop.contention import DEFAULT_RULE, contention_fold, judge_ratio
from configspec.loop.validate import validate
from configspec.stats import bootstrap_ratio_of_medians
from configspec.store import ProfileStore

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "profiles"
RNG = np.random.default_rng(7)


def _samples(median_ms: float, n: int = 9, spread: float = 0.04) -> list[float]:
    """``n`` timings around ``median_ms`` with a relative spread like a quiet host's."""
    return [float(x) for x in median_ms * (1.0 + spread * RNG.standard_normal(n))]


def _probe(draft: list[float], verify: list[float], **kw: Any) -> ContentionProbe:
    return ContentionProbe(
        drafter=DRAFTER, draft_context_tokens=150, draft_ms_per_token=float(np.median(draft)),
        draft_samples_ms=draft, verify_context_tokens=110,
        verify_one_ms=float(np.median(verify)), verify_samples_ms=verify, **kw,
    )  # fmt: skip


def _with_probe(run: RunRecord, probe: dict[str, Any], run_id: str) -> RunRecord:
    settings = {**run.provenance.settings, "contention": probe}
    return run.model_copy(
        update={
            "run_id": run_id,
            "provenance": run.provenance.model_copy(update={"settings": settings}),
        }
    )


@pytest.fixture()
def store(tmp_path: Path) -> ProfileStore:
    shutil.copytree(EXAMPLES, tmp_path / "profiles")
    return ProfileStore(tmp_path / "profiles")


def test_ratio_of_medians_interval() -> None:
    same = bootstrap_ratio_of_medians(_samples(10.0), _samples(10.0))
    assert same.estimator == "bootstrap_ratio_of_medians"
    assert same.low < 1.0 < same.high
    slower = bootstrap_ratio_of_medians(_samples(15.0), _samples(10.0))
    assert slower.low > 1.0 and slower.mean == pytest.approx(1.5, rel=0.08)
    with pytest.raises(ValueError, match="both sides"):
        bootstrap_ratio_of_medians([], [1.0])
    with pytest.raises(ValueError, match="positive"):
        bootstrap_ratio_of_medians([1.0], [0.0, 0.0])


def test_judge_ratio_applies_only_a_distinguishable_ratio() -> None:
    same = judge_ratio(_samples(10.0), _samples(10.0))
    assert same.applied == 1.0 and "holds 1" in same.reason
    assert same.measured is not None and same.low is not None and same.high is not None
    slower = judge_ratio(_samples(13.0), _samples(10.0))
    assert slower.applied == slower.measured and slower.applied > 1.15
    assert "excludes 1" in slower.reason
    faster = judge_ratio(_samples(7.0), _samples(10.0))
    assert faster.applied < 0.85
    # a few very noisy samples 30% off: not distinguishable, not applied
    noisy = judge_ratio([7.0, 13.0, 9.0, 15.0], [10.0, 6.0, 14.0, 11.0])
    assert noisy.applied == 1.0
    few = judge_ratio([20.0, 21.0], [10.0, 10.5])
    assert few.applied == 1.0 and "too few samples" in few.reason


def test_validate_folds_run_probe_over_baseline(store: ProfileStore) -> None:
    """Equal distributions -> ratio 1 applied (prediction = raw profiles); a run whose
    probe drafts 1.5x and verifies 2x slower than the baseline -> those ratios applied."""
    base = _probe(_samples(10.0), _samples(40.0), added_rtt_ms=10.0)  # the runs' point
    store.save_contention_baseline(
        ContentionBaseline(probes=[base], provenance=Provenance.here("measured"))
    )
    run = run_record(4, 10.0, 500.0, 3)
    quiet = _with_probe(run, _probe(_samples(10.0), _samples(40.0)).model_dump(), "quiet")
    busy = _with_probe(run, _probe(_samples(15.0), _samples(80.0)).model_dump(), "busy")
    rows = {
        r.run_id: r for r in validate(store, runs=[run, quiet, busy], fold_contention=True).rows
    }
    plain = rows[run.run_id]
    assert plain.contention is None and plain.contention_draft is None
    q = rows["quiet"]
    assert (q.contention_draft, q.contention_verify) == (1.0, 1.0)
    assert q.contention is not None and "holds 1" in q.contention.draft.reason
    assert q.objectives["goodput"].predicted == pytest.approx(plain.objectives["goodput"].predicted)
    b = rows["busy"]
    assert b.contention is not None
    assert b.contention_draft == pytest.approx(1.5, rel=0.1)
    assert b.contention_verify == pytest.approx(2.0, rel=0.1)
    assert "excludes 1" in b.contention.verify.reason
    d0, v0 = plain.draft_ms.predicted or 0.0, plain.verify_ms.predicted or 0.0
    assert b.draft_ms.predicted == pytest.approx(b.contention_draft * d0)
    assert b.verify_ms.predicted == pytest.approx(b.contention_verify * v0)
    raw = {r.run_id: r for r in validate(store, runs=[busy], contention_rule="off").rows}
    assert raw["busy"].verify_ms.predicted == pytest.approx(v0)
    assert raw["busy"].contention_verify is None
    assert raw["busy"].contention is not None
    assert "raw profiles" in raw["busy"].contention.verify.reason
    # off: the ratio is still measured and judged, for the record, not applied
    off = raw["busy"]
    assert off.contention is not None and off.contention.verify.applied == 1.0
    assert off.contention.verify.measured == pytest.approx(2.0, rel=0.1)
    assert "would be applied" in off.contention.verify.reason
    # the default rule (runs): the first run of a sweep has no earlier run -> raw profiles
    default = validate(store, runs=[busy])
    assert default.contention_rule == DEFAULT_RULE == "runs"
    assert default.to_json()["contention_rule"] == "runs"
    first = default.rows[0]
    assert first.verify_ms.predicted == pytest.approx(v0)
    assert first.contention is not None and first.contention.verify.applied == 1.0
    assert "no earlier run" in first.contention.verify.reason
    # the JSON keeps what was applied and why
    row_json = validate(store, runs=[busy], fold_contention=True).to_json()["runs"][0]
    assert row_json["contention"]["verify"]["applied"] == pytest.approx(b.contention_verify)


def test_old_records_and_stores_without_baseline_still_validate(store: ProfileStore) -> None:
    run = run_record(4, 10.0, 500.0, 3)
    # a probe written before the samples (and the drafter) were kept
    legacy = {
        "draft_context_tokens": 100, "draft_ms_per_token": 30.0,
        "verify_context_tokens": 100, "verify_one_ms": 90.0, "load_average_1m": 1.0,
    }  # fmt: skip
    old = _with_probe(run, legacy, "old")
    new = _with_probe(run, _probe(_samples(15.0), _samples(80.0)).model_dump(), "new")
    assert store.contention_baseline() is None
    rows = {r.run_id: r for r in validate(store, runs=[run, old, new], fold_contention=True).rows}
    plain = rows[run.run_id].objectives["goodput"].predicted
    for rid, why in (("old", "no samples"), ("new", "no baseline")):
        row = rows[rid]
        assert row.contention is not None and why in row.contention.draft.reason
        assert (row.contention_draft, row.contention_verify) == (1.0, 1.0)
        assert row.objectives["goodput"].predicted == pytest.approx(plain)
    # a baseline at another point (other contexts) is not compared with
    other = _probe(_samples(10.0), _samples(40.0), added_rtt_ms=10.0)
    assert contention_fold(new, ContentionBaseline(probes=[other], provenance=Provenance.here(
        "measured"))).ratios != (1.0, 1.0)  # fmt: skip
    other = other.model_copy(update={"draft_context_tokens": 64})
    baseline = ContentionBaseline(probes=[other], provenance=Provenance.here("measured"))
    fold = contention_fold(new, baseline)
    assert fold is not None and fold.ratios == (1.0, 1.0)


def test_baseline_store_round_trip_and_errors(store: ProfileStore) -> None:
    a = _probe(_samples(10.0), _samples(40.0))
    b = a.model_copy(update={"added_rtt_ms": 30.0})
    base = ContentionBaseline(probes=[a, b], provenance=Provenance.here("measured"))
    newer = a.model_copy(update={"draft_ms_per_token": 11.0})
    base = base.with_probes([newer])  # replaces the probe at a's point, keeps b
    assert len(base.probes) == 2 and base.find(a) == newer and base.find(b) == b
    path = store.save_contention_baseline(base)
    assert path == store.root / "contention" / "baseline.json"
    assert not list(path.parent.glob("*.tmp*"))  # written atomically, nothing left over
    assert store.contention_baseline() == base
    path.write_text(json.dumps({"kind": "contention_baseline", "probes": "x"}))
    with pytest.raises(ProfileError, match="malformed"):
        store.contention_baseline()
    path.write_text("{")
    with pytest.raises(ProfileError, match="unreadable"):
        store.contention_baseline()


def test_probe_after_the_run_is_pooled_with_the_one_before(store: ProfileStore) -> None:
    from configspec.loop.contention import run_probe

    run = run_record(4, 10.0, 500.0, 3)
    before = _probe(_samples(10.0), _samples(40.0), added_rtt_ms=10.0)
    after = _probe(_samples(20.0), _samples(40.0), added_rtt_ms=10.0)
    both = _with_probe(run, before.model_dump(), "both")
    settings = {**both.provenance.settings, "contention_after": after.model_dump()}
    both = both.model_copy(
        update={"provenance": both.provenance.model_copy(update={"settings": settings})}
    )
    pooled = run_probe(both)
    assert pooled is not None and len(pooled.draft_samples_ms) == 18
    assert 10.0 < pooled.draft_ms_per_token < 20.0
    # an "after" probe at another point is ignored
    other = after.model_copy(update={"verify_context_tokens": 5})
    settings["contention_after"] = other.model_dump()
    alone = both.model_copy(
        update={"provenance": both.provenance.model_copy(update={"settings": settings})}
    )
    kept = run_probe(alone)
    assert kept is not None and kept.draft_samples_ms == before.draft_samples_ms


def test_validate_cli_says_which_ratios_were_applied(
    store: ProfileStore, capsys: pytest.CaptureFixture[str]
) -> None:
    from configspec.cli.main import main

    base = _probe(_samples(10.0), _samples(40.0), added_rtt_ms=10.0)
    store.save_contention_baseline(
        ContentionBaseline(probes=[base], provenance=Provenance.here("measured"))
    )
    run = run_record(4, 10.0, 500.0, 3)
    store.save_run(_with_probe(run, _probe(_samples(10.0), _samples(80.0)).model_dump(), "busy"))
    assert main(["validate", "--profiles", str(store.root), "--fold-contention"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "applied in 1/1 runs" in out and "draft ×1.00" in out
    assert "host level (gated:" in out
    # the default rule (runs): a lone run has no earlier run, so nothing applied, and the
    # line says which rule it was
    assert main(["validate", "--profiles", str(store.root)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "host level (runs:" in out and "applied in 0/1 runs" in out
    assert main(["validate", "--profiles", str(store.root), "--contention-rule", "off"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "host level (off: raw profiles" in out and "applied in 0/1 runs" in out


def _with_probes(run: RunRecord, before: ContentionProbe, after: ContentionProbe) -> RunRecord:
    settings = {
        **run.provenance.settings,
        "contention": before.model_dump(),
        "contention_after": after.model_dump(),
    }
    return run.model_copy(
        update={"provenance": run.provenance.model_copy(update={"settings": settings})}
    )


def test_ratio_applied_only_when_the_probes_before_and_after_agree() -> None:
    """bench_validate at load 2-3 (/work/bench/validate_t7_work): one run's verification
    probe read 0.80x the baseline before it and 0.93x after; pooled, the 24 samples'
    bootstrap interval excluded 1 and 0.85 was applied, while the run verified at 0.98x
    the profile. Samples within one probe are not independent, so occasions that disagree
    mean the load changed within the run: no ratio. Agreeing occasions still apply."""
    base = _probe(_samples(10.0), _samples(40.0, n=12), added_rtt_ms=10.0)
    baseline = ContentionBaseline(probes=[base], provenance=Provenance.here("measured"))
    run = run_record(4, 10.0, 500.0, 3)
    faster = _probe(_samples(10.0), _samples(28.0, n=12), added_rtt_ms=10.0)
    same = _probe(_samples(10.0), _samples(40.0, n=12), added_rtt_ms=10.0)
    fold = contention_fold(_with_probes(run, faster, same), baseline)
    assert fold is not None
    assert fold.verify.measured is not None and fold.verify.measured < 0.9
    assert fold.verify.high is not None and fold.verify.high < 1.0  # pooled: excludes 1
    assert fold.verify.applied == 1.0 and "disagree" in fold.verify.reason
    assert fold.draft.applied == 1.0 and "holds 1" in fold.draft.reason
    slower = _probe(_samples(15.0), _samples(60.0, n=12), added_rtt_ms=10.0)
    slower2 = _probe(_samples(15.5), _samples(62.0, n=12), added_rtt_ms=10.0)
    agreed = contention_fold(_with_probes(run, slower, slower2), baseline)
    assert agreed is not None
    assert agreed.verify.applied == pytest.approx(1.5, rel=0.1)
    assert agreed.draft.applied == pytest.approx(1.5, rel=0.1)
    assert "each occasion too" in agreed.verify.reason


def _timed(draft_ms: float, verify_ms: float, minute: int) -> ContentionProbe:
    from datetime import UTC, datetime

    at = datetime(2026, 11, 30, 9, minute, tzinfo=UTC)
    return _probe(_samples(draft_ms), _samples(verify_ms, n=12), added_rtt_ms=10.0, taken_at=at)


def test_running_rule_reads_the_host_level_of_every_probe_up_to_the_run() -> None:
    """heldout4 (quiet host, level drifting): runs verified 20-30% slower than the
    profile while their own probes before and after often disagreed, so the gated rule
    applied nothing. The running rule takes the level from every probe up to the run's
    start (a prediction): here the sweep has read x1.3 for three runs, the run's own
    probes read x1.3 before and x1.0 after -> gated applies 1, running applies ~1.3, and
    a later run's probes (x3) do not reach back."""
    from configspec.loop.contention import SweepHistory, occasions_of, rule_fold

    base = _timed(10.0, 40.0, 0)
    baseline = ContentionBaseline(probes=[base], provenance=Provenance.here("measured"))
    run = run_record(4, 10.0, 500.0, 3)
    earlier = [
        _with_probes(run, _timed(10.0, 52.0, 2 * i + 1), _timed(10.0, 52.0, 2 * i + 2))
        for i in range(3)
    ]
    this = _with_probes(run, _timed(10.0, 52.0, 7), _timed(10.0, 40.0, 8))
    later = _with_probes(run, _timed(30.0, 120.0, 9), _timed(30.0, 120.0, 10))
    history = SweepHistory(occasions_of([*earlier, this, later], baseline))
    assert len(history.occasions) == 10
    gated = rule_fold(this, baseline, "gated", history)
    assert gated is not None and gated.verify.applied == 1.0
    running = rule_fold(this, baseline, "running", history)
    assert running is not None
    assert running.verify.applied == pytest.approx(1.3, rel=0.05)
    assert running.draft.applied == pytest.approx(1.0, rel=0.05)
    assert "mean of 7 probe ratios" in running.verify.reason
    before = rule_fold(this, baseline, "before", history)
    assert before is not None and before.verify.applied == pytest.approx(1.3, rel=0.05)
    bracketed = rule_fold(this, baseline, "bracketed", history)
    assert bracketed is not None and bracketed.verify.applied == pytest.approx(1.15, rel=0.05)
    assert "not a prediction" in bracketed.verify.reason
    off = rule_fold(this, baseline, "off", history)
    assert off is not None and off.ratios == (1.0, 1.0)
    # the first run of a sweep: only its own before-probe so far
    first = rule_fold(earlier[0], baseline, "running", history)
    assert first is not None and first.verify.applied == pytest.approx(1.3, rel=0.05)


def test_validate_running_rule_scales_the_prediction(store: ProfileStore) -> None:
    base = _timed(10.0, 40.0, 0)
    store.save_contention_baseline(
        ContentionBaseline(probes=[base], provenance=Provenance.here("measured"))
    )
    run = run_record(4, 10.0, 500.0, 3)
    runs = [
        _with_probes(run, _timed(10.0, 52.0, 2 * i + 1), _timed(10.0, 40.0, 2 * i + 2)).model_copy(
            update={"run_id": f"r{i}"}
        )
        for i in range(3)
    ]
    off = {r.run_id: r for r in validate(store, runs=runs, contention_rule="off").rows}
    gated = {r.run_id: r for r in validate(store, runs=runs, fold_contention=True).rows}
    running = {r.run_id: r for r in validate(store, runs=runs, contention_rule="running").rows}
    v0 = off["r2"].verify_ms.predicted or 0.0
    assert gated["r2"].verify_ms.predicted == pytest.approx(v0)
    # r2's history: 1.3, 1.0, 1.3, 1.0, 1.3 -> mean 1.18
    assert running["r2"].contention_verify == pytest.approx(1.18, rel=0.05)
    assert running["r0"].contention_verify == pytest.approx(1.3, rel=0.05)
    assert running["r2"].verify_ms.predicted == pytest.approx(
        (running["r2"].contention_verify or 0.0) * v0
    )


def test_runs_rule_levels_each_run_by_the_runs_that_ended_before_it(
    store: ProfileStore,
) -> None:
    """The earlier runs as the probe: each run's modelled latencies scaled by the mean
    measured / profiled ratio of the runs that ended before it started (none: raw). The
    gated rule leaves a run without probes alone; the runs rule needs no probe."""
    from datetime import UTC, datetime, timedelta

    t0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    run = run_record(4, 10.0, 500.0, 3)
    runs = [
        run.model_copy(
            update={
                "run_id": f"r{i}",
                "provenance": run.provenance.model_copy(
                    update={"created_at": t0 + timedelta(minutes=i)}
                ),
            }
        )
        for i in range(3)
    ]
    off = {r.run_id: r for r in validate(store, runs=runs, contention_rule="off").rows}
    gated = {r.run_id: r for r in validate(store, runs=runs, fold_contention=True).rows}
    got = {r.run_id: r for r in validate(store, runs=runs, contention_rule="runs").rows}
    v_ratio = (off["r0"].verify_ms.measured or 0.0) / (off["r0"].verify_ms.predicted or 1.0)
    d_ratio = (off["r0"].draft_ms.measured or 0.0) / (off["r0"].draft_ms.predicted or 1.0)
    assert abs(v_ratio - 1.0) > 0.05  # the fixture's runs do not verify at the profile
    # the first run has no earlier run: raw profiles
    assert got["r0"].verify_ms.predicted == pytest.approx(off["r0"].verify_ms.predicted)
    assert gated["r1"].verify_ms.predicted == pytest.approx(off["r1"].verify_ms.predicted)
    for later in ("r1", "r2"):
        assert got[later].contention_verify == pytest.approx(v_ratio)
        assert got[later].contention_draft == pytest.approx(d_ratio)
        assert got[later].verify_ms.predicted == pytest.approx(
            v_ratio * (off[later].verify_ms.predicted or 0.0)
        )
        assert got[later].verify_ms.predicted == pytest.approx(got[later].verify_ms.measured)
    assert got["r2"].contention is not None
    assert "mean of 2 earlier runs' ratios" in got["r2"].contention.verify.reason


def test_runs_rule_reads_only_the_runs_of_the_last_hour(store: ProfileStore) -> None:
    """A store keeps every run it was given: a run from yesterday says nothing about the
    host today, so ``runs`` levels only by runs that ended within RUNS_WINDOW_S before."""
    from datetime import UTC, datetime, timedelta

    from configspec.loop.contention import RUNS_WINDOW_S

    t0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    run = run_record(4, 10.0, 500.0, 3)

    def at(name: str, when: datetime) -> RunRecord:
        prov = run.provenance.model_copy(update={"created_at": when})
        return run.model_copy(update={"run_id": name, "provenance": prov})

    gap = timedelta(seconds=RUNS_WINDOW_S + 60)
    runs = [at("old", t0), at("new", t0 + gap), at("next", t0 + gap + timedelta(minutes=1))]
    got = {r.run_id: r for r in validate(store, runs=runs).rows}
    off = {r.run_id: r for r in validate(store, runs=runs, contention_rule="off").rows}
    # "new" started more than the window after "old" ended: raw profiles, as a first run
    assert got["new"].verify_ms.predicted == pytest.approx(off["new"].verify_ms.predicted)
    assert got["new"].contention is not None
    assert "no earlier run" in got["new"].contention.verify.reason
    # "next" reads "new" (a minute before) and not "old"
    assert got["next"].contention is not None
    assert "mean of 1 earlier runs' ratios" in got["next"].contention.verify.reason
