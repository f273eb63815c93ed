from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from configspec.config import (
    DeviceInfo,
    DeviceProfile,
    DrafterOnDevice,
    DraftLatencyPoint,
    Estimate,
    Provenance,
)
from configspec.errors import ProfileError, ProfileMissing
from configspec.store import ProfileStore, atomic_write_text, load_profile, safe_name


def _device() -> DeviceProfile:
    return DeviceProfile(
        device=DeviceInfo(name="edge box/1"),
        drafters=[
            DrafterOnDevice(
                drafter="d",
                family="fam",
                memory_bytes=1,
                latency=[DraftLatencyPoint(k=1, context_tokens=0, per_token_ms=Estimate(mean=5))],
            )
        ],
        provenance=Provenance.here("measured"),
    )


def test_roundtrip_and_layout(tmp_path: Path) -> None:
    store = ProfileStore(tmp_path)
    path = store.save(_device())
    assert path == tmp_path / "device" / "edge_box_1.json"
    [loaded] = store.device_profiles()
    assert loaded == _device().model_copy(update={"provenance": loaded.provenance})


def test_missing_profile_names_the_command(tmp_path: Path) -> None:
    with pytest.raises(ProfileMissing, match="configspec profile alignment"):
        ProfileStore(tmp_path).alignment_profiles()


def test_malformed_json_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "device" / "x.json"
    bad.parent.mkdir()
    bad.write_text('{"kind": "device",')
    with pytest.raises(ProfileError, match=r"not valid JSON \(line 1"):
        ProfileStore(tmp_path).device_profiles()


def test_schema_error_names_the_field(tmp_path: Path) -> None:
    doc = json.loads(_device().model_dump_json())
    doc["drafters"][0]["latency"][0]["per_token_ms"]["mean"] = -1.0
    bad = tmp_path / "d.json"
    bad.write_text(json.dumps(doc))
    with pytest.raises(ProfileError, match="negative drafting latency"):
        load_profile(bad, DeviceProfile)


def test_newer_schema_refused(tmp_path: Path) -> None:
    doc = json.loads(_device().model_dump_json())
    doc["schema_version"] = 99
    bad = tmp_path / "d.json"
    bad.write_text(json.dumps(doc))
    with pytest.raises(ProfileError, match="upgrade configspec"):
        load_profile(bad)


@pytest.mark.parametrize(
    ("version", "needle"),
    [
        ("2", 'schema_version "2" (str); it must be an integer'),
        (2.0, "schema_version 2.0 (float); it must be an integer"),
        (1.0, "schema_version 1.0 (float); it must be an integer"),
        (True, "schema_version true (bool); it must be an integer"),
        (None, "schema_version null (NoneType)"),
        (2, "newer than this tool understands (1)"),
        (0, "versions start at 1"),
    ],
)
def test_schema_version_must_be_a_known_integer(
    tmp_path: Path, version: object, needle: str
) -> None:
    doc = json.loads(_device().model_dump_json())
    doc["schema_version"] = version
    bad = tmp_path / "d.json"
    bad.write_text(json.dumps(doc))
    with pytest.raises(ProfileError, match="schema_version") as err:
        load_profile(bad)
    assert needle in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ValueError):  # the model itself is strict too
        DeviceProfile.model_validate_json(json.dumps(doc))


def test_acceptance_outside_unit_interval() -> None:
    from configspec.config import AlignmentEntry

    with pytest.raises(ValueError, match=r"outside \[0, 1\]"):
        AlignmentEntry(drafter="d", alpha=Estimate(mean=1.2))


def test_atomic_write_keeps_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "f.json"
    atomic_write_text(target, "old")

    class Boom(Exception):
        pass

    class Exploding(str):
        def encode(self, *a: object, **k: object) -> bytes:
            raise Boom

    with pytest.raises(Boom):
        atomic_write_text(target, Exploding("new"))
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_safe_name() -> None:
    assert safe_name("Llama 3.1/70B") == "Llama_3.1_70B"
    with pytest.raises(ProfileError):
        safe_name("///")


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_get_the_mode_the_umask_gives_new_files(
    tmp_path: Path, mask: int, mode: int
) -> None:
    old = os.umask(mask)
    try:
        atomic_write_text(tmp_path / "profile.json", "{}")
        store = ProfileStore(tmp_path / "store")
        atomic_write_text(store.root / "runs" / "run.json", "{}")
    finally:
        os.umask(old)
    assert (tmp_path / "profile.json").stat().st_mode & 0o777 == mode
    assert (tmp_path / "store" / "runs" / "run.json").stat().st_mode & 0o777 == mode


def test_atomic_rewrite_keeps_the_mode_the_user_gave_the_file(tmp_path: Path) -> None:
    target = tmp_path / "report.html"
    atomic_write_text(target, "old")
    target.chmod(0o640)
    atomic_write_text(target, "new")
    assert target.read_text() == "new" and target.stat().st_mode & 0o777 == 0o640
