"""The on-disk profile store. Nobody else builds profile paths.

Layout of a profile directory::

    DIR/
      device/<device>.json          DeviceProfile, one per edge device
      alignment/<target>.json       AlignmentProfile, one per target
      verification/<target>.json    VerificationProfile, one per target
      network.json                  NetworkSettings (optional; defaults apply)
      contention/baseline.json      ContentionBaseline: probes taken right after profiling
                                    (optional; without it no contention ratio is applied)
      runs/<run-id>.json            run records written by the runtime
      checkpoints/<name>.json       partial sweeps, so an interrupted run resumes
      cache/<kind>/<key>.<ext>      cached intermediates (e.g. target reference trajectories)

Writes are atomic (temporary file in the same directory, fsync, rename), so a killed
process leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

from configspec.store.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from configspec.store.profiles import ProfileStore, load_profile, safe_name

__all__ = [
    "ProfileStore",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "load_profile",
    "safe_name",
]
