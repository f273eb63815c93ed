"""Profile fingerprints: what a profile's figures depend on, and warnings when they drift.

A fingerprint is a flat dict: ``engine``, ``engine_version``, ``build_flags``, ``threads``,
``device`` and ``model_sha256`` (a hash or ``{file: hash}``). It is read from a profile's
:class:`~configspec.config.Provenance` (``backend``, ``backend_version``, ``settings``,
``model_sha256``) and its device description, so no schema change is needed. The deployed
fingerprint is given by the caller (e.g. written by the runtime as JSON) or taken from the
installed llama-cpp-python.
"""

from __future__ import annotations

import importlib.metadata
import logging
from datetime import datetime, timedelta, timezone
from typing import Any

from configspec.config import AlignmentProfile, DeviceProfile, Provenance, VerificationProfile

log = logging.getLogger(__name__)

FINGERPRINT_KEYS = ("engine", "engine_version", "build_flags", "threads", "device", "model_sha256")


def profile_fingerprint(provenance: Provenance, device: str | None = None) -> dict[str, Any]:
    """The fingerprint recorded in ``provenance`` (missing fields are left out)."""
    fp: dict[str, Any] = {
        "engine": provenance.backend,
        "engine_version": provenance.backend_version,
        "build_flags": provenance.settings.get("build_flags"),
        "threads": provenance.settings.get("threads"),
        "device": device,
        "model_sha256": provenance.model_sha256 or None,
    }
    return {k: v for k, v in fp.items() if v not in (None, "", {})}


def installed_fingerprint() -> dict[str, Any]:
    """The engine this process would deploy with: the installed llama-cpp-python."""
    try:
        return {
            "engine": "llama.cpp (llama-cpp-python)",
            "engine_version": importlib.metadata.version("llama_cpp_python"),
        }
    except importlib.metadata.PackageNotFoundError:
        return {}


def engine_family(name: str) -> str:
    """Engine names written differently by different tools, reduced to one family
    (``llama.cpp (llama-cpp-python)``, ``llama-cpp-python``, ``llama.cpp`` → ``llama.cpp``)."""
    low = name.lower()
    if "llama" in low and ("cpp" in low or "ggml" in low):
        return "llama.cpp"
    if "vllm" in low:
        return "vllm"
    if "openai" in low or "http" in low:
        return "remote"
    return low


def _differs(key: str, recorded: Any, deployed: Any) -> bool:
    if key == "engine":
        return engine_family(str(recorded)) != engine_family(str(deployed))
    if isinstance(recorded, dict) and isinstance(deployed, dict):
        common = set(recorded) & set(deployed)
        return any(recorded[k] != deployed[k] for k in common)
    return str(recorded) != str(deployed)


def fingerprint_warnings(
    devices: list[DeviceProfile],
    alignments: list[AlignmentProfile],
    verifications: list[VerificationProfile],
    deployed: dict[str, Any],
    max_age_days: float | None = 90.0,
    now: datetime | None = None,
) -> list[str]:
    """One warning per profile taken under a fingerprint different from ``deployed``, or
    older than ``max_age_days``. Illustrative profiles (example data) are skipped."""
    now = now or datetime.now(timezone.utc)
    out: list[str] = []
    items: list[tuple[str, Provenance, str | None]] = []
    for d in devices:
        items.append(
            (
                f"device profile {d.device.name!r}",
                d.provenance,
                d.device.description or d.device.name,
            )
        )
    for a in alignments:
        items.append((f"alignment profile {a.target!r}", a.provenance, None))
    for v in verifications:
        items.append((f"verification profile {v.target!r}", v.provenance, v.hardware or None))
    for what, prov, desc in items:
        if prov.source == "illustrative":
            continue
        recorded = profile_fingerprint(prov, desc)
        for key in FINGERPRINT_KEYS:
            # Verification runs on the cloud's engine and hardware, not the deployed edge's;
            # acceptance depends on the models, not the device: compare what applies.
            if what.startswith("verification") and key != "model_sha256":
                continue
            if what.startswith("alignment") and key == "device":
                continue
            if (
                key == "engine_version"
                and "engine" in recorded
                and "engine" in deployed
                and _differs("engine", recorded["engine"], deployed["engine"])
            ):
                continue  # a different engine is reported once, under "engine"
            if key in recorded and key in deployed and _differs(key, recorded[key], deployed[key]):
                out.append(
                    f"{what} was taken with {key}={recorded[key]!r} but the deployment has "
                    f"{key}={deployed[key]!r}; re-profile or expect the figures to be off"
                )
        created = prov.created_at
        if created.tzinfo is None:
            created = created.replace(tzinfo=timezone.utc)
        if max_age_days is not None and now - created > timedelta(days=max_age_days):
            age = (now - created).days
            out.append(
                f"{what} is {age} days old (limit {max_age_days:g}); re-profile or raise "
                "--max-profile-age-days"
            )
    return out
