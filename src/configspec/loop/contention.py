"""Host contention, like for like: a run's probe against the baseline probe, and the rules
that fold the host's level into a run's prediction (:data:`ContentionRule`; the default,
:data:`DEFAULT_RULE`, is ``runs``: the earlier runs of the sweep as the probe).

Right before and right after each run the runtime times the drafter (K=1) and one
verified position (K=0 rounds through the run's link) —
:meth:`~configspec.loop.runtime.Runtime.probe` — and keeps every sample in the run record
(``contention``, ``contention_after``); the two are pooled, so the probe brackets the load
over the run instead of reading one second before it (records with only the first use it
alone). Right after profiling, the same method at the same point
(drafter, temperature, RTT, contexts) is taken once more and stored with the profiles as
the **baseline** (:class:`~configspec.config.ContentionBaseline`,
``DIR/contention/baseline.json``; :func:`take_baseline`). It lives with the profiles, not
with the runs, because it describes the host the profiles were taken on: every later run
in that directory is compared with it.

``validate`` folds a run's contention in as

    ratio = median(run probe samples) / median(baseline samples)

separately for drafting and verification, and applies a ratio only when it is
distinguishable from 1: when the 95% bootstrap interval of that ratio of medians
(:func:`configspec.stats.bootstrap_ratio_of_medians`, each side resampled on its own)
excludes 1. Otherwise the ratio applied is 1 — a quiet host is left alone rather than
moved by one noisy second of timing. When the run has probes before and after it, the
pooled ratio is applied only when each occasion's own ratio also excludes 1 on the same
side (:func:`agreed`): samples within one probe are taken within seconds of each other and
are not independent, so the pooled bootstrap interval is too narrow, and occasions that
disagree mean the load changed within the run. Each row records the measured ratio, its
interval, the ratio applied and why (:class:`ContentionRatio`).

Why not the profiled fit: the probe's K=0 round through the live server and the client's
own timing is a different method from the profiler's sweep and its fit, so probe / fit
read ×0.74–0.95 on a quiet host (biased, not contention). Records without samples (written
before they were kept) and profile directories without a baseline are validated without
any ratio (the row says so).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import ValidationError

from configspec.config import ContentionBaseline, ContentionProbe, Estimate, Provenance, RunRecord
from configspec.search.space import Profiles
from configspec.stats import bootstrap_ratio_of_medians

if TYPE_CHECKING:
    from configspec.loop.runtime import RunPlan, Runtime
    from configspec.store import ProfileStore

MIN_SAMPLES = 3
"""Fewest samples on each side for a ratio to be judged (fewer: not applied)."""


@dataclass(frozen=True)
class ContentionRatio:
    """One latency's contention: the run's probe over the baseline probe (ratio of medians,
    dimensionless) with its 95% bootstrap interval, the ratio ``validate`` applied (1 when
    it was not distinguishable from 1 or could not be formed) and why."""

    measured: float | None
    low: float | None
    high: float | None
    applied: float
    reason: str


@dataclass(frozen=True)
class ContentionFold:
    """Drafting and verification contention of one run, and the load averages (1 min) at
    its probe and at the baseline (None without a baseline)."""

    draft: ContentionRatio
    verify: ContentionRatio
    probe_load_average_1m: float
    baseline_load_average_1m: float | None

    @property
    def ratios(self) -> tuple[float, float]:
        """(drafting, verification) ratios applied to the profiled latencies."""
        return self.draft.applied, self.verify.applied


def _not_applied(reason: str) -> ContentionRatio:
    return ContentionRatio(None, None, None, 1.0, reason)


def judge_ratio(
    run_samples_ms: Sequence[float], baseline_samples_ms: Sequence[float]
) -> ContentionRatio:
    """The ratio of medians of ``run_samples_ms`` over ``baseline_samples_ms`` (latencies in
    ms, same method and point) and whether it is applied: only when its 95% bootstrap
    interval excludes 1; with fewer than :data:`MIN_SAMPLES` on either side it is not."""
    if len(run_samples_ms) < MIN_SAMPLES or len(baseline_samples_ms) < MIN_SAMPLES:
        return _not_applied(
            f"too few samples ({len(run_samples_ms)} probe, {len(baseline_samples_ms)} "
            f"baseline; need {MIN_SAMPLES})"
        )
    try:
        est: Estimate = bootstrap_ratio_of_medians(run_samples_ms, baseline_samples_ms)
    except ValueError as exc:
        return _not_applied(f"no ratio: {exc}")
    lo, hi = est.low, est.high
    interval = f"95% CI {lo:.3f}..{hi:.3f}"
    if lo > 1.0 or hi < 1.0:
        return ContentionRatio(est.mean, lo, hi, est.mean, f"applied: {interval} excludes 1")
    return ContentionRatio(est.mean, lo, hi, 1.0, f"not applied: {interval} holds 1")


def _stored_probe(run: RunRecord, key: str) -> ContentionProbe | None:
    raw = run.provenance.settings.get(key)
    if not isinstance(raw, dict):
        return None
    try:
        probe = ContentionProbe.model_validate(raw)
    except ValidationError:
        return None
    c = run.config
    # older probes did not name their point: it is the run's own configuration
    update = {"temperature": c.temperature, "added_rtt_ms": c.added_rtt_ms}
    return probe.model_copy(update={"drafter": probe.drafter or c.drafter, **update})


def probe_occasions(run: RunRecord) -> list[ContentionProbe]:
    """The probes stored in ``run``, one per occasion: the one taken right before the run
    and, when it was taken at the same point, the one right after it (empty: no probe)."""
    before = _stored_probe(run, "contention")
    if before is None:
        return []
    after = _stored_probe(run, "contention_after")
    if after is None or not after.same_point(before):
        return [before]
    return [before, after]


def run_probe(run: RunRecord) -> ContentionProbe | None:
    """The contention probe stored in ``run`` (None when it has none or it is unreadable):
    the one taken right before the run, with the samples of the one taken right after it
    (``contention_after``, at the same point) pooled in, so the probe brackets the load
    over the run rather than reading one moment before it."""
    occasions = probe_occasions(run)
    if not occasions:
        return None
    before = occasions[0]
    if len(occasions) == 1:
        return before
    after = occasions[1]
    draft = before.draft_samples_ms + after.draft_samples_ms
    verify = before.verify_samples_ms + after.verify_samples_ms
    return before.model_copy(
        update={
            "draft_samples_ms": draft,
            "draft_ms_per_token": float(np.median(draft)) if draft else before.draft_ms_per_token,
            "verify_samples_ms": verify,
            "verify_one_ms": float(np.median(verify)) if verify else before.verify_one_ms,
            "load_average_1m": (before.load_average_1m + after.load_average_1m) / 2.0,
        }
    )


def agreed(pooled: ContentionRatio, each: Sequence[ContentionRatio]) -> ContentionRatio:
    """``pooled`` (the ratio over every occasion's samples) applied only when every
    occasion's own ratio in ``each`` (before, after) excludes 1 on the same side.

    The samples of one probe are taken within a few seconds of each other and are not
    independent: the spread between occasions is much larger than within one (bench_validate
    at load 2-3: verification read 312 ms before a run and 141 ms 30 s later). The pooled
    bootstrap sees only the spread within occasions, so its interval is too narrow; when
    the occasions bracketing a run disagree, the load changed within the run and the probe
    does not measure what the run saw. With one occasion there is nothing to compare."""
    if pooled.applied == 1.0 or len(each) < 2 or pooled.measured is None:
        return pooled
    slower = pooled.measured > 1.0

    def excludes(r: ContentionRatio) -> bool:
        if r.low is None or r.high is None:
            return False
        return r.low > 1.0 if slower else r.high < 1.0

    def show(r: ContentionRatio) -> str:
        if r.measured is None or r.low is None or r.high is None:
            return "none"
        return f"{r.measured:.2f} ({r.low:.2f}..{r.high:.2f})"

    occasions = ", ".join(show(r) for r in each)
    if all(excludes(r) for r in each):
        return replace(pooled, reason=f"{pooled.reason}; each occasion too: {occasions}")
    return replace(
        pooled,
        applied=1.0,
        reason=f"not applied: the probes before and after the run disagree ({occasions}); "
        f"pooled {pooled.reason.removeprefix('applied: ')}",
    )


def contention_fold(
    run: RunRecord, baseline: ContentionBaseline | None, fold: bool = True
) -> ContentionFold | None:
    """How ``run``'s contention is folded in (see the module docstring); None when the run
    has no probe. With ``fold`` False every ratio applied is 1 (raw profiles asked); the
    ratios are still measured and judged, for the record."""
    probe = run_probe(run)
    if probe is None:
        return None
    base = baseline.find(probe) if baseline is not None else None
    base_load = base.load_average_1m if base is not None else None
    if not probe.draft_samples_ms or not probe.verify_samples_ms:
        old = _not_applied("not applied: the run's probe has no samples (an older record)")
        return ContentionFold(old, old, probe.load_average_1m, base_load)
    if base is None:
        none = _not_applied(
            "not applied: no baseline probe at this point in the profiles "
            "(contention/baseline.json)"
        )
        return ContentionFold(none, none, probe.load_average_1m, None)
    occasions = probe_occasions(run)
    draft = agreed(
        judge_ratio(probe.draft_samples_ms, base.draft_samples_ms),
        [judge_ratio(o.draft_samples_ms, base.draft_samples_ms) for o in occasions],
    )
    verify = agreed(
        judge_ratio(probe.verify_samples_ms, base.verify_samples_ms),
        [judge_ratio(o.verify_samples_ms, base.verify_samples_ms) for o in occasions],
    )
    if not fold:
        draft, verify = _raw(draft), _raw(verify)
    return ContentionFold(draft, verify, probe.load_average_1m, base_load)


def _raw(ratio: ContentionRatio) -> ContentionRatio:
    """``ratio`` as measured and judged, but not applied: raw profiles asked."""
    why = "not applied: raw profiles asked (fold_contention=False); would be"
    return replace(ratio, applied=1.0, reason=f"{why} {ratio.reason}")


def scaled(est: Estimate, ratio: float) -> Estimate:
    """``est`` with its mean and bounds multiplied by ``ratio``."""
    return est.model_copy(
        update={
            "mean": est.mean * ratio,
            "ci_low": None if est.ci_low is None else est.ci_low * ratio,
            "ci_high": None if est.ci_high is None else est.ci_high * ratio,
        }
    )


def under_contention(
    profiles: Profiles, device: str, target: str, ratios: tuple[float, float]
) -> Profiles:
    """``profiles`` with ``device``'s drafting (and catch-up) and ``target``'s
    verification latencies scaled by ``ratios`` (drafting, verification)."""
    r_d, r_v = ratios
    if math.isclose(r_d, 1.0) and math.isclose(r_v, 1.0):
        return profiles
    devices = []
    for dev in profiles.devices:
        if dev.device.name == device:
            drafters = [
                d.model_copy(
                    update={
                        "latency": [
                            p.model_copy(update={"per_token_ms": scaled(p.per_token_ms, r_d)})
                            for p in d.latency
                        ],
                        "catchup_ms": None if d.catchup_ms is None else scaled(d.catchup_ms, r_d),
                    }
                )
                for d in dev.drafters
            ]
            dev = dev.model_copy(update={"drafters": drafters})
        devices.append(dev)
    verifications = [
        v.model_copy(
            update={
                "latency": [
                    p.model_copy(update={"latency_ms": scaled(p.latency_ms, r_v)})
                    for p in v.latency
                ]
            }
        )
        if v.target == target
        else v
        for v in profiles.verifications
    ]
    return Profiles(devices, profiles.alignments, verifications, profiles.network)


def take_baseline(
    runtime: Runtime, plans: Iterable[RunPlan], store: ProfileStore
) -> list[ContentionProbe]:
    """Probe every distinct point of ``plans`` (drafter, temperature, RTT) with
    ``runtime`` — the very probe a run takes — and merge them into ``store``'s baseline
    (atomically; a probe at the same point is replaced). Take it right after profiling,
    before the runs. Returns the new probes."""
    if not runtime.settings.probe_contention:
        return []
    seen: set[tuple[str, float, float]] = set()
    probes = []
    for plan in plans:
        key = (plan.drafter, plan.temperature, plan.added_rtt_ms)
        if plan.k < 1 or key in seen:
            continue
        seen.add(key)
        probes.append(runtime.probe(plan))
    if probes:
        old = store.contention_baseline()
        if old is None:
            old = ContentionBaseline(
                provenance=Provenance.here(
                    "measured",
                    settings={"method": "configspec.loop.runtime.Runtime.probe"},
                    notes="baseline contention probes, taken right after profiling",
                )
            )
        store.save_contention_baseline(old.with_probes(probes))
    return probes


ContentionRule = Literal["off", "gated", "before", "running", "runs", "bracketed"]
"""How a run's contention is folded in (``validate(contention_rule=...)``):

- ``off``: raw profiles (ratios measured and judged for the record, none applied);
- ``gated``: the pooled before+after probe ratio, only when its interval and each
  occasion's exclude 1 on the same side (:func:`contention_fold`, :func:`agreed`);
- ``before``: the probe right before the run over the baseline, always applied;
- ``running``: the level of the host so far (:func:`running_level`): the mean ratio to
  its baseline of every probe taken up to the run's start (the earlier runs' before and
  after probes, this run's before probe); drafting from the probes of the run's own drafter point,
  verification from every probe of the run's target. Known before the run: a prediction;
- ``runs``: the earlier runs as the probe (:func:`runs_level`): the mean, over the runs of
  the sweep that ended before this one started, of their measured / profiled drafting
  (same drafter) and verification (same target) per round. Each run times ~20 s of
  rounds where a probe times ~2 s; known before the run: a prediction;
- ``bracketed``: the mean of the before and after ratios, always applied. Uses the probe
  taken after the run: a bracketed check, not a prediction.
"""

CONTENTION_RULES: tuple[ContentionRule, ...] = (
    "off",
    "gated",
    "before",
    "running",
    "runs",
    "bracketed",
)
DEFAULT_RULE: ContentionRule = "runs"
"""The rule ``validate``, ``configspec validate``, the quickstart and ``bench_validate`` use
unless told otherwise. Chosen on three kept sweeps (replayed offline) and then confirmed
on a fresh held-out sweep it was not chosen on (docs/validation.md, "Following the
host's level"): per-run goodput error median 5.4% against 7.3% raw on the profiled
domains, max 26.6% against 48.7%; every probe-based rule did worse than raw profiles on
that sweep."""

RUNS_WINDOW_S = 3600.0
"""``runs`` reads only runs that ended at most this long (s) before the run started: the
runs of one sweep, not yesterday's host (a store keeps every run it was given)."""

PREDICTIVE_RULES: frozenset[ContentionRule] = frozenset(
    {"off", "gated", "before", "running", "runs"}
)
"""Rules that use nothing measured after the run started (``gated`` and ``bracketed`` read
the probe after it; ``gated`` only to decide whether to apply)."""


@dataclass(frozen=True)
class Occasion:
    """One probe occasion's ratios to its baseline (dimensionless), when it was taken,
    and at which point (drafter, temperature, RTT) and for which target."""

    taken_at: datetime
    point: tuple[str, float, float]
    target: str
    draft: float
    verify: float


def _occasion(probe: ContentionProbe, target: str, baseline: ContentionBaseline) -> Occasion | None:
    base = baseline.find(probe)
    if (
        base is None
        or probe.taken_at is None
        or len(probe.draft_samples_ms) < MIN_SAMPLES
        or len(probe.verify_samples_ms) < MIN_SAMPLES
        or len(base.draft_samples_ms) < MIN_SAMPLES
        or len(base.verify_samples_ms) < MIN_SAMPLES
    ):
        return None
    bd, bv = float(np.median(base.draft_samples_ms)), float(np.median(base.verify_samples_ms))
    if bd <= 0 or bv <= 0:
        return None
    return Occasion(
        probe.taken_at,
        (probe.drafter, probe.temperature, probe.added_rtt_ms),
        target,
        float(np.median(probe.draft_samples_ms)) / bd,
        float(np.median(probe.verify_samples_ms)) / bv,
    )


def occasions_of(runs: Iterable[RunRecord], baseline: ContentionBaseline) -> list[Occasion]:
    """Every usable probe occasion of ``runs`` (before and after each), oldest first."""
    out = []
    for run in runs:
        for probe in probe_occasions(run):
            occ = _occasion(probe, run.config.target, baseline)
            if occ is not None:
                out.append(occ)
    return sorted(out, key=lambda o: o.taken_at)


def _level(ratios: Sequence[float], why: str) -> ContentionRatio:
    """The mean of ``ratios`` (every occasion so far), their range as the bounds.

    The mean of all, not the last few nor their median: replayed on the kept sweeps
    (benchmarks/contention_rules.py) a window of the last 1-8 occasions and the median
    each did worse. One probe hardly predicts its run (per-run correlation of the probe's
    verification ratio with the run's measured / profiled verification 0.33-0.39 on quiet
    sweeps, about 0 on a loaded one); what the probes share is the sweep's level, and the
    run's round times are means, spikes included."""
    if not ratios:
        return _not_applied(f"not applied: no earlier probe {why}")
    level = float(np.mean(ratios))
    return ContentionRatio(
        level,
        min(ratios),
        max(ratios),
        level,
        f"applied: mean of {len(ratios)} probe ratios up to the run's start {why}",
    )


def running_level(
    run: RunRecord, baseline: ContentionBaseline, history: Sequence[Occasion]
) -> tuple[ContentionRatio, ContentionRatio]:
    """(drafting, verification) level of the host at ``run``'s start: the mean ratio of
    every probe occasion taken no later than the run's own before-probe (``history``: every
    occasion of the sweep, :func:`occasions_of`).
    Drafting reads only occasions at the run's drafter point; verification every occasion
    of the run's target."""
    occasions = probe_occasions(run)
    if not occasions or occasions[0].taken_at is None:
        none = _not_applied("not applied: the run has no timed probe")  # pragma: no cover
        return none, none
    start = occasions[0].taken_at
    point = (occasions[0].drafter, occasions[0].temperature, occasions[0].added_rtt_ms)
    upto = [o for o in history if o.taken_at <= start and o.target == run.config.target]
    draft = _level([o.draft for o in upto if o.point == point], "at this drafter point")
    verify = _level([o.verify for o in upto], "of this target")
    return draft, verify


@dataclass(frozen=True)
class Residual:
    """One finished run's measured / profiled mean per-round drafting and verification
    (dimensionless; raw profiles), when it ended, and its drafter and target."""

    ended_at: datetime
    drafter: str
    target: str
    draft: float
    verify: float


@dataclass(frozen=True)
class SweepHistory:
    """What a sweep knows about the host: every probe occasion (:func:`occasions_of`) and
    the finished runs' residuals (:class:`Residual`, for ``runs``)."""

    occasions: Sequence[Occasion] = ()
    residuals: Sequence[Residual] = ()


def run_start(run: RunRecord) -> datetime:
    """When ``run`` started: its before-probe's time, else its record's (written at the end
    of the run, so no other sequential run ended between the two)."""
    occasions = probe_occasions(run)
    if occasions and occasions[0].taken_at is not None:
        return occasions[0].taken_at
    return run.provenance.created_at


def runs_level(
    run: RunRecord, residuals: Sequence[Residual]
) -> tuple[ContentionRatio, ContentionRatio]:
    """(drafting, verification) level of the host at ``run``'s start from the runs that
    ended before it started (within :data:`RUNS_WINDOW_S`): the mean of their measured /
    profiled latencies, drafting over the runs of the same drafter, verification over every
    run of the same target."""
    start = run_start(run)
    earlier = [
        r
        for r in residuals
        if r.ended_at < start
        and (start - r.ended_at).total_seconds() <= RUNS_WINDOW_S
        and r.target == run.config.target
    ]
    same = "of this drafter"
    draft = _level([r.draft for r in earlier if r.drafter == run.config.drafter], same)
    verify = _level([r.verify for r in earlier], "of this target")

    def runs_not_probes(r: ContentionRatio) -> ContentionRatio:
        reason = r.reason.replace("probe ratios", "earlier runs' ratios")
        return replace(r, reason=reason.replace("no earlier probe", "no earlier run"))

    return runs_not_probes(draft), runs_not_probes(verify)


def _always(ratio: ContentionRatio, what: str) -> ContentionRatio:
    """``ratio`` applied whatever its interval (``before`` / ``bracketed``)."""
    if ratio.measured is None:
        return ratio
    return replace(ratio, applied=ratio.measured, reason=f"applied ({what}): {ratio.reason}")


def rule_fold(
    run: RunRecord,
    baseline: ContentionBaseline | None,
    rule: ContentionRule,
    history: SweepHistory | None = None,
) -> ContentionFold | None:
    """How ``run``'s contention is folded in under ``rule`` (:data:`ContentionRule`);
    ``history`` what the sweep knows (probe occasions for ``running``, earlier runs'
    residuals for ``runs``). None when the run has no probe (``runs``: never)."""
    history = history or SweepHistory()
    fold = contention_fold(run, baseline, rule == "gated")
    if rule == "runs":
        draft, verify = runs_level(run, history.residuals)
        load = fold.probe_load_average_1m if fold is not None else math.nan
        return ContentionFold(draft, verify, load, fold.baseline_load_average_1m if fold else None)
    if fold is None or rule in ("off", "gated") or baseline is None:
        return fold
    if fold.draft.measured is None and "no samples" in fold.draft.reason:
        return fold
    occasions = probe_occasions(run)
    base = baseline.find(occasions[0])
    if base is None:
        return fold
    if rule == "running":
        draft, verify = running_level(run, baseline, history.occasions)
    else:
        each_d = [judge_ratio(o.draft_samples_ms, base.draft_samples_ms) for o in occasions]
        each_v = [judge_ratio(o.verify_samples_ms, base.verify_samples_ms) for o in occasions]
        if rule == "before":
            draft = _always(each_d[0], "the probe before the run")
            verify = _always(each_v[0], "the probe before the run")
        else:
            draft = _mean_of(each_d)
            verify = _mean_of(each_v)
    return replace(fold, draft=draft, verify=verify)


def _mean_of(each: Sequence[ContentionRatio]) -> ContentionRatio:
    """The mean of the occasions' ratios (before, after), applied (``bracketed``)."""
    got = [r for r in each if r.measured is not None]
    if not got:
        return _not_applied("not applied: no ratio could be formed")
    values = [float(r.measured) for r in got if r.measured is not None]
    mean = float(np.mean(values))
    shown = ", ".join(f"{v:.2f}" for v in values)
    return ContentionRatio(
        mean, min(values), max(values), mean, f"applied (bracketed, not a prediction): {shown}"
    )
