"""Alignment profiling: how often each drafter's tokens are accepted by the target.

For every prompt the target's reference trajectory is computed once and cached
(:mod:`configspec.profiling.reference`). Each model drafter is then teacher-forced along
that trajectory in one batched pass per prompt; a model-free proposer (the n-gram
drafter) is asked for a K_max-token block at every position. The acceptance math
(:mod:`configspec.profiling.acceptance`) turns that into per-position acceptance,
simulated rounds E(K) for K = 1..K_max, fitted single-α and per-position models, and
bootstrap confidence intervals over prompts, stored as an
:class:`~configspec.config.AlignmentProfile` per drafter × domain × temperature.

Exactness: at temperature 0 the simulation is exactly what greedy speculative decoding
accepts (a teacher-forced argmax equals the greedy draft as long as the previous draft
tokens were accepted). At T > 0 it uses the expected acceptance Σ min(p, q) at each
position of the target's sampled trajectory (the standard along-trajectory estimate).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from configspec.backends.base import Drafter, ModelIdentity
from configspec.backends.factory import (
    check_compatible,
    open_drafter,
    remote_tokenizer,
    resolve_identity,
)
from configspec.backends.llamacpp import LlamaCppTokenizer
from configspec.backends.specs import is_ngram, is_url
from configspec.config import (
    AcceptanceAtK,
    AlignmentEntry,
    AlignmentProfile,
    Estimate,
    Estimator,
    PromptAcceptance,
    Provenance,
)
from configspec.errors import IncompatibleModels, InvalidInput, ProfileError
from configspec.profiling.acceptance import (
    FloatArray,
    IntArray,
    PromptStats,
    Summary,
    block_match_matrix,
    check_temperature,
    greedy_match,
    overlap_topk_full,
    overlap_topk_onehot,
    positional_matrix,
    prompt_stats,
    softmax_temperature,
    summarize,
    truncate_draft,
)
from configspec.profiling.prompts import Prompt
from configspec.profiling.reference import (
    ReferenceSettings,
    TargetReference,
    TeacherForcedModel,
    reference_for,
)
from configspec.profiling.remote_reference import RemoteReferenceSource, fetch_references
from configspec.progress import NO_PROGRESS, Phase, ProgressFn
from configspec.records import K_LIMIT
from configspec.store import ProfileStore

logger = logging.getLogger(__name__)

ALL_DOMAINS = "all"
BOOTSTRAP_PROMPTS: Estimator = "bootstrap_prompts"
#: Speculative rounds start after the first continuation token: it comes from the
#: target's prefill of the prompt (llama.cpp and every speculative decoder do this).
FIRST_ROUND_AT = 1
_ROWS_PER_CHUNK = 32  # softmax over a 262k vocabulary: bound the float64 temporaries


@dataclass(frozen=True)
class AlignmentSettings:
    """Settings of one alignment profiling run.

    ``n_tokens`` reference tokens per prompt; ``temperatures`` (0 = greedy verification);
    ``k_max`` the longest speculative length simulated; ``top_k`` target ids kept per
    position at T > 0; ``n_boot`` bootstrap resamples over prompts; ``n_ctx``/``n_threads``
    for llama.cpp. ``draft_top_k`` is the size of the draft distribution a sampling edge
    client sends (its ``--draft-top-k``, default 64): at T > 0 a drafted token outside it
    ends the draft, which the simulation charges (None: the full distribution).
    """

    n_tokens: int = 128
    temperatures: tuple[float, ...] = (0.0,)
    k_max: int = 8
    top_k: int = 256
    seed: int = 0
    n_boot: int = 1000
    n_ctx: int = 1024
    n_threads: int = 2
    draft_top_k: int | None = 64
    concurrency: int = 4

    def __post_init__(self) -> None:
        if not self.temperatures:
            raise InvalidInput("no temperature given; pass at least one (0 = greedy)")
        for t in self.temperatures:
            check_temperature(t)
        if not 1 <= self.k_max <= K_LIMIT:
            raise InvalidInput(f"K_max={self.k_max} is out of range (1..{K_LIMIT})")
        if self.n_boot < 1:
            raise InvalidInput(f"bootstrap resamples {self.n_boot} is out of range (>= 1)")
        if self.draft_top_k is not None and self.draft_top_k < 1:
            raise InvalidInput(f"draft top-k {self.draft_top_k} is out of range (>= 1)")
        if not 1 <= self.concurrency <= 64:
            raise InvalidInput(f"concurrency {self.concurrency} is out of range (1..64)")

    def reference(self, temperature: float) -> ReferenceSettings:
        """Reference settings for one temperature."""
        return ReferenceSettings(
            n_tokens=self.n_tokens, temperature=temperature, seed=self.seed, top_k=self.top_k
        )


@dataclass
class _Candidate:
    """A drafter under test: a teacher-forceable model, or a model-free proposer."""

    name: str
    identity: ModelIdentity
    model: TeacherForcedModel | None = None
    proposer: Drafter | None = None
    elapsed_s: float = 0.0

    def close(self) -> None:
        if self.model is not None:
            self.model.close()


@dataclass
class AlignmentResult:
    """What a run produced: the profile, per-drafter timings and cache use."""

    profile: AlignmentProfile
    reference_s: float
    drafter_s: dict[str, float]
    n_references_cached: int
    n_references_computed: int
    mean_topk_bound_width: float
    summaries: dict[tuple[str, str, float], Summary] = field(default_factory=dict)
    alpha_bounds: dict[tuple[str, str, float], tuple[float, float]] = field(default_factory=dict)
    """(drafter, domain, T) → (lower, upper) bound of α from the target's top-k (equal at
    T = 0 and when the top-k holds all the mass)."""
    endpoint: str | None = None


def acceptance_matrix(
    ref: TargetReference,
    cand: _Candidate,
    temperature: float,
    k_max: int,
    draft_top_k: int | None = None,
) -> tuple[FloatArray, float, IntArray | None]:
    """``B[s, j]`` for one drafter along one reference, the mean top-k bound width, and
    (for a model-free proposer) how many tokens it proposes from each position (None for
    a model drafter, which always drafts K).

    At T > 0 the target is stored as top-k plus remainder, so Σ min(p, q) is known only
    within bounds; the upper bound is used (exact when drafter and target agree outside
    the top-k, e.g. an identical drafter) and the mean width of the bounds is returned.
    With ``draft_top_k`` the drafter's distribution is the one the edge client sends (cut
    to its top ids, :func:`truncate_draft`): acceptance is that set's mass times the
    overlap with the cut distribution.
    """
    high, low, proposed = acceptance_bounds(ref, cand, temperature, k_max, draft_top_k)
    return high, _mean_width(high, low), proposed


def _mean_width(high: FloatArray, low: FloatArray) -> float:
    width = (high - low)[:, 0]
    width = width[np.isfinite(width)]
    return float(np.mean(width)) if width.size else 0.0


def acceptance_bounds(
    ref: TargetReference,
    cand: _Candidate,
    temperature: float,
    k_max: int,
    draft_top_k: int | None = None,
) -> tuple[FloatArray, FloatArray, IntArray | None]:
    """Upper and lower bounds of ``B[s, j]`` (equal at T = 0) and, for a model-free
    proposer, the tokens it proposes per position (see :func:`acceptance_matrix`)."""
    n = len(ref.tokens)
    if cand.model is not None:
        logits = cand.model.logits_along(ref.prompt_tokens.tolist(), ref.tokens.tolist())
        if temperature == 0.0:
            beta = greedy_match(ref.argmax, np.argmax(logits, axis=1))
            b = positional_matrix(beta, k_max)
            return b, b, None
        assert ref.dist is not None
        highs, lows = [], []
        for lo in range(0, n, _ROWS_PER_CHUNK):
            rows = slice(lo, min(n, lo + _ROWS_PER_CHUNK))
            q = softmax_temperature(logits[rows], temperature)
            mass = np.ones(q.shape[0])
            if draft_top_k is not None:
                q, mass = truncate_draft(q, draft_top_k)
            ov = overlap_topk_full(ref.dist.rows(np.arange(n)[rows]), q)
            highs.append(mass * ov.high)
            lows.append(mass * ov.low)
        high = positional_matrix(np.concatenate(highs), k_max)
        return high, positional_matrix(np.concatenate(lows), k_max), None
    assert cand.proposer is not None
    context = [*ref.prompt_tokens.tolist(), *ref.tokens.tolist()]
    n_prompt = len(ref.prompt_tokens)
    blocks = np.full((n, k_max), -1, dtype=np.int64)
    for s in range(n):
        drafted = cand.proposer.draft(context[: n_prompt + s], k_max).tokens[:k_max]
        blocks[s, : len(drafted)] = drafted
    proposed = (blocks >= 0).sum(axis=1)
    if temperature == 0.0:
        b = block_match_matrix(ref.argmax, blocks)
        return b, b, proposed
    assert ref.dist is not None
    idx = np.arange(n)[:, None] + np.arange(k_max)[None, :]
    inside = idx < n
    flat = np.minimum(idx, n - 1).ravel()
    ov = overlap_topk_onehot(ref.dist.rows(flat), blocks.ravel())
    high = ov.high.reshape(n, k_max)
    low = ov.low.reshape(n, k_max)
    high[~inside] = np.nan
    low[~inside] = np.nan
    return high, low, proposed


def _unit(x: float) -> float:
    return min(1.0, max(0.0, x))


def _est(mean: float, lo: float, hi: float, n: int) -> Estimate:
    """A measured rate in [0, 1] with its bootstrap interval."""
    return Estimate(
        mean=_unit(mean), ci_low=_unit(lo), ci_high=_unit(hi), n=n, estimator=BOOTSTRAP_PROMPTS
    )


def prompt_record(prompt_id: str, domain: str, ps: PromptStats) -> PromptAcceptance:
    """The stored per-prompt record of one prompt's statistics (see :class:`PromptAcceptance`)."""

    def floats(x: FloatArray) -> list[float]:
        return [float(v) for v in np.asarray(x, dtype=np.float64)]

    return PromptAcceptance(
        prompt_id=prompt_id,
        domain=domain,
        n_positions=ps.n_positions,
        rounds=floats(ps.rounds),
        drafted=floats(ps.drafted),
        accepted=floats(ps.accepted),
        tokens=floats(ps.tokens),
        proposed=floats(ps.proposed),
        reach_num=floats(ps.reach_num),
        reach_den=floats(ps.reach_den),
    )


def entry_from_summary(
    drafter: str,
    domain: str,
    temperature: float,
    s: Summary,
    per_prompt: Sequence[PromptAcceptance] | None = None,
) -> AlignmentEntry:
    """An :class:`AlignmentEntry` from pooled statistics (measured; fits marked fitted),
    with the per-prompt records they were pooled from when given."""
    by_k = []
    for i, (af, tr) in enumerate(zip(s.accepted_fraction, s.tokens_per_round, strict=True)):
        pr = s.proposed_per_round[i] if s.proposed_per_round is not None else None
        by_k.append(
            AcceptanceAtK(
                k=i + 1,
                accepted_fraction=_est(af.mean, af.ci_low, af.ci_high, s.n_prompts),
                tokens_per_round=Estimate(
                    mean=tr.mean,
                    ci_low=tr.ci_low,
                    ci_high=tr.ci_high,
                    n=s.n_prompts,
                    estimator=BOOTSTRAP_PROMPTS,
                ),
                tokens_per_round_iid=Estimate(
                    mean=float(s.iid_tokens_per_round[i]), n=s.n_prompts, source="fitted"
                ),
                tokens_per_round_positional=Estimate(
                    mean=float(s.positional_tokens_per_round[i]), n=s.n_prompts, source="fitted"
                ),
                drafted_per_round=None
                if pr is None
                else Estimate(
                    mean=pr.mean,
                    ci_low=pr.ci_low,
                    ci_high=pr.ci_high,
                    n=s.n_prompts,
                    estimator=BOOTSTRAP_PROMPTS,
                ),
            )
        )
    return AlignmentEntry(
        drafter=drafter,
        domain=domain,
        temperature=temperature,
        alpha=_est(s.alpha.mean, s.alpha.ci_low, s.alpha.ci_high, s.n_prompts),
        per_position=[_est(p.mean, p.ci_low, p.ci_high, s.n_prompts) for p in s.per_position],
        by_k=by_k,
        n_prompts=s.n_prompts,
        n_tokens=s.n_tokens,
        per_prompt=list(per_prompt) if per_prompt is not None else None,
    )


def _open_candidates(
    target: ModelIdentity,
    drafter_specs: Sequence[str],
    settings: AlignmentSettings,
    cache_dir: Path | None,
    tokenizer: str | None = None,
) -> list[_Candidate]:
    identities: list[tuple[str, ModelIdentity | None]] = []
    for spec in drafter_specs:
        if is_ngram(spec):
            identities.append((spec, None))
            continue
        resolved = resolve_identity(spec, cache_dir=cache_dir)
        check_compatible(resolved, target)  # before any weights are loaded
        identities.append((spec, resolved))
    cands: list[_Candidate] = []
    try:
        for spec, ident in identities:
            if ident is None:
                vocab = resolve_identity(tokenizer, cache_dir=cache_dir) if tokenizer else target
                tok = LlamaCppTokenizer(str(vocab.path), identity=vocab)
                prop = open_drafter(spec, tokenizer=tok, cache_dir=cache_dir)
                cands.append(
                    _Candidate(name=prop.identity.name, identity=prop.identity, proposer=prop)
                )
            else:
                model = TeacherForcedModel(
                    str(ident.path),
                    identity=ident,
                    n_threads=settings.n_threads,
                    n_ctx=settings.n_ctx,
                )
                cands.append(_Candidate(name=ident.name, identity=ident, model=model))
    except BaseException:
        for c in cands:
            c.close()
        raise
    names = [c.name for c in cands]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        for c in cands:
            c.close()
        raise InvalidInput(f"drafter {dup!r} is given twice; list each drafter once")
    return cands


def _merge(
    store: ProfileStore, target: str, entries: list[AlignmentEntry]
) -> tuple[list[AlignmentEntry], list[str]]:
    """New entries plus earlier ones for other (drafter, domain, temperature) keys."""
    path = store.alignment_path(target)
    if not path.exists():
        return entries, []
    try:
        old = next(p for p in store.alignment_profiles() if p.target == target)
    except (StopIteration, ProfileError):
        logger.warning("existing alignment profile %s unreadable; replacing it", path)
        return entries, []
    new_keys = {(e.drafter, e.domain, e.temperature) for e in entries}
    kept = [e for e in old.entries if (e.drafter, e.domain, e.temperature) not in new_keys]
    return [*kept, *entries], sorted({e.drafter for e in kept})


@dataclass
class _Target:
    """The target of a run: its identity, its reference-cache key and, for a URL, the
    server that produces the references."""

    spec: str
    identity: ModelIdentity
    cache_key: str
    remote: RemoteReferenceSource | None = None

    def close(self) -> None:
        if self.remote is not None:
            self.remote.close()


class _LazyTargetModel:
    """The local target, loaded on the first uncached reference and freed after each
    temperature's references (before the drafters run)."""

    def __init__(self, identity: ModelIdentity, settings: AlignmentSettings) -> None:
        self._identity = identity
        self._settings = settings
        self._model: TeacherForcedModel | None = None

    def __call__(self) -> TeacherForcedModel:
        if self._model is None:
            self._model = TeacherForcedModel(
                str(self._identity.path),
                identity=self._identity,
                n_threads=self._settings.n_threads,
                n_ctx=self._settings.n_ctx,
            )
        return self._model

    def close(self) -> None:
        if self._model is not None:
            self._model.close()
            self._model = None


@dataclass
class _Tally:
    """Running sums of a run: per-prompt statistics and first-position α bounds per
    (drafter, domain, T), top-k bound widths, reference cache use and time (seconds)."""

    stats: dict[tuple[str, str, float], list[PromptStats]] = field(default_factory=dict)
    records: dict[tuple[str, str, float], list[PromptAcceptance]] = field(default_factory=dict)
    """The same statistics as stored per-prompt records (prompt id and domain)."""
    beta_sums: dict[tuple[str, str, float], list[float]] = field(default_factory=dict)
    """(drafter, domain, T) → [sum of lower bounds, sum of upper bounds, count]."""
    widths: list[float] = field(default_factory=list)
    n_cached: int = 0
    n_computed: int = 0
    reference_s: float = 0.0

    def add(
        self, ref: TargetReference, cand: _Candidate, temp: float, settings: AlignmentSettings
    ) -> None:
        """Simulate ``cand`` along ``ref`` at ``temp`` and pool the result."""
        t1 = time.perf_counter()
        b, b_low, proposed = acceptance_bounds(
            ref, cand, temp, settings.k_max, settings.draft_top_k
        )
        cand.elapsed_s += time.perf_counter() - t1
        self.widths.append(_mean_width(b, b_low))
        ps = prompt_stats(b, settings.k_max, FIRST_ROUND_AT, proposed)
        first_low, first_high = b_low[:, 0], b[:, 0]
        ok = np.isfinite(first_high)
        record = prompt_record(ref.prompt_id, ref.domain, ps)
        for dom in (ref.domain, ALL_DOMAINS):
            self.stats.setdefault((cand.name, dom, temp), []).append(ps)
            self.records.setdefault((cand.name, dom, temp), []).append(record)
            acc = self.beta_sums.setdefault((cand.name, dom, temp), [0.0, 0.0, 0.0])
            acc[0] += float(np.sum(first_low[ok]))
            acc[1] += float(np.sum(first_high[ok]))
            acc[2] += float(np.sum(ok))

    def alpha_bounds(self) -> dict[tuple[str, str, float], tuple[float, float]]:
        """(drafter, domain, T) → mean (lower, upper) bound of the first-position α."""
        return {
            k: (v[0] / v[2], v[1] / v[2]) if v[2] else (0.0, 0.0) for k, v in self.beta_sums.items()
        }


def _resolve_target(
    target_spec: str,
    drafter_specs: Sequence[str],
    settings: AlignmentSettings,
    cache_dir: Path | None,
    tokenizer: str | None,
    target_name: str | None,
    transport: httpx.BaseTransport | None,
) -> _Target:
    """The run's target; for a URL, the drafters are checked against ``tokenizer`` before
    anything is loaded or sent."""
    if not is_url(target_spec):
        target_id = resolve_identity(target_spec, cache_dir=cache_dir)
        if target_id.path is None or target_id.file_sha256 is None:
            raise IncompatibleModels(f"target {target_spec} is not a local GGUF file")
        key = target_id.file_sha256
        if target_name:
            target_id = dataclasses.replace(target_id, name=target_name)
        return _Target(target_spec, target_id, key)
    tokenizer = remote_tokenizer(target_spec, tokenizer)
    target_id = resolve_identity(tokenizer, cache_dir=cache_dir)
    if target_id.path is None:
        raise IncompatibleModels(f"tokenizer {tokenizer} is not a local GGUF file")
    for spec in drafter_specs:
        if not is_ngram(spec):
            check_compatible(resolve_identity(spec, cache_dir=cache_dir), target_id)
    tok = LlamaCppTokenizer(str(target_id.path), identity=target_id)
    remote = RemoteReferenceSource(
        target_spec, tok, max_connections=settings.concurrency, transport=transport
    )
    name = target_name or (
        Path(remote.model).stem if remote.model.endswith(".gguf") else remote.model
    )
    target_id = dataclasses.replace(target_id, name=name, file_sha256=None, path=target_spec)
    return _Target(target_spec, target_id, remote.cache_identity, remote)


@dataclass
class _Run:
    """What the steps of one profiling run share: the target, the store, the prompts, the
    settings, the progress callback and the running sums."""

    target: _Target
    store: ProfileStore
    prompts: Sequence[Prompt]
    settings: AlignmentSettings
    progress: ProgressFn
    tally: _Tally = field(default_factory=_Tally)


def _references(run: _Run, open_target: _LazyTargetModel, temp: float) -> list[TargetReference]:
    """The target's references at ``temp`` (from the cache, the local model or the
    server), counted and timed in ``run.tally``."""
    ref_settings = run.settings.reference(temp)
    tally = run.tally
    t0 = time.perf_counter()
    if run.target.remote is not None:
        refs = _remote_references(run, run.target.remote, temp)
    else:
        refs = []
        phase = Phase(run.progress, f"target reference T={temp:g}", len(run.prompts))
        for prompt in run.prompts:
            ref, cached = reference_for(
                run.store, run.target.cache_key, prompt, ref_settings, open_target
            )
            tally.n_cached += cached
            tally.n_computed += not cached
            refs.append(ref)
            phase.advance()
    tally.reference_s += time.perf_counter() - t0
    return refs


def _remote_references(
    run: _Run, remote: RemoteReferenceSource, temp: float
) -> list[TargetReference]:
    """The references at ``temp`` from the target's server (resuming from the cache)."""
    phases: list[Phase] = []  # the phase, once on_start knows how many are cached

    def starting(cached: int, todo: int) -> None:
        what = f"target reference T={temp:g} from {run.target.spec}"
        if cached and todo:
            logger.warning(
                "resuming T=%g: %d of %d references already cached, fetching %d",
                temp, cached, cached + todo, todo,
            )  # fmt: skip
            what += f" (resumed: {cached} cached)"
        phases.append(Phase(run.progress, what, cached + todo))

    fetched = fetch_references(
        run.store, remote, run.prompts, run.settings.reference(temp),
        concurrency=run.settings.concurrency, on_done=lambda n: phases[-1].advance(n),
        on_start=starting,
    )  # fmt: skip
    run.tally.n_cached += fetched.n_cached
    run.tally.n_computed += fetched.n_fetched
    return fetched.references


def _simulate(
    run: _Run, refs: Sequence[TargetReference], cands: Sequence[_Candidate], temp: float
) -> None:
    """Every drafter along every reference at ``temp``, pooled in ``run.tally``."""
    phase = Phase(run.progress, f"drafters T={temp:g}", len(refs) * len(cands))
    for ref in refs:
        if len(ref.tokens) == 0:
            phase.advance(len(cands))
            continue
        for cand in cands:
            run.tally.add(ref, cand, temp, run.settings)
            phase.advance()


def _server_settings(
    target: _Target, bounds: dict[tuple[str, str, float], tuple[float, float]]
) -> dict[str, Any] | None:
    """What the provenance records about a remote target's server (None for a local one)."""
    remote = target.remote
    if remote is None:
        return None
    return {
        "endpoint": target.spec,
        "model_id": remote.model,
        "tokenizer": target.identity.family,
        "tokenizer_checked": remote.tokenizer_checked,
        "token_id_prompts": remote.token_id_prompts,
        "logprobs_at_temperature": {f"{t:g}": v for t, v in remote.scales.items()},
        "alpha_bounds": {
            f"{d}@T={t:g}": [round(lo, 4), round(hi, 4)]
            for (d, dom, t), (lo, hi) in sorted(bounds.items())
            if dom == ALL_DOMAINS
        },
    }


def profile_alignment(
    target_spec: str,
    drafter_specs: Sequence[str],
    prompts: Sequence[Prompt],
    store: ProfileStore,
    *,
    settings: AlignmentSettings | None = None,
    cache_dir: Path | None = None,
    progress: ProgressFn = NO_PROGRESS,
    prompt_source: str = "bundled",
    save: bool = True,
    tokenizer: str | None = None,
    target_name: str | None = None,
    transport: httpx.BaseTransport | None = None,
) -> AlignmentResult:
    """Profile ``drafter_specs`` against ``target_spec`` on ``prompts``; save the profile.

    Specs are registered model names, GGUF paths or ``ngram[:MIN-MAX]``; the target may
    also be the URL of an OpenAI-compatible server, with ``tokenizer`` (a registered name
    or GGUF with the served model's vocabulary): the server then produces the references
    (:mod:`configspec.profiling.remote_reference`) and the drafters run locally.
    ``target_name`` names the profile (default: the model's name or the server's model
    id; ``transport`` is the HTTP seam for tests). Raises
    :class:`IncompatibleModels` for a drafter with another tokenizer (before loading any
    weights) and :class:`InvalidInput` for bad settings. Returns the profile (one entry
    per drafter × domain × temperature plus domain ``all``) with timings in seconds.
    """
    settings = settings or AlignmentSettings()
    if not drafter_specs:
        raise InvalidInput("no drafter given; pass at least one --drafter")
    if not prompts:
        raise InvalidInput("no prompts to profile on")
    target = _resolve_target(
        target_spec, drafter_specs, settings, cache_dir, tokenizer, target_name, transport
    )
    try:
        cands = _open_candidates(target.identity, drafter_specs, settings, cache_dir, tokenizer)
    except BaseException:
        target.close()
        raise
    open_target = _LazyTargetModel(target.identity, settings)
    run = _Run(target, store, prompts, settings, progress)
    try:
        for temp in settings.temperatures:
            refs = _references(run, open_target, temp)
            open_target.close()  # free the target's memory before the drafters run
            _simulate(run, refs, cands, temp)
    finally:
        for c in cands:
            c.close()
        open_target.close()
        target.close()
    return _result(run, cands, prompt_source, save)


def _result(
    run: _Run, cands: Sequence[_Candidate], prompt_source: str, save: bool
) -> AlignmentResult:
    """The profile from the pooled statistics (merged with and saved to the store when
    ``save``) and the run's timings."""
    store, target, tally, settings = run.store, run.target, run.tally, run.settings
    n_prompts = len(run.prompts)
    gap = float(np.mean(tally.widths)) if tally.widths else 0.0
    bounds = tally.alpha_bounds()
    summaries = {
        key: summarize(v, n_boot=settings.n_boot, seed=settings.seed)
        for key, v in sorted(tally.stats.items())
    }
    entries = [
        entry_from_summary(d, dom, t, s, tally.records.get((d, dom, t)))
        for (d, dom, t), s in summaries.items()
    ]
    entries, kept = _merge(store, target.identity.name, entries) if save else (entries, [])
    server = _server_settings(target, bounds)
    profile = AlignmentProfile(
        target=target.identity.name,
        target_family=target.identity.family,
        entries=entries,
        provenance=_provenance(
            target.identity, cands, settings, prompt_source, n_prompts, gap, kept, server
        ),
    )
    if save:
        path = store.save(profile)
        logger.info("wrote %s", path)
    return AlignmentResult(
        profile=profile,
        reference_s=tally.reference_s,
        drafter_s={c.name: c.elapsed_s for c in cands},
        n_references_cached=tally.n_cached,
        n_references_computed=tally.n_computed,
        mean_topk_bound_width=gap,
        summaries=summaries,
        alpha_bounds=bounds,
        endpoint=target.spec if target.remote is not None else None,
    )


def _provenance(
    target: ModelIdentity,
    cands: Sequence[_Candidate],
    settings: AlignmentSettings,
    prompt_source: str,
    n_prompts: int,
    gap: float,
    kept: list[str],
    server: dict[str, Any] | None = None,
) -> Provenance:
    import llama_cpp

    shas = {target.name: target.file_sha256} if target.file_sha256 else {}
    shas.update({c.name: c.identity.file_sha256 or "" for c in cands if c.model is not None})
    run_settings: dict[str, Any] = {
        "n_tokens": settings.n_tokens,
        "temperatures": list(settings.temperatures),
        "k_max": settings.k_max,
        "top_k": settings.top_k,
        "draft_top_k": settings.draft_top_k,
        "seed": settings.seed,
        "n_boot": settings.n_boot,
        "ci_level": 0.95,
        "prompts": prompt_source,
        "n_prompts": n_prompts,
        "drafters": [c.name for c in cands],
        "mean_topk_bound_width": round(gap, 6),
    }
    if server is not None:
        run_settings["target_server"] = server
    notes = (
        "alpha = mean per-token acceptance along the target's trajectory (exact match at "
        "T=0, sum min(p,q) at T>0 with the target stored as top-k: the tail overlap is "
        "taken at its upper bound, mean bound width in settings); per_position = "
        "conditional acceptance of draft step j; by_k from simulated speculative rounds; "
        "*_iid/*_positional are fitted predictions; per_prompt holds each prompt's "
        "simulated round totals (pooled, they give by_k and per_position)."
    )
    if kept:
        notes += f" Entries for {', '.join(kept)} kept from an earlier run."
    if server is not None:
        notes += (
            " The target's references came from the server in settings.target_server (drafters "
            "ran locally with llama.cpp); alpha_bounds there give alpha with the target's "
            "mass outside the returned top-k at its worst and best case."
        )
    return Provenance.here(
        "measured",
        backend="llama-cpp-python",
        backend_version=getattr(llama_cpp, "__version__", None),
        model_sha256=shas,
        settings=run_settings,
        notes=notes,
    )
