"""The fleet file (``fleet.yaml``): device classes, their SLOs, and the verifier.

Validated with pydantic (``extra="forbid"``: a misspelt key is an error naming it), read
with :func:`load_fleet`. Units are in every key. Example: ``examples/fleet.yaml``;
documentation: ``docs/fleet.md``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from configspec.errors import InvalidInput, ProfileMissing
from configspec.records import K_LIMIT

DEFAULT_SLO_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DeviceClass(_Strict):
    """``count`` devices of one kind (a device profile by ``device`` name) at ``rtt_ms``.

    SLOs per device: ``min_goodput_tok_s`` (accepted tokens per second each device must
    get, 0 = none) and ``max_p95_itl_ms`` (the p95 inter-token latency: the stall between
    two bursts of tokens, i.e. the p95 round time; None = none). ``drafters`` optionally
    restricts the drafters considered (device-profile ids); ``cloud_only`` allows the
    no-speculation configuration (the target decodes one token per round).
    """

    name: str = Field(min_length=1)
    device: str = Field(min_length=1)
    count: int = Field(ge=1)
    rtt_ms: float = Field(ge=0, le=20_000)
    min_goodput_tok_s: float = Field(default=0.0, ge=0)
    max_p95_itl_ms: float | None = Field(default=None, gt=0)
    drafters: list[str] = Field(default_factory=list)
    cloud_only: bool = True


class Verifier(_Strict):
    """The verifier: one target (a verification profile by ``target`` name), billed per
    replica-hour. ``max_batch`` caps the sessions per pass (default: the largest batch the
    profile measured; above it the latency is unknown, so it is capped there);
    ``max_replicas`` bounds the search. ``gather`` is the verifier's gather mode, which
    decides how batches form in the model (:mod:`configspec.model.fleet`): ``sync`` (the
    verifier's default: every client of a replica in one pass), ``continuous``
    (``--gather fixed --max-gather-wait-ms 0``: closed loops alternate in groups) or
    ``mva`` (an arrival shares its pass with every request present).

    ``output_share``: the share of a position's cost in a batched pass that is its output
    row (the logits). It matters for drafters whose rounds vary in width (n-gram lookup):
    the verifier pads every block of a pass to the widest, and a padded position yields no
    output row, so it costs ``1 − output_share`` of a profiled one
    (:func:`configspec.model.fleet.padded_pass_ms`). 0 (the default) charges padding in
    full, an upper bound on the pass; the CPU verifier of the fleet benchmark measured
    0.71 (``benchmarks/bench_fleet_model.py``'s output-share timing).
    """

    target: str = Field(min_length=1)
    price_usd_per_hour: float = Field(ge=0)
    max_batch: int | None = Field(default=None, ge=1, le=4096)
    max_replicas: int = Field(default=4096, ge=1, le=1_000_000)
    gather: Literal["sync", "continuous", "mva"] = "sync"
    output_share: float = Field(default=0.0, ge=0, le=1)


class FleetSpec(_Strict):
    """A whole fleet: classes sharing one pool of verifier replicas.

    ``context_tokens`` is the mean decoding context the latencies are read at;
    ``k_max`` bounds K (None = the profiles' range, at most 16); ``slo_scales`` are the
    SLO levels of the cost-versus-SLO trade-off (each scales every class's minimum goodput
    up and its p95 limit down by the same factor; 1 = the SLOs as written).
    """

    verifier: Verifier
    classes: list[DeviceClass] = Field(min_length=1)
    context_tokens: int = Field(default=512, ge=0)
    k_max: int | None = Field(default=None, ge=1, le=K_LIMIT)
    slo_scales: list[float] = Field(default_factory=lambda: list(DEFAULT_SLO_SCALES))

    @model_validator(mode="after")
    def _unique(self) -> FleetSpec:
        names = [c.name for c in self.classes]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"class names must be unique; repeated: {', '.join(dup)}")
        if not self.slo_scales or any(not 0 < s <= 100 for s in self.slo_scales):
            raise ValueError(f"slo_scales {self.slo_scales} must be non-empty, each in (0, 100]")
        return self

    def scales(self) -> list[float]:
        """The trade-off's SLO levels, sorted, always including 1."""
        return sorted({*self.slo_scales, 1.0})


def _where(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err.get("loc", ())) or "fleet"
    return f"{loc}: {err.get('msg', 'invalid')}"


def parse_fleet(data: object, source: str = "fleet") -> FleetSpec:
    """Validate an already-parsed fleet document; :class:`InvalidInput` names the field."""
    if not isinstance(data, dict):
        raise InvalidInput(f"{source}: expected a mapping with 'verifier' and 'classes'")
    try:
        return FleetSpec.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(f"{source}: {_where(exc)}") from None


def load_fleet(path: Path | str) -> FleetSpec:
    """Read and validate a fleet YAML (or JSON) file."""
    p = Path(path)
    if not p.is_file():
        raise ProfileMissing(f"fleet file {p} does not exist; see examples/fleet.yaml")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise InvalidInput(f"{p}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    return parse_fleet(data, str(p))


__all__ = [
    "DEFAULT_SLO_SCALES",
    "DeviceClass",
    "FleetSpec",
    "Verifier",
    "load_fleet",
    "parse_fleet",
]
