"""Adaptive K: choose every round's draft length from live estimates, the profiles as prior.

Each round :meth:`AdaptiveK.choose` evaluates every K in ``k_min..k_max`` with the round
model ``select`` uses (that of :func:`configspec.model.evaluate.evaluate_objectives`,
E(K) as in :func:`configspec.model.acceptance.tokens_per_round_from_positions`) and
returns the K that maximises the objective. Its inputs are live estimates
(:mod:`configspec.serving.estimators`):

* **acceptance per position** — two chains of Beta posteriors: the chance that the
  drafter proposes token i given it proposed i−1 (1 for a model drafter; a model-free
  n-gram drafter often proposes fewer), and the chance that draft i is accepted given it
  was proposed and every earlier one was. Both are seeded from the alignment profile
  (``strength`` pseudo-observations per position, for the drafter and the domain when
  known; the profile's deep positions pooled, :func:`pool_positions`) and updated by
  each round's outcome. Counts decay by ``decay`` = 0.97 per round (a memory of about
  33 rounds): at constant conditions the posterior mean of a position then wanders with a
  standard deviation of about 0.055, where the former 0.9 (10 rounds) left about 0.09 and
  made K wander between neighbours on noise alone. A change detector (a two-sided CUSUM,
  :class:`~configspec.serving.estimators.PositionalBeta`) restarts the memory when the
  regime really changes, so a new domain is followed about as fast as with 0.9 (in
  simulation: a fall of 0.7 → 0.3 is tracked to within 0.1 after a median 13 rounds,
  22 with 0.9 alone);
* **RTT** — the running median of the last ``window`` = 7 rounds' wait beyond drafting
  and verification (round − draft − verify − the profiled per-round overhead −
  serialisation): a step in the link is followed after 4 rounds, a single stall is not;
* **verification time** — a line ``a + b·positions`` fitted live by decayed weighted
  least squares, seeded by the profile's line scaled to the measured level
  (:class:`~configspec.serving.estimators.VerifyLine`): verify time grows with K as it
  is measured to, not as a flat or a stale profiled figure; the profile's slope, scaled,
  weighs as :data:`VERIFY_SLOPE_WEIGHT` rounds × positions², so live rounds of one or two
  widths shift it rather than replace it;
  A round the token budget cut to K = 0 (one position verified, which no K the policy
  can choose verifies, and which the server runs far faster) stays out of the fit: one
  such round at the end of a generation had tilted the slope to 18 ms/position (measured
  later: 3) and held the Q4_0 drafter at K = 2 after a step to 120 ms RTT;
* **drafting time** — the device profile's per-token time at K, smoothed to a line in K
  (:func:`~configspec.serving.prior.smooth_draft_ms_per_token`: a profile's per-K
  figures scatter, and scaled by what is measured at one K, a lucky K made the others
  look up to 45% slower), multiplied by the running median of measured / profiled over
  the last ``window`` rounds. With both corrections, replaying the stored Q4_0 drift run
  (``benchmarks/replay_adaptive.py``) moves K off 2 in the first round the RTT estimate
  has moved (round 5 of phase 2; recorded: round 21), with the no-drift control's
  choices unchanged.

No exploration, and no move on noise: the posterior's pooled shift moves the positions
the current K does not reach with the ones it does, and the deep positions of the prior
are pooled, so there is no K that only a stale prior holds the policy away from. The
policy leaves its K only when another beats it by more than ``hold`` = 1% *and* by more
than ``switch_z`` = 2 posterior standard deviations of the goodput difference (delta
method over the positions' Beta posteriors and the verification slope,
:meth:`AdaptiveK._gain_sd`) — or when the other K has led for :data:`PERSIST_ROUNDS` rounds
in a row by at least :data:`PERSIST_Z` standard deviations (a lasting lead is not noise;
one within the model's doubt is not evidence), or when the RTT estimate has moved since
K last changed (:meth:`AdaptiveK._link_moved`: a change of conditions, not of noise).
At a flat optimum (low RTT, where K = 2..4 are within 1%) a burst of accepted drafts no longer
drags K to 6-8 and back, and a step in the link is still followed within rounds.
Replaying the stored n-gram drift run (``benchmarks/replay_adaptive.py``, open loop)
the switches per phase fall from 10/5/13 to 2/3/2, and phase 1 (5 ms, code) spends 19 of
132 rounds at K ≥ 5 instead of 40.

Prior strength: a domain's alignment entry from few prompts is shrunk towards the
drafter's all-domain entry and carries fewer pseudo-observations
(:func:`evidence_weights`): a 2-prompt domain gives a third of the weight and a quarter
of the strength, so the posterior leaves a wrong domain prior within a few rounds.

A known change of domain (:meth:`AdaptiveK.reseed`, for a client that decodes many prompts
and knows their domains): the acceptance chain takes the new domain's entry as prior,
keeping its counts and pooled level. Live (``bench_adaptive.py --adaptive-arms auto
auto-domain``, R = 3, 2026-12-01) the reseeded policy read 0.998 [0.937, 1.070] of the
untold one in the phase after the switch (open-loop replay had said +2–3%), so it is an
API, not a default.

Cost: :meth:`AdaptiveK.choose` (goodput) evaluates the round model in plain floats over
K ≤ ``k_max`` (:meth:`AdaptiveK._goodput_rows`; a dozen numbers are cheaper as floats
than as numpy calls, above all from the cold caches a live decode round leaves behind),
and the estimators update in place on lists; the cost and energy objectives go through
the numpy :meth:`AdaptiveK.predict`. The posterior variances are computed only in a
round that tests a switch (:meth:`AdaptiveK._gain_sd`), and the stored acceptance is
rounded by :func:`_round4` (``round`` alone took 6 µs of a round of about 50); every
choice is the same, field for field, as before these savings on the 6,964 kept rounds.
``benchmarks/bench_adaptive_policy.py`` measures a round (choose + observe). Unit tests
hold :meth:`AdaptiveK.predict` equal to
:func:`~configspec.model.evaluate.evaluate_objectives` for both presets and all three
objectives, and the float path equal to :meth:`AdaptiveK.predict`. Everything here is
pure Python and numpy; no clock, no I/O.
:func:`~configspec.serving.prior.prior_from_profiles` builds the prior from a profile set
through the same enumeration as ``select`` (:mod:`configspec.serving.prior`).

Verification shape (``verify_shape=True``, off by default): the line through the
verification profile hides a sawtooth that the profile and the live rounds both show on
this host (2 → 3 positions verified cost +28 ms in the profile and +12..+26 ms in the
kept Q4_0 records, 3 → 4 about 0 or less). With the line the model charges 10 ms for the
third position, so in phase 1 of the kept Q4_0 drift records it ranked K = 2 above K = 1
by a median 3.3% / 3.6% (measured: K = 1 ahead by 7%); with the shape it predicts K = 1
ahead by 6.4% in both. It also moves the n-gram drafter to K = 1 in chat at 5 ms RTT (K = 1
measured worst there) and the Q4_0 no-drift control from K = 2 to K = 1. The live A/B
(``bench_adaptive.py --adaptive-arms line shape depth``, R = 2, 2026-11-30) decided per
drafter kind: for Q4_0 shape / line 1.022 over the scenario (phase 2 1.045, no drift
1.043), for the n-gram drafter 0.991 (phase 3 0.945). So ``run edge --k auto``
(:func:`configspec.loop.runs.adaptive_policy`) turns it on for a model drafter only; the
class default stays off.

Match depth (``match_depth=True``, off by default; a model-free drafter only): the
acceptance chain's pooled log-odds shift then starts at position 2, as the proposal
chain's does. A prompt-lookup drafter's position 1 carries "is the match right at all",
which chat lowers; once a match goes on, the later positions accept at a high rate. With
one shift over every position, position 1's failures dragged the depth down: replaying
the kept n-gram drift records, the mean joint chance at positions 4–8 read 0.43–0.46 in
phase 2 (120 ms, chat) whenever K ≤ 3, while the rounds that drafted there accepted 0.95 /
0.97; with the option it reads 0.58 / 0.60, moved only by what positions 2–3 show (and
0.90 / 0.94 against 0.95 / 0.97 in the rounds that reached position 4, was 0.84 / 0.93).
Open-loop replay then holds K ≥ 4 in 62 / 75 of phase 2's rounds (was 46 / 37); it also
moves phases 1 and 3 and the control to higher K (measured flat there within 3%, except
K = 8 in phase 1), so it stayed off until a live A/B (``bench_adaptive.py
--adaptive-arms line depth``) decided. A model drafter's choices do not change (every
field of the 971 kept Q4_0 choices equal). The live A/B decided: depth / line 1.046 over
the scenario for the n-gram drafter (phase 2 1.072, no drift 1.030), so ``run edge --k
auto`` turns it on for a model-free drafter.

Change detection by group (``AdaptiveK(group_changes=True)``, experimental, off by
default: :class:`~configspec.serving.estimators.PositionalBeta`): the acceptance and proposal
chains' first position and their deep positions get separate change detectors; a change
restarts only its own group. It lost a live A/B side by side with the one detector
(``bench_adaptive.py --drafters ngram --repeats 3 --adaptive-arms depth depth-group``,
2026-11-30 15:35–16:15 UTC, load 0.8–0.9; group / one detector): phase 1 1.020, phase 2
0.974 [0.952, 0.999], phase 3 0.970, whole scenario 0.987, no drift 0.965 [0.933, 0.994];
with one detector the n-gram drafter met ≥ 0.97 of the held-out oracle in every phase
(1.039 / 0.975 / 0.990). The restart that motivated it is real, but the deep positions'
own detector also fires on code prompts, whose matches go on about half the time (in the
replay below it held K at 1–2 for 54–59 rounds there). Why it was tried: in the live A/B
(2026-11-30, commit ef9dc83) the n-gram drafter missed phase 3 (0.943 of the held-out
oracle, K = 8 in every cell; the policy held K = 5 for 76 and 55 of the phase's 103
rounds). The kept records show the cause. Near the end
of phase 2 (round 200 of 329) one detector over the whole chain fired on four first-
position failures and two at position 2 (whose mean read 0.99) and restarted every
position from the last 12 rounds, in which positions 3–8 had hardly been reached: they
fell back to the code prior (0.71–0.79 after the shift) although phase 2 had measured 41
successes in 43 trials at positions 4–8. Phase 3 (5 ms RTT, chat) fails at position 1 in
30 of its 50 match rounds, so one of its first 30 rounds reached position 2; then the
lead of K = 8 (3–5% in the model) had to last 24 rounds at one standard deviation. RTT,
verification and drafting estimates were right (RTT 4.0–5.5 ms from the phase's first
round; verification slope 6–10 ms/position against 6–8 fitted on the phase's rounds).
Replayed open loop (``benchmarks/replay_adaptive_ab.py``; tokens at K' ≤ the recorded K
exact by prefix consistency, a fully accepted round continued at the phase's measured
depth rate, time from the phase's verification per width): phase 3 new / old 1.033 and
0.991 on the two depth records it was found on, 1.025–1.128 on the four drift records of
adaptive-runs5n / 6n it was not (0.974–1.202 over all 12 n-gram drift records, 10 above
1); phase 1 0.984–1.000 (the depth detector, no longer outvoted by first-position
successes, fires on code prompts whose matches go on about half the time, and K rests at
1–2 for 54–59 rounds); whole drift scenario 1.006–1.073; no-drift control 0.977–1.053
(two of 12 below 1). A model drafter's chain is one group: every choice of the 20 kept
Q4_0 records is unchanged.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from configspec.config import KChoice
from configspec.errors import InvalidInput
from configspec.model.cost import gpu_time_cost_usd, per_token_cost_usd
from configspec.model.energy import edge_energy_j
from configspec.model.latency import downlink_payload_bytes, transfer_ms, uplink_payload_bytes
from configspec.model.presets import CONFIGSPEC, ModelPreset
from configspec.serving.estimators import PositionalBeta, RunningMedian, VerifyLine
from configspec.serving.prior import (
    PolicyPrior,
    evidence_weights,
    pool_positions,
    positions_from_tokens_per_round,
    prior_from_profiles,
)

__all__ = [
    "OBJECTIVES",
    "AdaptiveK",
    "PolicyPrior",
    "auto_options",
    "evidence_weights",
    "model_free",
    "pool_positions",
    "positions_from_tokens_per_round",
    "prior_from_profiles",
]

FloatArray = NDArray[np.float64]

OBJECTIVES: dict[str, str] = {
    "goodput": "goodput",
    "cost": "tokens_per_usd",
    "energy": "tokens_per_j",
}
"""Objective name (as ``select`` spells it) → the round model's output maximised."""

_SCALE_MIN, _SCALE_MAX = 0.05, 20.0
DECAY = 0.97
"""Per-round forgetting of the acceptance posteriors (module docstring)."""
VERIFY_DECAY = 0.9
"""Per-round forgetting of the verification fit: the host's load moves it faster than a
domain moves acceptance, and its level is a median, robust on its own."""
VERIFY_SLOPE_WEIGHT = 15.0
"""Weight (rounds × positions²) of the profile's verification slope, scaled to the measured
level, in the live line fit (:class:`~configspec.serving.estimators.VerifyLine`). With 1,
ten rounds of verification noise (±15%) made the slope wander: replaying the kept n-gram
drift records it ranged 4.3..9.8 ms/position (10th..90th percentile; extremes 0.1 and 22)
against about 8 measured over the whole run, and stood at 4.8 and 6.1 exactly when the
policy moved to K = 6. With 15 it ranges 5.8..9.6 with the same prediction error; rounds
that span many widths (an n-gram drafter, about 90 positions² in ten rounds) still
outweigh it, rounds of one or two widths do not."""
VERIFY_SLOW_DECAY = 0.99
"""Per-round forgetting of the slow verification fit whose slope anchors the fast fit's
(about 100 rounds; :class:`~configspec.serving.estimators.VerifyLine`): a stale or flat
profiled slope is learnt away, but not by ten noisy rounds of one or two widths."""
WINDOW = 7
"""Rounds in the running medians (RTT, drafting and verification level)."""
HOLD = 0.01
"""Relative margin another K must win by before the policy leaves the current one."""
SWITCH_Z = 2.0
"""Posterior standard deviations of the goodput difference another K must win by before
the policy leaves the current one (:meth:`AdaptiveK.choose`)."""
LINK_MOVE_MS, LINK_MOVE_REL = 10.0, 0.5
"""An RTT estimate this far (ms, and relative) from its value when K last changed waives
the evidence test: the goodputs moved with the link, whose estimate is a median."""
PERSIST_ROUNDS = 24
"""Rounds in a row another K may lead (by more than ``hold``, less than ``switch_z``
standard deviations) before the policy moves anyway: a lead that lasts is not noise, and
a K the policy never tries would otherwise keep its doubt for ever."""


PERSIST_Z = 1.0
"""Standard deviations a lead must keep, round after round, to count towards
:data:`PERSIST_ROUNDS`. Without it a lead of 1.3% at 0.7 standard deviations — the
model's own bias on a flat curve, not evidence — moved the n-gram drafter from K = 4 to
K = 6 (replaying the kept drift record, phase 1 of repeat 2), where it then drafted 6.1
positions per round for the 4.3 predicted and took 179 ms a round for the 164 predicted."""


PERSIST_AFTER_CHANGE = 3
""":data:`PERSIST_ROUNDS` for a move back up, to a K no larger than the one in force when
the change detector last fired (within :data:`POST_CHANGE_ROUNDS` of it). After a drop
to K = 1 the positions K = 1 never reaches learn only through the pooled shift, which
still holds the failures that fired the detector, so the evidence test cannot pass for
about 30 rounds. Replaying the kept Q4_0 drift records (phase 2, the third chat prompt)
the policy now leaves K = 1 after 13 rounds in repeat 2 and 19 in repeat 1 (was 27 in
both); every control replay (Q4_0 and n-gram) and both n-gram drift replays are
unchanged: a move down, or up beyond the K before the change, keeps the full 24. In
simulation (a drop of acceptance 0.8 → 0.2 for 10 rounds, then back; 17 seeds) the
median return above K = 1 falls from 30 rounds to 15, and the switches at constant
conditions do not change. A value of 2 doubled the switches in the n-gram drift
replays' phase 3 (2 → 4)."""
POST_CHANGE_ROUNDS = 32
"""Rounds after a detected change of acceptance in which :data:`PERSIST_AFTER_CHANGE`
applies (about the acceptance memory, 1 / (1 − :data:`DECAY`))."""


_CHOICE_FIELDS = frozenset(KChoice.model_fields)


def model_free(prior: PolicyPrior) -> bool:
    """Whether the drafter behind ``prior`` may propose fewer than K tokens (a model-free,
    n-gram drafter): its proposal chain is below 1 somewhere. A model drafter always
    proposes K."""
    return bool(np.any(np.asarray(prior.proposal) < 1.0))


def auto_options(prior: PolicyPrior) -> dict[str, bool]:
    """The :class:`AdaptiveK` options ``run edge --k auto`` uses for the drafter behind
    ``prior``: each drafter kind the variant that won its live A/B (``bench_adaptive.py
    --adaptive-arms line shape depth``, README "Adaptive K"): the verification profile's
    per-width shape for a model drafter, the match-depth rule for a model-free one."""
    free = model_free(prior)
    return {"verify_shape": not free, "match_depth": free}


def _choice(**fields: object) -> KChoice:
    """A :class:`~configspec.config.KChoice` from fields computed in range by construction,
    without validation: what ``KChoice.model_construct`` builds (a unit test holds them
    equal), at a sixth of its cost (about 1.6 µs against 10 µs warm, per round)."""
    out = KChoice.__new__(KChoice)
    object.__setattr__(out, "__dict__", fields)
    object.__setattr__(out, "__pydantic_fields_set__", set(_CHOICE_FIELDS))
    object.__setattr__(out, "__pydantic_extra__", None)
    object.__setattr__(out, "__pydantic_private__", None)
    return out


def _round4(values: list[float]) -> list[float]:
    """``[round(x, 4) for x in values]`` for values >= 0, equal float for float, at about
    half its cost (``round`` formats each float in decimal; 8 positions took 6 µs of a
    round). Away from a tie, ``int(x·10⁴ + 0.5)`` is the nearest integer to x·10⁴ exactly
    (the product is off by an ulp at most) and dividing it by 10⁴ rounds correctly, as
    ``round`` does; within 10⁻⁶ of a tie ``round`` itself decides."""
    out = []
    for x in values:
        y = x * 1e4 + 0.5
        n = int(y)
        out.append(n / 1e4 if 1e-6 < y - n < 0.999999 else round(x, 4))
    return out


def _clip_scale(ratio: float) -> float:
    """A measured/profiled ratio clipped to a sane range (a glitch must not explode it)."""
    return min(max(float(ratio), _SCALE_MIN), _SCALE_MAX)


class AdaptiveK:
    """The adaptive-K policy (module docstring). Stateful across generations on purpose:
    what it learnt on one prompt carries to the next.

    ``decay`` is the per-round forgetting of the acceptance posteriors, ``window`` the
    rounds in the running medians (RTT, drafting-speed and verification-level
    corrections), ``hold`` the relative margin by which another K must beat the current
    one before the policy moves. ``verify_shape``: predict verification time from the
    profile's per-width table around the live line (:class:`~configspec.serving.\
estimators.VerifyLine` ``shape``), its doubt from the profile's intervals, instead of
    from the line alone (experimental, off by default: the profile's sawtooth moved the kept
    replays' choices wholesale; :meth:`_shape_expected`). ``match_depth``: for a model-free
    drafter, pool the acceptance chain's shift from position 2 on, so that position 1 (is
    the match right) does not move the depth (module docstring; off by default, ignored
    for a model drafter). ``group_changes``: a pooled chain gets one change detector per
    group (before / from the pool), "Change detection by group" in the module docstring
    (experimental, off: it lost the live A/B; the benchmark arm ``depth-group``).
    """

    def __init__(
        self,
        prior: PolicyPrior,
        *,
        k_min: int = 1,
        k_max: int | None = None,
        objective: str = "goodput",
        preset: ModelPreset = CONFIGSPEC,
        decay: float = DECAY,
        window: int = WINDOW,
        hold: float = HOLD,
        switch_z: float = SWITCH_Z,
        verify_shape: bool = False,
        match_depth: bool = False,
        group_changes: bool = False,
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
        if not 0.0 <= hold < 1.0:
            raise InvalidInput(f"hold {hold} is out of range (0..1)")
        if not (math.isfinite(switch_z) and switch_z >= 0.0):
            raise InvalidInput(f"switch_z {switch_z} must be a finite number >= 0")
        if not np.isfinite(prior.verify_ms[1:]).any():
            raise InvalidInput("the prior has no verification latency at any position")
        self.prior = prior
        self.k_min = k_min
        self.k_max = k_hi
        self.objective = objective
        self.preset = preset
        self.hold = hold
        self.switch_z = switch_z
        self.rounds_seen = 0
        self._caught_up = False
        self._k_prev = 0
        self._since_change = POST_CHANGE_ROUNDS  # rounds since the last detected change
        self._changes_seen = 0
        self._k_at_change = 0  # the K in force when the last change was detected
        self._waiting = 0  # rounds another K has led by more than hold, not yet convincingly
        self._rtt_at_switch = float(np.asarray(prior.link.rtt_ms))  # RTT when K last changed
        # a model drafter always proposes K: nothing to learn (and log-odds of 1 are ±inf)
        free = model_free(prior)
        self.match_depth = match_depth and free
        self.acceptance = PositionalBeta(
            prior.acceptance,
            prior.strength,
            decay,
            pool_from=1 if self.match_depth else 0,
            group_changes=group_changes,
        )
        self.proposal = (
            PositionalBeta(
                prior.proposal, prior.strength, decay, pool_from=1, group_changes=group_changes
            )
            if free
            else None
        )
        self.rtt = RunningMedian(float(np.asarray(prior.link.rtt_ms)), window)
        self.draft_scale = RunningMedian(1.0, window)
        self.verify_shape = verify_shape
        self.verify = VerifyLine(
            prior.verify_ms,
            VERIFY_DECAY,
            window,
            slope_weight=VERIFY_SLOPE_WEIGHT,
            slow_decay=VERIFY_SLOW_DECAY,
            slow_weight=VERIFY_SLOPE_WEIGHT,
            shape=verify_shape,
            shape_sd_ms=prior.verify_sd_ms,
        )
        self._init_model()

    def _init_model(self) -> None:
        """Everything of the round model that does not change between rounds, once.

        The round model of :func:`configspec.model.evaluate.evaluate_objectives` restricted
        to speculative rows is linear in the live estimates: serialisation is
        ``transfer_ms(0, payload)`` with a payload linear in the tokens sent, so it is
        precomputed here as intercept + slope, through the model's own functions.
        """
        prior, preset, link = self.prior, self.preset, self.prior.link
        n = prior.k_max
        ks = np.arange(self.k_min, self.k_max + 1, dtype=np.int64)
        self._ks = ks
        self._ks_float = ks.astype(np.float64)
        self._sl = slice(self.k_min - 1, self.k_max)  # K-indexed arrays at k_min..k_max
        self._per_token = np.asarray(prior.draft_ms_per_token, dtype=np.float64)[ks - 1]
        self._per_token_all = [float(x) for x in prior.draft_ms_per_token]
        bpt, bpm = link.bytes_per_token, link.bytes_per_message

        def serial_ms(count: float, up: bool) -> float:
            if up:
                payload = uplink_payload_bytes(count, bpt, bpm)
                return float(transfer_ms(0.0, payload, link.uplink_mbps))
            payload = downlink_payload_bytes(count, bpt, bpm)
            return float(transfer_ms(0.0, payload, link.downlink_mbps))

        up0, dn0 = serial_ms(0.0, True), serial_ms(0.0, False)
        up1, dn1 = serial_ms(1.0, True) - up0, serial_ms(1.0, False) - dn0
        overhead = float(np.asarray(link.round_overhead_ms))
        # what observe() subtracts from a round to find the link's wait (always the full
        # edge-cloud round: the measurement does not depend on the preset)
        self._overhead_ms = overhead
        self._up_serial = [up0 + up1 * c for c in range(n + 2)]
        self._down_serial = [dn0 + dn1 * c for c in range(n + 2)]
        net = preset.include_network
        self._net = 1.0 if net else 0.0
        self._fixed_ms = up0 + dn0 + overhead if net else 0.0
        self._up_ms_per_token = up1 if net else 0.0
        self._down_ms_per_token = dn1 if net else 0.0
        self._fixed_verify = preset.fixed_verify_ms
        # a model drafter drafts exactly K: its drafting and uplink terms are constants
        self._draft_base = self._ks_float * self._per_token
        self._const_ms = self._fixed_ms + self._ks_float * self._up_ms_per_token
        # cost and energy terms (read only for those objectives)
        bill = (
            prior.bill_draft_tokens
            if preset.bill_draft_tokens is None
            else (preset.bill_draft_tokens)
        )
        self._bill = bill
        self._radio_j = 0.0 if preset.energy_drafting_only else link.radio_energy_j_per_byte
        self._idle_w = float("nan") if preset.energy_drafting_only else prior.idle_power_w
        self._bpt, self._bpm = float(np.asarray(bpt)), float(np.asarray(bpm))

    # ------------------------------------------------------------------ decide
    def predict(self) -> dict[str, FloatArray]:
        """The round model at every K in ``k_min..k_max`` under the current estimates.

        Returns arrays (one element per K): ``k``, ``tokens_per_round`` (E(K)),
        ``drafted`` (mean tokens drafted), ``draft`` / ``verify`` / ``round`` (ms),
        ``joint`` (per-position chance of an accepted token, all positions) and the
        objective maximised, under its name in :data:`OBJECTIVES`. Equal, term for
        term, to :func:`~configspec.model.evaluate.evaluate_objectives` on the same
        inputs (a unit test holds the two together).
        """
        acc = self.acceptance.mean()
        sl = self._sl
        if self.proposal is None:  # a model drafter drafts exactly K
            joint = acc
            drafted = self._ks_float
            draft_base = self._draft_base
            const_ms = self._const_ms
        else:
            q = self.proposal.mean()
            joint = acc * q
            drafted = np.cumsum(np.cumprod(q))[sl]
            draft_base = drafted * self._per_token
            const_ms = self._fixed_ms + drafted * self._up_ms_per_token
        survive = np.cumprod(joint)
        e = np.cumsum(survive)[sl]
        e += 1.0
        d_scale = self.draft_scale.value
        catchup = self.prior.catchup_ms
        with_catchup = draft_base + survive[sl] * catchup if catchup else draft_base
        draft = with_catchup * d_scale
        if self._fixed_verify is None:
            line = self.verify
            verify = line.b * drafted
            verify += line.a + line.b
            verify += self._shape_expected(None if self.proposal is None else q)
        else:
            verify = np.full_like(e, self._fixed_verify)
        wait = e * self._down_ms_per_token
        wait += const_ms
        wait += verify
        wait += max(0.0, self.rtt.value) * self._net
        round_ms = draft + wait
        out = {
            "k": self._ks_float,
            "tokens_per_round": e,
            "drafted": drafted,
            "draft": draft,
            "verify": verify,
            "round": round_ms,
            "joint": joint,
        }
        column = OBJECTIVES[self.objective]
        if column == "goodput":
            out[column] = e * 1e3 / round_ms
        elif column == "tokens_per_usd":
            p = self.prior
            if p.gpu_price:
                cost = gpu_time_cost_usd(verify, p.price_usd_per_hour, p.overhead_ms_per_round)
            else:
                cost = per_token_cost_usd(drafted, p.price_usd_per_mtok, self._bill)
            with np.errstate(divide="ignore"):
                out[column] = e / cost
        else:
            radio_bytes = (
                uplink_payload_bytes(drafted, self._bpt, self._bpm)
                + downlink_payload_bytes(e, self._bpt, self._bpm)
            ) * self._net
            energy = edge_energy_j(
                draft, self.prior.draft_power_w, wait, self._idle_w, radio_bytes, self._radio_j
            )
            with np.errstate(divide="ignore", invalid="ignore"):
                out[column] = e / energy
        return out

    def _shape_expected(self, q: FloatArray | None) -> FloatArray:
        """The profile's verification shape (:meth:`VerifyLine.shape_at`) expected at each K
        in ``k_min..k_max`` (ms): at K + 1 positions for a model drafter, over the
        distribution of the tokens an n-gram drafter proposes (chances ``q``) otherwise."""
        n = self.k_max
        dev = np.array([self.verify.shape_at(p) for p in range(1, n + 2)], dtype=np.float64)
        if q is None:
            return dev[self.k_min : n + 1]
        reach = np.concatenate(([1.0], np.cumprod(q[:n])))  # P(drafted >= j), j = 0..n
        # K drafted at most: P(drafted = j) = reach_j - reach_{j+1} (j < K), reach_K at K
        below = np.cumsum((reach[:-1] - reach[1:]) * dev[:n])
        out: FloatArray = (below + reach[1:] * dev[1:])[self.k_min - 1 :]
        return out

    def _goodput_rows(self) -> tuple[list[float], ...]:
        """The goodput column of :meth:`predict`, in plain floats (the per-round path).

        Returns lists over K = ``k_min..k_max``: goodput (tokens/s), E(K) (tokens per
        round), round time (ms), positions verified; over every position i = 1..n: the
        joint chance (proposal × acceptance); ``cum[m]`` = Σ of the survival products of
        positions 1..m (m = 0..``k_max``), from which :meth:`_gain_sd` takes its
        gradients; and over K again the verification time (ms). Equal to :meth:`predict`
        (a unit test holds them together); a dozen numbers are cheaper as floats than as
        numpy calls, above all from the cold caches a live round leaves behind. The
        posterior variances are left to :meth:`_gain_sd`, which most rounds never call.
        """
        acc = self.acceptance.mean_list
        prop = self.proposal
        if prop is None:
            joint = acc
            q = acc  # unread
        else:
            q = prop.mean_list
            joint = [x * y for x, y in zip(acc, q, strict=True)]
        k_min = self.k_min
        d_scale = self.draft_scale.value
        catchup = self.prior.catchup_ms
        per_token = self._per_token_all
        fixed_verify = self._fixed_verify
        line_a, line_b = self.verify.a, self.verify.b
        link_ms = self._fixed_ms + max(0.0, self.rtt.value) * self._net
        up, down = self._up_ms_per_token, self._down_ms_per_token
        goodput: list[float] = []
        tokens: list[float] = []
        rounds: list[float] = []
        positions: list[float] = []
        verifies: list[float] = []
        cum = [0.0]
        total = 0.0
        survive = 1.0
        reach = 1.0  # chance that the drafter proposes position i (n-gram: < 1)
        drafted = 0.0
        # the profile's verification shape, expected over the positions verified
        shape = self._shape_now() if self.verify_shape else None
        below = 0.0  # Σ_{j<K} P(drafted = j)·shape[j + 1]
        for i in range(self.k_max):
            survive *= joint[i]
            total += survive
            cum.append(total)
            if prop is None:
                drafted += 1.0
            else:
                if shape is not None:
                    below += reach * (1.0 - q[i]) * shape[i + 1]
                reach *= q[i]
                drafted += reach
            if i + 1 < k_min:
                continue
            e = 1.0 + total
            draft = (drafted * per_token[i] + survive * catchup) * d_scale
            if fixed_verify is not None:
                verify = fixed_verify
            elif shape is None:
                verify = line_a + line_b * (drafted + 1.0)
            else:
                verify = line_a + line_b * (drafted + 1.0) + below + reach * shape[i + 2]
            round_ms = draft + e * down + link_ms + drafted * up + verify
            goodput.append(e * 1e3 / round_ms)
            tokens.append(e)
            rounds.append(round_ms)
            positions.append(drafted + 1.0)
            verifies.append(verify)
        return goodput, tokens, rounds, positions, joint, cum, verifies

    def _shape_now(self) -> list[float]:
        """The profile's verification shape at 0..``k_max`` + 1 positions, scaled to the
        measured level (ms)."""
        level = self.verify.level.value
        return [level * x for x in self.verify.shape_ms[: self.k_max + 2]]

    def _gain_sd(self, to: int, frm: int, rows: tuple[list[float], ...]) -> float:
        """Posterior standard deviation (tokens/s) of goodput(K_to) − goodput(K_from).

        ``to``/``frm`` index the K rows of :meth:`_goodput_rows` (``rows``). Delta method
        over the positions' chances (independent Beta posteriors) and the verification
        line's slope ``b`` (:meth:`~configspec.serving.estimators.VerifyLine.slope_var`):
        E(K) = 1 + Σ_{j≤K} Π_{l≤j} p_l, so ∂E(K)/∂p_i = (cum[K] − cum[i−1]) / p_i for
        i ≤ K; goodput = E(K) / round(K) and ∂round(K)/∂b = positions verified at K. The
        other estimates (RTT, drafting speed, the line's level) are medians of the
        latest rounds, held at their values.
        """
        _, tokens, rounds, positions, joint, cum, _ = rows
        va = self.acceptance.var_list
        prop = self.proposal
        if prop is None:
            var = va
        else:
            acc, q, vq = self.acceptance.mean_list, prop.mean_list, prop.var_list
            var = [y * y * u + x * x * v for x, y, u, v in zip(acc, q, va, vq, strict=True)]
        k_to, k_from = to + self.k_min, frm + self.k_min
        r_to, r_from = rounds[to], rounds[frm]
        total = 0.0
        for i in range(max(k_to, k_from)):
            tail_to = (cum[k_to] - cum[i]) / r_to if i < k_to else 0.0
            tail_from = (cum[k_from] - cum[i]) / r_from if i < k_from else 0.0
            d = (tail_to - tail_from) * 1e3 / joint[i]
            total += d * d * var[i]
        if self._fixed_verify is None:
            d = 1e3 * (
                tokens[frm] * positions[frm] / (r_from * r_from)
                - tokens[to] * positions[to] / (r_to * r_to)
            )
            total += d * d * self.verify.slope_var()
            # the profile's shape at the two widths: as uncertain as the profile measured it
            p_to, p_from = round(positions[to]), round(positions[frm])
            if self.verify_shape and p_to != p_from:
                shape_var = self.verify.shape_var
                level2 = self.verify.level.value**2
                d_to = 1e3 * tokens[to] / (r_to * r_to)
                d_from = 1e3 * tokens[frm] / (r_from * r_from)
                total += level2 * (
                    d_to * d_to * shape_var[p_to] + d_from * d_from * shape_var[p_from]
                )
        return math.sqrt(total)

    def _link_moved(self) -> bool:
        """Whether the RTT estimate has moved since the policy last changed K by more than
        :data:`LINK_MOVE_MS` and :data:`LINK_MOVE_REL` of its value then: a change of
        conditions, not noise in the acceptance, so the evidence test is waived."""
        then, now = self._rtt_at_switch, self.rtt.value
        return abs(now - then) > max(LINK_MOVE_MS, LINK_MOVE_REL * max(then, 0.0))

    def choose(self) -> KChoice:
        """The K in ``k_min..k_max`` maximising the objective now, with the estimates.

        The previous K is kept unless another beats it by more than ``hold`` (relative)
        and, for goodput, by more than ``switch_z`` posterior standard deviations of the
        difference (:meth:`_gain_sd`): the policy leaves its K only when the evidence
        says the other is better, not when noise in the acceptance posteriors does. A
        change in RTT or verification time moves the goodputs apart at once (their
        estimates carry no such doubt), so drift is still followed within rounds.
        """
        if self.objective != "goodput":
            return self._choose_array()
        rows = self._goodput_rows()
        goodput, tokens, rounds, _, joint, _, verifies = rows
        best = max(range(len(goodput)), key=goodput.__getitem__)
        prev = self._k_prev - self.k_min
        waiting = 0
        if 0 <= prev < len(goodput) and prev != best:
            gain = goodput[best] - goodput[prev]
            if gain <= self.hold * goodput[best]:
                best = prev
            elif self.switch_z > 0 and not self._link_moved():
                sd = self._gain_sd(best, prev, rows)
                if gain <= self.switch_z * sd:
                    # not yet convincing; a lasting lead (not noise) wins after
                    # PERSIST_ROUNDS, if it is at least PERSIST_Z standard deviations
                    waiting = self._waiting + 1 if gain > PERSIST_Z * sd else 0
                    # back up towards the K a detected change of acceptance moved
                    # the policy down from: the positions it no longer reaches learn
                    # only through the pooled shift, which still holds the failures
                    back = prev < best and best + self.k_min <= self._k_at_change
                    persist = (
                        PERSIST_AFTER_CHANGE
                        if self._since_change < POST_CHANGE_ROUNDS and back
                        else PERSIST_ROUNDS
                    )
                    if waiting < persist:
                        best = prev
                    else:
                        waiting = 0
        self._waiting = waiting
        k = best + self.k_min
        if k != self._k_prev:
            self._rtt_at_switch = self.rtt.value
        self._k_prev = k
        return _choice(
            k=k,
            objective_value=goodput[best],
            tokens_per_round=tokens[best],
            round_ms=rounds[best],
            rtt_ms=max(0.0, self.rtt.value),
            draft_ms_per_token=self._per_token_all[k - 1] * self.draft_scale.value,
            verify_ms=verifies[best],
            acceptance=_round4(joint),
            rounds_seen=self.rounds_seen,
        )

    def _choose_array(self) -> KChoice:
        """:meth:`choose` for the cost and energy objectives, through :meth:`predict`."""
        out = self.predict()
        values = out[OBJECTIVES[self.objective]]
        # a zero price or power: no figure, never a pick
        values = np.where(np.isfinite(values), values, -np.inf)
        best = int(values.argmax())
        prev = self._k_prev - self.k_min
        if 0 <= prev < values.size and values[prev] >= (1.0 - self.hold) * values[best]:
            best = prev
        k = int(self._ks[best])
        self._k_prev = k
        value = float(values[best])
        return KChoice.model_construct(
            k=k,
            objective_value=value if np.isfinite(value) else 0.0,
            tokens_per_round=float(out["tokens_per_round"][best]),
            round_ms=float(out["round"][best]),
            rtt_ms=max(0.0, self.rtt.value),
            draft_ms_per_token=float(self._per_token[best] * self.draft_scale.value),
            verify_ms=float(out["verify"][best]),
            acceptance=_round4(out["joint"].tolist()),
            rounds_seen=self.rounds_seen,
        )

    # ------------------------------------------------------------------ learn
    def reseed(self, prior: PolicyPrior) -> None:
        """The next prompts are of another, known domain: take ``prior``'s acceptance (and
        an n-gram drafter's proposal) chain as the prior from here on.

        ``prior`` is one :func:`~configspec.serving.prior.prior_from_profiles` built for
        the same drafter and ``k_max`` with the new ``domain``; only its chains are read
        (drafting, verification and the link are the device's and the network's, not the
        domain's). What the policy has observed stays, with the pooled shift of how this
        drafter runs against its profile (:meth:`~configspec.serving.estimators.\
PositionalBeta.reprior`), and the profile's domain difference moves the positions the
        counts hold little of at once, before the first round of the new domain has been
        seen. The change detector restarts.
        """
        if prior.k_max != self.prior.k_max or model_free(prior) != (self.proposal is not None):
            raise InvalidInput(
                f"the new prior ({prior.source or 'unnamed'}) is for another drafter or K "
                f"range (K ≤ {prior.k_max}; this policy's prior: K ≤ {self.prior.k_max}); "
                "build it for the same drafter and --k-max"
            )
        self.acceptance.reprior(prior.acceptance, prior.strength)
        if self.proposal is not None:
            self.proposal.reprior(prior.proposal, prior.strength)

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
        if not 0 <= accepted <= drafted <= k_asked <= self.prior.k_max:
            raise InvalidInput(
                f"round outcome accepted={accepted}, drafted={drafted}, K={k_asked} is "
                f"inconsistent (need 0 ≤ accepted ≤ drafted ≤ K ≤ {self.prior.k_max})"
            )
        self.rounds_seen += 1
        if k_asked >= 1 and self.proposal is not None:
            self.proposal.observe(drafted, stopped=drafted < k_asked)
        if drafted >= 1:
            self.acceptance.observe(accepted, stopped=accepted < drafted)
            # a round after a fully accepted one also reads two new tokens (catch-up)
            catchup = self.prior.catchup_ms if self._caught_up else 0.0
            profiled = drafted * self._per_token_all[k_asked - 1] + catchup
            if profiled > 0:
                self.draft_scale.add(_clip_scale(draft_ms / profiled))
        self._caught_up = drafted >= 1 and accepted == drafted
        self._since_change += 1
        if self.acceptance.changes != self._changes_seen:
            self._changes_seen = self.acceptance.changes
            self._since_change = 0
            self._k_at_change = self._k_prev
        if k_asked >= 1:
            # a round the token budget cut to K = 0 verifies one position, which no K the
            # policy can choose does (and which the server runs much faster than two):
            # left out of the line, where one such point tilts the slope for rounds
            self.verify.observe(drafted + 1, verify_ms)
        serial = self._up_serial[drafted] + self._down_serial[accepted + 1]
        self.rtt.add(max(0.0, round_ms - draft_ms - verify_ms - self._overhead_ms - serial))
