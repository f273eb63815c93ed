"""The adaptive-K policy's prior: what the profiles say before any round is seen.

:func:`prior_from_profiles` builds a :class:`PolicyPrior` from a profile set through the
same enumeration as ``select`` (:func:`configspec.search.space.space_from_profiles`):
per-position acceptance and proposal chances (deep positions pooled,
:func:`pool_positions`), drafting and verification times, the link and the prices. A
domain's alignment entry from few prompts is shrunk towards the drafter's all-domain
entry and carries fewer pseudo-observations (:func:`evidence_weights`). Pure Python and
numpy; no clock, no I/O. Used by :mod:`configspec.serving.adaptive`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

from configspec import records as R
from configspec.errors import InvalidInput, ProfileMissing
from configspec.model.evaluate import Link
from configspec.model.presets import CONFIGSPEC, ModelPreset
from configspec.search.evaluate import link_from_network
from configspec.search.space import (
    Profiles,
    SearchSettings,
    Space,
    pick_entry,
    space_from_profiles,
)
from configspec.search.tables import verify_latency_table
from configspec.serving.estimators import P_MAX, P_MIN, line_fit

FloatArray = NDArray[np.float64]

SHRINK_PROMPTS = 4.0
"""Prompts' worth of the drafter's all-domain acceptance a domain entry is shrunk towards
(:func:`evidence_weights`)."""
FULL_STRENGTH_PROMPTS = 8.0
"""Profiled prompts behind an alignment entry for the prior's full pseudo-count (the
all-domain entry of a default quickstart: 2 prompts in each of 4 domains)."""
POOL_PSEUDO_ROUNDS = 0.5
"""How many rounds' worth of the pooled rate each profiled position is shrunk towards."""


@dataclass(frozen=True)
class PolicyPrior:
    """What the profiles say before any round is seen (position/K-indexed arrays).

    ``acceptance[i-1]`` is P(draft i accepted | proposed, 1..i−1 accepted) and
    ``proposal[i-1]`` P(the drafter proposes i | it proposed i−1) for i = 1..n;
    ``draft_ms_per_token[K-1]`` is the per-token drafting time when drafting K (the profile's,
    smoothed by :func:`smooth_draft_ms_per_token`);
    ``verify_ms[p]`` the profiled verification time of p positions (p = 0..n+1, NaN where
    not profiled); ``catchup_ms`` the extra drafting of a round after a fully accepted one;
    ``link`` the profiled link (its ``rtt_ms`` is the RTT prior); powers in W (NaN: none);
    prices as in :class:`~configspec.model.evaluate.GridInputs`.
    """

    acceptance: FloatArray
    proposal: FloatArray
    draft_ms_per_token: FloatArray
    verify_ms: FloatArray
    link: Link
    catchup_ms: float = 0.0
    verify_sd_ms: FloatArray | None = None
    """Standard error (ms) of ``verify_ms[p]``, from the profile's 95% interval (half-width
    / 1.96; ``None``: unknown, taken as 0)."""
    draft_power_w: float = float("nan")
    idle_power_w: float = float("nan")
    gpu_price: bool = True
    price_usd_per_hour: float = 0.0
    overhead_ms_per_round: float = 0.0
    price_usd_per_mtok: float = 0.0
    bill_draft_tokens: bool = False
    strength: float = 8.0
    """Pseudo-observations per position the profile's acceptance is worth."""
    source: str = ""
    """Which profiles the prior came from (for logs and records)."""

    def __post_init__(self) -> None:
        n = int(np.asarray(self.acceptance).size)
        if n < 1:
            raise InvalidInput("the prior has no acceptance data (need at least K=1)")
        shapes = (
            np.asarray(self.proposal).size,
            np.asarray(self.draft_ms_per_token).size,
            np.asarray(self.verify_ms).size - 1,
        )
        if shapes != (n, n, n + 1):
            raise InvalidInput(
                f"prior arrays disagree on K: acceptance {n}, proposal {shapes[0]}, drafting "
                f"{shapes[1]}, verification {shapes[2] - 1} (+2 positions)"
            )
        if not self.strength > 0:
            raise InvalidInput(f"prior strength {self.strength} must be > 0")

    @property
    def k_max(self) -> int:
        """The largest K the prior covers."""
        return int(np.asarray(self.acceptance).size)


def positions_from_tokens_per_round(
    tokens_per_round: FloatArray, drafted: FloatArray | None = None
) -> tuple[FloatArray, FloatArray]:
    """Per-position (acceptance, proposal) from E(K) and drafted tokens per round, K = 0..n.

    E(K) − E(K−1) is the chance that position K yields an accepted token (the product of
    the conditional chances up to K), so the ratio of successive differences is the
    conditional chance at K; the same holds for the drafted length (None: always K).
    Results are clipped into [0.01, 0.995]; non-finite entries repeat the last finite one.
    """
    e = np.asarray(tokens_per_round, dtype=np.float64)
    d = np.arange(e.size, dtype=np.float64) if drafted is None else np.asarray(drafted, float)

    def conditional(cum: FloatArray) -> FloatArray:
        reach = np.diff(cum)
        prev = np.concatenate([[1.0], reach[:-1]])
        with np.errstate(divide="ignore", invalid="ignore"):
            cond = reach / prev
        out = np.empty_like(cond)
        last = 0.5
        for i, v in enumerate(cond):  # n ≤ a few dozen: a loop is clearest
            last = float(v) if np.isfinite(v) else last
            out[i] = last
        return np.asarray(np.clip(out, P_MIN, 1.0), dtype=np.float64)

    joint = conditional(e)
    proposal = conditional(d)
    acceptance = np.clip(joint / proposal, P_MIN, P_MAX)
    return acceptance, np.clip(proposal, P_MIN, 1.0)


def pool_positions(
    conditional: FloatArray, reach_before: FloatArray, pseudo_rounds: float = POOL_PSEUDO_ROUNDS
) -> FloatArray:
    """Shrink per-position conditional chances towards their pooled rate.

    ``reach_before[i]`` is the chance that position i+1 is tried at all (the product of
    the chances before it): the profile's figure at that position rests on that fraction
    of its rounds. Each position is pulled towards the reach-weighted pooled rate by
    ``pseudo_rounds`` rounds' worth of it, so the well-measured first positions keep
    their own figure and the deep ones, measured on a few rounds, lose their noise (a
    profile from a hundred tokens can say 0.09 at position 5 and 0.995 at 6). Returns
    the smoothed chances (same shape).
    """
    c = np.asarray(conditional, dtype=np.float64)
    r = np.asarray(reach_before, dtype=np.float64)
    pooled = float(r @ c) / max(float(r.sum()), 1e-12)
    return np.asarray((r * c + pseudo_rounds * pooled) / (r + pseudo_rounds), dtype=np.float64)


def _speculative_rows(
    profiles: Profiles, preset: ModelPreset, settings: SearchSettings, drafter: str
) -> tuple[Space, NDArray[np.int64], int]:
    """The space of ``settings`` and its speculative rows of one device and one target (the
    first in the enumeration's order) sorted by K, with the first row's index."""
    space = space_from_profiles(profiles, preset, settings)
    g = space.inputs
    rows = np.flatnonzero(g.mode == R.Mode.SPECULATIVE)
    if rows.size == 0:
        raise ProfileMissing(
            f"no speculative configuration for drafter {drafter!r} in these profiles (it needs "
            "a device profile, a verification profile and an alignment entry for it)"
        )
    first = int(rows[0])
    rows = rows[
        (space.device_code[rows] == space.device_code[first])
        & (space.target_code[rows] == space.target_code[first])
    ]
    rows = rows[np.argsort(g.k[rows])]
    ks = g.k[rows]
    if not np.array_equal(ks, np.arange(1, ks.size + 1)):
        raise ProfileMissing(
            f"drafter {drafter!r}: the profiles cover K={ks.tolist()}, not every K from 1; "
            "profile acceptance and latency from K=1 up"
        )
    return space, rows, first


def _chains(space: Space, rows: NDArray[np.int64]) -> tuple[FloatArray, FloatArray]:
    """Pooled per-position (acceptance, proposal) chances of ``rows`` (K = 1..n)."""
    g = space.inputs
    e = np.concatenate([[1.0], g.tokens_per_round.mean[rows]])
    drafted = None if g.drafted is None else np.concatenate([[0.0], g.drafted[rows]])
    acceptance, proposal = positions_from_tokens_per_round(e, drafted)
    # the deep positions of a short profile are noise: pool them (see pool_positions)
    proposal = pool_positions(proposal, np.concatenate([[1.0], np.cumprod(proposal)[:-1]]))
    joint = acceptance * proposal
    acceptance = pool_positions(acceptance, np.concatenate([[1.0], np.cumprod(joint)[:-1]]))
    return acceptance, proposal


def _entry_prompts(
    profiles: Profiles, target: str, drafter: str, settings: SearchSettings
) -> tuple[int, str]:
    """(prompts behind, domain of) the alignment entry ``select`` takes for ``drafter`` on
    ``target`` under ``settings`` (0 prompts: not recorded, or no entry by that name)."""
    entries = [
        e
        for a in profiles.alignments
        if a.target == target
        for e in a.entries
        if e.drafter == drafter
    ]
    if not entries:
        return 0, ""
    entry = pick_entry(entries, settings)
    return entry.n_prompts, entry.domain


def smooth_draft_ms_per_token(per_token_ms: FloatArray) -> FloatArray:
    """Per-token drafting time (ms) at K = 1..n from a line through the profiled totals.

    Drafting K tokens costs a fixed part plus K per-token steps, so the profiled total
    ``K·t(K)`` is fitted as ``a + b·K`` by least squares (:func:`line_fit`; NaN skipped,
    the slope clamped at 0, a negative intercept refitted through the origin) and
    ``(a + b·K) / K`` returned. A device profile times each K from a few calls, so its
    per-K figures scatter (37 to 54 ms/token on the benchmark host, K = 2 the fastest by
    chance): the policy scales the figure at the K it drafts by what it measures, and
    with the raw figures a lucky K there made every other K look up to 45% slower than
    it is (the Q4_0 drafter kept K = 2 at 120 ms RTT, where K = 3..5 were 11-13% faster).
    """
    t = np.asarray(per_token_ms, dtype=np.float64)
    ks = np.arange(1, t.size + 1, dtype=np.float64)
    if not np.isfinite(t).any():
        return t
    a, b = line_fit(ks, ks * t)
    if a < 0.0:
        ok = np.isfinite(t)
        a, b = 0.0, float(np.sum(ks[ok] ** 2 * t[ok]) / np.sum(ks[ok] ** 2))
    return np.asarray((a + b * ks) / ks, dtype=np.float64)


def evidence_weights(n_domain: int, n_all: int) -> tuple[float, float]:
    """(weight of the domain's figures against the all-domain ones, strength factor).

    A domain entry resting on ``n_domain`` profiled prompts is shrunk towards the
    drafter's all-domain entry (``n_all`` prompts) as a mean of ``n_domain`` against
    :data:`SHRINK_PROMPTS` prompts' worth of the all-domain figure (2 prompts: weight
    1/3); the prior's pseudo-count is scaled by ``min(1, n / FULL_STRENGTH_PROMPTS)`` for
    the prompts ``n`` behind the entry used (2 prompts: a quarter). 0 prompts means "not
    recorded" (profiles from elsewhere): weight 1, full strength. Without an all-domain
    entry (``n_all`` = 0) nothing is shrunk.
    """
    if n_domain <= 0:
        return 1.0, 1.0
    weight = n_domain / (n_domain + SHRINK_PROMPTS) if n_all > 0 else 1.0
    return weight, min(1.0, n_domain / FULL_STRENGTH_PROMPTS)


def prior_from_profiles(
    profiles: Profiles,
    *,
    drafter: str,
    target: str | None = None,
    device: str | None = None,
    domain: str = "all",
    temperature: float = 0.0,
    k_max: int | None = None,
    context_tokens: int = 512,
    rtt_ms: float | None = None,
    preset: ModelPreset = CONFIGSPEC,
    strength: float = 8.0,
) -> PolicyPrior:
    """The prior for ``drafter`` (→ ``target`` on ``device``) from a profile set.

    The same enumeration as
    ``select`` pairs drafter and target and picks the alignment entry (``domain`` and
    ``temperature`` when profiled, else the closest, as ``select`` does); ``rtt_ms``
    overrides the stored network's RTT as the link prior. The acceptance prior is only as
    strong as the prompts behind it (:func:`evidence_weights`): a domain entry from a few
    prompts is shrunk towards the drafter's all-domain entry and carries fewer than
    ``strength`` pseudo-observations per position. Raises
    :class:`~configspec.errors.ProfileMissing` when the pair has no speculative data.
    """
    settings = SearchSettings(
        k_max=k_max,
        context_tokens=context_tokens,
        domain=domain,
        temperature=temperature,
        devices=(device,) if device else (),
        drafters=(drafter,),
        targets=(target,) if target else (),
    )
    space, rows, first = _speculative_rows(profiles, preset, settings, drafter)
    g = space.inputs
    ks = g.k[rows]
    acceptance, proposal = _chains(space, rows)
    target_name = space.target_names[int(space.target_code[first])]
    n_domain, used = _entry_prompts(profiles, target_name, drafter, settings)
    all_settings = replace(settings, domain="all")
    n_all, all_domain = _entry_prompts(profiles, target_name, drafter, all_settings)
    weight, factor = evidence_weights(n_domain, n_all if all_domain == "all" else 0)
    if weight < 1.0 and used != "all":
        all_space, all_rows, _ = _speculative_rows(profiles, preset, all_settings, drafter)
        if all_rows.size == rows.size:
            all_acc, all_prop = _chains(all_space, all_rows)
            acceptance = weight * acceptance + (1.0 - weight) * all_acc
            proposal = weight * proposal + (1.0 - weight) * all_prop
    strength *= factor
    verification = next(v for v in profiles.verifications if v.target == target_name)
    v_mean, v_low, v_high = verify_latency_table(verification, ks.size, context_tokens, 1)
    dev_name = space.device_names[int(space.device_code[first])]
    dev = next(d for d in profiles.devices if d.device.name == dev_name)
    on_dev = next(d for d in dev.drafters if d.drafter == drafter)
    price = verification.price
    net = profiles.network
    return PolicyPrior(
        acceptance=acceptance,
        proposal=proposal,
        draft_ms_per_token=smooth_draft_ms_per_token(g.draft_ms_per_token.mean[rows]),
        verify_ms=np.asarray(v_mean, dtype=np.float64),
        verify_sd_ms=np.asarray((v_high - v_low) / (2.0 * 1.96), dtype=np.float64),
        link=link_from_network(net, rtt_ms),
        catchup_ms=max(0.0, on_dev.catchup_ms.mean) if on_dev.catchup_ms else 0.0,
        draft_power_w=on_dev.draft_power_w.mean if on_dev.draft_power_w else float("nan"),
        idle_power_w=dev.idle_power_w.mean if dev.idle_power_w else float("nan"),
        gpu_price=price.kind == "gpu_time",
        price_usd_per_hour=getattr(price, "price_usd_per_hour", 0.0),
        overhead_ms_per_round=getattr(price, "overhead_ms_per_round", 0.0),
        price_usd_per_mtok=getattr(price, "price_usd_per_million_tokens", 0.0),
        bill_draft_tokens=getattr(price, "billed", "") == "draft_tokens",
        strength=strength,
        source=(
            f"{drafter} → {target_name} on {dev_name}, domain {domain} ({n_domain or '?'} "
            f"prompts; weight {weight:.2f} against all domains, strength {strength:.3g})"
        ),
    )
