"""Plan a fleet: a configuration per class and the number of verifier replicas.

Under the ``mva`` gather the classes share one pool of ``R`` identical verifier replicas;
every replica serves ``count / R`` devices of every class (a balanced load balancer), so
one replica is solved with :func:`configspec.model.fleet.solve_fleet` and the fleet is
``R`` copies of it.

**Under the lockstep gathers (``sync``, the default, and ``continuous``) every class gets
a replica pool of its own.** Their closed forms put every device of a replica on one
common cycle: under ``sync`` every session waits for the slowest think time on its
replica (the gather waits for the sessions expected back), under ``continuous`` the groups
alternate at the mean think time. Mixing a 10 ms-RTT class with a 150 ms-RTT one on the
same replicas therefore makes the fast class run at the slow one's pace — which no
operator would choose: the load balancer routes each class to its own replicas (sticky by
class), where the cycle is homogeneous (the closed forms' own assumption: think times
within a pass of each other). So the planner sizes one pool per class, ``R_c`` replicas
holding ``count_c / R_c`` devices each, and ``R = sum R_c``. The classes no longer
interact, so for each pool size every candidate is solved with the very closed form that
reports the plan, the choice is the cheapest candidate (verifier time per token) meeting
the SLOs in that solve, and the infeasible message quotes that solve: choice, verdict and
message are one model, with no iteration. The smallest ``R_c`` is found by doubling and
bisection per class (vectorised over classes and SLO levels); rounding each pool up to
whole replicas costs at most one replica per class against a shared pool. (An earlier
version planned a shared pool under every gather, choosing with the MVA view below, which
does not see the common cycle its solve applied: the choice could never settle on a plan
the solve accepted — bench_plan's fleet was "infeasible" at 4096 replicas and 7%
utilisation, with a message calling 22.4 tok/s "short" of 4.5.)

**``mva``: one shared pool.** For a given ``R`` the configurations are chosen by a
best-response iteration: start from an idle verifier; each class takes, among its
candidates that meet its SLOs against the verifier's current queue (as an arriving request
sees it, the arrival theorem), the one that uses the least verifier time per token (its
share of a pass / E(K), plus what padding its pass-mates' blocks to its width costs them:
a model-free drafter's wide rounds are charged for the passes they widen) — the cheapest
for the fleet; the network is solved again with the
new choices, until no class changes (at most :data:`MAX_ROUNDS` times; after
:data:`FREE_ROUNDS` a class keeps a choice that still meets its SLOs, so the iteration
cannot cycle between two cheap choices that each make the other infeasible). A plan is
feasible when the solved network meets every class's SLOs. The smallest feasible ``R`` is
found by bisection between a lower bound (the verifier work the goodput SLOs demand, at
full batches and full utilisation, cannot exceed ``R`` replica-seconds per second) and
doubling. Every step is vectorised over the SLO levels of the cost-versus-SLO trade-off.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from configspec.errors import SloInfeasible
from configspec.model.cost import gpu_time_cost_usd
from configspec.model.fleet import (
    BatchLatency,
    FleetSolution,
    arrival_mix,
    one_width,
    padded_pass_ms,
    solve_fleet,
    tail_round_ms,
)
from configspec.plan.candidates import Candidates, batch_curve, build_candidates
from configspec.plan.spec import FleetSpec
from configspec.search.space import Profiles

log = logging.getLogger(__name__)

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]

MAX_ROUNDS = 8
"""Best-response rounds per replica count (choices usually settle in 2-3)."""
FREE_ROUNDS = 2
"""Rounds in which every class may move to a cheaper candidate; afterwards a class only
moves when its choice no longer meets its SLOs."""
_RTOL = 1e-9
POOLED_GATHERS = ("sync", "continuous")
"""Gathers whose model moves a replica's devices on one common cycle: the planner gives
every class a replica pool of its own under them (module docstring)."""


@dataclass(frozen=True)
class _Eval:
    choice: IntArray  # (S, C)
    sol: FleetSolution
    class_ok: BoolArray  # (S, C)

    @property
    def ok(self) -> BoolArray:
        return np.asarray(self.class_ok.all(axis=-1), dtype=bool)


@dataclass(frozen=True)
class FleetPlan:
    """The plan at every SLO level (arrays over levels, then classes).

    ``replicas`` is 0 where a level is infeasible. Per class: ``choice`` (candidate index),
    ``goodput_tok_s`` and ``p95_itl_ms`` per device, ``queue_ms``, ``batch``. Per level:
    ``utilisation`` of each replica, ``fleet_goodput_tok_s`` (all devices together),
    ``cost_usd_per_mtok`` (every replica billed for wall time), ``shared_cost_usd_per_mtok``
    (only the busy time, each pass's time shared by its sessions; the difference is idle
    capacity). ``main`` indexes the level 1 (the SLOs as written).
    """

    spec: FleetSpec
    candidates: Candidates
    max_batch: int
    scales: FloatArray
    replicas: IntArray
    feasible: BoolArray
    choice: IntArray
    goodput_tok_s: FloatArray
    p95_itl_ms: FloatArray
    round_ms: FloatArray
    queue_ms: FloatArray
    batch: FloatArray
    utilisation: FloatArray
    fleet_goodput_tok_s: FloatArray
    cost_usd_per_mtok: FloatArray
    shared_cost_usd_per_mtok: FloatArray
    main: int
    warnings: list[str]
    pool_replicas: IntArray | None = None
    """Under the lockstep gathers (``sync``, ``continuous``), the replicas of each class's
    own pool (levels, classes; 0 where a level is infeasible); ``replicas`` is their
    total. None under ``mva``, where the classes share every replica."""


def _take(a: FloatArray, choice: IntArray) -> FloatArray:
    """``a[c, choice[s, c]]`` as (S, C)."""
    return a[np.arange(a.shape[0])[None, :], choice]


def _tagged(
    cands: Candidates,
    curve: BatchLatency,
    b_max: int,
    choice: IntArray,
    sol: FleetSolution | None,
    n: FloatArray,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """(goodput, p95 round, verifier ms per token) of every candidate (S, C, M) as a request
    arriving at the verifier state ``sol`` (None = idle) would see it (MVA's arrival
    theorem). Used by the shared-pool search (the ``mva`` gather, whose solve reads the
    queue the same way); not under the lockstep gathers, whose common cycle it does not
    see (their pools: :func:`_pool_solve`)."""
    z, e = cands.think_ms[None], cands.tokens_per_round[None]
    w = cands.drafted_weights[None]  # (1, C, M, j)
    if sol is None:
        others = np.zeros((*n.shape, 1))
        util = np.zeros((n.shape[0], 1, 1))
        mix = rest_mix = w
    else:
        q = sol.rounds_per_s * sol.verifier_ms / 1e3  # (S, C) requests at the verifier
        wc = _take(cands.drafted_weights, choice)  # (S, C, j) of the chosen candidates
        safe = np.where(n > 0, n, 1.0)
        rest = np.maximum(q.sum(-1, keepdims=True) - q / safe, 0.0)
        # the pass's sessions: this candidate's round and the others' queue shares
        mix = arrival_mix(q, safe, wc, w, rest)
        others = rest[..., None]
        util = sol.utilisation[:, None, None]
        # the other requests' weights alone (no own round, over the ``rest`` of them): the
        # pass with a typical other request in this one's place
        rest_mix = np.maximum(arrival_mix(q, safe, wc, np.zeros_like(w), rest - 1.0 + 1e-12), 0.0)
        some = np.nan_to_num(rest_mix).sum(axis=-1, keepdims=True) > 1e-9
        rest_mix = np.where(some & (others[..., None] > 1e-9), rest_mix, w)
    present = others + 1.0
    batch = np.minimum(present, float(b_max))
    pass_ms = padded_pass_ms(curve, batch, mix, cands.output_share)
    # A round that drafts wider than its pass-mates pads their blocks to its width: it is
    # charged that too (the pass it makes less the pass its place would make with a typical
    # other request, for each of the other sessions), so the best response counts what its
    # choice costs the whole pool, not its own share alone (a narrower round is credited)
    typical = padded_pass_ms(curve, batch, rest_mix, cands.output_share)
    share = pass_ms / batch + (batch - 1.0) / batch * (pass_ms - typical)
    resp = pass_ms * np.maximum(1.0, present / b_max)
    total = n.sum(-1)[:, None, None]
    worst = curve(np.minimum(np.ceil(total), b_max), cands.widest_positions)
    p95, _ = tail_round_ms(z, pass_ms, resp - pass_ms, util, total, worst, b_max)
    with np.errstate(invalid="ignore", divide="ignore"):
        goodput = e / (z + resp) * 1e3
        gpu = np.maximum(share, 0.0) / e
    return goodput, p95, gpu


def _meets(cands: Candidates, goodput: FloatArray, p95: FloatArray, scale: FloatArray) -> BoolArray:
    """SLO check; ``scale`` (S,) raises the goodput floor and lowers the latency limit."""
    shape = (-1,) + (1,) * (goodput.ndim - 1)
    s = scale.reshape(shape)
    extra = goodput.ndim - 2
    g_min = cands.min_goodput_tok_s.reshape((1, -1) + (1,) * extra) * s
    p_max = cands.max_p95_ms.reshape((1, -1) + (1,) * extra) / s
    ok = (goodput >= g_min * (1 - _RTOL)) & (p95 <= p_max * (1 + _RTOL))
    return np.asarray(ok & np.isfinite(goodput), dtype=bool)


def _margin(
    cands: Candidates, goodput: FloatArray, p95: FloatArray, scale: FloatArray
) -> FloatArray:
    """How close to the SLOs (1 = exactly met; < 1 missed): min of the two ratios."""
    s = scale.reshape(-1, 1, 1)
    g_min = cands.min_goodput_tok_s[None, :, None] * s
    p_max = cands.max_p95_ms[None, :, None] / s
    with np.errstate(divide="ignore", invalid="ignore"):
        g_ratio = np.where(g_min > 0, goodput / g_min, np.inf)
        p_ratio = np.where(np.isfinite(p_max), p_max / p95, np.inf)
    return np.nan_to_num(np.minimum(g_ratio, p_ratio), nan=-np.inf)


def _choose(
    cands: Candidates,
    goodput: FloatArray,
    p95: FloatArray,
    gpu: FloatArray,
    scale: FloatArray,
    keep: IntArray | None = None,
) -> IntArray:
    """Each class's cheapest candidate meeting its SLOs (else the one closest to them);
    with ``keep``, a class whose kept choice still meets its SLOs keeps it (hysteresis,
    so that the best-response iteration settles instead of cycling)."""
    ok = _meets(cands, goodput, p95, scale) & cands.valid[None]
    cost = np.where(ok, gpu, np.inf)
    # Ties (equal verifier time per token): the higher goodput.
    cost = cost - 1e-12 * np.nan_to_num(goodput)
    cheapest = np.argmin(cost, axis=-1)
    margin = np.where(cands.valid[None], _margin(cands, goodput, p95, scale), -np.inf)
    closest = np.argmax(margin, axis=-1)
    out = np.where(ok.any(axis=-1), cheapest, closest)
    if keep is not None:
        still = np.take_along_axis(ok, keep[..., None], axis=-1)[..., 0]
        out = np.where(still, keep, out)
    return np.asarray(out, dtype=np.int64)


def _solve(
    cands: Candidates,
    curve: BatchLatency,
    b_max: int,
    n: FloatArray,
    choice: IntArray,
    start: FleetSolution | None,
    gather: str = "sync",
) -> FleetSolution:
    return solve_fleet(
        n,
        _take(cands.think_ms, choice),
        _take(cands.positions, choice),
        _take(cands.tokens_per_round, choice),
        curve,
        b_max,
        tol=1e-5,
        max_iter=1000,
        start=start,
        gather=gather,
        drafted_weights=_take(cands.drafted_weights, choice),
        output_share=cands.output_share,
    )


def _evaluate(
    cands: Candidates,
    curve: BatchLatency,
    b_max: int,
    replicas: FloatArray,
    scale: FloatArray,
    near: _Eval | None = None,
    gather: str = "sync",
) -> _Eval:
    """Best-response choices and the solved replica for each scenario (replicas, scale).

    ``near`` (an evaluation at other replica counts) warm-starts the choices and queues;
    without it the iteration starts from an idle verifier."""
    n = cands.counts[None, :] / replicas[:, None]
    sol: FleetSolution | None = None
    if near is None:
        choice = _choose(
            cands, *_tagged(cands, curve, b_max, np.zeros(n.shape, np.int64), None, n), scale
        )
    else:
        choice, sol = near.choice, near.sol
    settled = False
    for rnd in range(MAX_ROUNDS):
        sol = _solve(cands, curve, b_max, n, choice, sol, gather)
        keep = choice if rnd >= FREE_ROUNDS else None
        new = _choose(cands, *_tagged(cands, curve, b_max, choice, sol, n), scale, keep)
        if np.array_equal(new, choice):
            settled = True
            break
        choice = new
    if not settled or sol is None:
        sol = _solve(cands, curve, b_max, n, choice, sol, gather)
    ok = _meets(cands, sol.goodput_tok_s, sol.p95_round_ms, scale)
    return _Eval(choice, sol, ok)


def _class_demand(
    cands: Candidates, curve: BatchLatency, b_max: int, scale: FloatArray
) -> FloatArray:
    """Replicas (scales, classes) below which each class's goodput SLO cannot be met (NaN:
    no valid candidate): a class needs at least ``count · goodput / E`` rounds per second,
    each taking at least ``S(B, p) / B`` ms."""
    full = padded_pass_ms(curve, float(b_max), cands.drafted_weights, cands.output_share)
    per_round = full / b_max / cands.tokens_per_round
    best = np.nanmin(np.where(cands.valid, per_round, np.nan), axis=-1)  # ms per token
    need = (cands.counts * cands.min_goodput_tok_s * best)[None, :] * scale[:, None]
    return np.asarray(need / 1e3, dtype=np.float64)


def _lower_bound(
    cands: Candidates, curve: BatchLatency, b_max: int, scale: FloatArray
) -> FloatArray:
    """Replicas (scales) below which the goodput SLOs of a shared pool cannot be met: the
    classes' demands (:func:`_class_demand`) added up."""
    return np.asarray(np.nansum(_class_demand(cands, curve, b_max, scale), axis=-1))


def _smallest_feasible(
    demand: FloatArray, r_max: int, feasible_at: Callable[[IntArray, bool], BoolArray]
) -> tuple[IntArray, BoolArray]:
    """Smallest replica count per element of ``demand`` (a lower bound, replicas; NaN = 0)
    at which ``feasible_at(replicas, growing)`` holds, capped at ``r_max``: doubling from
    the bound (``growing`` True), then bisection (False), elementwise (feasibility only
    grows with replicas). Returns the counts and whether each is feasible at all."""
    lo = np.maximum(np.ceil(np.nan_to_num(demand)) - 1, 0).astype(np.int64)
    lo = np.minimum(lo, r_max - 1)
    hi = np.minimum(lo + 1, r_max)
    while True:
        ok = feasible_at(hi, True)
        grow = ~ok & (hi < r_max)
        if not grow.any():
            break
        lo = np.where(grow, hi, lo)
        hi = np.where(grow, np.minimum(hi * 2, r_max), hi)
    feasible = ok.copy()
    while True:
        gap = feasible & (hi - lo > 1)
        if not gap.any():
            break
        mid = np.where(gap, (lo + hi) // 2, hi)
        ok_mid = feasible_at(mid, False)
        hi = np.where(gap & ok_mid, mid, hi)
        lo = np.where(gap & ~ok_mid, mid, lo)
    return hi, feasible


def _describe_miss(
    cands: Candidates,
    goodput: FloatArray,
    p95: FloatArray,
    c: int,
    where: str,
    which: str = "best",
) -> str:
    """One line: which SLO of class ``c`` is missed, by how much, with its ``which``
    candidate (the one closest to the SLOs among ``goodput`` / ``p95`` (classes,
    candidates); NaN = not considered). The SLO named is the one the candidate misses
    (the smaller ratio), so a figure above a goodput floor is never called short."""
    g, p = goodput[c], p95[c]
    g_min, p_max = cands.min_goodput_tok_s[c], cands.max_p95_ms[c]
    with np.errstate(divide="ignore", invalid="ignore"):
        g_ratio = np.where(cands.valid[c], np.where(g_min > 0, g / g_min, np.inf), -np.inf)
        p_ratio = np.where(cands.valid[c], np.where(np.isfinite(p_max), p_max / p, np.inf), -np.inf)
    margin = np.nan_to_num(np.minimum(g_ratio, p_ratio), nan=-np.inf)
    m = int(np.argmax(margin))
    name = cands.class_names[c]
    label = cands.label(c, m)
    if g_ratio[m] <= p_ratio[m]:
        best = float(g[m])
        short = g_min - best
        return (
            f"class {name!r} cannot meet min_goodput_tok_s={g_min:g} {where}: its {which} "
            f"configuration ({label}) gives {best:.3g} tok/s per device, {short:.3g} tok/s "
            f"({short / g_min:.0%}) short"
        )
    best = float(p[m])
    over = best - p_max
    return (
        f"class {name!r} cannot meet max_p95_itl_ms={p_max:g} {where}: its {which} "
        f"configuration ({label}) gives a p95 inter-token latency of {best:.4g} ms, "
        f"{over:.4g} ms ({over / p_max:.0%}) over"
    )


def _infeasible_message(
    cands: Candidates, curve: BatchLatency, b_max: int, spec: FleetSpec, at_max: _Eval, i: int
) -> str:
    n_idle = np.zeros((1, len(cands.class_names)))
    goodput, p95, _ = _tagged(
        cands, curve, b_max, np.zeros((1, n_idle.shape[1]), np.int64), None, n_idle + 1
    )
    alone_ok = _meets(cands, goodput, p95, np.ones(1)) & cands.valid[None]
    for c in range(len(cands.class_names)):
        if not alone_ok[0, c].any():
            return _describe_miss(cands, goodput[0], p95[0], c, "even with an idle verifier")
    r = spec.verifier.max_replicas
    bad = np.flatnonzero(~at_max.class_ok[i])
    c = int(bad[0]) if bad.size else 0
    # The figures of the solve that judged the plan (not the best-response view), for the
    # configuration each class was given: the message agrees with the verdict.
    shape = cands.think_ms.shape
    g_all, p_all = np.full(shape, np.nan), np.full(shape, np.nan)
    rows = np.arange(shape[0])
    g_all[rows, at_max.choice[i]] = at_max.sol.goodput_tok_s[i]
    p_all[rows, at_max.choice[i]] = at_max.sol.p95_round_ms[i]
    return (
        _describe_miss(cands, g_all, p_all, c, f"with {r} verifier replicas", "chosen")
        + "; raise verifier.max_replicas"
    )


def _pool_solve(
    cands: Candidates,
    curve: BatchLatency,
    b_max: int,
    n: FloatArray,
    choice: IntArray | None,
    gather: str,
) -> FleetSolution:
    """Each class alone on its own replicas (the pools of the lockstep gathers): ``n``
    (S, C) devices per replica of class ``c``'s pool; every candidate (result (S, C, M)) or, with
    ``choice`` (S, C), the chosen one (result (S, C)). A pool holds one class, so its
    lockstep is homogeneous and the closed form of :func:`solve_fleet` is solved per
    column; ``utilisation`` is per pool (same shape as the rest)."""
    width = cands.drafted_weights.shape[-1]
    if choice is None:
        shape = (n.shape[0], *cands.think_ms.shape)
        z, p, e = (np.broadcast_to(a[None], shape) for a in
                   (cands.think_ms, cands.positions, cands.tokens_per_round))  # fmt: skip
        w = np.broadcast_to(cands.drafted_weights[None], (*shape, width))
        nn = np.broadcast_to(n[..., None], shape)
    else:
        shape = n.shape
        z, p, e, w = (_take(a, choice) for a in (cands.think_ms, cands.positions,
                      cands.tokens_per_round, cands.drafted_weights))  # fmt: skip
        nn = n
    col = (-1, 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        sol = solve_fleet(nn.reshape(col), z.reshape(col), np.nan_to_num(p, nan=1.0).reshape(col),
                          e.reshape(col), curve, b_max, gather=gather,
                          drafted_weights=w.reshape(-1, 1, width),
                          output_share=cands.output_share)  # fmt: skip
    fields = {k: np.asarray(getattr(sol, k)) for k in FleetSolution.__dataclass_fields__}
    return FleetSolution(
        **{k: (v.reshape(shape) if v.size == nn.size else v) for k, v in fields.items()}
    )


def _pool_choose(
    cands: Candidates,
    curve: BatchLatency,
    b_max: int,
    replicas: FloatArray,
    scale: FloatArray,
    gather: str,
) -> tuple[IntArray, BoolArray, FleetSolution]:
    """(choice, class meets its SLOs, solution of every candidate) with ``replicas``
    (S, C) in each class's pool. The choice is judged by the very solve that reports it."""
    n = cands.counts[None, :] / replicas
    every = _pool_solve(cands, curve, b_max, n, None, gather)
    goodput, p95 = every.goodput_tok_s, every.p95_round_ms
    choice = _choose(cands, goodput, p95, every.gpu_ms_per_token, scale)
    met = _meets(cands, goodput, p95, scale) & cands.valid[None]
    ok = np.take_along_axis(met, choice[..., None], axis=-1)[..., 0]
    return choice, np.asarray(ok, dtype=bool), every


def _search_pools(
    cands: Candidates,
    curve: BatchLatency,
    b_max: int,
    scales: FloatArray,
    r_max: int,
    gather: str,
) -> tuple[IntArray, BoolArray, _Eval]:
    """Smallest feasible pool per (scale, class): bisection on each class's replicas,
    vectorised over scales and classes (a pool's feasibility only grows with replicas:
    fewer devices per replica, smaller passes). Returns the pools (S, C), whether each
    class fits in at most ``r_max`` replicas, and the evaluation at the pools (whose
    ``sol.utilisation`` is per pool, (S, C))."""

    def feasible_at(replicas: IntArray, _growing: bool) -> BoolArray:
        return _pool_choose(cands, curve, b_max, replicas.astype(np.float64), scales, gather)[1]

    demand = _class_demand(cands, curve, b_max, scales)
    hi, feasible = _smallest_feasible(demand, r_max, feasible_at)
    choice, ok, _ = _pool_choose(cands, curve, b_max, hi.astype(np.float64), scales, gather)
    sol = _pool_solve(cands, curve, b_max, cands.counts[None, :] / hi, choice, gather)
    return hi, feasible & ok, _Eval(choice, sol, feasible & ok)


def _pool_message(
    cands: Candidates, curve: BatchLatency, b_max: int, r_max: int, pools: IntArray,
    class_ok: BoolArray, i: int, scale: float, gather: str,
) -> str:  # fmt: skip
    """One line for an infeasible level of the pool plan: a class that misses even alone
    on a replica or with ``r_max`` replicas (figures from the pool solve that judged it),
    else the pools' total above ``r_max``."""
    bad = np.flatnonzero(~class_ok[i])
    if bad.size:
        c = int(bad[0])
        steps = ((cands.counts, "even with an idle verifier", ""),
                 (float(r_max), f"with {r_max} verifier replicas in its pool",
                  "; raise verifier.max_replicas"))  # fmt: skip
        for r, where, tail in steps:
            reps = np.broadcast_to(np.asarray(r, dtype=np.float64), (1, cands.counts.size))
            every = _pool_solve(cands, curve, b_max, cands.counts[None, :] / reps, None, gather)
            met = _meets(cands, every.goodput_tok_s, every.p95_round_ms, np.full(1, scale))
            if not (met[0, c] & cands.valid[c]).any():
                g = np.where(cands.valid, every.goodput_tok_s[0], np.nan)
                p = np.where(cands.valid, every.p95_round_ms[0], np.nan)
                return _describe_miss(cands, g, p, c, where) + tail
    pools_txt = ", ".join(f"{n} {int(k)}" for n, k in zip(cands.class_names, pools[i], strict=True))
    return (
        f"the classes' pools need {int(pools[i].sum())} verifier replicas in total ({pools_txt}), "
        f"more than verifier.max_replicas={r_max}; raise verifier.max_replicas"
    )


def _search_replicas(
    cands: Candidates,
    curve: BatchLatency,
    b_max: int,
    scales: FloatArray,
    r_max: int,
    gather: str = "sync",
) -> tuple[IntArray, BoolArray, _Eval]:
    """Smallest feasible replica count per scale (:func:`_smallest_feasible`, vectorised
    over scales); each evaluation while doubling warm-starts the next, the bisection and
    the final one start from the last of them."""
    near: _Eval | None = None

    def feasible_at(replicas: IntArray, growing: bool) -> BoolArray:
        nonlocal near
        ev = _evaluate(cands, curve, b_max, replicas.astype(np.float64), scales, near, gather)
        if growing:
            near = ev
        return ev.ok

    demand = _lower_bound(cands, curve, b_max, scales)
    hi, feasible = _smallest_feasible(demand, r_max, feasible_at)
    final = _evaluate(cands, curve, b_max, hi.astype(np.float64), scales, near, gather)
    return hi, feasible & final.ok, final


def plan_fleet(spec: FleetSpec, profiles: Profiles) -> FleetPlan:
    """Plan ``spec`` on ``profiles``; :class:`SloInfeasible` when the SLOs as written
    cannot be met (the message names the class and the miss)."""
    cands, warnings = build_candidates(spec, profiles)
    verification = next(v for v in profiles.verifications if v.target == spec.verifier.target)
    k_cap = int(np.max(cands.k[cands.valid])) if cands.valid.any() else 1
    curve, b_max, w = batch_curve(verification, max(k_cap, 1), spec.context_tokens,
                                  spec.verifier.max_batch)  # fmt: skip
    warnings += w
    varying = cands.valid & ~one_width(cands.drafted_weights)
    if b_max > 1 and varying.any() and spec.verifier.output_share == 0.0:
        warnings.append(
            "candidates whose rounds vary in width (model-free drafters) are charged their "
            "batched passes padded in full (verifier.output_share = 0, an upper bound); set "
            "verifier.output_share for the target (see docs/fleet.md) to price the padding"
        )
    scales = np.asarray(spec.scales(), dtype=np.float64)
    main = int(np.flatnonzero(scales == 1.0)[0])
    r_max = spec.verifier.max_replicas
    pools: IntArray | None = None
    gather = spec.verifier.gather
    if gather in POOLED_GATHERS:
        pools, class_fits, ev = _search_pools(cands, curve, b_max, scales, r_max, gather)
        replicas = pools.sum(axis=-1)
        feasible = class_fits.all(axis=-1) & (replicas <= r_max)
        if not feasible[main]:
            raise SloInfeasible(_pool_message(cands, curve, b_max, r_max, pools, class_fits,
                                              main, float(scales[main]), gather))  # fmt: skip
        pool_util = ev.sol.utilisation
        # the plan's utilisation: the pools' busy fractions weighted by their replicas
        sol = dataclasses.replace(ev.sol, utilisation=(pools * pool_util).sum(-1) / replicas)
    else:
        replicas, feasible, ev = _search_replicas(
            cands, curve, b_max, scales, r_max, spec.verifier.gather
        )
        if not feasible[main]:
            raise SloInfeasible(_infeasible_message(cands, curve, b_max, spec, ev, main))
        sol = ev.sol
    counts = cands.counts[None, :]
    fleet = np.nansum(counts * sol.goodput_tok_s, axis=-1)
    price = spec.verifier.price_usd_per_hour
    # USD per 1M tokens: every replica billed for wall time (one second of all replicas
    # over the tokens of that second), or each token's share of busy verifier time
    with np.errstate(divide="ignore", invalid="ignore"):
        cost = gpu_time_cost_usd(replicas * 1e3, price) / fleet * 1e6
        gpu_ms = np.nansum(counts * sol.goodput_tok_s * sol.gpu_ms_per_token, axis=-1) / fleet
    shared = gpu_time_cost_usd(gpu_ms, price) * 1e6
    return FleetPlan(
        spec=spec,
        candidates=cands,
        max_batch=b_max,
        scales=scales,
        replicas=np.where(feasible, replicas, 0),
        feasible=feasible,
        choice=ev.choice,
        goodput_tok_s=sol.goodput_tok_s,
        p95_itl_ms=sol.p95_round_ms,
        round_ms=sol.round_ms,
        queue_ms=sol.queue_ms,
        batch=sol.batch,
        utilisation=sol.utilisation,
        fleet_goodput_tok_s=fleet,
        cost_usd_per_mtok=np.where(feasible, cost, np.nan),
        shared_cost_usd_per_mtok=np.where(feasible, shared, np.nan),
        main=main,
        warnings=warnings,
        pool_replicas=None if pools is None else np.where(feasible[:, None], pools, 0),
    )


def plan_record(plan: FleetPlan) -> dict[str, object]:
    """The plan as a JSON-ready dict (every figure modelled; inputs' sources listed)."""
    cands = plan.candidates

    def level(i: int) -> dict[str, object]:
        classes = []
        for c, name in enumerate(cands.class_names):
            m = int(plan.choice[i, c])
            spec_c = plan.spec.classes[c]
            classes.append(
                {
                    "class": name,
                    "device": cands.devices[c],
                    "count": spec_c.count,
                    "rtt_ms": spec_c.rtt_ms,
                    "drafter": cands.drafters[c][m] or None,
                    "quantization": cands.quantizations[c][m] or None,
                    "k": int(cands.k[c, m]),
                    "configuration": cands.label(c, m),
                    "min_goodput_tok_s": spec_c.min_goodput_tok_s * float(plan.scales[i]),
                    "max_p95_itl_ms": None
                    if spec_c.max_p95_itl_ms is None
                    else spec_c.max_p95_itl_ms / float(plan.scales[i]),
                    "goodput_tok_s_per_device": float(plan.goodput_tok_s[i, c]),
                    "p95_itl_ms": float(plan.p95_itl_ms[i, c]),
                    "round_ms": float(plan.round_ms[i, c]),
                    "queue_ms": float(plan.queue_ms[i, c]),
                    "batch": float(plan.batch[i, c]),
                    "alone_goodput_tok_s": float(cands.alone_goodput_tok_s[c, m]),
                    "pool_replicas": None
                    if plan.pool_replicas is None
                    else int(plan.pool_replicas[i, c]),
                }
            )
        return {
            "slo_scale": float(plan.scales[i]),
            "feasible": bool(plan.feasible[i]),
            "replicas": int(plan.replicas[i]),
            "utilisation": float(plan.utilisation[i]),
            "fleet_goodput_tok_s": float(plan.fleet_goodput_tok_s[i]),
            "cost_usd_per_mtok": _finite(plan.cost_usd_per_mtok[i]),
            "shared_cost_usd_per_mtok": _finite(plan.shared_cost_usd_per_mtok[i]),
            "classes": classes,
        }

    return {
        "kind": "fleet_plan",
        "verifier": plan.spec.verifier.model_dump(),
        "max_batch": plan.max_batch,
        "context_tokens": plan.spec.context_tokens,
        "candidates": cands.n_candidates,
        "plan": level(plan.main),
        "tradeoff": [level(i) for i in range(len(plan.scales))],
        "sources": {k: sorted(v) for k, v in cands.sources.items()},
        "warnings": plan.warnings,
        "note": "every figure is modelled (closed-loop fleet model on the profiles, batches "
        f"formed as the verifier's --gather {plan.spec.verifier.gather}), none measured",
    }


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


__all__ = ["MAX_ROUNDS", "FleetPlan", "SloInfeasible", "plan_fleet", "plan_record"]
