"""``configspec plan``: the fleet file, the planner's feasibility and messages, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from configspec.cli.main import main
from configspec.errors import InvalidInput, ProfileMissing, SloInfeasible
from configspec.plan import load_fleet, parse_fleet, plan_fleet, plan_record
from configspec.search.space import Profiles, read_profiles
from configspec.store import ProfileStore

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "profiles"
FLEET = ROOT / "examples" / "fleet.yaml"


@pytest.fixture(scope="module")
def profiles() -> Profiles:
    return read_profiles(ProfileStore(EXAMPLES))


def fleet(**over: object) -> dict[str, object]:
    doc: dict[str, object] = yaml.safe_load(FLEET.read_text())
    doc.update(over)
    return doc


def with_class(index: int, **over: object) -> dict[str, object]:
    doc = fleet()
    classes = [dict(c) for c in doc["classes"]]  # type: ignore[attr-defined]
    classes[index].update(over)
    doc["classes"] = classes
    return doc


def test_example_fleet_meets_every_slo(profiles: Profiles) -> None:
    spec = load_fleet(FLEET)
    plan = plan_fleet(spec, profiles)
    i = plan.main
    assert plan.feasible[i] and plan.replicas[i] >= 1
    for c, cls in enumerate(spec.classes):
        assert plan.goodput_tok_s[i, c] >= cls.min_goodput_tok_s * (1 - 1e-6)
        assert cls.max_p95_itl_ms is not None
        assert plan.p95_itl_ms[i, c] <= cls.max_p95_itl_ms * (1 + 1e-6)
    # one replica fewer misses an SLO: the count is the smallest that works
    with pytest.raises(SloInfeasible, match=r"raise verifier\.max_replicas"):
        plan_fleet(
            parse_fleet(fleet(verifier={**spec.verifier.model_dump(),
                                        "max_replicas": int(plan.replicas[i]) - 1})),
            profiles,
        )  # fmt: skip
    # cost per 1M tokens: replicas billed per hour over the fleet's tokens per hour
    expect = plan.replicas[i] * 0.8 / (plan.fleet_goodput_tok_s[i] * 3600) * 1e6
    assert plan.cost_usd_per_mtok[i] == pytest.approx(expect)
    assert plan.shared_cost_usd_per_mtok[i] <= plan.cost_usd_per_mtok[i] * (1 + 1e-9)
    # stricter SLOs never need fewer replicas
    ok = plan.feasible
    assert (np.diff(plan.replicas[ok]) >= 0).all()


def test_infeasible_goodput_names_the_class_and_the_miss(profiles: Profiles) -> None:
    spec = parse_fleet(with_class(1, min_goodput_tok_s=40))
    with pytest.raises(SloInfeasible) as err:
        plan_fleet(spec, profiles)
    msg = str(err.value)
    assert "'pis'" in msg and "min_goodput_tok_s=40" in msg and "short" in msg
    assert "idle verifier" in msg and "\n" not in msg


def test_infeasible_latency_names_the_class_and_the_excess(profiles: Profiles) -> None:
    spec = parse_fleet(with_class(0, max_p95_itl_ms=20))
    with pytest.raises(SloInfeasible, match=r"'jetsons' cannot meet max_p95_itl_ms=20 .* over"):
        plan_fleet(spec, profiles)


def test_no_batch_dimension_plans_one_at_a_time(profiles: Profiles) -> None:
    doc = fleet(
        verifier={"target": "qwen2.5-7b-instruct", "price_usd_per_hour": 1.0},
        classes=[{"name": "j", "device": "jetson-orin-nano", "count": 20, "rtt_ms": 30,
                  "min_goodput_tok_s": 5}],
    )  # fmt: skip
    plan = plan_fleet(parse_fleet(doc), profiles)
    assert plan.max_batch == 1
    assert any("one-at-a-time" in w for w in plan.warnings)
    assert plan.goodput_tok_s[plan.main, 0] >= 5
    assert plan.candidates.drafters[0][int(plan.choice[plan.main, 0])].startswith("qwen")


def test_fleet_file_errors(tmp_path: Path, profiles: Profiles) -> None:
    with pytest.raises(InvalidInput, match=r"classes\.0\.rtt_msx"):
        parse_fleet(with_class(0, rtt_msx=3))
    with pytest.raises(InvalidInput, match="unique"):
        parse_fleet(with_class(1, name="jetsons"))
    with pytest.raises(InvalidInput, match=r"classes\.0\.count"):
        parse_fleet(with_class(0, count=0))
    bad = tmp_path / "bad.yaml"
    bad.write_text("verifier: [unclosed\n")
    with pytest.raises(InvalidInput, match="not valid YAML"):
        load_fleet(bad)
    with pytest.raises(ProfileMissing, match="does not exist"):
        load_fleet(tmp_path / "none.yaml")
    with pytest.raises(ProfileMissing, match=r"'jetsons'.*no device profile"):
        plan_fleet(parse_fleet(with_class(0, device="nano-x")), profiles)
    with pytest.raises(ProfileMissing, match="no verification profile"):
        plan_fleet(parse_fleet(fleet(verifier={"target": "gpt", "price_usd_per_hour": 1})),
                   profiles)  # fmt: skip


def test_record_is_json_and_labelled(profiles: Profiles) -> None:
    rec = plan_record(plan_fleet(load_fleet(FLEET), profiles))
    text = json.dumps(rec)
    doc = json.loads(text)
    assert doc["plan"]["feasible"] and doc["plan"]["replicas"] >= 1
    assert {c["class"] for c in doc["plan"]["classes"]} == {"jetsons", "pis"}
    assert doc["sources"]["verification"] == ["illustrative"]
    assert len(doc["tradeoff"]) == 6


def test_cli_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "plan.json"
    png = tmp_path / "plan.png"
    code = main(["plan", "--fleet", str(FLEET), "--profiles", str(EXAMPLES),
                 "--json", str(out), "--plot", str(png)])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "verifier replicas" in printed and "Illustrative profiles" in printed
    assert json.loads(out.read_text())["kind"] == "fleet_plan"
    assert png.stat().st_size > 10_000
    assert main(["plan", "--fleet", str(FLEET), "--profiles", str(EXAMPLES), "--json", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["plan"]["feasible"]


def test_cli_infeasible_is_one_line_and_non_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(with_class(1, min_goodput_tok_s=40)))
    code = main(["plan", "--fleet", str(path), "--profiles", str(EXAMPLES)])
    assert code == SloInfeasible.exit_code != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "'pis'" in err


def test_max_batch_above_the_profile_is_capped(profiles: Profiles) -> None:
    doc = fleet(verifier={"target": "gemma-3-27b-it", "price_usd_per_hour": 0.8, "max_batch": 64})
    plan = plan_fleet(parse_fleet(doc), profiles)
    assert plan.max_batch == 32
    assert any("above the largest profiled batch (32)" in w for w in plan.warnings)


@pytest.mark.parametrize("gather", ["sync", "continuous"])
def test_heterogeneous_lockstep_fleet_meets_every_slo_under_the_solve(gather: str) -> None:
    """bench_plan's fleet (10 classes × 50 candidates, RTT 10..150 ms, SLOs 3..7.5 tok/s):
    under the sync gather the old planner chose under an MVA view that ignored the
    lockstep its solve applied, and raised SloInfeasible calling 22.4 tok/s "short" of 4.5
    (continuous: 19.1 tok/s "short" of 6). Each class now has its own pool, and every
    class of the plan meets its SLOs when that pool is solved again outside the planner."""
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_plan

    from configspec.model.fleet import solve_fleet
    from configspec.plan.candidates import batch_curve

    profiles = bench_plan.synthetic_profiles()
    doc = bench_plan.fleet_doc()
    doc["verifier"] = {**doc["verifier"], "gather": gather}  # type: ignore[dict-item]
    spec = parse_fleet(doc)
    plan = plan_fleet(spec, profiles)
    i = plan.main
    assert plan.feasible[i] and plan.pool_replicas is not None
    assert plan.replicas[i] == plan.pool_replicas[i].sum() <= spec.verifier.max_replicas
    cands = plan.candidates
    verification = next(v for v in profiles.verifications if v.target == spec.verifier.target)
    curve, b_max, _ = batch_curve(verification, int(cands.k[cands.valid].max()),
                                  spec.context_tokens, spec.verifier.max_batch)  # fmt: skip
    for c, cls in enumerate(spec.classes):
        m = int(plan.choice[i, c])
        pool = int(plan.pool_replicas[i, c])
        sol = solve_fleet(cls.count / pool, cands.think_ms[c, m], cands.positions[c, m],
                          cands.tokens_per_round[c, m], curve, b_max, gather=gather,
                          drafted_weights=cands.drafted_weights[c, m])  # fmt: skip
        assert sol.goodput_tok_s[0, 0] == pytest.approx(plan.goodput_tok_s[i, c])
        assert sol.goodput_tok_s[0, 0] >= cls.min_goodput_tok_s * (1 - 1e-6), cls.name
        assert cls.max_p95_itl_ms is not None
        assert sol.p95_round_ms[0, 0] <= cls.max_p95_itl_ms * (1 + 1e-6), cls.name
        # the pool is the smallest: one replica fewer, no candidate of the class meets both
        if pool > 1:
            fewer = solve_fleet(cls.count / (pool - 1), cands.think_ms[c], cands.positions[c],
                                cands.tokens_per_round[c], curve, b_max, gather=gather,
                                drafted_weights=cands.drafted_weights[c][None])  # fmt: skip
            meets = ((fewer.goodput_tok_s >= cls.min_goodput_tok_s * (1 - 1e-9))
                     & (fewer.p95_round_ms <= cls.max_p95_itl_ms * (1 + 1e-9)))  # fmt: skip
            assert not (meets[0] & cands.valid[c]).any(), cls.name


def test_sync_infeasible_message_never_calls_a_met_floor_short() -> None:
    """With too few replicas allowed, the one line names a class and a real miss."""
    import re
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_plan

    doc = bench_plan.fleet_doc()
    doc["verifier"] = {**doc["verifier"], "max_replicas": 8}  # type: ignore[dict-item]
    with pytest.raises(SloInfeasible) as err:
        plan_fleet(parse_fleet(doc), bench_plan.synthetic_profiles())
    msg = str(err.value)
    assert "\n" not in msg and "raise verifier.max_replicas" in msg
    short = re.search(r"min_goodput_tok_s=([\d.]+) .* gives ([\d.]+) tok/s per device", msg)
    if short:
        assert float(short.group(2)) < float(short.group(1))


def test_a_drafter_of_varying_width_is_charged_its_padded_batched_pass() -> None:
    """Two candidates alike but for the widths their rounds draft: K = 4 always (5
    positions), or 0 or 4 at even odds (3 positions on average). One client pays the mean
    of its passes; a pass of 8 pads every block to the widest, so the 0-or-4 drafter pays
    nearly the full width there, not the pass at its mean width as `plan` used to read."""
    from configspec.model.fleet import BatchLatency, padded_pass_ms
    from configspec.plan.candidates import Candidates
    from configspec.plan.search import _class_demand, _pool_solve

    curve = BatchLatency.linear(20.0, 4.0, 2.0, 8)
    split = np.array([0.5, 0.0, 0.0, 0.0, 0.5])
    cands = Candidates(
        class_names=["a"], devices=["d"], counts=np.array([8.0]),
        min_goodput_tok_s=np.array([1.0]), max_p95_ms=np.array([np.inf]),
        think_ms=np.array([[30.0, 30.0]]), positions=np.array([[5.0, 3.0]]),
        drafted_weights=np.stack([np.eye(5)[4], split])[None],
        tokens_per_round=np.array([[3.0, 2.0]]), alone_goodput_tok_s=np.array([[40.0, 30.0]]),
        k=np.array([[4, 4]]), valid=np.array([[True, True]]),
        drafters=[["m", "ngram"]], quantizations=[["q", ""]], output_share=0.5,
    )  # fmt: skip
    one = _pool_solve(cands, curve, 8, np.array([[1.0]]), None, "sync")
    eight = _pool_solve(cands, curve, 8, np.array([[8.0]]), None, "sync")
    assert one.pass_ms[0, 0, 1] == pytest.approx(0.5 * curve(1, 1) + 0.5 * curve(1, 5))
    assert eight.pass_ms[0, 0, 0] == pytest.approx(curve(8, 5))
    padded = padded_pass_ms(curve, 8.0, split, 0.5)
    assert eight.pass_ms[0, 0, 1] == pytest.approx(padded)
    assert curve(8, 3) < padded < curve(8, 5)
    demand = _class_demand(cands, curve, 8, np.array([1.0]))
    per_token_ms = min(curve(8, 5) / 8 / 3.0, padded / 8 / 2.0)  # a full pass's share
    assert demand[0, 0] == pytest.approx(8 * 1.0 * per_token_ms / 1e3)


def _with_ngram(tmp_path: Path) -> Profiles:
    """The example profiles plus a model-free drafter on the Raspberry Pi: its rounds
    draft all K or nothing at even odds (drafted K / 2 at every K) and it costs ~0 ms."""
    import shutil

    root = tmp_path / "profiles"
    shutil.copytree(EXAMPLES, root)
    dev_path = root / "device" / "rpi5-8gb.json"
    dev = json.loads(dev_path.read_text())
    cheap = {"mean": 0.02, "ci_low": 0.02, "ci_high": 0.02, "n": 0, "source": "illustrative"}
    dev["drafters"].append({
        "drafter": "ngram", "family": "gemma3", "quantization": None, "model_sha256": None,
        "memory_bytes": 0, "prefill_tokens_per_s": None,
        "draft_power_w": {**cheap, "mean": 0.5, "ci_low": 0.5, "ci_high": 0.5},
        "latency": [{"k": k, "context_tokens": c, "per_token_ms": cheap}
                    for k in (1, 4, 8) for c in (0, 512)],
    })  # fmt: skip
    dev_path.write_text(json.dumps(dev))
    al_path = root / "alignment" / "gemma-3-27b-it.json"
    al = json.loads(al_path.read_text())

    def est(x: float) -> dict[str, object]:
        return {"mean": x, "ci_low": x, "ci_high": x, "n": 8, "source": "illustrative"}

    # half the rounds draft all K, accepted at 0.8 a position; the rest draft nothing
    by_k = [{"k": k, "accepted_fraction": est(0.5 * sum(0.8**i for i in range(1, k + 1)) / k),
             "tokens_per_round": est(1 + 0.5 * sum(0.8**i for i in range(1, k + 1))),
             "drafted_per_round": est(0.5 * k)} for k in range(1, 9)]  # fmt: skip
    al["entries"].append({"drafter": "ngram", "domain": "all", "temperature": 0.0,
                          "by_k": by_k, "n_prompts": 8, "n_tokens": 512})  # fmt: skip
    al_path.write_text(json.dumps(al))
    return read_profiles(ProfileStore(root))


@pytest.mark.parametrize("gather", ["sync", "mva"])
def test_a_model_free_drafter_is_planned_with_its_padded_pass(tmp_path: Path, gather: str) -> None:
    """Under the lockstep gathers (a pool per class) and under mva (one shared pool, where
    a pass mixes the classes' widths by queue share)."""
    from configspec.model.fleet import padded_pass_ms
    from configspec.plan.candidates import batch_curve

    profiles = _with_ngram(tmp_path)
    doc = with_class(1, drafters=["ngram"], cloud_only=False, min_goodput_tok_s=4.0)
    doc["verifier"] = {**doc["verifier"], "gather": gather}  # type: ignore[dict-item]
    plan = plan_fleet(parse_fleet(doc), profiles)
    cands = plan.candidates
    c = plan.candidates.class_names.index("pis")
    assert set(cands.drafters[c]) <= {"ngram", ""}
    weights = cands.drafted_weights[c][cands.valid[c]]
    assert np.allclose(weights[:, 0], 0.5)  # half the rounds draft nothing, at every K
    assert any("output_share = 0" in w for w in plan.warnings)
    i, m = plan.main, int(plan.choice[plan.main, c])
    verification = next(v for v in profiles.verifications if v.target == "gemma-3-27b-it")
    curve, _, _ = batch_curve(verification, int(cands.k[cands.valid].max()), 512, 16)
    padded = padded_pass_ms(curve, plan.batch[i, c], cands.drafted_weights[c, m])
    mean_width = curve(plan.batch[i, c], cands.positions[c, m])
    assert padded > mean_width  # the pad to the widest costs more than the mean width
    # a priced share: no warning; padding costs less, so no more replicas. Under mva the
    # best response charges a round the padding it makes its pass-mates pay: without that
    # charge the Pis took n-gram K = 8 at share 0.7 and the fleet 41 replicas against 31
    share = fleet(verifier={**doc["verifier"], "output_share": 0.7})  # type: ignore[dict-item]
    share["classes"] = doc["classes"]
    priced = plan_fleet(parse_fleet(share), profiles)
    assert not any("output_share" in w for w in priced.warnings)
    assert priced.replicas[priced.main] <= plan.replicas[i]


def test_a_class_with_fewer_devices_than_replicas_plans_under_mva(profiles: Profiles) -> None:
    """A shared pool of more replicas than a class has devices holds a fraction of a device
    of it per replica; the pass mix then took out more than the class's queue and the
    weights went negative (a traceback from ``plan`` before 2026-12-01)."""
    doc = with_class(0, count=2)
    doc["verifier"] = {**doc["verifier"], "gather": "mva"}  # type: ignore[dict-item]
    plan = plan_fleet(parse_fleet(doc), profiles)
    i = plan.main
    assert plan.feasible[i] and plan.replicas[i] > 2  # 2 devices over more replicas
    assert np.isfinite(plan.goodput_tok_s[i]).all()


def test_arrival_mix_never_goes_negative_for_a_fractional_class() -> None:
    from configspec.model.fleet import arrival_mix

    q = np.array([[0.3, 2.0]])  # requests at the verifier per class
    n = np.array([[0.4, 10.0]])  # the first class has 0.4 of a device here
    chosen = np.array([[[0.0, 1.0, 0.0], [0.5, 0.0, 0.5]]])
    own = np.array([[[0.0, 0.0, 1.0], [0.0, 1.0, 0.0]]])
    others = np.maximum(q.sum(-1, keepdims=True) - q / n, 0.0)
    mix = arrival_mix(q, n, chosen, own, others)
    assert (mix >= 0).all() and (mix.sum(-1) > 0).all()
    # a whole class (n >= 1) is unchanged: its own request out, the others in
    whole = arrival_mix(q, np.array([[1.0, 10.0]]), chosen, own, others)
    rest = 0.3 * chosen[0, 0] + 2.0 * chosen[0, 1] - 0.2 * chosen[0, 1]
    assert whole[0, 1] == pytest.approx((rest + own[0, 1]) / (others[0, 1] + 1.0))
