"""What every profiling sweep shares: resumable checkpoints, progress and the report.

A sweep writes its partial results to ``ProfileStore.checkpoint_path(name)`` after every
point (atomically), so a killed run loses at most the point in flight. A re-run with the
same settings resumes from it; a checkpoint taken with other settings, or with a model
file that has since changed (different sha256), is refused with one line saying what to
do, rather than silently mixed into the new run. The finished profile is written by
``ProfileStore.save`` (atomic), and only then is the checkpoint removed, so an earlier
profile is never replaced by a partial one.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from configspec.errors import InvalidInput, ProfileError
from configspec.records import K_LIMIT
from configspec.store import atomic_write_json

log = logging.getLogger(__name__)

CHECKPOINT_VERSION = 1


class SweepKnobs(Protocol):
    """The knobs every latency sweep's settings share (read-only)."""

    @property
    def k_max(self) -> int: ...
    @property
    def context_tokens(self) -> tuple[int, ...]: ...
    @property
    def warmup(self) -> int: ...
    @property
    def min_repeats(self) -> int: ...
    @property
    def max_repeats(self) -> int: ...
    @property
    def rel_half_width(self) -> float: ...
    @property
    def point_budget_s(self) -> float: ...
    @property
    def threads(self) -> int | None: ...


def check_sweep(knobs: SweepKnobs, *, min_context: int) -> None:
    """Raise :class:`InvalidInput` naming the first out-of-range knob a latency sweep
    shares (K range, contexts of at least ``min_context`` tokens, repeats, CI target,
    point budget in s, threads)."""
    k = knobs
    if not 1 <= k.k_max <= K_LIMIT:
        raise InvalidInput(f"K_max={k.k_max} is out of range (1..{K_LIMIT})")
    if not k.context_tokens or min(k.context_tokens) < min_context:
        unit = "token" if min_context == 1 else "tokens"
        raise InvalidInput(
            f"context lengths {list(k.context_tokens)} must be ≥ {min_context} {unit} each"
        )
    check_repeats(k.warmup, k.min_repeats, k.max_repeats)
    if not 0 < k.rel_half_width < 1:
        raise InvalidInput(f"CI target {k.rel_half_width} is out of range (0..1)")
    if k.point_budget_s <= 0:
        raise InvalidInput(f"point_budget_s={k.point_budget_s} is out of range (> 0 s)")
    if k.threads is not None and k.threads < 1:
        raise InvalidInput(f"threads={k.threads} is out of range (≥ 1)")


def check_repeats(warmup: int, min_repeats: int, max_repeats: int) -> None:
    """Raise :class:`InvalidInput` unless a sweep's repeat counts make sense."""
    if warmup < 0 or min_repeats < 2 or max_repeats < min_repeats:
        raise InvalidInput(
            f"repeats out of range: warmup={warmup} (≥ 0), min_repeats="
            f"{min_repeats} (≥ 2), max_repeats={max_repeats} (≥ min_repeats)"
        )


class SweepPoint(Protocol):
    """What a sweep report needs of each measured point."""

    rel_half_width: float
    converged: bool


PointT = TypeVar("PointT", bound=SweepPoint)


@dataclass
class SweepReport(Generic[PointT]):
    """Everything the CLI shows after a sweep: every point (resumed ones included), how
    many came from the checkpoint, and the wall time in seconds."""

    points: list[PointT] = field(default_factory=list)
    resumed_points: int = 0
    wall_time_s: float = 0.0

    @property
    def converged_points(self) -> int:
        """Number of points whose CI reached the target."""
        return sum(p.converged for p in self.points)

    @property
    def converged_fraction(self) -> float:
        """Fraction of points whose CI reached the target."""
        return self.converged_points / len(self.points) if self.points else 0.0

    @property
    def worst_rel_half_width(self) -> float:
        """Largest relative CI half-width over all points (NaN when there are none)."""
        return max((p.rel_half_width for p in self.points), default=math.nan)


class Checkpoint:
    """A sweep's partial results on disk (see the module docstring)."""

    def __init__(
        self, path: Path, *, kind: str, settings: Mapping[str, Any], restart: bool = False
    ) -> None:
        self.path = Path(path)
        self.kind = kind
        self.settings = json.loads(json.dumps(dict(settings), default=str))
        self.restart = restart

    def load(self, models: Mapping[str, str | None]) -> dict[str, Any]:
        """The saved state (``{}`` when there is none, or on ``restart``).

        ``models`` maps each model id to its current sha256; a checkpoint recorded with a
        different hash for the same id raises :class:`ProfileError`.
        """
        if self.restart or not self.path.exists():
            return {}
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ProfileError(
                f"checkpoint {self.path} is unreadable ({exc}); pass --restart to start over"
            ) from None
        if raw.get("version") != CHECKPOINT_VERSION or raw.get("kind") != self.kind:
            raise ProfileError(
                f"checkpoint {self.path} is not a {self.kind} checkpoint of this tool "
                "version; pass --restart to start over"
            )
        if raw.get("settings") != self.settings:
            old, new = raw.get("settings", {}), self.settings
            diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            shown = ", ".join(f"{k}: {old.get(k)!r} → {new.get(k)!r}" for k in diff[:3])
            raise ProfileError(
                f"checkpoint {self.path} was taken with other settings ({shown}); re-run with "
                "the same settings to resume, or pass --restart to start over"
            )
        for model_id, sha in (raw.get("models") or {}).items():
            now = models.get(model_id)
            if model_id in models and now != sha:
                raise ProfileError(
                    f"checkpoint {self.path} was measured with {model_id} sha256 "
                    f"{str(sha)[:12]}…, but that model file now has sha256 {str(now)[:12]}…; "
                    "pass --restart to profile the new file"
                )
        state = raw.get("state")
        if not isinstance(state, dict):
            raise ProfileError(f"checkpoint {self.path} has no state; pass --restart")
        log.info("resuming from checkpoint %s", self.path)
        return state

    def save(self, state: Mapping[str, Any], models: Mapping[str, str | None]) -> None:
        """Atomically write ``state`` (plain JSON data)."""
        atomic_write_json(
            self.path,
            {
                "version": CHECKPOINT_VERSION,
                "kind": self.kind,
                "settings": self.settings,
                "models": dict(models),
                "state": state,
            },
        )

    def remove(self) -> None:
        """Delete the checkpoint (after the finished profile was saved)."""
        self.path.unlink(missing_ok=True)
