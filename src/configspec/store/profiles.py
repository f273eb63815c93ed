"""Reading and writing validated profiles in a profile directory."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError

from configspec.config import (
    SCHEMA_VERSION,
    AlignmentProfile,
    ContentionBaseline,
    DeviceProfile,
    NetworkSettings,
    Profile,
    RunRecord,
    VerificationProfile,
)
from configspec.errors import ProfileError, ProfileMissing
from configspec.store.atomic import atomic_write_text

P = TypeVar("P", bound=BaseModel)

_PROFILE_ADAPTER: TypeAdapter[Profile] = TypeAdapter(Profile)
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(name: str) -> str:
    """A file-name-safe form of a device or model name (``Llama 3.1/70B`` → ``Llama_3.1_70B``)."""
    cleaned = _SAFE.sub("_", name).strip("._")
    if not cleaned:
        raise ProfileError(f"name {name!r} has no characters usable in a file name")
    return cleaned


def check_schema_version(raw: dict[str, Any], what: str) -> None:
    """Raise :class:`ProfileError` unless ``raw``'s ``schema_version`` is one we read.

    It must be a JSON integer (not ``"2"``, ``2.0`` or ``true``) from 1 to
    :data:`~configspec.config.SCHEMA_VERSION`; a newer one asks to upgrade. A document
    without it gets the model's default.
    """
    if "schema_version" not in raw:
        return
    version = raw["schema_version"]
    if type(version) is not int:
        raise ProfileError(
            f"{what} has schema_version {json.dumps(version)} ({type(version).__name__}); "
            f"it must be an integer such as {SCHEMA_VERSION}"
        )
    if version > SCHEMA_VERSION:
        raise ProfileError(
            f"{what} has schema_version {version}, newer than this tool understands "
            f"({SCHEMA_VERSION}); upgrade configspec"
        )
    if version < 1:
        raise ProfileError(f"{what} has schema_version {version}; versions start at 1")


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or "(document)"
    return f"{loc}: {err['msg']}"


def load_profile(path: Path, expect: type[P] | None = None) -> P | Profile:
    """Load and validate one profile file; raise :class:`ProfileError` with one clear line.

    ``expect`` checks the document is of that kind (e.g. :class:`DeviceProfile`).
    """
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ProfileMissing(f"profile {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError(f"cannot read profile {path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ProfileError(
            f"profile {path} is not valid JSON (line {exc.lineno}, column {exc.colno}: "
            f"{exc.msg}); re-run the profiling step that wrote it"
        ) from None
    if not isinstance(raw, dict):
        raise ProfileError(f"profile {path} must hold a JSON object, found {type(raw).__name__}")
    check_schema_version(raw, f"profile {path}")
    if expect is not None and "kind" not in raw:
        raw["kind"] = expect.model_fields["kind"].default
    try:
        profile = _PROFILE_ADAPTER.validate_python(raw)
    except ValidationError as exc:
        raise ProfileError(f"profile {path} is malformed: {_first_error(exc)}") from None
    if expect is not None and not isinstance(profile, expect):
        raise ProfileError(
            f"profile {path} is a {profile.kind} profile, expected "
            f"{expect.model_fields['kind'].default}"
        )
    return profile


class ProfileStore:
    """A profile directory (see :mod:`configspec.store` for the layout)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # paths ------------------------------------------------------------------
    def device_path(self, device: str) -> Path:
        """Path of the device profile for ``device``."""
        return self.root / "device" / f"{safe_name(device)}.json"

    def alignment_path(self, target: str) -> Path:
        """Path of the alignment profile for ``target``."""
        return self.root / "alignment" / f"{safe_name(target)}.json"

    def verification_path(self, target: str) -> Path:
        """Path of the verification profile for ``target``."""
        return self.root / "verification" / f"{safe_name(target)}.json"

    @property
    def network_path(self) -> Path:
        """Path of the network settings."""
        return self.root / "network.json"

    @property
    def contention_baseline_path(self) -> Path:
        """Path of the baseline contention probes taken right after profiling."""
        return self.root / "contention" / "baseline.json"

    def run_path(self, run_id: str) -> Path:
        """Path of a run record written by the runtime."""
        return self.root / "runs" / f"{safe_name(run_id)}.json"

    def checkpoint_path(self, name: str) -> Path:
        """Path of a sweep checkpoint (partial results an interrupted run resumes from)."""
        return self.root / "checkpoints" / f"{safe_name(name)}.json"

    def cache_path(self, kind: str, key: str, suffix: str = ".json") -> Path:
        """Path of a cached intermediate result (e.g. a target's reference trajectory)."""
        return self.root / "cache" / safe_name(kind) / f"{safe_name(key)}{suffix}"

    # writing ----------------------------------------------------------------
    def save(self, profile: DeviceProfile | AlignmentProfile | VerificationProfile) -> Path:
        """Atomically write a profile to its place in the layout; return the path."""
        if isinstance(profile, DeviceProfile):
            path = self.device_path(profile.device.name)
        elif isinstance(profile, AlignmentProfile):
            path = self.alignment_path(profile.target)
        else:
            path = self.verification_path(profile.target)
        atomic_write_text(path, profile.model_dump_json(indent=2) + "\n")
        return path

    def save_network(self, network: NetworkSettings) -> Path:
        """Atomically write the network settings."""
        atomic_write_text(self.network_path, network.model_dump_json(indent=2) + "\n")
        return self.network_path

    def save_contention_baseline(self, baseline: ContentionBaseline) -> Path:
        """Atomically write the baseline contention probes; return the path."""
        path = self.contention_baseline_path
        atomic_write_text(path, baseline.model_dump_json(indent=2) + "\n")
        return path

    def save_run(self, record: RunRecord) -> Path:
        """Atomically write a run record to ``runs/<run_id>.json``; return the path."""
        path = self.run_path(record.run_id)
        atomic_write_text(path, record.model_dump_json(indent=2) + "\n")
        return path

    # reading ----------------------------------------------------------------
    def _load_dir(self, sub: str, kind: type[P], hint: str) -> list[P]:
        folder = self.root / sub
        files = sorted(folder.glob("*.json")) if folder.is_dir() else []
        if not files:
            raise ProfileMissing(f"no {sub} profile in {self.root}; run `{hint}`")
        return [load_profile(f, kind) for f in files]  # type: ignore[misc]

    def device_profiles(self) -> list[DeviceProfile]:
        """All device profiles; :class:`ProfileMissing` if there are none."""
        return self._load_dir("device", DeviceProfile, "configspec profile device")

    def alignment_profiles(self) -> list[AlignmentProfile]:
        """All alignment profiles; :class:`ProfileMissing` if there are none."""
        return self._load_dir("alignment", AlignmentProfile, "configspec profile alignment")

    def verification_profiles(self) -> list[VerificationProfile]:
        """All verification profiles; :class:`ProfileMissing` if there are none."""
        return self._load_dir("verification", VerificationProfile, "configspec profile verify")

    def network(self) -> NetworkSettings:
        """The stored network settings, or the documented defaults when none are stored."""
        if not self.network_path.exists():
            return NetworkSettings()
        return load_profile(self.network_path, NetworkSettings)  # type: ignore[return-value]

    def contention_baseline(self) -> ContentionBaseline | None:
        """The baseline contention probes, or None when none were taken (profile
        directories written before they existed). A malformed or too-new file raises
        :class:`ProfileError` naming it."""
        path = self.contention_baseline_path
        if not path.exists():
            return None
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ProfileError(f"contention baseline {path} is unreadable: {exc}") from None
        if not isinstance(raw, dict):
            raise ProfileError(f"contention baseline {path} must hold a JSON object")
        check_schema_version(raw, f"contention baseline {path}")
        try:
            return ContentionBaseline.model_validate(raw)
        except ValidationError as exc:
            raise ProfileError(
                f"contention baseline {path} is malformed: {_first_error(exc)}"
            ) from None

    def runs(self) -> list[RunRecord]:
        """All run records, oldest first by file name; empty when none were written.

        A malformed or too-new record raises :class:`ProfileError` naming the file.
        """
        folder = self.root / "runs"
        out: list[RunRecord] = []
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            try:
                raw = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise ProfileError(f"run record {path} is unreadable: {exc}") from None
            if isinstance(raw, dict):
                check_schema_version(raw, f"run record {path}")
            try:
                out.append(RunRecord.model_validate(raw))
            except ValidationError as exc:
                raise ProfileError(f"run record {path} is malformed: {_first_error(exc)}") from None
        return out
