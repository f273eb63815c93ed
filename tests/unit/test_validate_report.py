"""``validate`` and ``report`` on the example profiles with run records built here.

The run records are synthetic (written by the test from the model's own per-round figures
plus a known distortion), so the validation must recover that distortion exactly; the
real runtime is exercised by the slow quickstart test and ``benchmarks/bench_validate.py``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from _run_records import DRAFTER, TARGET, run_record

from configspec.cli.main import main
from configspec.config import Provenance, RoundTiming, RunConfig, RunRecord, RunTotals
from configspec.errors import InvalidInput, ProfileMissing
from configspec.loop.validate import parse_config, validate
from configspec.serving.client import Generation
from configspec.serving.record import build_run_record
from configspec.store import ProfileStore

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "profiles"


@pytest.fixture()
def profiles(tmp_path: Path) -> Path:
    dest = tmp_path / "profiles"
    shutil.copytree(EXAMPLES, dest)
    return dest


def test_parse_config() -> None:
    c = parse_config("gemma-3-270m-q4_0:4@30")
    assert (c.drafter, c.k, c.added_rtt_ms) == ("gemma-3-270m-q4_0", 4, 30.0)
    assert parse_config("ngram").k is None
    c = parse_config("ngram:2-4:3@5.5")  # the drafter is any drafter spec
    assert (c.drafter, c.k, c.added_rtt_ms) == ("ngram:2-4", 3, 5.5)
    assert (parse_config("ngram:2-4").drafter, parse_config("ngram:2-4").k) == ("ngram:2-4", None)
    for bad in ("q4:x", "q4:", ":4", "q4@", "q4@x", "q4:4@30@1"):
        with pytest.raises(InvalidInput, match="DRAFTER"):
            parse_config(bad)


def test_no_runs_says_how_to_make_them(profiles: Path) -> None:
    with pytest.raises(ProfileMissing, match="configspec quickstart"):
        validate(ProfileStore(profiles))


def test_missing_alignment_names_the_profile_command(profiles: Path) -> None:
    shutil.rmtree(profiles / "alignment")
    with pytest.raises(ProfileMissing, match="configspec profile alignment"):
        validate(ProfileStore(profiles))
    assert main(["validate", "--profiles", str(profiles)]) == ProfileMissing.exit_code


def test_validation_recovers_a_known_error(profiles: Path) -> None:
    store = ProfileStore(profiles)
    # first learn what the model predicts, then write runs 10 % slower than that
    store.save_run(run_record(4, 50.0, 500.0, 3))
    first = validate(store).rows[0]
    predicted_round_ms = first.round_ms.predicted
    predicted_tpr = first.tokens_per_round.predicted
    assert predicted_round_ms is not None and predicted_tpr is not None
    (profiles / "runs" / "run-k4-rtt50.json").unlink()
    accepted = round(predicted_tpr) - 1
    store.save_run(run_record(4, 50.0, predicted_round_ms * 1.1, accepted))
    row = validate(store).rows[0]
    timing = row.objectives["goodput_timing"]
    # the context (prompt + half the output) moved a little with the output length
    assert timing.error == pytest.approx(0.1, abs=0.005)
    assert row.objectives["energy"].error is None  # no meter in the run
    assert row.objectives["cost"].error is not None


@pytest.mark.parametrize("source", ["measured", "estimated"])
def test_only_metered_run_energy_is_compared_with_the_model(profiles: Path, source: str) -> None:
    store = ProfileStore(profiles)
    rec = run_record(4, 50.0, 500.0, 3)
    rounds = [r.model_copy(update={"energy_j": 2.0}) for r in rec.rounds]
    gen = Generation(
        prompt_tokens=[1] * 100, tokens=[5] * 80, text="", rounds=rounds, decode_s=10.0,
        prefill_ms=1.0, reconnects=0, stopped_by="max_tokens", target_name=TARGET,
        target_family="gemma3",
    )  # fmt: skip
    store.save_run(
        build_run_record(
            gen, rec.config, run_id="run-energy", energy_source=source, energy_note="meter note"
        )
    )
    energy = validate(store).rows[0].objectives["energy"]
    if source == "measured":
        assert energy.error is not None and energy.measured_source == "measured"
    else:  # an estimate is a model too: never compared as if it were a measurement
        assert energy.error is None and energy.measured is None
        assert energy.measured_source.startswith("not measured (estimated")


def test_validate_cli_json_and_filters(
    profiles: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = ProfileStore(profiles)
    store.save_run(run_record(2, 0.0, 300.0, 2))
    store.save_run(run_record(4, 50.0, 500.0, 3))
    out = tmp_path / "v.json"
    code = main(["validate", "--profiles", str(profiles), "-c", f"{DRAFTER}:4", "--json", str(out)])
    assert code == 0
    data = json.loads(out.read_text())
    assert [r["k"] for r in data["runs"]] == [4]
    assert data["summary"]["goodput"]["n"] == 1
    printed = capsys.readouterr().out
    assert "measured" in printed and "modelled" in printed
    assert main(["validate", "--profiles", str(profiles), "-c", "nope:3"]) == InvalidInput.exit_code


def test_report_writes_html_with_every_image(profiles: Path, tmp_path: Path) -> None:
    from configspec.report.build import write_report

    store = ProfileStore(profiles)
    store.save_run(run_record(4, 50.0, 500.0, 3))
    path = write_report(store, tmp_path / "report")
    page = path.read_text()
    pngs = sorted(p.name for p in path.parent.glob("*.png"))
    assert pngs == ["acceptance.png", "goodput_vs_k.png", "optimum_k.png", "pareto.png"]
    assert page.count("data:image/png;base64,") == 4
    for word in ("Provenance", "Validation", "modelled", "measured", "illustrative"):
        assert word in page


def test_report_labels_estimated_energy(profiles: Path, tmp_path: Path) -> None:
    from configspec.report.build import write_report

    plain = write_report(ProfileStore(profiles), tmp_path / "plain").read_text()
    assert "Tokens/J are estimated" not in plain and "Tokens/J marked" not in plain
    for path in (profiles / "device").glob("*.json"):
        doc = json.loads(path.read_text())
        for d in doc["drafters"]:
            if d.get("draft_power_w"):
                d["draft_power_w"]["source"] = "estimated"
        if doc.get("idle_power_w"):
            doc["idle_power_w"]["source"] = "estimated"
        path.write_text(json.dumps(doc))
    page = write_report(ProfileStore(profiles), tmp_path / "report").read_text()
    assert "Tokens/J are estimated" in page  # the Pareto caption
    assert "Tokens/J marked <span class='tag'>estimated</span>" in page  # the optima
    assert "illustrative power model" in page


def test_optimum_k_plot_says_when_the_optimum_is_the_largest_k(profiles: Path) -> None:
    from configspec.model.presets import get_preset
    from configspec.report.figures import optimum_k_grid
    from configspec.search.evaluate import link_from_network
    from configspec.search.space import SearchSettings, read_profiles, space_from_profiles

    loaded = read_profiles(ProfileStore(profiles))
    preset = get_preset("configspec")
    link = link_from_network(loaded.network)
    titles = {}
    for k_max in (2, 8):
        space = space_from_profiles(loaded, preset, SearchSettings(k_max=k_max))
        code = space.drafter_names.index(DRAFTER)
        fig = optimum_k_grid(space, link, preset, code, np.linspace(0, 200, 5), np.ones(1))
        titles[k_max] = fig.axes[0].get_title()
    assert "K=2 is the largest K searched" in titles[2]
    assert "largest K searched" not in titles[8]


def test_report_on_missing_profiles_names_the_command(tmp_path: Path) -> None:
    assert main(["report", "--profiles", str(tmp_path), "--out", str(tmp_path / "r")]) == 4
    assert not (tmp_path / "r" / "report.html").exists()


def test_provenance_is_required_on_run_records() -> None:
    with pytest.raises(ValueError):
        RunRecord(  # type: ignore[call-arg]
            run_id="x", config=RunConfig(drafter="d", target="t", k=1), rounds=[],
            totals=RunTotals(rounds=0, generated_tokens=0, draft_tokens=0, accepted_tokens=0,
                             decode_s=0, prefill_ms=0, draft_ms=0, verify_ms=0, network_ms=0),
            goodput_tokens_per_s={"mean": 0.0},
        )  # fmt: skip
    assert Provenance.here("measured").source == "measured"


def test_proxied_runs_use_the_injected_rtt_only(profiles: Path) -> None:
    store = ProfileStore(profiles)
    real = run_record(4, 10.0, 500.0, 3)
    proxied = real.model_copy(
        update={
            "run_id": "proxied",
            "provenance": Provenance.here(
                "measured", settings={"link": "configspec delay proxy, no bandwidth cap"}
            ),
        }
    )
    rows = {r.run_id: r for r in validate(store, runs=[real, proxied]).rows}
    network_rtt_ms = store.network().rtt_ms
    real_link = rows[real.run_id].link_ms.predicted
    proxied_link = rows["proxied"].link_ms.predicted
    assert real_link is not None and proxied_link is not None
    # the real link adds the stored RTT and serialisation at the stored bandwidth
    assert real_link - proxied_link > network_rtt_ms


def test_tail_rounds_cut_by_max_tokens_are_left_out_of_steady_state(profiles: Path) -> None:
    from configspec.loop.validate import steady_rounds

    run = run_record(4, 50.0, 500.0, 3, n=10)
    rounds = [r.model_copy(update={"k_limit": 4}) for r in run.rounds]
    # the last two rounds of the generation drafted fewer than K (max_tokens was near)
    # and were fast: they must not move the steady-state figures
    rounds[-2:] = [
        r.model_copy(update={"k": 1, "k_limit": 1, "accepted": 1, "round_ms": 100.0})
        for r in rounds[-2:]
    ]
    run = run.model_copy(update={"rounds": rounds})
    steady, tail = steady_rounds(run)
    assert (len(steady), tail) == (8, 2)
    store = ProfileStore(profiles)
    store.save_run(run)
    row = validate(store).rows[0]
    assert (row.rounds, row.tail_rounds) == (8, 2)
    assert row.objectives["goodput"].measured == pytest.approx(4 * 1e3 / 500.0)
    assert row.objectives["goodput_end_to_end"].measured == run.goodput_tokens_per_s.mean
    # records without k_limit (older runs) keep every round
    legacy = run_record(4, 50.0, 500.0, 3, n=10)
    assert steady_rounds(legacy) == (legacy.rounds, 0)


def test_overhead_is_kept_per_rtt_and_matched_on_revalidation(profiles: Path) -> None:
    store = ProfileStore(profiles)
    old = json.loads((profiles / "network.json").read_text())
    assert "round_overhead_by_rtt" not in old  # files written before it still read
    net = store.network().with_overheads({0.0: 2.0, 100.0: 9.0})
    net = net.with_overheads({100.0: 8.0})  # a later run at one RTT replaces only that one
    assert [(p.added_rtt_ms, p.round_overhead_ms) for p in net.round_overhead_by_rtt] == [
        (0.0, 2.0),
        (100.0, 8.0),
    ]
    assert net.overhead_at(100.0) == 8.0 and net.overhead_at(30.0) == net.round_overhead_ms
    store.save_network(net)
    assert ProfileStore(profiles).network() == net
    store.save_run(run_record(4, 0.0, 500.0, 3))
    store.save_run(run_record(4, 100.0, 500.0, 3))
    rows = {r.added_rtt_ms: r for r in validate(store).rows}
    low, high = rows[0.0].link_ms.predicted, rows[100.0].link_ms.predicted
    assert low is not None and high is not None
    # the predicted link + overhead differs by the injected RTT and the per-RTT overheads
    assert high - low == pytest.approx(100.0 + 8.0 - 2.0, abs=1e-6)


@pytest.mark.parametrize("billed", ["positions", "draft_tokens"])
@pytest.mark.parametrize("k", [0, 1, 4])
def test_measured_cost_agrees_with_the_model_cost_at_every_k(billed: str, k: int) -> None:
    """validate prices measured rounds with the model's own cost functions: K=0 rounds
    (cloud-only) bill their one generated token under either rule (they used to bill 0
    under ``draft_tokens``, which made the measured figure disagree with the model)."""
    from tests.unit._model_factory import verification

    from configspec.config import GpuTimePrice, PerTokenPrice
    from configspec.loop.validate import measured_cost
    from configspec.model.cost import gpu_time_cost_usd, per_token_cost_usd

    rounds = [
        RoundTiming(
            round=i, k=k, accepted=min(k, 1), bonus=k <= 1, draft_ms=1.0, verify_ms=40.0,
            server_ms=40.0, network_ms=2.0, round_ms=43.0,
        )
        for i in range(10)
    ]  # fmt: skip
    tokens_per_round = min(k, 1) + 1
    per_token = PerTokenPrice(price_usd_per_million_tokens=2.0, billed=billed)  # type: ignore[arg-type]
    est = measured_cost(rounds, verification(price=per_token))
    model_usd = float(per_token_cost_usd(k, 2.0, billed == "draft_tokens"))
    assert est is not None and est.mean == pytest.approx(tokens_per_round / model_usd)
    gpu = GpuTimePrice(price_usd_per_hour=3.0, overhead_ms_per_round=5.0)
    est = measured_cost(rounds, verification(price=gpu))
    model_usd = float(gpu_time_cost_usd(40.0, 3.0, 5.0))
    assert est is not None and est.mean == pytest.approx(tokens_per_round / model_usd)


def test_validate_table_reads_at_80_columns(
    profiles: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from configspec.cli import loop as loop_cli

    store = ProfileStore(profiles)
    store.save_run(run_record(4, 50.0, 500.0, 3))
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setattr(loop_cli.console, "width", 80)
    assert main(["validate", "--profiles", str(profiles)]) == 0
    table = capsys.readouterr().out.split("\n  goodput:")[0].splitlines()
    assert max(map(len, table)) <= 80
    assert any(line.strip().startswith(DRAFTER) for line in table)  # whole drafter names
    assert any("K=4 +50ms" in line for line in table)


def _adaptiverun_record() -> RunRecord:
    from configspec.config import KChoice

    base = run_record(4, 50.0, 500.0, 3)
    rounds = [
        r.model_copy(
            update={
                "choice": KChoice(
                    k=2 + i % 3, objective_value=8.0, tokens_per_round=3.0, round_ms=480.0,
                    rtt_ms=50.0 + i, draft_ms_per_token=30.0, verify_ms=150.0,
                    acceptance=[0.8, 0.7, 0.6, 0.5], rounds_seen=i,
                )
            }
        )
        for i, r in enumerate(base.rounds)
    ]  # fmt: skip
    config = base.config.model_copy(
        update={"k_policy": "adaptive", "k_min": 1, "k_max": 4, "objective": "goodput"}
    )
    return base.model_copy(update={"rounds": rounds, "config": config, "run_id": "auto-1"})


def test_report_plots_k_and_estimates_of_adaptive_runs(profiles: Path, tmp_path: Path) -> None:
    from configspec.report.build import write_report

    store = ProfileStore(profiles)
    store.save_run(run_record(4, 50.0, 500.0, 3))
    store.save_run(_adaptiverun_record())
    path = write_report(store, tmp_path / "report")
    pngs = sorted(p.name for p in path.parent.glob("*.png"))
    assert "adaptive_auto-1.png" in pngs
    assert "--k auto" in path.read_text()
    # the adaptive run is shown over time, not validated as a K=4 configuration
    result = validate(store)
    assert [r.k for r in result.rows] == [4]
    assert any("chose K per round" in w for w in result.warnings)


def test_one_domain_runs_use_their_domains_acceptance(profiles: Path) -> None:
    # a 'code' entry with half the pooled acceptance, profiled for the drafter
    path = profiles / "alignment" / f"{TARGET}.json"
    doc = json.loads(path.read_text())
    pooled = next(e for e in doc["entries"] if e["drafter"] == DRAFTER)
    code = json.loads(json.dumps(pooled))
    code["domain"] = "code"
    for est in [e for e in [code["alpha"], *(code["per_position"] or [])] if e]:
        for key in ("mean", "ci_low", "ci_high"):
            est[key] = est[key] * 0.5
    doc["entries"].append(code)
    path.write_text(json.dumps(doc))
    store = ProfileStore(profiles)

    def in_domains(domains: list[str], run_id: str) -> RunRecord:
        rec = run_record(4, 50.0, 500.0, 3)
        prov = Provenance.here("measured", settings={"domains": domains})
        return rec.model_copy(update={"run_id": run_id, "provenance": prov})

    runs = [in_domains(["code"], "code"), in_domains(["chat"], "chat"),
            in_domains(["chat", "code"], "mixed")]  # fmt: skip
    rows = {r.run_id: r for r in validate(store, runs=runs, acceptance_domain="run").rows}
    assert rows["code"].acceptance_domain == "code"
    # a domain alignment never saw, and a mix, are modelled with the pooled entry
    assert rows["chat"].acceptance_domain == rows["mixed"].acceptance_domain == "all"
    code_e = rows["code"].tokens_per_round.predicted
    pooled_e = rows["chat"].tokens_per_round.predicted
    assert code_e is not None and pooled_e is not None and code_e < pooled_e - 0.5
    assert rows["mixed"].tokens_per_round.predicted == pytest.approx(pooled_e)
    # the default pools every run
    forced = validate(store, runs=runs).rows
    assert {r.acceptance_domain for r in forced} == {"all"}
    assert all(r.tokens_per_round.predicted == pytest.approx(pooled_e) for r in forced)


def _add_per_prompt(profiles: Path, accept_p: tuple[float, ...]) -> None:
    """Give the drafter's pooled entry per-prompt records (prompts accepting with
    ``accept_p``), as `profile alignment` now stores them."""
    from configspec.profiling.acceptance import prompt_stats
    from configspec.profiling.alignment import prompt_record

    path = profiles / "alignment" / f"{TARGET}.json"
    doc = json.loads(path.read_text())
    pooled = next(e for e in doc["entries"] if e["drafter"] == DRAFTER and e["domain"] == "all")
    rng = np.random.default_rng(5)
    pooled["per_prompt"] = [
        prompt_record(f"p{i}", "chat", prompt_stats((rng.random((64, 8)) < p) * 1.0, 8, 1))
        .model_dump(mode="json")
        for i, p in enumerate(accept_p)
    ]  # fmt: skip
    path.write_text(json.dumps(doc))


def test_runs_get_a_prediction_interval_and_say_whether_they_fell_inside(
    profiles: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from configspec.loop.prediction import pooled_by_config

    store = ProfileStore(profiles)
    store.save_run(run_record(4, 50.0, 500.0, 3))
    assert validate(store).rows[0].prediction is None  # profile without per-prompt records
    assert main(["validate", "--profiles", str(profiles)]) == 0
    assert "—" in capsys.readouterr().out
    _add_per_prompt(profiles, (0.3, 0.5, 0.6, 0.7, 0.8, 0.9))
    first = validate(store).rows[0]
    g = first.objectives["goodput"]
    assert first.prediction is not None and g.predicted is not None and g.measured is not None
    # a run decoding exactly the modelled E(K) at the modelled round time: inside
    (profiles / "runs" / "run-k4-rtt50.json").unlink()
    round_ms = first.round_ms.predicted
    assert round_ms is not None
    store.save_run(run_record(4, 50.0, round_ms, 3).model_copy(update={"run_id": "near"}))
    store.save_run(run_record(4, 50.0, round_ms * 4, 3).model_copy(update={"run_id": "slow"}))
    result = validate(store)
    rows = {r.run_id: r for r in result.rows}
    pred = rows["near"].prediction
    assert pred is not None and pred.estimator == "cluster_bootstrap_prompts"
    assert pred.n_profiled_prompts == 6 and pred.n_run_prompts == 1
    lo90, hi90 = pred.goodput_tok_s["90%"]
    lo95, hi95 = pred.goodput_tok_s["95%"]
    assert lo95 <= lo90 < hi90 <= hi95
    predicted = rows["near"].objectives["goodput"].predicted
    assert predicted is not None and lo90 <= predicted <= hi90
    assert rows["slow"].prediction is not None
    assert rows["slow"].prediction.goodput_inside == {"90%": False, "95%": False}
    counts = result.summary["goodput"].inside_prediction
    assert counts["90%"][1] == counts["95%"][1] == 2 and counts["95%"][0] <= 1
    assert main(["validate", "--profiles", str(profiles)]) == 0
    printed = capsys.readouterr().out
    assert "90% PI" in printed and "OUT" in printed and "prediction interval (90%: 1/2" in printed
    from configspec.report.build import write_report

    page = write_report(store, profiles.parent / "report").read_text()
    assert "goodput modelled 90% PI" in page and "prediction interval in 1/2" in page
    # both runs pooled: measured tokens over measured time, interval for both prompts
    (pooled,) = pooled_by_config(result.rows, ProfileStore(profiles).alignment_profiles())
    tokens = sum(r.rounds * (r.tokens_per_round.measured or 0) for r in result.rows)
    time_s = sum(r.rounds * (r.round_ms.measured or 0) / 1e3 for r in result.rows)
    assert pooled.n_runs == 2 and pooled.n_prompts == 2
    assert pooled.measured_tok_s == pytest.approx(tokens / time_s)
    assert pooled.error == pytest.approx(pooled.modelled_tok_s / pooled.measured_tok_s - 1)
    assert pooled.interval is not None and pooled.inside is not None
