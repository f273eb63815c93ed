"""Device and verification profiling on the real Gemma 3 270M family (llama.cpp, 1 thread)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from configspec.backends.models import PreparedFamily
from configspec.config import DeviceProfile, VerificationProfile
from configspec.power import CpuTimeEstimator, ReplayMeter
from configspec.profiling.device import DeviceProfiler, DeviceSweepSettings
from configspec.profiling.verification import (
    VerificationProfiler,
    VerifySweepSettings,
    parse_price,
)
from configspec.store import ProfileStore, load_profile

pytestmark = pytest.mark.slow

SRC = Path(__file__).resolve().parents[2] / "src"


def test_two_real_variants_profiled_with_provenance(
    tmp_path: Path, model_family: PreparedFamily
) -> None:
    settings = DeviceSweepSettings(
        k_max=3, context_tokens=(32,), threads=1, idle_s=0.3, point_budget_s=2.0,
        max_repeats=40, prefill_repeats=2,
    )  # fmt: skip
    names = {q: model_family.drafters[q].name for q in ("Q4_0", "F16")}
    profiler = DeviceProfiler(
        [names["Q4_0"], names["F16"]],
        ProfileStore(tmp_path),
        device="ci-1t",
        settings=settings,
        meter=CpuTimeEstimator(),
        cache_dir=model_family.cache_dir,
    )
    profile, path, report = profiler.run()
    assert load_profile(path, DeviceProfile) == profile
    q4, f16 = profile.drafters
    assert (q4.quantization, f16.quantization) == ("Q4_0", "F16")
    for d, q in ((q4, "Q4_0"), (f16, "F16")):
        assert [p.k for p in d.latency] == [1, 2, 3]
        assert all(p.per_token_ms.mean > 0 and p.per_token_ms.low > 0 for p in d.latency)
        assert d.model_sha256 == model_family.drafters[q].file_sha256
        assert d.memory_bytes > 50_000_000  # weights are mapped in while drafting
        assert d.prefill_tokens_per_s is not None and d.prefill_tokens_per_s.mean > 0
        # a two-token round start is measured (its size depends on llama.cpp's batched path)
        assert d.catchup_ms is not None and d.catchup_ms.n >= 5
    # F16 moves ~3.5x the bytes of Q4_0 per token: slower on this CPU
    mean_q4 = sum(p.per_token_ms.mean for p in q4.latency) / 3
    mean_f16 = sum(p.per_token_ms.mean for p in f16.latency) / 3
    assert mean_f16 > mean_q4, (mean_q4, mean_f16)
    assert f16.memory_bytes > q4.memory_bytes
    prov = profile.provenance
    assert prov.source == "measured" and prov.backend and prov.backend_version
    assert prov.model_sha256[names["F16"]] == model_family.drafters["F16"].file_sha256
    assert prov.settings["threads"] == 1 and prov.settings["k_max"] == 3
    assert profile.device.cpu_model and profile.device.threads == 1
    assert profile.meter is not None and profile.meter.source == "estimated"
    assert q4.draft_power_w is not None and q4.draft_power_w.source == "estimated"
    assert len(report.points) == 6


def _cli(args: list[str]) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    return subprocess.Popen(
        [sys.executable, "-m", "configspec", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_killed_profiling_run_resumes(tmp_path: Path, model_family: PreparedFamily) -> None:
    store = ProfileStore(tmp_path / "profiles")
    args = [
        "profile", "device", "--profiles", str(store.root), "--cache-dir",
        str(model_family.cache_dir), "-d", model_family.drafters["Q4_0"].name, "-d", "ngram",
        "--device", "killed", "--k-max", "4", "--context", "32", "--threads", "1",
        "--meter", "estimate", "--idle-s", "0.2", "--point-budget-s", "1", "--max-repeats", "30",
    ]  # fmt: skip
    ckpt = store.checkpoint_path("device-killed")
    proc = _cli(args)
    deadline = time.monotonic() + 90
    points = 0
    while time.monotonic() < deadline and proc.poll() is None:
        if ckpt.exists():
            state = json.loads(ckpt.read_text())["state"]
            points = sum(len(d["points"]) for d in state["drafters"].values())
            if points >= 2:
                break
        time.sleep(0.05)
    assert proc.poll() is None, f"run ended before it could be killed: {proc.communicate()}"
    proc.kill()  # SIGKILL: no cleanup, no chance to finish the file being written
    proc.communicate()
    assert not store.device_path("killed").exists()
    json.loads(ckpt.read_text())  # the checkpoint is whole
    trace = tmp_path / "power.csv"
    rerun = _cli([*args, "--meter-record", str(trace)])
    out, err = rerun.communicate(timeout=180)
    assert rerun.returncode == 0, err
    resumed = int(out.split(" resumed from checkpoint")[0].split(";")[-1].strip().split()[-1])
    assert resumed >= 2
    profile = load_profile(store.device_path("killed"), DeviceProfile)
    assert isinstance(profile, DeviceProfile)
    assert [len(d.latency) for d in profile.drafters] == [4, 4]
    assert profile.idle_power_w is not None
    assert not ckpt.exists()
    replay = ReplayMeter(trace)  # the recorded trace replays
    assert replay.available() and replay.sample().power_w > 0


def test_local_verification_profile(tmp_path: Path, model_family: PreparedFamily) -> None:
    settings = VerifySweepSettings(
        k_max=2, context_tokens=(32,), threads=1, point_budget_s=1.5, max_repeats=20
    )
    profiler = VerificationProfiler(
        model_family.target.name,
        ProfileStore(tmp_path),
        price=parse_price(1.2, None),
        settings=settings,
        cache_dir=model_family.cache_dir,
    )
    profile, path, report = profiler.run()
    assert load_profile(path, VerificationProfile) == profile
    assert [p.positions for p in profile.latency] == [1, 2, 3]
    assert all(p.latency_ms.mean > 0 for p in profile.latency)
    assert profile.price.kind == "gpu_time" and profile.endpoint == "local"
    assert profile.target_family == model_family.target.family
    assert profile.provenance.model_sha256 == {
        model_family.target.name: model_family.target.file_sha256
    }
    assert len(report.points) == 3


def test_server_path_verification_profile(tmp_path: Path, model_family: PreparedFamily) -> None:
    """A local target with B > 1 is timed through a batched verifier started in-process:
    every point is one real pass of B sessions (the batch dimension fleet planning reads)."""
    settings = VerifySweepSettings(
        k_max=1, context_tokens=(24,), batch_sizes=(1, 2), threads=1, warmup=0,
        min_repeats=2, max_repeats=3, point_budget_s=1.0,
    )  # fmt: skip
    profiler = VerificationProfiler(
        model_family.target.name,
        ProfileStore(tmp_path),
        price=parse_price(1.0, None),
        settings=settings,
        cache_dir=model_family.cache_dir,
    )
    assert profiler.server_path
    profile, path, report = profiler.run()
    assert load_profile(path, VerificationProfile) == profile
    pts = {(p.batch, p.positions): p.latency_ms.mean for p in profile.latency}
    assert sorted(pts) == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert all(ms > 0 for ms in pts.values())
    assert profile.provenance.settings["path"] == "server"
    assert "server path" in profile.provenance.backend
    assert all(r.mean_request_ms is not None for r in report.points)
