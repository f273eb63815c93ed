"""Adaptive K: choose every round's draft length from live estimates, the profiles as prior.

Each round :meth:`AdaptiveK.choose` evaluates every K in ``k_min..k_max`` with the very
round model ``select`` uses (:func:`configspec.model.evaluate.evaluate_objectives` on
:class:`~configspec.model.evaluate.GridInputs`, E(K) from
:func:`configspec.model.acceptance.tokens_per_round_from_positions`) and returns the K that
maximises the objective. Its inputs are live estimates:

* **acceptance per position** — two Beta posteriors per draft position i: the chance that
  the drafter proposes token i given it proposed i−1 (1 for a model drafter; a model-free
  n-gram drafter often proposes fewer), and the chance that draft i is accepted given it
  was proposed and every earlier one was accepted. Both are seeded from the alignment
  profile (``strength`` pseudo-observations per position, for the drafter and the domain
  when known) and updated by each round's outcome; all counts decay by ``decay`` per round
  towards a weak anchor at the prior mean, so old rounds fade and the posterior follows
  drift (the memory is about ``1 / (1 − decay)`` rounds);
* **link** — the running median of the last ``window`` rounds' wait beyond drafting and
  verification (round − draft − verify − the profiled per-round overhead − serialisation),
  used as the RTT;
* **verification and drafting times** — the profile tables at the drafted length,
  multiplied by the running median of measured / profiled over the last ``window`` rounds.

:meth:`AdaptiveK.observe` takes one round's outcome. Everything here is pure Python and
numpy on arrays of length ``k_max``; no clock, no I/O. :func:`prior_from_profiles` builds
the prior from a profile set through the same enumeration as ``select``
(:func:`configspec.search.space.space_from_profiles`).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from configspec import records as R
from configspec.config import KChoice
from configspec.errors import InvalidInput, ProfileMissing
from configspec.model.acceptance import tokens_per_round_from_positions
from configspec.model.evaluate import Bounded, GridInputs, Link, evaluate_objectives
from configspec.model.latency import downlink_payload_bytes, transfer_ms, uplink_payload_bytes
from configspec.model.presets import CONFIGSPEC, ModelPreset
from configspec.search.space import (
    Profiles,
    SearchSettings,
    space_from_profiles,
    verify_latency_table,
)

FloatArray = NDArray[np.float64]

OBJECTIVES: dict[str, str] = {
    "goodput": "goodput",
    "cost": "tokens_per_usd",
    "energy": "tokens_per_j",
}
"""Objective name (as ``select`` spells it) → the round model's output maximised."""

_P_MIN, _P_MAX = 0.01, 0.995
_SCALE_MIN, _SCALE_MAX = 0.05, 20.0
ANCHOR = 4.0
"""Pseudo-observations the (shifted) prior keeps per position after decay: pools the
positions, so deep ones that are rarely drafted do not make K wander."""


@dataclass(frozen=True)
class PolicyPrior:
    """What the profiles say before any round is seen (position/K-indexed arrays).

    ``acceptance[i-1]`` is P(draft i accepted | proposed, 1..i−1 accepted) and
    ``proposal[i-1]`` P(the drafter proposes i | it proposed i−1) for i = 1..n;
    ``draft_ms_per_token[K-1]`` is the profiled per-token drafting time when drafting K;
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
        return np.asarray(np.clip(out, _P_MIN, 1.0), dtype=np.float64)

    joint = conditional(e)
    proposal = conditional(d)
    acceptance = np.clip(joint / proposal, _P_MIN, _P_MAX)
    return acceptance, np.clip(proposal, _P_MIN, 1.0)


def _clip_scale(ratio: float) -> float:
    """A measured/profiled ratio clipped to a sane range (a glitch must not explode it)."""
    return min(max(float(ratio), _SCALE_MIN), _SCALE_MAX)


def _logit(p: FloatArray | float) -> FloatArray:
    p = np.asarray(p, dtype=np.float64)
    return np.asarray(np.log(p) - np.log1p(-p), dtype=np.float64)


class PositionalBeta:
    """Beta posteriors of a chain of conditional chances, one per position, with forgetting.

    Position i's posterior is ``Beta(s·p̃_i + a_i, s·(1 − p̃_i) + b_i)``: ``a_i``/``b_i``
    are the observed successes/failures, every count multiplied by ``decay`` each round;
    ``s`` is the prior's weight, ``strength`` at first, decaying the same way down to
    ``anchor`` pseudo-observations. ``p̃_i`` is the prior mean shifted by one log-odds
    offset shared by all positions — the pooled observed rate against what the prior
    expected for the same observations — so a drift seen at the positions that are drafted
    also moves the positions the current K never reaches (which therefore cannot hold the
    policy back at a K the prior alone would justify).

    ``observe(reached, stopped)``: positions 1..``reached`` succeeded; position
    ``reached`` + 1 failed when ``stopped`` (else it was not tried).
    """

    def __init__(
        self, prior_mean: FloatArray, strength: float, decay: float, anchor: float = ANCHOR
    ) -> None:
        self.prior = np.clip(np.asarray(prior_mean, dtype=np.float64), _P_MIN, _P_MAX)
        self._prior_logit = _logit(self.prior)
        self.decay = decay
        self.anchor = anchor
        self.weight = strength
        self.a = np.zeros_like(self.prior)
        self.b = np.zeros_like(self.prior)

    def shifted_prior(self) -> FloatArray:
        """The prior means moved by the pooled log-odds shift of the observations."""
        n = self.a + self.b
        total = float(n.sum())
        if total <= 1e-9:
            return self.prior
        seen = min(max(float(self.a.sum()) / total, _P_MIN), _P_MAX)
        expected = min(max(float(n @ self.prior) / total, _P_MIN), _P_MAX)
        shift = math.log(seen / (1.0 - seen)) - math.log(expected / (1.0 - expected))
        return np.asarray(1.0 / (1.0 + np.exp(-(self._prior_logit + shift))), dtype=np.float64)

    def mean(self) -> FloatArray:
        """Posterior mean per position."""
        s = self.weight
        return np.asarray(
            (s * self.shifted_prior() + self.a) / (s + self.a + self.b), dtype=np.float64
        )

    def observe(self, reached: int, stopped: bool) -> None:
        """Decay, then count successes at 1..``reached`` and a failure after if ``stopped``."""
        lam = self.decay
        self.a *= lam
        self.b *= lam
        self.weight = self.anchor + lam * (self.weight - self.anchor)
        n = self.a.size
        self.a[: min(reached, n)] += 1.0
        if stopped and reached < n:
            self.b[reached] += 1.0


class RunningMedian:
    """The median of the last ``window`` samples; ``prior`` until the first sample."""

    def __init__(self, prior: float, window: int) -> None:
        self.prior = prior
        self.samples: deque[float] = deque(maxlen=window)

    def add(self, x: float) -> None:
        """Add one sample (non-finite samples are ignored)."""
        if np.isfinite(x):
            self.samples.append(float(x))

    @property
    def value(self) -> float:
        """The running median (the prior before any sample)."""
        n = len(self.samples)
        if n == 0:
            return self.prior
        s = sorted(self.samples)
        mid = n // 2
        return s[mid] if n % 2 else 0.5 * (s[mid - 1] + s[mid])


class AdaptiveK:
    """The adaptive-K policy (module docstring). Stateful across generations on purpose:
    what it learnt on one prompt carries to the next."""

    def __init__(
        self,
        prior: PolicyPrior,
        *,
        k_min: int = 1,
        k_max: int | None = None,
        objective: str = "goodput",
        preset: ModelPreset = CONFIGSPEC,
        decay: float = 0.9,
        window: int = 7,
    ) -> None:
        k_hi = prior.k_max if k_max is None else k_max
        if not 1 <= k_min <= k_hi:
            raise InvalidInput(f"--k-min {k_min} is out of range (1..{k_hi})")
        if k_hi > prior.k_max:
            raise InvalidInput(
                f"--k-max {k_hi} is beyond the profiled range (K ≤ {prior.k_max}); lower "
                "--k-max or profile longer drafts"
            )
        if objective not in OBJECTIVES:
            raise InvalidInput(
                f"objective {objective!r} is not one of {', '.join(OBJECTIVES)} for --k auto"
            )
        if objective == "energy" and not np.isfinite(prior.draft_power_w):
            raise InvalidInput("objective energy needs a device profile with drafting power")
        if not 0.0 < decay < 1.0:
            raise InvalidInput(f"decay {decay} is out of range (0..1, exclusive)")
        if window < 1:
            raise InvalidInput(f"window {window} must be >= 1")
        self.prior = prior
        self.k_min = k_min
        self.k_max = k_hi
        self.objective = objective
        self.preset = preset
        self.rounds_seen = 0
        self._caught_up = False
        n = prior.k_max
        self.acceptance = PositionalBeta(prior.acceptance, prior.strength, decay)
        # a model drafter always proposes K: nothing to learn (and log-odds of 1 are ±inf)
        self.proposal = (
            None
            if bool(np.all(np.asarray(prior.proposal) >= 1.0))
            else PositionalBeta(prior.proposal, prior.strength, decay)
        )
        self.rtt = RunningMedian(float(np.asarray(prior.link.rtt_ms)), window)
        self.draft_scale = RunningMedian(1.0, window)
        self.verify_scale = RunningMedian(1.0, window)
        self._ks = np.arange(k_min, k_hi + 1, dtype=np.int64)
        self._ks_float = self._ks.astype(np.float64)
        # everything that does not change between rounds is computed once, here
        self._positions = np.arange(n + 2, dtype=np.float64)
        ok = np.isfinite(prior.verify_ms)
        if not ok.any():
            raise InvalidInput("the prior has no verification latency at any position")
        self._verify_table = np.interp(self._positions, self._positions[ok], prior.verify_ms[ok])
        link = prior.link
        self._link_fields = {
            name: getattr(link, name)
            for name in (
                "uplink_mbps",
                "downlink_mbps",
                "bytes_per_token",
                "bytes_per_message",
                "radio_energy_j_per_byte",
                "round_overhead_ms",
            )
        }
        counts = np.arange(n + 2, dtype=np.float64)
        self._up_serial_ms = transfer_ms(
            0.0,
            uplink_payload_bytes(counts, link.bytes_per_token, link.bytes_per_message),
            link.uplink_mbps,
        )
        self._down_serial_ms = transfer_ms(
            0.0,
            downlink_payload_bytes(counts, link.bytes_per_token, link.bytes_per_message),
            link.downlink_mbps,
        )
        self._overhead_ms = float(np.asarray(link.round_overhead_ms))
        m = self._ks.size

        def full(x: float) -> Bounded:
            return Bounded.exact(np.full(m, x, dtype=np.float64))

        self._const = {
            "mode": np.zeros(m, dtype=np.int64),
            "edge_ms_per_token": full(float(prior.draft_ms_per_token[0])),
            "verify_one_ms": full(float(prior.verify_ms[1])),
            "draft_power_w": full(prior.draft_power_w),
            "idle_power_w": full(prior.idle_power_w),
            "gpu_price": np.full(m, prior.gpu_price),
            "price_usd_per_hour": np.full(m, prior.price_usd_per_hour),
            "overhead_ms_per_round": np.full(m, prior.overhead_ms_per_round),
            "price_usd_per_mtok": np.full(m, prior.price_usd_per_mtok),
            "bill_draft_tokens": np.full(m, prior.bill_draft_tokens),
        }
        self._column = OBJECTIVES[objective]

    # ------------------------------------------------------------------ decide
    def choose(self) -> KChoice:
        """The K in ``k_min..k_max`` maximising the objective now, with the estimates."""
        ks = self._ks
        if self.proposal is None:  # a model drafter drafts exactly K
            joint = self.acceptance.mean()
            drafted = self._ks_float
            verify_prof = self._verify_table[ks + 1]
        else:
            q = self.proposal.mean()
            joint = self.acceptance.mean() * q
            drafted = np.cumsum(np.cumprod(q))[ks - 1]
            verify_prof = np.interp(drafted + 1.0, self._positions, self._verify_table)
        e_all = tokens_per_round_from_positions(joint)  # E(K), K = 0..n
        d_scale = self.draft_scale.value
        per_token = self.prior.draft_ms_per_token[ks - 1] * d_scale
        verify = verify_prof * self.verify_scale.value
        p_all = e_all[ks] - e_all[ks - 1]
        rtt = max(0.0, self.rtt.value)
        inputs = GridInputs(
            k=ks,
            tokens_per_round=Bounded.exact(e_all[ks]),
            draft_ms_per_token=Bounded.exact(per_token),
            verify_ms=Bounded.exact(verify),
            drafted=drafted,
            draft_catchup_ms=Bounded.exact(p_all * self.prior.catchup_ms * d_scale),
            **self._const,  # type: ignore[arg-type]
        )
        out = evaluate_objectives(inputs, Link(rtt_ms=rtt, **self._link_fields), self.preset)
        values = out[self._column]
        best = int(np.argmax(np.where(np.isfinite(values), values, -np.inf)))
        # built without re-validation: every field is computed above, in range by construction
        return KChoice.model_construct(
            k=int(ks[best]),
            objective_value=float(values[best]) if np.isfinite(values[best]) else 0.0,
            tokens_per_round=float(e_all[ks[best]]),
            round_ms=float(out["round"][best]),
            rtt_ms=rtt,
            draft_ms_per_token=float(per_token[best]),
            verify_ms=float(verify[best]),
            acceptance=np.round(joint, 4).tolist(),
            rounds_seen=self.rounds_seen,
        )

    # ------------------------------------------------------------------ learn
    def observe(
        self,
        *,
        k_asked: int,
        drafted: int,
        accepted: int,
        draft_ms: float,
        verify_ms: float,
        round_ms: float,
    ) -> None:
        """Learn from one round: K asked for, tokens drafted and accepted, measured times (ms)."""
        if not 0 <= accepted <= drafted <= k_asked:
            raise InvalidInput(
                f"round outcome accepted={accepted}, drafted={drafted}, K={k_asked} is "
                "inconsistent (need 0 ≤ accepted ≤ drafted ≤ K)"
            )
        self.rounds_seen += 1
        if k_asked >= 1 and self.proposal is not None:
            self.proposal.observe(drafted, stopped=drafted < k_asked)
        if drafted >= 1:
            self.acceptance.observe(accepted, stopped=accepted < drafted)
            # a round after a fully accepted one also reads two new tokens (catch-up)
            catchup = self.prior.catchup_ms if self._caught_up else 0.0
            profiled = drafted * float(self.prior.draft_ms_per_token[k_asked - 1]) + catchup
            if profiled > 0:
                self.draft_scale.add(_clip_scale(draft_ms / profiled))
        self._caught_up = drafted >= 1 and accepted == drafted
        v_prof = float(self._verify_table[drafted + 1])
        if v_prof > 0:
            self.verify_scale.add(_clip_scale(verify_ms / v_prof))
        serial = float(self._up_serial_ms[drafted] + self._down_serial_ms[accepted + 1])
        self.rtt.add(max(0.0, round_ms - draft_ms - verify_ms - self._overhead_ms - serial))


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
    overrides the stored network's RTT as the link prior. Raises
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
    space = space_from_profiles(profiles, preset, settings)
    g = space.inputs
    rows = np.flatnonzero(g.mode == R.Mode.SPECULATIVE)
    if rows.size == 0:
        raise ProfileMissing(
            f"no speculative configuration for drafter {drafter!r} in these profiles (it needs "
            "a device profile, a verification profile and an alignment entry for it)"
        )
    # one device and one target: the first in the enumeration's order
    first = rows[0]
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
    e = np.concatenate([[1.0], g.tokens_per_round.mean[rows]])
    drafted = None if g.drafted is None else np.concatenate([[0.0], g.drafted[rows]])
    acceptance, proposal = positions_from_tokens_per_round(e, drafted)
    target_name = space.target_names[int(space.target_code[first])]
    verification = next(v for v in profiles.verifications if v.target == target_name)
    v_mean, _, _ = verify_latency_table(verification, ks.size, context_tokens, 1)
    dev_name = space.device_names[int(space.device_code[first])]
    dev = next(d for d in profiles.devices if d.device.name == dev_name)
    on_dev = next(d for d in dev.drafters if d.drafter == drafter)
    price = verification.price
    net = profiles.network
    return PolicyPrior(
        acceptance=acceptance,
        proposal=proposal,
        draft_ms_per_token=np.asarray(g.draft_ms_per_token.mean[rows], dtype=np.float64),
        verify_ms=np.asarray(v_mean, dtype=np.float64),
        link=Link(
            rtt_ms=net.rtt_ms if rtt_ms is None else rtt_ms,
            uplink_mbps=net.uplink_mbps,
            downlink_mbps=net.downlink_mbps,
            bytes_per_token=net.bytes_per_token,
            bytes_per_message=net.bytes_per_message,
            radio_energy_j_per_byte=net.radio_energy_j_per_byte,
            round_overhead_ms=net.round_overhead_ms,
        ),
        catchup_ms=max(0.0, on_dev.catchup_ms.mean) if on_dev.catchup_ms else 0.0,
        draft_power_w=on_dev.draft_power_w.mean if on_dev.draft_power_w else float("nan"),
        idle_power_w=dev.idle_power_w.mean if dev.idle_power_w else float("nan"),
        gpu_price=price.kind == "gpu_time",
        price_usd_per_hour=getattr(price, "price_usd_per_hour", 0.0),
        overhead_ms_per_round=getattr(price, "overhead_ms_per_round", 0.0),
        price_usd_per_mtok=getattr(price, "price_usd_per_million_tokens", 0.0),
        bill_draft_tokens=getattr(price, "billed", "") == "draft_tokens",
        strength=strength,
        source=f"{drafter} → {target_name} on {dev_name}, domain {domain}",
    )
