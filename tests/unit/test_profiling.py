"""Device/verification profiling logic with fake drafters (real models: tests/integration)."""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from configspec.backends.base import DraftResult, ModelIdentity
from configspec.cli.main import main
from configspec.config import DeviceProfile
from configspec.errors import InvalidInput, ProfileError
from configspec.power import CpuTimeEstimator
from configspec.profiling import device as device_mod
from configspec.profiling.device import (
    DeviceProfiler,
    DeviceSweepSettings,
    build_context,
    check_profile_models,
)
from configspec.profiling.stats import repeat_until
from configspec.profiling.verification import VerificationProfiler, parse_price
from configspec.stats import relative_half_width, t975
from configspec.stats import student_t_mean as estimate
from configspec.store import ProfileStore, load_profile

IDENT = ModelIdentity(
    name="fake-q4_0",
    family="fake-family",
    architecture="llama",
    quantization="Q4_0",
    parameter_count=1000,
    context_length=4096,
    vocab_size=100,
    tokenizer_fingerprint="abc",
    file_sha256="a" * 64,
)


class FakeDrafter:
    """Busy-waits ``ms_per_token`` per drafted token; counts calls; "is killed" (raises
    KeyboardInterrupt) when asked to draft ``crash_at`` = (K, context length)."""

    def __init__(
        self,
        identity: ModelIdentity,
        ms_per_token: float,
        crash_at: tuple[int, int] | None = None,
    ):
        self.identity = identity
        self.ms = ms_per_token
        self.calls = 0
        self.crash_at = crash_at
        self.closed = False

    def tokenize(self, text: str, *, add_bos: bool = True) -> list[int]:
        return ([1] if add_bos else []) + [ord(c) % 100 for c in text]

    def detokenize(self, tokens: Sequence[int]) -> str:
        return ""

    def draft(self, context: Sequence[int], k: int, **_: object) -> DraftResult:
        self.calls += 1
        if (k, len(context)) == self.crash_at:
            raise KeyboardInterrupt("simulated kill")
        end = time.perf_counter() + self.ms * k / 1000
        while time.perf_counter() < end:  # busy wait: steadier than sleep
            pass
        return DraftResult(tokens=[5] * k, token_probs=[1.0] * k)

    def reset(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


SETTINGS = DeviceSweepSettings(
    k_max=3,
    context_tokens=(16, 32),
    threads=1,
    idle_s=0.2,
    point_budget_s=0.2,
    min_repeats=3,
    max_repeats=10,
)


def make_profiler(
    tmp_path: Path,
    drafters: dict[str, FakeDrafter],
    monkeypatch: pytest.MonkeyPatch,
    **kwargs: object,
) -> DeviceProfiler:
    kwargs.setdefault("settings", SETTINGS)
    profiler = DeviceProfiler(
        list(drafters),
        ProfileStore(tmp_path / "profiles"),
        device="dev",
        **kwargs,  # type: ignore[arg-type]
    )
    monkeypatch.setattr(
        profiler, "_identities", lambda: {s: d.identity for s, d in drafters.items()}
    )
    monkeypatch.setattr(profiler, "_open", lambda spec: drafters[spec])
    return profiler


def two_drafters(crash_at: tuple[int, int] | None = None) -> dict[str, FakeDrafter]:
    slow = dataclasses.replace(IDENT, name="fake-f16", quantization="F16", file_sha256="b" * 64)
    return {
        "fast": FakeDrafter(IDENT, 1.0),
        "slow": FakeDrafter(slow, 5.0, crash_at=crash_at),
    }


# ------------------------------------------------------------------ stats


def test_t_quantiles_and_estimate() -> None:
    assert t975(1) == pytest.approx(12.706)
    assert t975(21) == pytest.approx(2.086)  # conservative between table rows
    assert t975(500) == 1.96
    est = estimate([9.0, 10.0, 11.0])
    assert est.mean == 10.0 and est.n == 3
    assert est.high - est.mean == pytest.approx(4.303 * 1.0 / math.sqrt(3))
    assert relative_half_width([5.0]) == math.inf
    wide = estimate([0.1, 10.0])  # mean - half-width < 0: truncated at 0, never negative
    assert wide.ci_low == 0.0 and wide.mean == pytest.approx(5.05)


def test_repeat_until_converges_or_reports_budget() -> None:
    done = repeat_until(lambda: 10.0, min_repeats=5)
    assert done.converged and len(done.samples) == 5 and done.rel_half_width == 0.0
    values = iter([1.0, 100.0] * 1000)
    noisy = repeat_until(lambda: next(values), min_repeats=5, max_repeats=12, budget_s=60)
    assert not noisy.converged and len(noisy.samples) == 12 and noisy.rel_half_width > 0.05


# ------------------------------------------------------------------ device sweep


def test_device_sweep_produces_complete_profile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    drafters = two_drafters()
    meter = CpuTimeEstimator(idle_power_w=2.0, power_w_per_busy_core=1.0)
    profile, path, report = make_profiler(tmp_path, drafters, monkeypatch, meter=meter).run()
    assert path == tmp_path / "profiles" / "device" / "dev.json"
    loaded = load_profile(path, DeviceProfile)
    assert loaded == profile
    assert [d.drafter for d in profile.drafters] == ["fake-q4_0", "fake-f16"]
    for d in profile.drafters:
        assert {(p.k, p.context_tokens) for p in d.latency} == {
            (k, c) for k in (1, 2, 3) for c in (16, 32)
        }
        assert d.prefill_tokens_per_s is not None and d.prefill_tokens_per_s.mean > 0
        assert d.draft_power_w is not None and d.draft_power_w.source == "estimated"
        assert d.draft_power_w.mean > 2.0  # busy-waiting drafter burns CPU
    fast, slow = profile.drafters
    # wall-clock timing on a shared machine: compare the averages, not single points
    mean_fast = sum(p.per_token_ms.mean for p in fast.latency) / len(fast.latency)
    mean_slow = sum(p.per_token_ms.mean for p in slow.latency) / len(slow.latency)
    assert mean_fast >= 1.0 and mean_slow > 1.5 * mean_fast
    assert profile.idle_power_w is not None and profile.idle_power_w.source == "estimated"
    assert profile.meter is not None and profile.meter.name == "estimate"
    assert profile.device.threads == 1 and profile.device.cpu_model
    prov = profile.provenance
    assert prov.model_sha256 == {"fake-q4_0": "a" * 64, "fake-f16": "b" * 64}
    assert prov.settings["k_max"] == 3 and prov.settings["drafters"] == ["fast", "slow"]
    assert "estimated from CPU time" in prov.notes and prov.backend and prov.tool_version
    assert len(report.points) == 12 and report.resumed_points == 0
    assert not (tmp_path / "profiles" / "checkpoints" / "dev.json").exists()
    assert all(d.closed for d in drafters.values())


def test_interrupted_sweep_resumes_and_keeps_earlier_profile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ProfileStore(tmp_path / "profiles")
    first, path, _ = make_profiler(tmp_path, two_drafters(), monkeypatch).run()
    before = path.read_bytes()
    crashing = two_drafters(crash_at=(3, 32))
    with pytest.raises(KeyboardInterrupt):
        make_profiler(tmp_path, crashing, monkeypatch, restart=True).run()
    assert path.read_bytes() == before  # the earlier profile is untouched
    ckpt = json.loads(store.checkpoint_path("device-dev").read_text())
    fast_done = ckpt["state"]["drafters"]["fake-q4_0"]["done"]
    slow_points = len(ckpt["state"]["drafters"]["fake-f16"]["points"])
    assert fast_done and slow_points == 5
    resumed = two_drafters()
    profile, _, report = make_profiler(tmp_path, resumed, monkeypatch).run()
    assert resumed["fast"].calls == 0  # finished drafter not re-measured
    assert report.resumed_points == 6 + slow_points
    assert all(len(d.latency) == 6 for d in profile.drafters)
    assert profile != first and load_profile(path, DeviceProfile) == profile


def test_checkpoint_with_other_settings_or_model_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(KeyboardInterrupt):
        make_profiler(tmp_path, two_drafters(crash_at=(1, 16)), monkeypatch).run()
    other = dataclasses.replace(SETTINGS, k_max=4)
    with pytest.raises(ProfileError, match=r"other settings \(k_max: 3 → 4\).*--restart"):
        make_profiler(tmp_path, two_drafters(), monkeypatch, settings=other).run()
    changed = two_drafters()
    changed["slow"].identity = dataclasses.replace(changed["slow"].identity, file_sha256="c" * 64)
    with pytest.raises(ProfileError, match=r"fake-f16 sha256 bbbbbbbbbbbb…, but .* cccccccccccc…"):
        make_profiler(tmp_path, changed, monkeypatch).run()


def test_profile_for_a_different_model_hash_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    profile, _, _ = make_profiler(tmp_path, two_drafters(), monkeypatch).run()
    check_profile_models(profile, [IDENT])
    moved = dataclasses.replace(IDENT, file_sha256="d" * 64, path="/models/x.gguf")
    with pytest.raises(ProfileError) as err:
        check_profile_models(profile, [moved])
    assert "measured with fake-q4_0 sha256 aaaaaaaaaaaa…" in str(err.value)
    assert "/models/x.gguf has sha256 dddddddddddd…" in str(err.value)
    assert "\n" not in str(err.value)


def test_emulated_when_restricted() -> None:
    assert DeviceSweepSettings(threads=1).emulated() == (len(device_mod.host.allowed_cpus()) > 1)
    cpus = tuple(device_mod.host.allowed_cpus())
    assert not DeviceSweepSettings(cpus=cpus).emulated()


def test_build_context_has_exact_length() -> None:
    drafter = FakeDrafter(IDENT, 0)
    ctx = build_context(drafter, 2000)
    assert len(ctx) == 2000 and ctx[0] == 1


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"k_max": 0}, "K_max=0 is out of range (1..64)"),
        ({"context_tokens": ()}, "context lengths [] must be ≥ 1"),
        ({"rel_half_width": 0}, "CI target 0 is out of range"),
        ({"threads": 0}, "threads=0 is out of range"),
    ],
)
def test_bad_settings(kwargs: dict[str, object], needle: str) -> None:
    with pytest.raises(InvalidInput) as err:
        DeviceSweepSettings(**kwargs).validate()  # type: ignore[arg-type]
    assert needle in str(err.value)


def test_price_and_batch_validation(tmp_path: Path) -> None:
    assert parse_price(2.5, None).kind == "gpu_time"
    assert parse_price(None, 0.2).kind == "per_token"
    with pytest.raises(InvalidInput, match="exactly one price"):
        parse_price(None, None)
    with pytest.raises(InvalidInput, match="exactly one price"):
        parse_price(1.0, 1.0)
    from configspec.profiling.verification import VerifySweepSettings

    # a local target with B > 1 is timed on the server path (a batched verifier)
    local = VerificationProfiler(
        "model.gguf",
        ProfileStore(tmp_path),
        price=parse_price(1.0, None),
        settings=VerifySweepSettings(batch_sizes=(1, 4)),
    )
    assert local.server_path and local.hardware
    direct = VerificationProfiler(
        "model.gguf", ProfileStore(tmp_path), price=parse_price(1.0, None)
    )
    assert not direct.server_path


# ------------------------------------------------------------------ CLI bad input


def _one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str], code: int) -> str:
    assert main(argv) == code
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "Traceback" not in err
    return " ".join(err.split())


def test_cli_bad_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["profile", "device", "--profiles", str(tmp_path)]
    assert "K_max=0 is out of range" in _one_line_error(capsys, [*base, "--k-max", "0"], 2)
    msg = _one_line_error(capsys, [*base, "--meter", "wattmeter"], 9)
    assert "unknown meter 'wattmeter'; choose one of: auto" in msg
    pkg = tmp_path / "powercap" / "intel-rapl:0"
    pkg.mkdir(parents=True)
    (pkg / "name").write_text("package-0\n")
    (pkg / "max_energy_range_uj").write_text("262143328850\n")
    (pkg / "energy_uj").write_text("1\n")
    from tests.unit._perm import make_unreadable

    mp = pytest.MonkeyPatch()
    try:
        make_unreadable(pkg / "energy_uj", mp)
        argv = [*base, "--meter", "rapl", "--meter-root", str(tmp_path / "powercap")]
        msg = _one_line_error(capsys, argv, 9)
    finally:
        mp.undo()
    assert f"cannot read {pkg / 'energy_uj'}: permission denied" in msg and "chmod" in msg
    msg = _one_line_error(capsys, ["profile", "verify", "--profiles", str(tmp_path)], 2)
    assert "give exactly one price" in msg


# ------------------------------------------------------------------ verification sweep


class FakeTarget:
    """Busy-waits 2 ms + 1 ms per evaluated position; raises when asked for ``crash_at``."""

    def __init__(self, crash_at: int | None = None) -> None:
        self.identity = dataclasses.replace(
            IDENT, name="/srv/models/big-f32.gguf", quantization="F32", file_sha256=None
        )
        self.crash_at = crash_at
        self.calls = 0

    def tokenize(self, text: str, *, add_bos: bool = True) -> list[int]:
        return FakeDrafter(IDENT, 0).tokenize(text, add_bos=add_bos)

    def detokenize(self, tokens: Sequence[int]) -> str:
        return ""

    def evaluate(self, context: Sequence[int], tokens: Sequence[int]) -> object:
        self.calls += 1
        if len(tokens) + 1 == self.crash_at:
            raise KeyboardInterrupt("simulated kill")
        end = time.perf_counter() + (2 + len(tokens) + 1) / 1000
        while time.perf_counter() < end:
            pass
        return None

    def rollback(self, n_tokens: int) -> None:
        pass


def test_remote_verification_sweep_with_batches_and_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from configspec.profiling.verification import VerifySweepSettings

    settings = VerifySweepSettings(
        k_max=3, context_tokens=(8,), batch_sizes=(1, 2), point_budget_s=0.2, max_repeats=10
    )
    store = ProfileStore(tmp_path)

    def profiler(crash_at: int | None = None) -> VerificationProfiler:
        p = VerificationProfiler(
            "http://gpu-box:8000", store, price=parse_price(None, 0.5), settings=settings
        )
        monkeypatch.setattr(p, "_open", lambda: FakeTarget(crash_at))
        return p

    with pytest.raises(KeyboardInterrupt):
        profiler(crash_at=4).run()
    ckpt = json.loads(store.checkpoint_path("verify-big-f32").read_text())
    assert len(ckpt["state"]["points"]) == 3  # positions 1..3 of batch 1
    profile, path, report = profiler().run()
    assert path == store.verification_path("big-f32") and profile.target == "big-f32"
    assert report.resumed_points == 3 and len(report.points) == 8
    assert {(p.positions, p.batch) for p in profile.latency} == {
        (p, b) for p in (1, 2, 3, 4) for b in (1, 2)
    }
    assert profile.endpoint == "http://gpu-box:8000" and profile.price.kind == "per_token"
    one = [p.latency_ms.mean for p in profile.latency if p.batch == 1]
    assert one[-1] > one[0]  # more positions take longer
    assert profile.provenance.settings["batch_sizes"] == [1, 2]
    fresh = [r for r in report.points if r.mean_request_ms is not None]
    assert fresh and all(0 < r.mean_request_ms <= r.latency_ms.mean * 1.5 for r in fresh)


def test_verification_profile_times_the_verifiers_own_pass() -> None:
    # the verifier (serving.sessions / the batched pass) evaluates greedy rounds without
    # probabilities and sampled ones with the softmax at the sampling temperature, which
    # the decision then uses as it is; the profile's timed call must do the same work
    import numpy as np

    from configspec.backends.base import Evaluation
    from configspec.profiling.verification import _SampledDecision, _time_batch
    from configspec.serving.protocol import SparseDistribution

    class Recording:
        vocab = 8

        def __init__(self) -> None:
            self.calls: list[float | None] = []

        def evaluate_at(self, context: Sequence[int], tokens: Sequence[int],
                        temperature: float | None) -> Evaluation:  # fmt: skip
            self.calls.append(temperature)
            rows = np.full((len(tokens) + 1, self.vocab), 1.0 / self.vocab)
            extra = {} if temperature is None else {"probs_temperature": temperature}
            return Evaluation(argmax=[0] * len(rows), probs=None if temperature is None
                              else rows, extra=extra)  # fmt: skip

        def evaluate(self, context: Sequence[int], tokens: Sequence[int]) -> Evaluation:
            raise AssertionError("the profile must time the verifier's evaluate_at")

    t = Recording()
    _time_batch([t], [1, 2, 3], [4, 5], None, None)  # type: ignore[list-item]
    dists = [SparseDistribution(ids=[4], probs=[1.0])] * 2
    decide = _SampledDecision(0.8, t.vocab, dists)
    _time_batch([t], [1, 2, 3], [4, 5], None, decide)  # type: ignore[list-item]
    assert t.calls == [None, 0.8]


def test_verification_sweep_times_each_points_temperatures_back_to_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a greedy block then a sampled block put minutes of host drift into the profile's
    # T-difference (one block read 20% faster on the shared VM); adjacent points do not
    import numpy as np

    from configspec.backends.base import Evaluation
    from configspec.profiling.verification import VerifySweepSettings

    timed: list[tuple[int, float | None]] = []

    class Sampling(FakeTarget):
        def evaluate(self, context: Sequence[int], tokens: Sequence[int]) -> Evaluation:
            rows = np.full((len(tokens) + 1, 100), 0.01)
            return Evaluation(argmax=[0] * len(rows), probs=rows)

        def evaluate_at(self, context: Sequence[int], tokens: Sequence[int],
                        temperature: float | None) -> Evaluation:  # fmt: skip
            timed.append((len(tokens) + 1, temperature))
            ev = self.evaluate(context, tokens)
            extra = {} if temperature is None else {"probs_temperature": temperature}
            return Evaluation(argmax=ev.argmax, probs=ev.probs, extra=extra)

    settings = VerifySweepSettings(
        k_max=2, context_tokens=(8,), point_budget_s=0.05, min_repeats=2, max_repeats=3,
        temperatures=(0.0, 0.8),
    )  # fmt: skip
    p = VerificationProfiler("http://gpu-box:8000", ProfileStore(tmp_path),
                             price=parse_price(None, 0.5), settings=settings)  # fmt: skip
    monkeypatch.setattr(p, "_open", lambda: Sampling())
    _, _, report = p.run()
    assert [(r.positions, r.temperature) for r in report.points] == [
        (1, 0.0), (1, 0.8), (2, 0.0), (2, 0.8), (3, 0.0), (3, 0.8)
    ]  # fmt: skip
    order = [pos for pos, _ in timed]
    assert order == sorted(order)  # never back to P=1 after P=3
