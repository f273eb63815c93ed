"""Profile fingerprints: warnings on engine/build/thread/model drift and on stale profiles."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

from _model_factory import alignment, alpha_entry, device, verification

from configspec.config import Provenance
from configspec.deploy.fingerprint import (
    fingerprint_warnings,
    installed_fingerprint,
    profile_fingerprint,
)
from configspec.store import ProfileStore

NOW = datetime(2026, 6, 1, tzinfo=timezone.utc)


def _measured(**kw: object) -> Provenance:
    return Provenance(source="measured", created_at=NOW - timedelta(days=3), **kw)  # type: ignore[arg-type]


def test_fingerprint_is_read_from_provenance() -> None:
    prov = _measured(
        backend="llama.cpp",
        backend_version="0.3.36",
        settings={"threads": 4, "build_flags": "AVX2=1"},
        model_sha256={"d.gguf": "ab"},
    )
    fp = profile_fingerprint(prov, "Pi 5")
    assert fp == {
        "engine": "llama.cpp",
        "engine_version": "0.3.36",
        "build_flags": "AVX2=1",
        "threads": 4,
        "device": "Pi 5",
        "model_sha256": {"d.gguf": "ab"},
    }
    assert installed_fingerprint()["engine_version"]  # llama-cpp-python is installed here


def test_engine_names_from_different_tools_are_one_family() -> None:
    dev = device().model_copy(
        update={"provenance": _measured(backend="llama-cpp-python", backend_version="0.3.36")}
    )
    same = {"engine": "llama.cpp (llama-cpp-python)", "engine_version": "0.3.36"}
    assert fingerprint_warnings([dev], [], [], same, None, NOW) == []
    other = {"engine": "vllm", "engine_version": "0.9.2"}
    warnings = fingerprint_warnings([dev], [], [], other, None, NOW)
    assert len(warnings) == 1 and "engine='llama-cpp-python'" in warnings[0]


def test_drift_and_age_warnings() -> None:
    dev = device().model_copy(
        update={
            "provenance": _measured(
                backend="llama.cpp",
                backend_version="0.3.2",
                settings={"threads": 4},
                model_sha256={"d.gguf": "aaa"},
            )
        }
    )
    old = alignment([alpha_entry()]).model_copy(
        update={"provenance": Provenance(source="measured", created_at=NOW - timedelta(days=200))}
    )
    ver = verification()  # illustrative: never warned about
    deployed = {
        "engine": "llama.cpp",
        "engine_version": "0.3.36",
        "threads": 4,
        "model_sha256": {"d.gguf": "bbb"},
    }
    warnings = fingerprint_warnings([dev], [old], [ver], deployed, 90, NOW)
    text = "\n".join(warnings)
    assert "engine_version='0.3.2'" in text and "'0.3.36'" in text
    assert "model_sha256" in text
    assert "threads" not in text  # same threads: no warning
    assert "alignment profile 't' is 200 days old (limit 90)" in text
    assert "verification" not in text
    assert fingerprint_warnings([dev], [old], [ver], {}, None, NOW) == []


def test_select_prints_fingerprint_warnings(tmp_path: Path) -> None:
    store = ProfileStore(tmp_path / "p")
    store.save(
        device().model_copy(
            update={"provenance": _measured(backend="llama.cpp", backend_version="0.1.0")}
        )
    )
    store.save(alignment([alpha_entry()]))
    store.save(verification())
    fp = tmp_path / "fp.json"
    fp.write_text(json.dumps({"engine": "llama.cpp", "engine_version": "9.9.9"}))
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "configspec",
            "select",
            "--profiles",
            str(store.root),
            "--deployed-fingerprint",
            str(fp),
            "--format",
            "json",
            "--no-sensitivity",
        ],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(root / "src")},
    )
    assert out.returncode == 0, out.stderr
    assert "engine_version='0.1.0'" in out.stderr and "'9.9.9'" in out.stderr
    doc = json.loads(out.stdout)
    assert any("engine_version" in w for w in doc["warnings"])
