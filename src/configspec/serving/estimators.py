"""The live estimators behind the adaptive-K policy (pure Python and numpy; no clock, no I/O).

Every estimator is updated once per round in O(``k_max``) plain-float work and caches
what the policy reads (posterior means and variances as lists), so a policy round makes
no numpy call on its goodput path (see :mod:`configspec.serving.adaptive`).

* :class:`PositionalBeta` — a chain of conditional chances (acceptance, or an n-gram
  drafter's proposal), one Beta posterior per draft position, with forgetting and a
  change detector;
* :class:`RunningMedian` — a windowed median (RTT, drafting-speed correction);
* :class:`VerifyLine` — verification time as a line in the number of positions verified,
  fitted live and seeded from the verification profile.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]

P_MIN, P_MAX = 0.01, 0.995
"""Every chance is kept inside this range (log-odds stay finite; one glitch cannot zero K)."""
POOL_SHARE = 0.5
"""Share of the pooled trials (positions from ``pool_from`` on) that counts as evidence for
every pooled position's variance: the pooled shift moves a position the current K never
reaches, so its doubt is not that of its own (few) trials alone."""
ANCHOR = 4.0
"""Pseudo-observations the (shifted) prior keeps per position after decay: pools the
positions, so deep ones that are rarely drafted do not make K wander."""
FAST_DECAY = 0.7
"""Per-round decay of the short memory a detected change restarts from (about 3 rounds)."""
RECENT_ROUNDS = 12
"""Rounds kept for that short memory (0.7^12: the older ones weigh under 2%)."""
CHANGE_SHIFT = 1.0
"""Log-odds shift of the acceptance the change detector looks for, either way."""
CHANGE_H = 5.0
"""Threshold of the detector's log-likelihood ratio (CUSUM): about 7 straight failures
where 0.7 was expected, while a small drift is left to the decay. In simulation at
constant conditions it fires about once in 1,200 rounds (a false alarm only shortens
the memory once); at 4 it fired once in 300 and cost 0.3% goodput to the noise of the
restarted memory, at 6 it followed a fall of 0.7 → 0.3 half as fast."""


class PositionalBeta:
    """Beta posteriors of a chain of conditional chances, one per position, with forgetting.

    Position i's posterior is ``Beta(w·p̃_i + a_i, w·(1 − p̃_i) + b_i)``: ``a_i``/``b_i``
    are the observed successes/failures, every count multiplied by ``decay`` each round
    (a memory of about ``1 / (1 − decay)`` rounds); ``w`` is the prior's weight,
    ``strength`` at first, decaying the same way down to ``anchor`` pseudo-observations.

    ``p̃_i`` is the prior mean moved by one log-odds shift shared by the positions from
    ``pool_from`` on: the pooled observed rate there against what the prior expected for
    the same observations. A drift seen at the positions that are drafted thus also moves
    the positions the current K never reaches (which therefore cannot hold the policy at
    a K that only the stale prior justifies). The pooled rate is itself shrunk towards
    the expected one by ``w`` pseudo-observations, so one early failure cannot swing every
    position to the floor. ``pool_from=1`` keeps the first position out of the pool: an
    n-gram drafter's first proposal (is there a match at all?) is a different event from
    its later ones (does the match go on?).

    Change detection: a two-sided Bernoulli CUSUM of the outcome's log-likelihood under
    the posterior mean moved by ±:data:`CHANGE_SHIFT` in log-odds against the mean
    itself. When either sum passes :data:`CHANGE_H` the long memory is replaced by a short
    one of the same outcomes (decay :data:`FAST_DECAY`) and the prior's weight drops to
    the anchor. So a slow ``decay`` keeps the estimate quiet at constant conditions and a
    real change (a new domain) is still followed within a few rounds. One detector watches
    the whole chain. ``group_changes=True`` (experimental, off) gives the positions before
    ``pool_from`` and those from it on a pair of sums each, and a change restarts only its
    own group; it lost to the one detector in a live A/B (:mod:`configspec.serving.\
adaptive`, "Change detection by group").

    ``observe(reached, stopped)``: positions 1..``reached`` succeeded; position
    ``reached`` + 1 failed when ``stopped`` (else it was not tried).
    """

    def __init__(
        self,
        prior_mean: FloatArray,
        strength: float,
        decay: float,
        *,
        anchor: float = ANCHOR,
        pool_from: int = 0,
        detect_changes: bool = True,
        group_changes: bool = False,
    ) -> None:
        self._set_prior(prior_mean)
        self.decay = decay
        # a weak prior (few profiled prompts) is not strengthened by the anchor
        self._anchor_asked = anchor
        self.anchor = min(anchor, strength)
        self.weight = strength
        self.pool_from = pool_from
        self.detect_changes = detect_changes
        # True: one detector per group (before / from pool_from); the benchmark arm
        # bench_adaptive --adaptive-arms depth-group (off: it lost the live A/B)
        self._split = pool_from if group_changes else 0
        n = self.prior.size
        self.a: list[float] = [0.0] * n
        """Decayed successes per position."""
        self.b: list[float] = [0.0] * n
        """Decayed failures per position."""
        # the last rounds' outcomes (successes, failed position or -1), newest last: what a
        # detected change restarts the memory from
        self._recent: deque[tuple[int, int]] = deque(maxlen=RECENT_ROUNDS)
        # pooled (positions from pool_from on) successes, trials, and prior-expected successes
        self._pool = [0.0, 0.0, 0.0]
        # one two-sided CUSUM per group of positions: [0, pool_from) and [pool_from, n)
        self._cusum = [[0.0, 0.0], [0.0, 0.0]]
        self.changes = 0
        """How many changes of regime were detected (for logs and tests)."""
        self.mean_list: list[float] = list(self._prior_l)
        """Posterior mean per position (plain floats; updated by :meth:`observe`)."""
        self._var: list[float] | None = None  # var_list, computed when first read

    def _set_prior(self, prior_mean: FloatArray) -> None:
        self.prior = np.clip(np.asarray(prior_mean, dtype=np.float64), P_MIN, P_MAX)
        # plain floats from here on: the per-round work is on a dozen numbers, where a
        # numpy call costs more (and, between rounds of a live decode, runs from cold caches)
        self._prior_l: list[float] = self.prior.tolist()
        self._prior_odds = [p / (1.0 - p) for p in self._prior_l]
        # Σ prior over positions pool_from..i-1 (what the prior expects of i trials)
        self._prior_cum = [0.0, *np.cumsum(self.prior).tolist()]

    def reprior(self, prior_mean: FloatArray, strength: float) -> None:
        """A known change of workload (the caller knows the next prompts' domain): the prior
        becomes ``prior_mean`` with ``strength`` pseudo-observations.

        What was observed stays and decays as before, and so does the pooled shift (the
        observed rate against what the prior in force expected): how this drafter runs
        against its profile carries over, and the profile's domain difference moves at once
        the positions the counts hold little of (the deep ones). The change detector
        restarts (the known change is not evidence of another), and so does the short
        memory a detected change would restart from.
        """
        size = np.asarray(prior_mean).size
        if size != self.prior.size:
            raise ValueError(f"the new prior has {size} positions, this chain {self.prior.size}")
        self._set_prior(prior_mean)
        self.anchor = min(self._anchor_asked, strength)
        self.weight = strength
        self._cusum = [[0.0, 0.0], [0.0, 0.0]]
        self._recent.clear()
        self._update_mean()

    def _shift_factor(self) -> float:
        """The pooled shift as a factor on the prior's odds (1: no shift)."""
        seen_n, total, expected_n = self._pool
        if total <= 1e-9:
            return 1.0
        expected = min(max(expected_n / total, P_MIN), P_MAX)
        w = self.weight
        seen = min(max((seen_n + w * expected) / (total + w), P_MIN), P_MAX)
        # the shift in log-odds is a factor on the odds
        return seen * (1.0 - expected) / ((1.0 - seen) * expected)

    def shifted_prior(self) -> FloatArray:
        """The prior means, positions from ``pool_from`` on moved by the pooled shift."""
        return np.asarray(self._shifted(self._shift_factor()), dtype=np.float64)

    def _shifted(self, factor: float) -> list[float]:
        pf = self.pool_from
        out = [o * factor / (1.0 + o * factor) for o in self._prior_odds]
        if pf:
            out[:pf] = self._prior_l[:pf]
        return out

    def mean(self) -> FloatArray:
        """Posterior mean per position (an array built from :attr:`mean_list`)."""
        return np.asarray(self.mean_list, dtype=np.float64)

    def _update_mean(self) -> None:
        w = self.weight
        shifted = self._shifted(self._shift_factor())
        self.mean_list = [
            (w * sp + a) / (w + a + b) for sp, a, b in zip(shifted, self.a, self.b, strict=True)
        ]
        self._var = None

    @property
    def var_list(self) -> list[float]:
        """Posterior variance per position (plain floats): computed from the counts when
        read, once per round at most (the policy reads it only to test a switch)."""
        if self._var is None:
            w = self.weight
            pooled = POOL_SHARE * self._pool[1]
            pf = self.pool_from
            self._var = [
                m * (1.0 - m) / (w + a + b + 1.0 + (pooled if i >= pf else 0.0))
                for i, (m, a, b) in enumerate(zip(self.mean_list, self.a, self.b, strict=True))
            ]
        return self._var

    def _pool_add(self, hi: int, failed_at: int, lam: float) -> None:
        pf = self.pool_from
        seen, total, expected = self._pool
        s = max(0, hi - pf)
        e = self._prior_cum[hi] - self._prior_cum[pf] if s else 0.0
        t = float(s)
        if failed_at >= pf:
            t += 1.0
            e += self._prior_l[failed_at]
        self._pool = [lam * seen + s, lam * total + t, lam * expected + e]

    def _pool_recount(self) -> None:
        pf = self.pool_from
        a, b, p = self.a[pf:], self.b[pf:], self._prior_l[pf:]
        self._pool = [
            sum(a),
            sum(a) + sum(b),
            sum((x + y) * q for x, y, q in zip(a, b, p, strict=True)),
        ]

    def observe(self, reached: int, stopped: bool) -> None:
        """Decay, then count successes at 1..``reached`` and a failure after if ``stopped``."""
        lam = self.decay
        old = self.a
        n = len(old)
        hi = min(reached, n)
        a = [x * lam + 1.0 for x in old[:hi]]
        if hi < n:
            a += [x * lam for x in old[hi:]]
        b = [x * lam for x in self.b]
        self.weight = self.anchor + lam * (self.weight - self.anchor)
        failed_at = reached if stopped and reached < n else -1
        if failed_at >= 0:
            b[failed_at] += 1.0
        self.a, self.b = a, b
        self._pool_add(hi, failed_at, lam)
        if self.detect_changes:
            self._recent.append((hi, failed_at))
            self._check_change(hi, failed_at)
        self._update_mean()

    def _check_change(self, successes: int, failed_at: int) -> None:
        """Add this round's trials to the CUSUMs (under the mean before the round).

        With ``p`` moved to ``p'`` by a shift ``δ`` in log-odds, a failure's log-likelihood
        ratio is ``g = −log(1 + p·(e^δ − 1))`` and a success's ``δ + g``. With
        ``group_changes`` the positions before ``pool_from`` and those from it on are two
        groups, each with its own pair of sums, and a change restarts only the group that
        shows it; otherwise (the default) one pair of sums covers the chain.
        """
        m = self.mean_list
        log1p, shift, e_up, e_down = math.log1p, CHANGE_SHIFT, _E_UP, _E_DOWN
        pf = self._split
        sums = [0.0, 0.0, 0.0, 0.0]  # up, down of group 0 (before pf), of group 1
        for i, x in enumerate(m[:successes]):
            g = 0 if i < pf else 2
            sums[g] += shift - log1p(x * e_up)
            sums[g + 1] += -shift - log1p(x * e_down)
        if failed_at >= 0:
            g = 0 if failed_at < pf else 2
            sums[g] -= log1p(m[failed_at] * e_up)
            sums[g + 1] -= log1p(m[failed_at] * e_down)
        for group in (0, 1):
            if group == 0 and not pf:
                continue
            cusum = self._cusum[group]
            cusum[0] = max(0.0, cusum[0] + sums[2 * group])
            cusum[1] = max(0.0, cusum[1] + sums[2 * group + 1])
            if max(cusum) > CHANGE_H:
                self._restart(*((0, pf) if group == 0 else (pf, len(self.a))))
                cusum[0] = cusum[1] = 0.0

    def _restart(self, lo: int, hi: int) -> None:
        """Replace the long memory of positions ``lo``..``hi`` − 1 (0-based: the group that
        changed) by a short one of the last rounds' outcomes there (decay
        :data:`FAST_DECAY`); the prior's weight drops to the anchor."""
        a, b = self.a, self.b
        for i in range(lo, hi):
            a[i] = b[i] = 0.0
        weight = 1.0
        for reached, failed_at in reversed(self._recent):  # newest first
            for i in range(lo, min(reached, hi)):
                a[i] += weight
            if lo <= failed_at < hi:
                b[failed_at] += weight
            weight *= FAST_DECAY
        self.weight = min(self.weight, self.anchor)
        self._pool_recount()
        self.changes += 1


_E_UP = math.expm1(CHANGE_SHIFT)
_E_DOWN = math.expm1(-CHANGE_SHIFT)


class RunningMedian:
    """The median of the last ``window`` samples; ``prior`` until the first sample."""

    def __init__(self, prior: float, window: int) -> None:
        self.prior = prior
        self.samples: deque[float] = deque(maxlen=window)
        self.value = prior
        """The running median (the prior before any sample); updated by :meth:`add`."""

    def add(self, x: float) -> None:
        """Add one sample (non-finite samples are ignored)."""
        if not math.isfinite(x):
            return
        self.samples.append(float(x))
        s = sorted(self.samples)
        mid = len(s) // 2
        self.value = s[mid] if len(s) % 2 else 0.5 * (s[mid - 1] + s[mid])


def line_fit(positions: FloatArray, latency_ms: FloatArray) -> tuple[float, float]:
    """Least-squares ``(intercept_ms, slope_ms_per_position)`` of a latency table.

    NaN entries are skipped. The slope is clamped at 0 (verifying more positions never
    takes less time; a negative slope is profiling noise), the intercept then being the
    mean; one point gives a flat line through it.
    """
    p = np.asarray(positions, dtype=np.float64)
    v = np.asarray(latency_ms, dtype=np.float64)
    ok = np.isfinite(v) & np.isfinite(p)
    p, v = p[ok], v[ok]
    if p.size == 0:
        raise ValueError("no finite latency to fit")
    if p.size == 1 or float(np.ptp(p)) == 0.0:
        return float(v.mean()), 0.0
    slope, intercept = np.polyfit(p, v, 1)
    if slope < 0:
        return float(v.mean()), 0.0
    return float(intercept), float(slope)


class VerifyLine:
    """Verification time ``a + b·p`` (ms) for ``p`` positions verified, fitted live.

    Seed: the least-squares line through the verification profile (:func:`line_fit`),
    ``a0 + b0·p``. Each round adds its (positions, measured verify ms) to a weighted
    least-squares fit whose weights decay by ``decay`` per round, with a ridge pulling
    the slope towards the profile's, scaled to the measured level: ``s·b0``, ``s`` the
    running median (``window`` rounds) of measured / profiled time. So

    * when the rounds span several lengths (an n-gram drafter drafts 0..K; the policy
      moves K) the data fix the slope: verify time is neither assumed flat in K nor
      trusted to grow as a stale profile says;
    * when every round has the same length (a model drafter at a steady K) the data fix
      the level there and the profile's slope, scaled, the rest — a host that slows every
      position down by the same factor keeps the profiled proportions.

    The ridge weighs ``slope_weight`` (in rounds × positions², so a single round one
    position away from the others already counts as much); a tiny one on the intercept
    only makes the fit defined before any round. Robustness: each sample is clipped
    into [1/``clip``, ``clip``] × the current prediction before it enters the fit (a
    stall cannot tilt the line; a lasting change comes through within a few rounds, and
    the median level at once), and the fitted slope is clamped at 0.

    With ``slow_decay`` set, the slope's anchor is itself learnt: a second fit of the
    same rounds with the slower decay (``slow_decay`` = 0.99: about 100 rounds), its
    slope pulled towards ``s·b0`` by ``slow_weight``, is the target of the fast fit's
    ridge instead of ``s·b0``. The slope of verification time is a property of the target
    and the host, which moves slowly; ten rounds of ±15% noise over one or two widths
    cannot fix it, a hundred over the widths the policy has tried can. So a strong
    ``slope_weight`` keeps the fast fit's slope steady without holding it at a stale
    profile's.
    """

    def __init__(
        self,
        profile_ms: FloatArray,
        decay: float,
        window: int,
        *,
        slope_weight: float = 1.0,
        clip: float = 1.5,
        slow_decay: float | None = None,
        slow_weight: float = 1.0,
        shape: bool = False,
        shape_sd_ms: FloatArray | None = None,
    ) -> None:
        table = np.asarray(profile_ms, dtype=np.float64)
        positions = np.arange(table.size, dtype=np.float64)
        ok = np.isfinite(table) & (positions >= 1)
        if not ok.any():
            raise ValueError("no verification latency at any position")
        self.a0, self.b0 = line_fit(positions[ok], table[ok])
        dev = table - (self.a0 + self.b0 * positions)
        self.shape_ms: list[float] = (
            np.where(ok, dev, 0.0).tolist() if shape else [0.0] * table.size
        )
        """The profile's deviation from its own line at each position count (ms, 0 where
        not profiled, or all 0 without ``shape``): scaled by :attr:`level`, it is added to
        the line, and the live line is fitted to what is left."""
        sd = np.zeros(table.size) if shape_sd_ms is None else np.asarray(shape_sd_ms)
        self.shape_var: list[float] = (
            np.where(ok & np.isfinite(sd), sd * sd, 0.0).tolist() if shape else [0.0] * table.size
        )
        """Variance (ms², unscaled) of each :attr:`shape_ms` entry: the profile's own doubt
        of its mean at that position count (0 without ``shape``)."""
        self.decay = decay
        self.slope_weight = slope_weight
        self.clip = clip
        self.level = RunningMedian(1.0, window)
        """Running median of measured / profiled-line time (the scale of the prior)."""
        self._s = [0.0] * 5  # Σw, Σw·p, Σw·p², Σw·v, Σw·p·v of the rounds
        self.slow_decay = slow_decay
        self.slow_weight = slow_weight
        self._slow = [0.0] * 5  # the same sums with the slow decay (slope anchor)
        self.b_anchor = self.b0
        """The slope the fast fit's ridge pulls to (ms/position): ``s·b0``, or the slow fit's."""
        self._sq = 0.0  # Σw·(residual before the round)², ms²
        self.a, self.b = self.a0, self.b0

    def prior_ms(self, positions: float) -> float:
        """The profile's line at ``positions`` (ms), unscaled."""
        return self.a0 + self.b0 * positions

    def shape_at(self, positions: int) -> float:
        """The profile's deviation from its line at ``positions``, scaled (ms)."""
        if 0 <= positions < len(self.shape_ms):
            return self.level.value * self.shape_ms[positions]
        return 0.0

    def predict(self, positions: FloatArray | float) -> FloatArray:
        """Predicted verification time (ms) of ``positions`` positions (array or scalar) on
        the line alone (the profile's shape, :meth:`shape_at`, is per whole position)."""
        return np.asarray(self.a + self.b * np.asarray(positions, dtype=np.float64))

    def observe(self, positions: int, verify_ms: float) -> None:
        """Add one round: ``positions`` verified in ``verify_ms``."""
        if not (math.isfinite(verify_ms) and verify_ms > 0):
            return
        p = float(positions)
        dev = self.shape_ms[positions] if 0 <= positions < len(self.shape_ms) else 0.0
        prior = self.prior_ms(p) + dev
        if prior > 0:
            self.level.add(min(max(verify_ms / prior, 0.05), 20.0))
        shape = self.level.value * dev
        # the line is fitted to what the profile's shape leaves
        pred = max(self.a + self.b * p + shape, 1e-6)
        v = min(max(verify_ms, pred / self.clip), pred * self.clip) - shape
        pred -= shape
        lam = self.decay
        s0, s1, s2, sy, spy = self._s
        self._s = [lam * s0 + 1.0, lam * s1 + p, lam * s2 + p * p, lam * sy + v, lam * spy + p * v]
        if self.slow_decay is not None:
            mu = self.slow_decay
            t0, t1, t2, ty, tpy = self._slow
            t0, t1, t2 = mu * t0 + 1.0, mu * t1 + p, mu * t2 + p * p
            self._slow = [t0, t1, t2, mu * ty + v, mu * tpy + p * v]
        self._sq = lam * self._sq + (v - pred) ** 2
        self._fit()

    def slope_var(self) -> float:
        """Variance of the fitted slope (ms² per position²): the rounds' residual variance
        (decayed, with one pseudo-round of 5% of the profiled level) over their decayed
        spread in positions plus the ridge — a fit from rounds of one length rests on
        the profile's slope, one from rounds of many lengths on the data."""
        s0, s1, s2, _, _ = self._s
        spread = max(0.0, s2 - s1 * s1 / s0) if s0 > 0 else 0.0
        resid = (self._sq + (0.05 * self.level.value * self.a0) ** 2) / (s0 + 1.0)
        return resid / (spread + self.slope_weight)

    def _fit(self) -> None:
        k = self.level.value
        anchor = k * self.b0
        if self.slow_decay is not None:
            anchor = self._solve(self._slow, k, anchor, self.slow_weight)[1]
        self.b_anchor = anchor
        self.a, self.b = self._solve(self._s, k, anchor, self.slope_weight)

    def _solve(
        self, sums: list[float], level: float, slope: float, weight: float
    ) -> tuple[float, float]:
        """Weighted least squares over ``sums`` (Σw, Σw·p, Σw·p², Σw·v, Σw·p·v), the slope
        ridged towards ``slope`` with ``weight``, the intercept (barely) towards the
        profile's at ``level``; the slope clamped at 0. Returns (a ms, b ms/position)."""
        wa = 1e-6
        s0, s1, s2, sy, spy = sums
        s0 += wa
        sy += wa * level * self.a0
        s2 += weight
        spy += weight * slope
        det = s0 * s2 - s1 * s1  # > 0: both ridges are positive
        b = (s0 * spy - s1 * sy) / det
        if b < 0:
            return sy / s0, 0.0
        return (sy - b * s1) / s0, b
