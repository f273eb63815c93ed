"""Versioned on-disk schemas (profiles, network settings) and their provenance.

Every profile is one JSON document validated by a pydantic model with
``extra="forbid"``: an unknown or misspelt field is an error, not silently dropped.
``schema_version`` is checked on load; a newer file than this tool understands is
refused with a message saying to upgrade.

Units are in every field name. Every figure that can come from more than one place
carries a :data:`Source` ("measured", "estimated", "fitted", "modelled", "imported",
"illustrative") and, where it is a statistic, a confidence interval (:class:`Estimate`).

The schemas are documented for users in ``docs/profiles.md``.
"""

from __future__ import annotations

import math
import platform
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_validator

from configspec._version import __version__, git_revision

SCHEMA_VERSION = 1

Source = Literal["measured", "estimated", "fitted", "modelled", "imported", "illustrative"]
Estimator = Literal[
    "student_t",
    "normal",
    "bootstrap_ratio",
    "bootstrap_median",
    "bootstrap_ratio_of_medians",
    "bootstrap_prompts",
    "cluster_bootstrap_prompts",
]
"""Which 95% interval estimator produced an :class:`Estimate` (see :mod:`configspec.stats`)."""
"""Where a number came from. ``illustrative`` marks example data that is not a measurement."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Estimate(_Strict):
    """A statistic with its uncertainty: mean and a confidence interval (default 95%).

    ``ci_low``/``ci_high`` default to the mean (no uncertainty known); ``n`` is the number
    of samples behind it (0 when unknown, e.g. imported figures); ``estimator`` names the
    interval's estimator (:mod:`configspec.stats`), None when there is no interval or the
    file predates the field (schema 1 files without it still load).
    """

    mean: float
    ci_low: float | None = None
    ci_high: float | None = None
    n: int = Field(default=0, ge=0)
    source: Source = "measured"
    estimator: Estimator | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Estimate:
        lo = self.mean if self.ci_low is None else self.ci_low
        hi = self.mean if self.ci_high is None else self.ci_high
        if not lo <= self.mean <= hi:
            raise ValueError(
                f"confidence interval [{lo}, {hi}] does not contain the mean {self.mean}"
            )
        return self

    @property
    def low(self) -> float:
        """Lower bound of the interval (the mean when no interval is known)."""
        return self.mean if self.ci_low is None else self.ci_low

    @property
    def high(self) -> float:
        """Upper bound of the interval (the mean when no interval is known)."""
        return self.mean if self.ci_high is None else self.ci_high


class Provenance(_Strict):
    """Where a profile came from: enough to reproduce it and to judge whether it applies."""

    source: Source
    tool_version: str = __version__
    git_revision: str | None = None
    created_at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))
    host: str | None = None
    backend: str | None = None
    backend_version: str | None = None
    model_sha256: dict[str, str] = Field(default_factory=dict)
    settings: dict[str, Any] = Field(default_factory=dict)
    source_file: str | None = None
    notes: str = ""

    @classmethod
    def here(cls, source: Source, **kwargs: Any) -> Provenance:
        """Provenance for a profile produced now, on this host, by this tool revision."""
        kwargs.setdefault("git_revision", git_revision())
        kwargs.setdefault("host", platform.node() or None)
        return cls(source=source, **kwargs)


# --------------------------------------------------------------------------- device


class DeviceInfo(_Strict):
    """The edge device a device profile describes.

    ``emulated`` is true when one machine was profiled as a smaller device class
    (fewer threads, CPU affinity); such profiles say so wherever they are shown.
    """

    name: str = Field(min_length=1)
    description: str = ""
    cpu_model: str | None = None
    gpu_model: str | None = None
    memory_bytes: int | None = Field(default=None, gt=0)
    threads: int | None = Field(default=None, gt=0)
    emulated: bool = False


class MeterInfo(_Strict):
    """The power meter behind a device profile's power figures."""

    name: str
    source: Source
    sample_hz: float | None = Field(default=None, gt=0)
    detail: str = ""


class DraftLatencyPoint(_Strict):
    """Mean per-token drafting latency when drafting ``k`` tokens after ``context_tokens``.

    ``temperature`` 0 is greedy drafting (argmax); above 0 the time also covers what a
    sampling client does per drafted token: the softmax over the vocabulary at that
    temperature, drawing the token, and building the top-k draft distribution it sends.
    """

    k: int = Field(ge=1)
    context_tokens: int = Field(ge=0)
    per_token_ms: Estimate
    temperature: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _positive(self) -> DraftLatencyPoint:
        if self.per_token_ms.mean < 0 or self.per_token_ms.low < 0:
            raise ValueError(f"negative drafting latency {self.per_token_ms.mean} ms")
        return self


class DrafterOnDevice(_Strict):
    """How one drafter performs on one device.

    ``drafter`` is the drafter's id (e.g. ``gemma-3-270m-it-Q4_0`` or ``ngram``);
    ``family`` names the tokenizer family it shares with targets (drafter and target
    are only paired when families match). ``draft_power_w`` is None when the device
    has no power data; energy objectives then report "no power data".
    ``catchup_ms`` is the extra time of a round that starts with two new tokens instead
    of one: after all K drafts were accepted, the drafter has not yet read its own last
    draft, so it reads it together with the target's bonus token (a two-token batch,
    which llama.cpp may run on a slower path than one token). The model charges it with
    the probability that every draft is accepted. None = not measured (taken as 0; a
    model-free drafter has none).
    """

    drafter: str = Field(min_length=1)
    family: str = Field(min_length=1)
    quantization: str | None = None
    model_sha256: str | None = None
    memory_bytes: int = Field(ge=0)
    latency: list[DraftLatencyPoint] = Field(min_length=1)
    prefill_tokens_per_s: Estimate | None = None
    draft_power_w: Estimate | None = None
    catchup_ms: Estimate | None = None


class DeviceProfile(_Strict):
    """Drafting speed, memory and power of drafters on one edge device."""

    schema_version: StrictInt = Field(default=SCHEMA_VERSION, ge=1, le=SCHEMA_VERSION)
    kind: Literal["device"] = "device"
    device: DeviceInfo
    meter: MeterInfo | None = None
    idle_power_w: Estimate | None = None
    drafters: list[DrafterOnDevice] = Field(min_length=1)
    provenance: Provenance


# --------------------------------------------------------------------------- alignment


class AcceptanceAtK(_Strict):
    """Acceptance measured (or imported) for one speculative length ``k``.

    ``accepted_fraction`` is the mean fraction of the k drafted tokens accepted
    (the paper's α(K)); ``tokens_per_round`` the mean tokens produced per round
    including the bonus token, when it was measured directly.
    ``tokens_per_round_iid`` and ``tokens_per_round_positional`` are what the fitted
    single-α and per-position models predict for this K (source ``fitted``), kept next
    to the measurement so the error of the i.i.d. assumption is visible.
    ``drafted_per_round`` is the mean number of tokens actually drafted per round when it
    is below ``k`` (a model-free drafter such as n-gram lookup proposes fewer, or none,
    when the context has no match); None means every round drafts ``k``. The model
    charges drafting, uplink and verification for these tokens, not for ``k``.
    """

    k: int = Field(ge=1)
    accepted_fraction: Estimate
    tokens_per_round: Estimate | None = None
    tokens_per_round_iid: Estimate | None = None
    tokens_per_round_positional: Estimate | None = None
    drafted_per_round: Estimate | None = None


class PromptAcceptance(_Strict):
    """Acceptance of one drafter along one profiled prompt (the per-prompt record behind
    an :class:`AlignmentEntry`'s pooled figures).

    Lists are indexed by K − 1 (K = 1..k_max) for the simulated round totals
    (``rounds``, ``drafted``, ``accepted``, ``tokens``, ``proposed``: expected counts of
    speculative rounds, draft slots, accepted drafts, produced tokens and tokens actually
    proposed along the prompt's trajectory) and by draft step j − 1 for ``reach_num`` /
    ``reach_den`` (per-position acceptance of step j = Σ reach_num / Σ reach_den).
    Pooled over prompts (ratios of sums) they give the entry's ``by_k`` and
    ``per_position`` means exactly; resampled over prompts they give the between-prompt
    spread a run of a few prompts sees (:func:`configspec.stats.cluster_bootstrap_ratios`).
    """

    prompt_id: str = Field(min_length=1)
    domain: str = "all"
    n_positions: int = Field(ge=0)
    rounds: list[float]
    drafted: list[float]
    accepted: list[float]
    tokens: list[float]
    proposed: list[float] | None = None
    reach_num: list[float] | None = None
    reach_den: list[float] | None = None

    @model_validator(mode="after")
    def _same_length(self) -> PromptAcceptance:
        n = len(self.rounds)
        for name in ("drafted", "accepted", "tokens", "proposed"):
            v = getattr(self, name)
            if v is not None and len(v) != n:
                raise ValueError(
                    f"prompt {self.prompt_id!r}: {name} has {len(v)} values, rounds has {n}"
                )
        return self


class AlignmentEntry(_Strict):
    """Acceptance of one drafter against the profile's target, for one domain and temperature.

    ``alpha`` is the single-rate fit; ``per_position`` the conditional acceptance
    a_1..a_n (probability that draft token i is accepted given all before it were).
    ``by_k`` holds directly measured figures per K. At least one of them is present.
    ``per_prompt`` (optional; profiles written before it lack it) holds the per-prompt
    records the pooled figures came from, for prediction intervals of a run of a few
    prompts.
    """

    drafter: str = Field(min_length=1)
    domain: str = "all"
    temperature: float = Field(default=0.0, ge=0)
    alpha: Estimate | None = None
    per_position: list[Estimate] | None = None
    by_k: list[AcceptanceAtK] | None = None
    n_prompts: int = Field(default=0, ge=0)
    n_tokens: int = Field(default=0, ge=0)
    per_prompt: list[PromptAcceptance] | None = None

    @model_validator(mode="after")
    def _has_data(self) -> AlignmentEntry:
        if self.alpha is None and not self.per_position and not self.by_k:
            raise ValueError(f"alignment entry for {self.drafter!r} has no acceptance data")
        for est in [self.alpha, *(self.per_position or [])]:
            if est is not None and not (0.0 <= est.low <= est.high <= 1.0):
                raise ValueError(
                    f"acceptance {est.mean} (CI {est.low}..{est.high}) for {self.drafter!r} "
                    "is outside [0, 1]"
                )
        for point in self.by_k or []:
            if not 0.0 <= point.accepted_fraction.mean <= 1.0:
                raise ValueError(
                    f"accepted fraction {point.accepted_fraction.mean} at K={point.k} for "
                    f"{self.drafter!r} is outside [0, 1]"
                )
        return self


class AlignmentProfile(_Strict):
    """Acceptance of drafters against one target model."""

    schema_version: StrictInt = Field(default=SCHEMA_VERSION, ge=1, le=SCHEMA_VERSION)
    kind: Literal["alignment"] = "alignment"
    target: str = Field(min_length=1)
    target_family: str = Field(min_length=1)
    entries: list[AlignmentEntry] = Field(min_length=1)
    provenance: Provenance


# --------------------------------------------------------------------------- verification


class GpuTimePrice(_Strict):
    """Cloud cost billed by accelerator time: ``price_usd_per_hour`` × verification seconds,
    plus an optional fixed per-round overhead (scheduling, batching slack) in milliseconds."""

    kind: Literal["gpu_time"] = "gpu_time"
    price_usd_per_hour: float = Field(ge=0)
    overhead_ms_per_round: float = Field(default=0.0, ge=0)


class PerTokenPrice(_Strict):
    """Cloud cost billed per token: ``price_usd_per_million_tokens`` × tokens billed per round.

    ``billed`` says which tokens are billed each round: ``positions`` bills K+1 (every
    position the target evaluates, the project's default); ``draft_tokens`` bills K (the
    paper's definition).
    """

    kind: Literal["per_token"] = "per_token"
    price_usd_per_million_tokens: float = Field(ge=0)
    billed: Literal["positions", "draft_tokens"] = "positions"


PriceModel = Annotated[GpuTimePrice | PerTokenPrice, Field(discriminator="kind")]


class VerifyLatencyPoint(_Strict):
    """Target latency to verify ``positions`` tokens (K drafts + 1) after ``context_tokens``.

    ``temperature`` 0 is greedy verification; above 0 the time also covers the verifier's
    speculative-sampling decision (target distributions at that temperature, the draft
    distributions expanded, accept/reject and the residual draw).
    """

    positions: int = Field(ge=1)
    context_tokens: int = Field(ge=0)
    batch: int = Field(default=1, ge=1)
    latency_ms: Estimate
    temperature: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _positive(self) -> VerifyLatencyPoint:
        if self.latency_ms.low < 0:
            raise ValueError(f"negative verification latency {self.latency_ms.mean} ms")
        return self


class VerificationProfile(_Strict):
    """Verification latency of one target on its cloud hardware, and its price."""

    schema_version: StrictInt = Field(default=SCHEMA_VERSION, ge=1, le=SCHEMA_VERSION)
    kind: Literal["verification"] = "verification"
    target: str = Field(min_length=1)
    target_family: str = Field(min_length=1)
    endpoint: str = "local"
    hardware: str = ""
    latency: list[VerifyLatencyPoint] = Field(min_length=1)
    price: PriceModel
    provenance: Provenance


# --------------------------------------------------------------------------- network


class OverheadAtRtt(_Strict):
    """The runtime's per-round overhead measured at one added round-trip time."""

    added_rtt_ms: float = Field(ge=0)
    round_overhead_ms: float = Field(ge=0)


class NetworkSettings(_Strict):
    """The edge-cloud link. One-way time is ``rtt_ms / 2`` plus payload / bandwidth.

    ``bytes_per_token`` is the wire size of one token id (plus its probability when
    sampling); ``bytes_per_message`` the fixed per-request overhead (HTTP headers, JSON).
    ``radio_energy_j_per_byte`` charges the edge for transmitting and receiving.
    """

    schema_version: StrictInt = Field(default=SCHEMA_VERSION, ge=1, le=SCHEMA_VERSION)
    kind: Literal["network"] = "network"
    rtt_ms: float = Field(default=50.0, ge=0)
    uplink_mbps: float = Field(default=20.0, gt=0)
    downlink_mbps: float = Field(default=50.0, gt=0)
    bytes_per_token: float = Field(default=8.0, ge=0)
    bytes_per_message: float = Field(default=400.0, ge=0)
    radio_energy_j_per_byte: float = Field(default=0.0, ge=0)
    round_overhead_ms: float = Field(default=0.0, ge=0)
    """Fixed per-round time of the runtime beyond drafting, verification and the link
    (HTTP framing, JSON, session bookkeeping on both ends); measured by running K=0 rounds
    through the real edge client and verifier (``configspec.validation.calibrate``)."""
    round_overhead_by_rtt: list[OverheadAtRtt] = Field(default_factory=list)
    """The overhead measured at each added RTT (``validate --run``, ``quickstart``); a run
    is validated with the one measured at its RTT (:meth:`overhead_at`). Files written
    before it existed read as empty."""
    source: Source = "illustrative"

    def overhead_at(self, added_rtt_ms: float) -> float:
        """The overhead (ms) measured at ``added_rtt_ms``, else ``round_overhead_ms``."""
        for point in self.round_overhead_by_rtt:
            if math.isclose(point.added_rtt_ms, added_rtt_ms, abs_tol=1e-6):
                return point.round_overhead_ms
        return self.round_overhead_ms

    def with_overheads(self, overhead_ms_by_rtt: dict[float, float]) -> NetworkSettings:
        """A copy with these overheads (ms per added RTT ms) merged into the per-RTT list
        (replacing the same RTTs); ``round_overhead_ms`` becomes the one measured closest
        to this link's ``rtt_ms``."""
        merged = {p.added_rtt_ms: p.round_overhead_ms for p in self.round_overhead_by_rtt}
        for rtt, over in overhead_ms_by_rtt.items():
            merged = {r: o for r, o in merged.items() if not math.isclose(r, rtt, abs_tol=1e-6)}
            merged[float(rtt)] = float(over)
        if not merged:
            return self.model_copy()
        closest = min(merged, key=lambda r: (abs(r - self.rtt_ms), r))
        return self.model_copy(
            update={
                "round_overhead_ms": merged[closest],
                "round_overhead_by_rtt": [
                    OverheadAtRtt(added_rtt_ms=r, round_overhead_ms=o)
                    for r, o in sorted(merged.items())
                ],
            }
        )


# --------------------------------------------------------------------------- contention


class ContentionProbe(_Strict):
    """What the drafter and the verifier cost at one moment, timed by
    :meth:`configspec.loop.runtime.Runtime.probe`: per-token drafting at K=1 after
    ``draft_context_tokens`` (ms, at ``temperature``; one sample per timing) and one
    verified position after about ``verify_context_tokens`` (ms, as the verifier reports
    it; one sample per K=0 round through the link at ``added_rtt_ms``), with the medians
    and the 1-minute load average at the time.

    A run record keeps the probe taken right before the run (``provenance.settings
    ["contention"]``); the profile directory keeps the baseline probes taken the same way
    right after profiling (:class:`ContentionBaseline`). Records written before the samples
    were kept read with empty sample lists and no drafter.
    """

    drafter: str = ""
    """Profiled drafter name (``""`` in records written before it was kept)."""
    temperature: float = Field(default=0.0, ge=0)
    added_rtt_ms: float = Field(default=0.0, ge=0)
    draft_context_tokens: int = Field(ge=0)
    draft_ms_per_token: float = Field(ge=0)
    """Median of ``draft_samples_ms``."""
    draft_samples_ms: list[float] = Field(default_factory=list)
    verify_context_tokens: int = Field(ge=0)
    verify_one_ms: float = Field(ge=0)
    """Median of ``verify_samples_ms``."""
    verify_samples_ms: list[float] = Field(default_factory=list)
    load_average_1m: float = 0.0
    taken_at: datetime | None = None

    def same_point(self, other: ContentionProbe) -> bool:
        """True when ``other`` timed the same drafter, temperature, RTT and contexts."""
        return (
            self.drafter == other.drafter
            and math.isclose(self.temperature, other.temperature, abs_tol=1e-9)
            and math.isclose(self.added_rtt_ms, other.added_rtt_ms, abs_tol=1e-6)
            and self.draft_context_tokens == other.draft_context_tokens
            and self.verify_context_tokens == other.verify_context_tokens
        )


class ContentionBaseline(_Strict):
    """Baseline contention probes of a profile directory (``contention/baseline.json``):
    :class:`ContentionProbe` s taken with the very method a run's probe uses, right after
    profiling, on the host as it was profiled. ``validate`` divides a run's probe by the
    baseline at the same point (like for like), not by the profiled fit. One probe per
    (drafter, temperature, RTT, contexts); a newer one replaces an older one."""

    schema_version: StrictInt = Field(default=SCHEMA_VERSION, ge=1, le=SCHEMA_VERSION)
    kind: Literal["contention_baseline"] = "contention_baseline"
    probes: list[ContentionProbe] = Field(default_factory=list)
    provenance: Provenance

    def find(self, probe: ContentionProbe) -> ContentionProbe | None:
        """The baseline taken at ``probe``'s point (drafter, T, RTT, contexts), or None."""
        return next((b for b in reversed(self.probes) if b.same_point(probe)), None)

    def with_probes(self, probes: list[ContentionProbe]) -> ContentionBaseline:
        """A copy holding ``probes`` (replacing any older probe at the same point)."""
        kept = [b for b in self.probes if not any(b.same_point(p) for p in probes)]
        return self.model_copy(update={"probes": kept + list(probes)})


Profile = Annotated[
    DeviceProfile | AlignmentProfile | VerificationProfile | NetworkSettings,
    Field(discriminator="kind"),
]


# --------------------------------------------------------------------------- runs


class RunConfig(_Strict):
    """The configuration a run executed (what ``validate`` looks the model up with).

    ``added_rtt_ms`` is the round-trip delay injected between client and server (delay
    proxy or netem), 0 for a direct connection; ``draft_top_k`` bounds the draft
    distributions sent when sampling.
    """

    drafter: str = Field(min_length=1)
    drafter_family: str = ""
    target: str = Field(min_length=1)
    target_family: str = ""
    k: int = Field(ge=0)
    temperature: float = Field(default=0.0, ge=0)
    added_rtt_ms: float = Field(default=0.0, ge=0)
    server_url: str = ""
    device: str | None = None
    prompt_tokens: int = Field(default=0, ge=0)
    max_tokens: int = Field(default=0, ge=0)
    seed: int | None = None
    draft_top_k: int | None = None
    k_policy: Literal["static", "adaptive"] = "static"
    """``adaptive``: K was chosen each round (``--k auto``) between ``k_min`` and ``k_max``
    to maximise ``objective``; ``k`` is then ``k_max`` and each round's
    :attr:`RoundTiming.choice` says what was chosen and why."""
    k_min: int | None = Field(default=None, ge=0)
    k_max: int | None = Field(default=None, ge=0)
    objective: str | None = None


class KChoice(_Strict):
    """What the adaptive-K policy knew when it chose one round's K (its live estimates).

    ``acceptance`` is the posterior mean per draft position i = 1..k_max of the chance
    that position i yields an accepted token given all before it did (proposal × acceptance,
    so a model-free drafter that proposes fewer is covered); ``tokens_per_round``,
    ``round_ms`` and ``objective_value`` are what the round model predicts at the chosen
    K; ``rtt_ms`` is the live link estimate, ``draft_ms_per_token`` and ``verify_ms`` the
    profile figures at the chosen K corrected by the live measurements; ``rounds_seen``
    counts the rounds observed so far.
    """

    k: int = Field(ge=0)
    objective_value: float
    tokens_per_round: float = Field(ge=0)
    round_ms: float = Field(ge=0)
    rtt_ms: float = Field(ge=0)
    draft_ms_per_token: float = Field(ge=0)
    verify_ms: float = Field(ge=0)
    acceptance: list[float] = Field(default_factory=list)
    rounds_seen: int = Field(default=0, ge=0)


class RoundTiming(_Strict):
    """One speculative round as the edge saw it (all times in ms).

    ``round_ms`` is wall time from the start of drafting to the parsed answer;
    ``network_ms`` = request round trip − ``server_ms`` (clock-free); ``uplink_ms`` and
    ``downlink_ms`` split it using the server's wall-clock stamps, so they are estimates
    that are only meaningful when client and server clocks agree (None otherwise).
    ``energy_j`` is edge energy over the round from the device meter (None without one).
    ``k`` is how many tokens were drafted; ``k_limit`` how many the client asked for (the
    configured K, less near ``max_tokens`` or the context limit; a model-free drafter may
    draft fewer than it was asked for). Rounds with ``k_limit`` below the configured K are
    the tail of a generation, which ``validate`` leaves out of steady-state figures.
    """

    round: int = Field(ge=0)
    k: int = Field(ge=0)
    k_limit: int | None = Field(default=None, ge=0)
    accepted: int = Field(ge=0)
    bonus: bool
    draft_ms: float = Field(ge=0)
    uplink_ms: float | None = None
    verify_ms: float = Field(ge=0)
    server_ms: float = Field(ge=0)
    downlink_ms: float | None = None
    network_ms: float
    round_ms: float = Field(ge=0)
    energy_j: float | None = None
    retries: int = Field(default=0, ge=0)
    choice: KChoice | None = None
    """The adaptive policy's decision for this round (None: a static K)."""


class RunTotals(_Strict):
    """Sums over a run. ``decode_s`` is the wall time of the rounds (prefill excluded)."""

    rounds: int = Field(ge=0)
    generated_tokens: int = Field(ge=0)
    draft_tokens: int = Field(ge=0)
    accepted_tokens: int = Field(ge=0)
    decode_s: float = Field(ge=0)
    prefill_ms: float = Field(ge=0)
    draft_prefill_ms: float = Field(default=0.0, ge=0)
    """The drafter's own prefill of the prompts (edge side, before the first round)."""
    draft_ms: float = Field(ge=0)
    verify_ms: float = Field(ge=0)
    network_ms: float
    energy_j: float | None = None
    reconnects: int = Field(default=0, ge=0)
    stopped_by: Literal["max_tokens", "stop_token", "context_limit"] = "max_tokens"


class RunRecord(_Strict):
    """What one edge run did, round by round, for ``validate`` to compare with the model.

    ``goodput_tokens_per_s`` is measured (generated tokens / decode wall time, with a
    bootstrap CI over rounds); ``tokens_per_joule`` is None when no meter was available
    (``energy_note`` says why).
    """

    schema_version: StrictInt = Field(default=SCHEMA_VERSION, ge=1, le=SCHEMA_VERSION)
    kind: Literal["run"] = "run"
    run_id: str = Field(min_length=1)
    config: RunConfig
    rounds: list[RoundTiming]
    totals: RunTotals
    goodput_tokens_per_s: Estimate
    accepted_fraction: Estimate | None = None
    tokens_per_joule: Estimate | None = None
    energy_note: str = ""
    provenance: Provenance
