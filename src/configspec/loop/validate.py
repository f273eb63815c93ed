"""Predicted versus measured: the model on stored profiles against the runtime's run records.

For every run record in a profile directory (``runs/``), the configuration it executed —
device, drafter, target, K and the RTT the delay proxy injected — is looked up through the
same model and search code ``select`` uses, with the model's inputs matched to what the
run did:

* drafting: the device profile's per-token latency at the run's K and mean context
  (prompt + half the generated tokens: the context grows by one token per token produced);
* verification: the verification profile's latency for K+1 positions at that context;
* the link: for runs of the local harness (:mod:`configspec.loop.runtime`) the RTT the delay
  proxy or netem injected (``RunConfig.added_rtt_ms``) with no bandwidth cap (the default);
  for other runs the stored network settings plus any injected RTT; in both cases plus the
  runtime's measured per-round overhead
  (:attr:`~configspec.config.NetworkSettings.round_overhead_ms`, see
  :mod:`configspec.loop.runtime`);
* acceptance: E(K) from the alignment profile at the run's temperature (sampled runs use
  the entry profiled at that temperature, and drafting and verification latencies profiled
  sampled, see :mod:`configspec.search.space`). By default every run is modelled with the
  pooled ``all`` entry. ``acceptance_domain="run"`` models a run whose prompts all come
  from one domain that alignment profiled for its drafter with that domain's entry (as
  ``select --domain`` reads it). Pooling is the default because it generalised better:
  on held-out prompts (``bench_validate --mode heldout``, 4 profiled prompts per domain)
  the per-domain entries missed the runs' E(K) by a median 10.7% against 5.0% pooled —
  a few prompts per domain measure the prompts more than the domain. The row records
  which entry was used (:attr:`ValidationRow.acceptance_domain`);
* host load: a run of the local runtime records a **contention probe** taken right before
  it (:meth:`configspec.loop.runtime.Runtime.probe`: the drafter at K=1 and one verified
  position, every sample kept). Divided by the **baseline probe** the profile directory
  keeps (the same method at the same point, taken right after profiling) it gives how
  much slower the host is now than when it was profiled; drafting (with catch-up) and
  verification latencies are scaled by a ratio only when its bootstrap interval excludes
  1, else by 1 (:mod:`configspec.loop.contention`; the row records both ratios, their
  intervals, what was applied and why). This folds in the load the run actually sees
  with a measurement taken before the run, never from its outcome
  (``contention_rule="gated"``, ``--fold-contention``). The probe is short (~2 s against a
  ~20 s run) and hardly predicts its own run, so the default rule is ``runs``
  (:data:`~configspec.loop.contention.DEFAULT_RULE`): each run's profiled latencies are
  levelled by the measured / profiled drafting and verification of the runs validated
  with it that ended before it started (the first run of a sweep stays on raw profiles);
  every rule is in :data:`~configspec.loop.contention.ContentionRule`, and each row says
  what was applied and why.

The model describes steady-state decoding, so every measured figure is taken over the
run's **steady-state rounds**: those that drafted with the configured K. The last rounds of
each prompt, where the client lowers K so as not to pass ``max_tokens`` (or the context
limit), are left out (they are known from the run's ``k_limit`` per round; a round's K is
fixed before its outcome, so leaving them out does not bias acceptance). The run's
end-to-end goodput (every generated token over the whole decode wall time) is compared too,
as ``goodput_end_to_end``, so the effect of that tail is visible.

**Prediction intervals.** The modelled E(K) is the mean over the profiled prompts; one run
decodes a few prompts whose acceptance differs from that mean by far more than its
confidence interval. Each row therefore also carries a prediction interval for a run of its
number of prompts (:class:`~configspec.loop.prediction.RunPrediction`, nominal 90% and 95%,
from the alignment entry's per-prompt records) and whether the measured E(K) and goodput fell
inside; the goodput summary counts them (``inside_prediction``). The interval holds the
between-prompt variance of acceptance only, not the timing model's error.

Each objective's relative error is ``predicted / measured - 1``. Goodput is measured as
tokens over round wall time (ratio of sums, bootstrap CI over rounds); tokens per USD are
derived from the run's measured verification time (or billed positions) and the profile's
price; tokens per joule only when the run had a power meter. A second goodput figure,
``goodput_timing``, replaces the modelled E(K) by the run's measured tokens per round,
separating the timing model from the acceptance model.
"""

from __future__ import annotations

import logging
import math
import re
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from configspec import records as R
from configspec.backends.specs import is_ngram, parse_spec
from configspec.config import (
    ContentionBaseline,
    Estimate,
    GpuTimePrice,
    NetworkSettings,
    RoundTiming,
    RunRecord,
    VerificationProfile,
)
from configspec.errors import InvalidInput, ProfileMissing
from configspec.loop.contention import (
    DEFAULT_RULE,
    ContentionFold,
    ContentionRule,
    Residual,
    SweepHistory,
    occasions_of,
    rule_fold,
    under_contention,
)
from configspec.loop.prediction import (
    RunPrediction,
    alignment_entry,
    coverage,
    run_prediction,
)
from configspec.model.cost import gpu_time_cost_usd, per_token_cost_usd
from configspec.model.evaluate import Link
from configspec.model.presets import get_preset
from configspec.search.evaluate import evaluate_space
from configspec.search.space import (
    Profiles,
    SearchSettings,
    build_space,
    read_profiles,
)
from configspec.serving.netem import EMULATED_LINKS
from configspec.stats import bootstrap_ratio, normal_mean
from configspec.store import ProfileStore

log = logging.getLogger(__name__)

OBJECTIVES = ("goodput", "goodput_timing", "goodput_end_to_end", "cost", "energy")
UNCAPPED_MBPS = 1e6
"""Bandwidth used for runs through the delay proxy without a cap (serialisation ≈ 0)."""

_RTT_MS = re.compile(r"\d+(?:\.\d+)?")


@dataclass(frozen=True)
class ConfigFilter:
    """``DRAFTER[:K][@RTT_MS]``: which runs to validate (K and RTT optional)."""

    drafter: str
    k: int | None = None
    added_rtt_ms: float | None = None

    def matches(self, run: RunRecord) -> bool:
        """True when ``run`` executed this configuration."""
        c = run.config
        return (
            parse_spec(self.drafter).matches(c.drafter)
            and (self.k is None or c.k == self.k)
            and (self.added_rtt_ms is None or math.isclose(c.added_rtt_ms, self.added_rtt_ms))
        )


def parse_config(text: str) -> ConfigFilter:
    """Parse ``DRAFTER[:K][@RTT_MS]`` (e.g. ``gemma-3-270m-q4_0:4@30``, ``ngram:2-4:3``);
    DRAFTER is a drafter spec (:mod:`configspec.backends.specs`)."""
    body, at, rtt = text.strip().partition("@")
    drafter, colon, k = body.rpartition(":")
    if not (colon and k.isdecimal()):
        drafter, k = body, ""
    if (
        not drafter
        or (at and not _RTT_MS.fullmatch(rtt))
        or (":" in drafter and not is_ngram(drafter))
    ):
        raise InvalidInput(
            f"configuration {text!r} is not DRAFTER[:K][@RTT_MS] (e.g. gemma-3-270m-q4_0:4@30)"
        )
    return ConfigFilter(drafter, int(k) if k else None, float(rtt) if at else None)


@dataclass(frozen=True)
class Compared:
    """One objective of one run: measured and modelled values (with bounds) and the error."""

    measured: float | None
    measured_low: float | None
    measured_high: float | None
    predicted: float | None
    predicted_low: float | None
    predicted_high: float | None
    measured_source: str
    error: float | None
    """predicted / measured − 1 (None when either side is missing)."""

    @classmethod
    def of(
        cls,
        measured: Estimate | None,
        predicted: tuple[float, float, float] | None,
        measured_source: str = "measured",
    ) -> Compared:
        """Compare a measured estimate with a modelled (mean, low, high)."""
        m = measured.mean if measured is not None else None
        p = predicted[0] if predicted is not None else None
        ok = m is not None and p is not None and m > 0 and math.isfinite(p)
        return cls(
            measured=m,
            measured_low=measured.low if measured is not None else None,
            measured_high=measured.high if measured is not None else None,
            predicted=p if p is None or math.isfinite(p) else None,
            predicted_low=predicted[1] if predicted is not None else None,
            predicted_high=predicted[2] if predicted is not None else None,
            measured_source=measured_source,
            error=(p / m - 1.0) if ok and m and p is not None else None,
        )


@dataclass(frozen=True)
class ValidationRow:
    """One run compared with the model (times in ms per round, means over rounds)."""

    run_id: str
    device: str
    drafter: str
    target: str
    k: int
    added_rtt_ms: float
    context_tokens: int
    rounds: int
    """Steady-state rounds compared (see the module docstring)."""
    generated_tokens: int
    tail_rounds: int
    """Rounds left out: the end of a generation, drafted with fewer than K."""
    tokens_per_round: Compared
    draft_ms: Compared
    verify_ms: Compared
    link_ms: Compared
    """Network plus runtime overhead per round (measured: round − draft − verify)."""
    round_ms: Compared
    objectives: dict[str, Compared]
    temperature: float = 0.0
    contention_draft: float | None = None
    """Drafting ratio applied: the run's probe over the baseline probe when
    distinguishable from 1, else 1 (None: the run has no probe or raw profiles asked)."""
    contention_verify: float | None = None
    """Verification ratio applied, likewise."""
    contention: ContentionFold | None = None
    """Both ratios as measured, their 95% intervals, what was applied and why (None: the
    run has no probe)."""
    domains: tuple[str, ...] = ()
    """Domains of the prompts the run decoded (as recorded by the runtime)."""
    acceptance_domain: str = "all"
    """Alignment domain whose acceptance modelled the run (``all``: pooled)."""
    n_prompts: int = 1
    """Prompts the run decoded."""
    prediction: RunPrediction | None = None
    """Prediction intervals of E(K) and goodput for a run of this many prompts (between-
    prompt variance of acceptance; None without per-prompt records in the profile)."""


@dataclass(frozen=True)
class ObjectiveSummary:
    """Error statistics of one objective over the validated runs (relative errors)."""

    n: int
    median_abs_error: float | None
    max_abs_error: float | None
    mean_error: float | None
    within_ci: int
    """Runs whose modelled interval overlaps the measured 95% CI."""
    inside_prediction: dict[str, list[int]] = field(default_factory=dict)
    """Nominal level (``"90%"``) -> [runs whose measured value fell inside the prediction
    interval for a run of their many prompts, runs with such an interval] (goodput only)."""


@dataclass
class ValidationResult:
    """Every compared run, the error summary per objective and the inputs used."""

    rows: list[ValidationRow]
    summary: dict[str, ObjectiveSummary]
    round_overhead_ms: float
    network: NetworkSettings
    preset: str
    warnings: list[str] = field(default_factory=list)
    contention_rule: ContentionRule = DEFAULT_RULE

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (every figure labelled by where it came from)."""
        return {
            "kind": "validation",
            "preset": self.preset,
            "contention_rule": self.contention_rule,
            "sources": {
                "measured": "run records written by the runtime (configspec run edge / harness)",
                "predicted": "modelled from the stored profiles by configspec.model",
                "prediction": "prediction intervals (nominal 90%/95%) of E(K) and goodput for "
                "a run of the run's number of prompts: cluster bootstrap over the profiled "
                "prompts (estimator cluster_bootstrap_prompts); acceptance variance only",
            },
            "error_definition": "predicted / measured - 1",
            "round_overhead_ms": self.round_overhead_ms,
            "network": self.network.model_dump(mode="json"),
            "summary": {k: asdict(v) for k, v in self.summary.items()},
            "runs": [asdict(r) for r in self.rows],
            "warnings": self.warnings,
        }


def measured_cost(rounds: Sequence[RoundTiming], v: VerificationProfile) -> Estimate | None:
    """Tokens per USD of ``rounds`` priced by ``v``'s price, with the model's cost functions
    (:mod:`configspec.model.cost`) applied to each round's measured verification time (ms)
    or drafted K; None when nothing was generated or nothing cost anything."""
    tokens = sum(r.accepted + 1 for r in rounds)
    if tokens == 0:
        return None
    price = v.price
    if isinstance(price, GpuTimePrice):
        per_round = gpu_time_cost_usd(
            [r.verify_ms for r in rounds], price.price_usd_per_hour, price.overhead_ms_per_round
        )
    else:
        per_round = per_token_cost_usd(
            [r.k for r in rounds],
            price.price_usd_per_million_tokens,
            price.billed == "draft_tokens",
        )
    usd = float(np.sum(per_round))
    if usd <= 0:
        return None
    return Estimate(mean=tokens / usd, n=len(rounds), source="measured")


def steady_rounds(run: RunRecord) -> tuple[list[RoundTiming], int]:
    """The run's rounds drafted with the configured K, and how many were left out.

    Every round counts when the record has no ``k_limit`` (records written before it
    existed) or when no round drafted the full K (K at or above ``max_tokens``).
    """
    k = run.config.k
    steady = [r for r in run.rounds if r.k_limit == k]
    if not steady or any(r.k_limit is None for r in run.rounds):
        steady = list(run.rounds)
    return steady, len(run.rounds) - len(steady)


def _pick_device(profiles: Profiles, run: RunRecord) -> str:
    names = [d.device.name for d in profiles.devices]
    if run.config.device is not None:
        if run.config.device not in names:
            raise ProfileMissing(
                f"run {run.run_id} was on device {run.config.device!r}, which has no device "
                f"profile (known: {', '.join(names)}); run `configspec profile device "
                f"--device {run.config.device}`"
            )
        return run.config.device
    with_drafter = [
        d.device.name for d in profiles.devices if any(
            x.drafter == run.config.drafter for x in d.drafters)
    ]  # fmt: skip
    if len(with_drafter) == 1:
        return with_drafter[0]
    if not with_drafter:
        raise ProfileMissing(
            f"drafter {run.config.drafter!r} of run {run.run_id} has no device profile; run "
            f"`configspec profile device --drafter {run.config.drafter}`"
        )
    raise InvalidInput(
        f"run {run.run_id} names no device and {len(with_drafter)} device profiles have "
        f"drafter {run.config.drafter!r}; record runs with --device"
    )


def _n_prompts(run: RunRecord) -> int:
    """How many prompts the run decoded (1 when the record does not say)."""
    return max(1, len(run.provenance.settings.get("prompts", [])) or 1)


def _context_tokens(run: RunRecord) -> int:
    """Mean context during decoding: prompt plus half the tokens generated per prompt."""
    c = run.config
    n_prompts = _n_prompts(run)
    per_prompt = run.totals.generated_tokens / n_prompts
    return round(R.mean_decoding_context_tokens(c.prompt_tokens, per_prompt))


def _energy_source(run: RunRecord) -> str:
    """How a run's energy was obtained, as the validation reports it."""
    per_joule = run.tokens_per_joule
    if per_joule is None:
        return f"not measured: {run.energy_note}"
    if per_joule.source != "measured":
        return f"not measured ({per_joule.source}; not compared with the model): {run.energy_note}"
    return "measured"


def _run_link(run: RunRecord, network: NetworkSettings) -> Link:
    """The link a run crossed. Runs of the local runtime go through the delay proxy or
    netem (loopback, no bandwidth cap): the link is exactly the injected RTT. Other runs (a
    real deployment) crossed the link the network settings describe, plus whatever delay
    was injected on top."""
    proxied = run.provenance.settings.get("link", "").startswith(EMULATED_LINKS)
    return Link(
        rtt_ms=run.config.added_rtt_ms + (0.0 if proxied else network.rtt_ms),
        uplink_mbps=UNCAPPED_MBPS if proxied else network.uplink_mbps,
        downlink_mbps=UNCAPPED_MBPS if proxied else network.downlink_mbps,
        bytes_per_token=network.bytes_per_token,
        bytes_per_message=network.bytes_per_message,
        radio_energy_j_per_byte=network.radio_energy_j_per_byte,
        round_overhead_ms=network.round_overhead_ms,
    )


@dataclass(frozen=True)
class _Modelled:
    """The model's row for a run's configuration and what it was evaluated at: the device,
    the mean decoding context (tokens) and the contention ratios folded in (or None)."""

    row: pd.Series
    device: str
    context_tokens: int
    contention: ContentionFold | None
    acceptance_domain: str


AcceptanceDomain = Literal["run", "all"]


def acceptance_domain_for(run: RunRecord, profiles: Profiles, policy: AcceptanceDomain) -> str:
    """The alignment domain that models ``run``: its prompts' one domain when alignment
    profiled that domain for the run's drafter and target, else ``all`` (pooled)."""
    domains = run.provenance.settings.get("domains", ())
    if policy == "all" or not isinstance(domains, list | tuple) or len(domains) != 1:
        return "all"
    c = run.config
    wanted = str(domains[0])
    profiled = any(
        e.domain == wanted and e.drafter == c.drafter
        for a in profiles.alignments
        if a.target == c.target
        for e in a.entries
    )
    return wanted if profiled else "all"


def _modelled(
    run: RunRecord,
    profiles: Profiles,
    preset_name: str,
    network: NetworkSettings,
    rule: ContentionRule,
    warnings: list[str] | None,
    acceptance_domain: AcceptanceDomain = "all",
    baseline: ContentionBaseline | None = None,
    history: SweepHistory | None = None,
) -> _Modelled:
    c = run.config
    if c.k < 1:
        raise InvalidInput(f"run {run.run_id} has K={c.k}; only speculative runs are validated")
    device = _pick_device(profiles, run)
    if c.target not in [v.target for v in profiles.verifications]:
        raise ProfileMissing(
            f"target {c.target!r} of run {run.run_id} has no verification profile; run "
            f"`configspec profile verify --target {c.target}`"
        )
    ctx = _context_tokens(run)
    domain = acceptance_domain_for(run, profiles, acceptance_domain)
    settings = SearchSettings(
        k_max=c.k,
        context_tokens=ctx,
        domain=domain,
        temperature=c.temperature,
        devices=(device,),
        drafters=(c.drafter,),
        targets=(c.target,),
    )
    preset = get_preset(preset_name)
    fold = rule_fold(run, baseline, rule, history)
    if fold is not None:
        profiles = under_contention(profiles, device, c.target, fold.ratios)
    space = build_space(
        profiles.devices, profiles.alignments, profiles.verifications, preset, settings
    )
    if warnings is not None:
        warnings.extend(w for w in space.warnings if w not in warnings)
    table = evaluate_space(space, _run_link(run, network), preset)
    hit = table[(table[R.MODE] == R.MODE_SPECULATIVE) & (table[R.K] == c.k)]
    if hit.empty:
        raise ProfileMissing(
            f"drafter {c.drafter!r} with target {c.target!r} at K={c.k} cannot be modelled: "
            f"the alignment profile has no entry for it; run `configspec profile alignment "
            f"--target {c.target} --drafter {c.drafter}`"
        )
    return _Modelled(hit.iloc[0], device, ctx, fold, domain)


def _triple(row: pd.Series, col: str, lo: str, hi: str) -> tuple[float, float, float]:
    return float(row[col]), float(row[lo]), float(row[hi])


def _objectives(
    run: RunRecord, row: pd.Series, rounds: Sequence[RoundTiming], profiles: Profiles
) -> dict[str, Compared]:
    """Every objective of the run, measured over its steady-state rounds, against the model."""
    tpr_meas = [r.accepted + 1 for r in rounds]
    goodput = bootstrap_ratio(
        np.asarray(tpr_meas, dtype=np.float64),
        np.asarray([r.round_ms for r in rounds], dtype=np.float64),
        1e3,
    )
    round_ms = float(row[R.ROUND_MS])
    measured_tpr = statistics.fmean(tpr_meas) if tpr_meas else 0.0
    timing = measured_tpr * 1e3 / round_ms if round_ms > 0 else float("nan")
    verification = next(v for v in profiles.verifications if v.target == run.config.target)
    modelled_goodput = _triple(row, R.GOODPUT_TOK_S, R.GOODPUT_TOK_S_LOW, R.GOODPUT_TOK_S_HIGH)
    # only a metered figure is compared with the model: an estimate (the CPU-time
    # estimator behind `run edge --meter auto` on a host without a sensor) is a model too
    per_joule = run.tokens_per_joule
    metered = per_joule if per_joule is not None and per_joule.source == "measured" else None
    return {
        "goodput": Compared.of(goodput, modelled_goodput, "measured: steady-state rounds"),
        "goodput_timing": Compared.of(
            goodput, (timing, timing, timing), "measured: steady-state rounds"
        ),
        "goodput_end_to_end": Compared.of(
            run.goodput_tokens_per_s,
            modelled_goodput,
            "measured: every token over the decode wall time",
        ),
        "cost": Compared.of(
            measured_cost(rounds, verification),
            _triple(row, R.TOKENS_PER_USD, R.TOKENS_PER_USD_LOW, R.TOKENS_PER_USD_HIGH),
            "measured verification time x profiled price",
        ),
        "energy": Compared.of(
            metered,
            _triple(row, R.TOKENS_PER_J, R.TOKENS_PER_J_LOW, R.TOKENS_PER_J_HIGH)
            if math.isfinite(float(row[R.TOKENS_PER_J]))
            else None,
            _energy_source(run),
        ),
    }


def _per_round(values: Sequence[float], modelled: float) -> Compared:
    """A per-round quantity (mean over rounds, normal CI) against its modelled value."""
    return Compared.of(normal_mean(values) if values else None, (modelled,) * 3)


def _row(
    run: RunRecord,
    profiles: Profiles,
    preset_name: str,
    network: NetworkSettings,
    rule: ContentionRule = "off",
    warnings: list[str] | None = None,
    acceptance_domain: AcceptanceDomain = "all",
    baseline: ContentionBaseline | None = None,
    history: SweepHistory | None = None,
) -> ValidationRow:
    m = _modelled(
        run, profiles, preset_name, network, rule, warnings, acceptance_domain, baseline, history
    )
    folded = m.contention is not None and rule != "off"
    row, c = m.row, run.config
    rounds, tail = steady_rounds(run)
    tpr_meas = [float(r.accepted + 1) for r in rounds]
    link_pred = float(row[R.UPLINK_MS] + row[R.DOWNLINK_MS]) + network.round_overhead_ms
    objectives = _objectives(run, row, rounds, profiles)
    n_prompts = _n_prompts(run)
    entry = alignment_entry(
        profiles.alignments, c.target, c.drafter, m.acceptance_domain, c.temperature
    )
    prediction = run_prediction(
        entry,
        c.k,
        n_prompts,
        float(row[R.TOKENS_PER_ROUND]),
        float(row[R.GOODPUT_TOK_S]),
        statistics.fmean(tpr_meas) if tpr_meas else None,
        objectives["goodput"].measured,
    )
    return ValidationRow(
        run_id=run.run_id,
        device=m.device,
        drafter=c.drafter,
        target=c.target,
        k=c.k,
        added_rtt_ms=c.added_rtt_ms,
        context_tokens=m.context_tokens,
        rounds=len(rounds),
        generated_tokens=run.totals.generated_tokens,
        tail_rounds=tail,
        tokens_per_round=Compared.of(
            normal_mean(tpr_meas) if tpr_meas else None,
            _triple(row, R.TOKENS_PER_ROUND, R.TOKENS_PER_ROUND_LOW, R.TOKENS_PER_ROUND_HIGH),
        ),
        draft_ms=_per_round([r.draft_ms for r in rounds], float(row[R.DRAFT_MS])),
        verify_ms=_per_round([r.verify_ms for r in rounds], float(row[R.VERIFY_MS])),
        link_ms=_per_round([r.round_ms - r.draft_ms - r.verify_ms for r in rounds], link_pred),
        round_ms=_per_round([r.round_ms for r in rounds], float(row[R.ROUND_MS])),
        objectives=objectives,
        temperature=c.temperature,
        contention_draft=m.contention.draft.applied if m.contention and folded else None,
        contention_verify=m.contention.verify.applied if m.contention and folded else None,
        contention=m.contention,
        domains=tuple(run.provenance.settings.get("domains", ())),
        acceptance_domain=m.acceptance_domain,
        n_prompts=n_prompts,
        prediction=prediction,
    )


def _residual(run: RunRecord, raw: ValidationRow) -> Residual | None:
    """``run``'s measured / modelled mean drafting and verification per round on raw
    profiles (None when either cannot be formed)."""
    d_meas, d_pred = raw.draft_ms.measured, raw.draft_ms.predicted
    v_meas, v_pred = raw.verify_ms.measured, raw.verify_ms.predicted
    if d_meas is None or v_meas is None or not d_pred or not v_pred:
        return None
    c = run.config
    return Residual(
        run.provenance.created_at, c.drafter, c.target, d_meas / d_pred, v_meas / v_pred
    )


def summarize(rows: Sequence[ValidationRow]) -> dict[str, ObjectiveSummary]:
    """Median / maximum absolute relative error per objective over ``rows``."""
    out = {}
    for name in OBJECTIVES:
        comps = [r.objectives[name] for r in rows if r.objectives[name].error is not None]
        errs = np.array([c.error for c in comps], dtype=np.float64)
        within = sum(
            1
            for c in comps
            if c.predicted_low is not None
            and c.predicted_high is not None
            and c.measured_low is not None
            and c.measured_high is not None
            and c.predicted_low <= c.measured_high
            and c.predicted_high >= c.measured_low
        )
        out[name] = ObjectiveSummary(
            n=int(errs.size),
            median_abs_error=float(np.median(np.abs(errs))) if errs.size else None,
            max_abs_error=float(np.max(np.abs(errs))) if errs.size else None,
            mean_error=float(np.mean(errs)) if errs.size else None,
            within_ci=within,
            inside_prediction={
                level: list(counts)
                for level, counts in coverage([r.prediction for r in rows]).items()
            }
            if name == "goodput"
            else {},
        )
    return out


def validate(
    store: ProfileStore,
    configs: Sequence[ConfigFilter] = (),
    preset: str = "configspec",
    runs: Sequence[RunRecord] | None = None,
    overhead_ms_by_rtt: dict[float, float] | None = None,
    fold_contention: bool = False,
    acceptance_domain: AcceptanceDomain = "all",
    contention_rule: ContentionRule | None = None,
) -> ValidationResult:
    """Compare every stored run (or ``runs``) matching ``configs`` with the model.

    ``acceptance_domain="all"`` (default) models every run with the pooled acceptance;
    ``"run"`` a single-domain run with its domain's acceptance when alignment profiled
    that domain (see the module docstring).

    ``contention_rule`` (:data:`~configspec.loop.contention.ContentionRule`) says how the
    host's level is folded into each run's prediction; None: ``gated`` when
    ``fold_contention`` else :data:`~configspec.loop.contention.DEFAULT_RULE` (``runs``).
    ``running`` reads the probes, ``runs`` the raw-profile residuals, of every run in
    ``records`` up to the run's start (the sweep's history).

    ``overhead_ms_by_rtt`` maps an added RTT (ms) to the runtime overhead measured at it,
    for runs at several RTTs; other runs use the overhead stored for their RTT
    (``round_overhead_by_rtt``), else the stored ``round_overhead_ms``.

    Raises :class:`~configspec.errors.ProfileMissing` naming the profile command to run
    when a piece is missing, and when there are no runs to compare.
    """
    profiles = read_profiles(store)
    baseline = store.contention_baseline()
    every = list(runs) if runs is not None else store.runs()  # the sweep, before filtering
    records = every
    if not records:
        raise ProfileMissing(
            f"no run records in {store.root / 'runs'}; run configurations with `configspec "
            "validate --run ...`, `configspec quickstart` or `configspec run edge --profiles "
            f"{store.root}`"
        )
    if configs:
        records = [r for r in records if any(f.matches(r) for f in configs)]
        if not records:
            wanted = ", ".join(f.drafter + (f":{f.k}" if f.k else "") for f in configs)
            raise InvalidInput(f"no stored run matches {wanted}; check --configs or run them")
    rule: ContentionRule = contention_rule or ("gated" if fold_contention else DEFAULT_RULE)
    # only `running` reads the probe occasions (of every run, filtered or not)
    occasions = occasions_of(every, baseline) if baseline and rule == "running" else []
    warnings: list[str] = []
    todo: list[tuple[RunRecord, NetworkSettings]] = []
    for run in records:
        if run.config.k == 0:
            warnings.append(f"run {run.run_id} is K=0 (cloud-only calibration); not validated")
            continue
        if run.config.k_policy == "adaptive":
            warnings.append(
                f"run {run.run_id} chose K per round (--k auto); not validated against one "
                "configuration (its report shows K and the estimates over time)"
            )
            continue
        # the overhead measured at this run's RTT: passed in, else stored per RTT
        over = profiles.network.overhead_at(run.config.added_rtt_ms)
        for rtt, given in (overhead_ms_by_rtt or {}).items():
            if math.isclose(rtt, run.config.added_rtt_ms):
                over = given
        todo.append((run, profiles.network.model_copy(update={"round_overhead_ms": over})))
    residuals: list[Residual] = []
    if rule == "runs":  # the runs validated, on raw profiles, as the probe of later ones
        for run, network in todo:
            raw = _row(run, profiles, preset, network, "off", None, acceptance_domain, baseline)
            residual = _residual(run, raw)
            if residual is not None:
                residuals.append(residual)
    history = SweepHistory(occasions, residuals)
    rows = [
        _row(
            run,
            profiles,
            preset,
            network,
            rule,
            warnings,
            acceptance_domain,
            baseline,
            history,
        )
        for run, network in todo
    ]
    if profiles.network.round_overhead_ms == 0:
        warnings.append(
            "the network settings have no measured round_overhead_ms: the runtime's per-round "
            "HTTP/JSON cost is not modelled (configspec quickstart / validate --run measure it)"
        )
    return ValidationResult(
        rows=rows,
        summary=summarize(rows),
        round_overhead_ms=profiles.network.round_overhead_ms,
        network=profiles.network,
        preset=preset,
        warnings=warnings,
        contention_rule=rule,
    )
