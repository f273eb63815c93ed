"""Many edge clients sharing one batched verifier: a closed queueing network (pure numpy).

Every client loops *draft → uplink → queue → verification → downlink*. Everything but the
verifier is a **delay station** (no contention between clients): its time per round is the
client's *think time* ``think_ms`` = drafting + both link legs + the runtime's per-round
overhead, taken from the single-client model (:mod:`configspec.model.evaluate`). The
verifier is the one **queueing station**. A verifier replica runs one forward pass at a
time; a pass verifies up to ``max_batch`` sessions' requests together and takes
``S(b, p)`` ms for ``b`` sessions of ``p`` positions each — the measured latency against
sessions per batch × positions (the ``batch`` dimension of the verification profile,
:class:`BatchLatency`).

Solution: mean-value analysis (MVA, Reiser & Lavenberg 1980) with a batch-dependent
service time. By the arrival theorem, a request arriving at the verifier sees on average
``A`` other requests there (the mean queue of the network with itself removed). It joins
a batch of ``b = min(A + 1, max_batch)`` sessions, whose pass takes ``S(b, p)``; when more
than ``max_batch`` requests are present it waits for ``(A + 1) / max_batch`` passes::

    T = S(b, p) · max(1, (A + 1) / max_batch)          response time at the verifier
    X = n / (Z + T)                                    rounds per second (Little, the loop)
    Q = X · T                                          requests at the verifier (Little)

This treats the verifier as a load-dependent server whose rate with ``n`` requests
present is ``min(n, B) / S(min(n, B), p)``: the batch grows with the queue, as a batching
server that takes everyone waiting does. With ``max_batch = 1`` it is **exactly classic
MVA** with one delay and one FCFS queueing station (``T = S · (1 + A)``), and for a
single class it is solved exactly by recursion over the population
(:func:`solve_population`). Several classes (different K, positions, think times) are
solved with the Bard–Schweitzer approximation (``A_c = Q − Q_c / n_c``, a damped fixed
point; :func:`solve_fleet`), which also accepts fractional populations (clients spread
over replicas). Limits it respects by construction: at N = 1 the round is ``Z + S(1, p)``;
as N grows, throughput tends to ``max_batch / S(max_batch, p)`` rounds per second per
replica (saturation) and each client's goodput falls towards zero.

What MVA assumes: product form (service-time shape does not matter for the means when the
station is processor-sharing-like; for a FCFS one-at-a-time server with near-constant
service time MVA slightly underestimates throughput close to the knee of the curve, where
a deterministic system saturates more sharply). It says nothing of the order in which a
gated batch server groups clients.

**How batches form: the ``gather`` argument.** Which sessions share a pass is the
verifier's gather policy (:mod:`configspec.serving.batched`), and each branch models one:

- ``"sync"`` (the default; the verifier's ``--gather sync``): the batcher waits for the
  sessions expected back, so the clients of a replica move in lockstep, every pass holding
  all of them (up to ``max_batch``). Closed form, no iteration: with ``N`` clients at the
  replica, ``g = ceil(N / max_batch)`` passes per cycle of ``b = N / g`` sessions, each
  ``S(b, w)`` (``w`` the widest class's positions: the verifier pads every block of a
  pass to the widest), and every client's round is
  ``max(Z_max + S(b, w), g · S(b, w))`` — its think time plus its pass, or the verifier
  busy with all ``g`` passes, whichever is longer. ``Z_max`` is the longest think time
  among the classes present (the others wait for it: this assumes think times within one
  pass time of each other, the verifier's cap; beyond it the short-think classes do not
  wait and this is pessimistic for them; the planner, :mod:`configspec.plan.search`,
  gives each class a replica pool of its own under this and the ``continuous`` branch, so
  it never mixes classes on one cycle). Measured (bench_fleet's per-pass trace, N = 8,
  RTT 0 and 30 ms): while every client is decoding the gather does take all of them
  (7.9 sessions per pass); what lowers the verifier's mean batch is **session churn** —
  a new session's prompt is prefilled in a pass of its own (its block is wider than a
  round's and cannot share), and a run of fixed-length generations ends with fewer
  clients. Churn is an input: ``session_rounds`` (rounds per session) and ``prefill_ms``
  add ``N / session_rounds`` prefill passes to every cycle (they overlap the clients'
  think time unless the verifier is the bottleneck), and
  :func:`mean_pass_sessions` gives the mean sessions per pass the verifier reports. Not
  modelled: the spread of think times around their mean (a pass starts when the *last*
  expected client arrives; the gather waits up to a pass for it).
- ``"continuous"`` (``--gather fixed`` with 0 ms): a pass starts as soon as the verifier
  is free and anyone is queued, so closed loops whose think time is shorter than a pass
  split into ``g`` groups that alternate, each arriving while another's pass runs. The
  same closed form with ``g = min(N, max(ceil(N / max_batch), 1 + ceil(Z / S(N / g, w))))``
  (the fewest groups such that a group's think time fits in the other groups' passes;
  ``Z`` the mean think time, solved by a few monotone steps). A heuristic: measured runs
  had 1.0, 1.6, 3.2, 5.0 sessions per pass at N = 2, 4, 8, 16, where this gives
  1, 2, 4, 8 (the groups break up further with think-time spread), so it is still an
  upper bound on the batch at large N.
- ``"mva"``: the mean-value analysis above: an arrival shares its pass with every request
  present at the verifier (``b = A + 1``), an idealised batcher that neither mode is
  exactly. It over-predicted continuous batching by 23-87% at N = 2..16 (the clients
  desynchronise); with ``max_batch = 1`` it is the exact classic MVA of a one-at-a-time
  verifier (``--no-batch`` or one session per pass).

The p95 round time is an approximation with a hard cap, both stated in
:func:`tail_round_ms`.

Units: every time in ms, throughputs per second, populations in clients.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]

GATHER_MODELS = ("sync", "continuous", "mva")
"""How a branch of the model forms batches (see the module docstring)."""

P95_TAIL = 0.05
"""Tail probability of the reported latency percentile (p95)."""


@dataclass(frozen=True)
class BatchLatency:
    """Verification pass latency (ms) against sessions per batch × positions per session.

    ``table_ms[i, p]`` is the latency of one pass verifying ``batches[i]`` sessions of
    ``p`` positions each (column 0 unused; NaN where not profiled); ``batches`` are the
    profiled batch sizes, increasing, starting at 1 (default: 1, 2, ... one per row).
    Calls interpolate linearly in both (fractional batch and positions allowed); batch is
    clamped to ``1..max_batch``, positions beyond the table give NaN.
    """

    table_ms: FloatArray
    batches: FloatArray | None = None

    def __post_init__(self) -> None:
        t = np.asarray(self.table_ms, dtype=np.float64)
        if t.ndim != 2 or t.shape[0] < 1 or t.shape[1] < 2:
            raise ValueError(f"table_ms must be (batch, positions) with positions ≥ 1: {t.shape}")
        if self.batches is None:
            b = np.arange(1, t.shape[0] + 1, dtype=np.float64)
        else:
            b = np.asarray(self.batches, dtype=np.float64)
        if b.shape != (t.shape[0],) or b[0] != 1 or np.any(np.diff(b) <= 0):
            raise ValueError(f"batches {b} must start at 1, increase, one per table row")
        object.__setattr__(self, "table_ms", t)
        object.__setattr__(self, "batches", b)

    @property
    def max_batch(self) -> int:
        """The largest batch the table covers."""
        assert self.batches is not None
        return int(self.batches[-1])

    @classmethod
    def linear(
        cls, base_ms: float, per_position_ms: float, per_session_ms: float, max_batch: int
    ) -> BatchLatency:
        """A synthetic affine table: ``base + per_session·(b − 1) + per_position·b·p`` ms
        (a pass costs a fixed part plus work proportional to the tokens it evaluates);
        for tests and examples."""
        b = np.arange(1, max_batch + 1, dtype=np.float64)[:, None]
        p = np.arange(0, 65, dtype=np.float64)[None, :]
        table = base_ms + per_session_ms * (b - 1) + per_position_ms * b * p
        table[:, 0] = np.nan
        return cls(table)

    def __call__(self, batch: ArrayLike, positions: ArrayLike) -> FloatArray:
        # Hot path of the solvers (called every iteration): plain ufuncs, no np.clip.
        t, levels = self.table_ms, self.batches
        assert levels is not None
        b = np.minimum(np.maximum(np.asarray(batch, dtype=np.float64), 1.0), levels[-1])
        p = np.asarray(positions, dtype=np.float64)
        last = t.shape[1] - 1
        inside = (p >= 1.0) & (p <= last)
        pc = np.where(inside, p, 1.0)
        p0 = np.minimum(pc.astype(np.int64), last - 1)
        wp = pc - p0
        if levels.size == 1:
            row = t[0]
            out = row[p0] + wp * (row[p0 + 1] - row[p0])
        else:
            b0 = np.minimum(np.searchsorted(levels, b, side="right") - 1, levels.size - 2)
            wb = (b - levels[b0]) / (levels[b0 + 1] - levels[b0])
            lo = t[b0, p0] + wp * (t[b0, p0 + 1] - t[b0, p0])
            hi = t[b0 + 1, p0] + wp * (t[b0 + 1, p0 + 1] - t[b0 + 1, p0])
            out = lo + wb * (hi - lo)
        return np.where(inside, out, np.nan)


@dataclass(frozen=True)
class FleetSolution:
    """The solved network; arrays are (scenarios, classes) unless noted.

    ``batch`` is the mean size of the pass a class's request is verified in; ``pass_ms``
    its latency; ``verifier_ms`` = queueing + pass; ``queue_ms`` = ``verifier_ms`` −
    ``pass_ms``; ``rounds_per_s`` is per class, all its clients on one replica together;
    ``goodput_tok_s`` per client; ``replica_goodput_tok_s`` (scenarios,) is the total of
    one replica; ``utilisation`` (scenarios,) the verifier's busy fraction;
    ``gpu_ms_per_token`` the verifier time one token uses when a pass's time is shared
    equally by its sessions (``pass_ms / batch / tokens_per_round``); ``p95_round_ms`` and
    ``max_round_ms`` see :func:`tail_round_ms`.
    """

    round_ms: FloatArray
    verifier_ms: FloatArray
    pass_ms: FloatArray
    queue_ms: FloatArray
    batch: FloatArray
    rounds_per_s: FloatArray
    goodput_tok_s: FloatArray
    replica_goodput_tok_s: FloatArray
    utilisation: FloatArray
    gpu_ms_per_token: FloatArray
    p95_round_ms: FloatArray
    max_round_ms: FloatArray
    converged: NDArray[np.bool_]


def _as2d(x: ArrayLike) -> FloatArray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 0:
        return a.reshape(1, 1)
    if a.ndim == 1:
        return a.reshape(1, -1)
    return a


PassFn = Callable[[FloatArray], FloatArray]
"""Pass latency (ms) of a batch of the given size (sessions; fractional allowed)."""


def _response(
    pass_at: PassFn, others: FloatArray, max_batch: int
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """(batch joined, pass ms, response ms) for an arrival that sees ``others`` requests."""
    present = others + 1.0
    batch = np.minimum(present, float(max_batch))
    pass_ms = pass_at(batch)
    return batch, pass_ms, pass_ms * np.maximum(1.0, present / max_batch)


def tail_round_ms(
    think_ms: FloatArray,
    pass_ms: FloatArray,
    queue_ms: FloatArray,
    utilisation: FloatArray,
    clients_per_replica: FloatArray,
    worst_pass_ms: FloatArray,
    max_batch: int,
) -> tuple[FloatArray, FloatArray]:
    """(p95 round time, hard upper bound on the round time), ms.

    Think time (drafting, link, overhead) is taken at its mean: its spread is not
    modelled. The queueing delay has the M/M/1 tail shape: a request waits with
    probability ``P`` (the verifier's busy fraction), and a waiting request waits an
    exponential time of mean ``queue_ms / P``, so ``p95 wait = queue_ms / P · ln(P / 0.05)``
    (0 when ``P ≤ 0.05``); exact for M/M/1 FCFS, an approximation here. It is capped by a
    hard bound that needs no distribution: with FIFO passes, a request waits at most for
    the pass in progress and for every other client at its replica ahead of it,
    ``ceil((N − 1) / max_batch) + 1`` passes of at most ``worst_pass_ms`` (the pass of the
    largest batch and positions in the fleet). The bound holds whatever the arrival
    pattern, as long as pass latency does not exceed ``worst_pass_ms``.
    """
    p_wait = np.clip(utilisation, 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        tail = np.where(
            p_wait > P95_TAIL,
            queue_ms / np.maximum(p_wait, 1e-12) * np.log(np.maximum(p_wait, 1e-12) / P95_TAIL),
            0.0,
        )
    n = np.ceil(np.maximum(clients_per_replica - 1e-9, 1.0))
    hard = np.where(n <= 1.0, pass_ms, (np.ceil((n - 1.0) / max_batch) + 1.0) * worst_pass_ms)
    hard = np.maximum(hard, pass_ms)
    p95 = think_ms + np.minimum(pass_ms + np.maximum(tail, 0.0), hard)
    return p95, think_ms + hard


def _finish(
    curve: BatchLatency,
    n: FloatArray,
    think: FloatArray,
    positions: FloatArray,
    tokens: FloatArray,
    batch: FloatArray,
    pass_ms: FloatArray,
    resp: FloatArray,
    max_batch: int,
    converged: NDArray[np.bool_],
    *,
    classes: bool = True,
    lockstep: bool = False,
) -> FleetSolution:
    """The solution from the verifier's response per column. ``classes``: the columns
    are client classes of one network (utilisation, population and replica goodput
    summed over them); else each column is a single-class network of its own (the
    populations of :func:`solve_population`). ``lockstep``: the rounds are deterministic
    cycles (the sync and continuous branches), so the p95 round is the round itself."""
    present = n > 0
    rounds = np.where(present, n / (think + resp) * 1e3, 0.0)
    good_client = np.where(present, tokens / (think + resp) * 1e3, np.nan)
    if classes:
        util = np.clip(np.nansum(rounds * pass_ms / batch, axis=-1) / 1e3, 0.0, 1.0)
        util_col = util[..., None]
        total = n.sum(axis=-1, keepdims=True)
        p_max = np.nanmax(np.where(present, positions, np.nan), axis=-1, keepdims=True)
        replica = np.nansum(rounds * tokens, axis=-1)
    else:
        util = util_col = np.clip(rounds * pass_ms / batch / 1e3, 0.0, 1.0)
        total, p_max, replica = n, positions, rounds * tokens
    worst = curve(np.minimum(np.ceil(total), max_batch), p_max)
    p95, hard = tail_round_ms(think, pass_ms, resp - pass_ms, util_col, total, worst, max_batch)
    if lockstep:
        hard = np.maximum(hard, think + resp)
        p95 = think + resp
    return FleetSolution(
        round_ms=think + resp,
        verifier_ms=resp,
        pass_ms=pass_ms,
        queue_ms=resp - pass_ms,
        batch=batch,
        rounds_per_s=rounds,
        goodput_tok_s=good_client,
        replica_goodput_tok_s=replica,
        utilisation=util,
        gpu_ms_per_token=pass_ms / batch / tokens,
        p95_round_ms=p95,
        max_round_ms=hard,
        converged=converged,
    )


def _check(max_batch: int, curve: BatchLatency, gather: str = "mva") -> int:
    if max_batch < 1:
        raise ValueError(f"max_batch={max_batch} must be at least 1")
    if gather not in GATHER_MODELS:
        raise ValueError(f"gather={gather!r} is not one of {', '.join(GATHER_MODELS)}")
    return min(int(max_batch), curve.max_batch)


def _lockstep(
    pass_at: PassFn,
    total: FloatArray,
    think_ms: FloatArray,
    max_batch: int,
    continuous: bool,
    session_rounds: FloatArray | float = np.inf,
    prefill_ms: FloatArray | float = 0.0,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """(sessions per round's pass, pass ms, cycle ms) of ``total`` clients moving in ``g``
    groups (the ``sync`` and ``continuous`` branches of the module docstring). Session
    churn: every ``session_rounds`` rounds a client opens a new session, whose prefill is
    a pass of its own (``prefill_ms``; a prompt's block cannot share a pass with rounds),
    so each cycle carries ``new = total / session_rounds`` prefill passes: the cycle is
    ``max(Z + S + new·max(prefill − Z, 0), g·S + new·prefill)`` (a prefill pass overlaps
    the clients' think time; a busy verifier does all of it)."""
    full = np.maximum(np.ceil(total / max_batch - 1e-9), 1.0)
    groups = full
    if continuous:
        most = np.maximum(total, 1.0)
        for _ in range(8):  # g only grows, and is bounded by N: a few steps settle it
            pass_ms = pass_at(np.maximum(total / groups, 1.0))
            need = np.minimum(np.maximum(full, 1.0 + np.ceil(think_ms / pass_ms - 1e-9)), most)
            groups = np.maximum(groups, np.where(np.isfinite(need), need, groups))
    batch = np.maximum(total / groups, 1.0)
    pass_ms = pass_at(batch)
    new = total / np.asarray(session_rounds, dtype=np.float64)  # prefill passes per cycle
    # a prefill pass runs while the rounds' clients think (the sync gather does not wait
    # when a prompt leads the pass), so the clients lose only what it runs past their
    # think time; a busy verifier does its whole work
    overrun_ms = np.maximum(prefill_ms - think_ms, 0.0)
    cycle = np.maximum(
        think_ms + pass_ms + new * overrun_ms, groups * pass_ms + new * np.asarray(prefill_ms)
    )
    return batch, pass_ms, cycle


def _widest_pmf(cdf: FloatArray, batch: ArrayLike) -> FloatArray:
    """P(the largest of ``batch`` independent draws is index ``j``), from the draws' CDF
    over the last axis: ``F(j)^b − F(j − 1)^b`` (smooth in a fractional ``b``)."""
    b = np.maximum(np.asarray(batch, dtype=np.float64), 1.0)[..., None]
    upper = cdf**b
    lower = np.concatenate([np.zeros_like(upper[..., :1]), upper[..., :-1]], axis=-1)
    out: FloatArray = upper - lower
    return out


def padded_pass_ms(
    curve: BatchLatency, batch: ArrayLike, drafted_weights: ArrayLike, output_share: float = 0.0
) -> FloatArray:
    """Mean latency (ms) of a pass of ``batch`` rounds whose drafted counts vary.

    ``drafted_weights[..., j]`` is the chance that a round drafts ``j`` tokens (its block
    is ``j + 1`` positions; rows are normalised).
    :func:`configspec.model.acceptance.drafted_length_distribution` gives them from a
    profile, and a run's counts of rounds by drafted tokens do too. The verifier pads
    every block of a pass to the widest, so the pass is as wide as the largest of
    ``batch`` independent draws: ``w`` with probability ``F(w)^b − F(w − 1)^b``. Its
    blocks yield fewer output rows (logits) than ``w``: each yields its own width, on
    average ``o_w = E[X_1 + … + X_b | max = w] / b`` (exact for independent draws), and
    a missing output row saves ``output_share`` of a position's cost
    (:func:`anchor_weight`). The result is the mean over ``w`` of
    ``(1 − α)·S(b, w) + α·S(b, 2)``, ``α`` = :func:`anchor_weight` ``(w, o_w)``. At
    ``batch`` = 1 it is the mean of ``S(1, j + 1)`` over the distribution, what
    ``select`` charges one client; a model drafter (all weight at K) gets ``S(b, K + 1)``
    at every batch. ``batch`` broadcasts against the weights' leading axes; ms."""
    if not 0.0 <= output_share <= 1.0:
        raise ValueError(f"output_share={output_share} must be in [0, 1]")
    pmf = _normalised(drafted_weights)
    b = np.maximum(np.asarray(batch, dtype=np.float64), 1.0)
    if one_width(pmf).all():  # every round one width (model drafters): no padding
        return curve(b, pmf.argmax(axis=-1) + 1.0)
    reads = padded_pass_reads(b, pmf, output_share)
    width = np.arange(1, pmf.shape[-1] + 1, dtype=np.float64)
    cost = curve(b[..., None], width)
    out: FloatArray = np.where(reads > 0, reads * cost, 0.0).sum(axis=-1)
    return out


def padded_pass_reads(
    batch: ArrayLike, drafted_weights: ArrayLike, output_share: float = 0.0
) -> FloatArray:
    """The readings of the profile that :func:`padded_pass_ms` sums: ``r[..., p − 1]`` is
    the weight of ``S(b, p)`` for ``p`` = 1..(the weights' last axis); they sum to 1."""
    w = np.asarray(drafted_weights, dtype=np.float64)
    pmf = w / w.sum(axis=-1, keepdims=True)
    b = np.maximum(np.asarray(batch, dtype=np.float64), 1.0)
    cdf = np.minimum(np.cumsum(pmf, axis=-1), 1.0)
    at = _widest_pmf(cdf, b)
    width = np.arange(1, pmf.shape[-1] + 1, dtype=np.float64)
    # mean output rows per block of a pass whose widest is w: E[sum X_i; max = w] is
    # G(w) - G(w - 1), G(w) = E[sum X_i; max <= w] = b E[X; X <= w] F(w)^(b - 1)
    bb = b[..., None]
    g = bb * np.cumsum(pmf * width, axis=-1) * cdf ** (bb - 1.0)
    dg = g - np.concatenate([np.zeros_like(g[..., :1]), g[..., :-1]], axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        outputs = np.where(at > 0, dg / (bb * at), width)
    outputs = np.minimum(np.maximum(outputs, 1.0), width)  # rounding can step outside
    alpha = anchor_weight(width, outputs, output_share)
    reads = at * (1.0 - alpha)
    if reads.shape[-1] >= 2:
        reads[..., 1] += (at * alpha).sum(axis=-1)
    out: FloatArray = reads
    return out


ANCHOR_POSITIONS = 2
"""The narrowest block a round sends (a round that drafted nothing still sends two rows:
a single row takes its neighbour with it), and the width the output share is timed
against (:func:`anchor_weight`)."""


def anchor_weight(widest: ArrayLike, outputs: ArrayLike, output_share: float) -> FloatArray:
    """``α``: a pass of blocks ``widest`` wide that yield ``outputs`` output rows each on
    average costs ``(1 − α)·S(b, widest) + α·S(b, 2)``.

    The profile times blocks of ``p`` positions with ``p`` output rows each. An output row
    costs more than a position (the output projection, vocabulary × embedding, plus the
    logits copied out), so every row a block does not yield saves ``output_share`` of what
    a position costs there, taken as the secant of the profile from 2 positions to
    ``widest``: ``α = output_share · (widest − outputs) / (widest − 2)`` (0 at or below
    2 positions). ``output_share`` is timed the same way (``bench_fleet_model.py``'s
    ``measure_output_share``: blocks of 5 with every row an output, with 2 rows, and
    blocks of 2): on the F32 Gemma 3 270M, 1 thread, 16 blocks of 5 positions took
    741 ms with 80 output rows, 650 with 65, 495 with 35, and 16 blocks of 2 373 ms, a
    share of 0.71. Reading the profile at the single width ``widest − output_share ·
    (widest − outputs)`` instead (until 2026-12-01) read the sawtooth between
    neighbouring widths: in fleet_model12's profile S(4, 4) = 96.8 ms lies below
    S(4, 3) = 99.4, and the N = 4 passes (4 blocks of 5, 4.04 output rows each on
    average, share 0.786) read 105 ms where the verifier timed 119.6 ms a request (pass
    and decision); the secant reads 118.8. 0: padding costs as much as a real position
    (an upper bound); 1: only output rows count. Broadcasts; dimensionless, in [0, 1]."""
    if not 0.0 <= output_share <= 1.0:
        raise ValueError(f"output_share={output_share} must be in [0, 1]")
    w = np.asarray(widest, dtype=np.float64)
    o = np.asarray(outputs, dtype=np.float64)
    span = w - ANCHOR_POSITIONS
    with np.errstate(divide="ignore", invalid="ignore"):
        alpha = np.where(span > 0, output_share * np.maximum(w - o, 0.0) / span, 0.0)
    out: FloatArray = np.minimum(alpha, 1.0)
    return out


def _pass_fn(
    curve: BatchLatency, positions: FloatArray, weights: FloatArray | None, output_share: float
) -> PassFn:
    """Batch → pass ms at ``positions`` (every block as wide), or over ``weights``
    (:func:`padded_pass_ms`) when given."""
    if weights is None:
        return lambda batch: curve(batch, positions)
    return lambda batch: padded_pass_ms(curve, batch, weights, output_share)


def _weights(drafted_weights: ArrayLike | None, shape: tuple[int, ...]) -> FloatArray | None:
    """``drafted_weights`` broadcast to ``shape`` + (j,), each row normalised; None passes."""
    if drafted_weights is None:
        return None
    w = _normalised(drafted_weights)
    out: FloatArray = np.broadcast_to(w, (*shape, w.shape[-1]))
    return out


def _normalised(drafted_weights: ArrayLike) -> FloatArray:
    """Drafted weights (last axis ``j``) checked and scaled so that every row sums to 1."""
    w = np.asarray(drafted_weights, dtype=np.float64)
    if w.ndim == 0 or w.shape[-1] == 0 or (w < 0).any() or not (w.sum(axis=-1) > 0).all():
        raise ValueError("drafted_weights must have a last axis of non-negative weights, "
                         "some positive in every row")  # fmt: skip
    out: FloatArray = w / w.sum(axis=-1, keepdims=True)
    return out


def one_width(weights: ArrayLike) -> NDArray[np.bool_]:
    """Whether every round with these drafted weights (last axis ``j``) drafts the same
    count, as a model drafter's always do: nothing to pad."""
    w = np.asarray(weights, dtype=np.float64)
    out: NDArray[np.bool_] = np.count_nonzero(w > 0, axis=-1) == 1
    return out


def arrival_mix(
    queued: FloatArray, clients: FloatArray, chosen: FloatArray, own: FloatArray,
    others: FloatArray,
) -> FloatArray:  # fmt: skip
    """Drafted weights (last axis ``j``) of the pass an arrival joins under ``mva``: its
    own round's ``own`` and the requests at the verifier, ``queued`` per class (its own
    class less itself, ``queued / clients``), each with its class's ``chosen`` weights:
    ``(Σ_c q_c·chosen_c − q/n·chosen + own) / (others + 1)``. ``queued``, ``clients``
    (no zeros) and ``others`` (the other requests, :func:`solve_fleet`) are
    (..., classes); ``chosen`` (..., classes, j); ``own`` the same, or with candidate
    axes between classes and ``j`` (the planner weighs every candidate of a class).
    A class with less than one client here (a fractional population: fewer devices than
    replicas) takes out at most its whole queue, so no weight goes negative."""
    mine = np.minimum(queued / clients, queued)[..., None]
    rest = (queued[..., None] * chosen).sum(axis=-2, keepdims=True) - mine * chosen
    extra = own.ndim - rest.ndim
    rest = rest.reshape(rest.shape[:-1] + (1,) * extra + rest.shape[-1:])
    out: FloatArray = (rest + own) / (others.reshape(others.shape + (1,) * (extra + 1)) + 1.0)
    return out


def widest_block(weights: FloatArray) -> FloatArray:
    """The widest block (positions) a round with these drafted weights (last axis: ``j``
    drafted tokens) can send: ``j + 1`` for the largest ``j`` of positive weight."""
    j = np.arange(1, weights.shape[-1] + 1, dtype=np.float64)
    out: FloatArray = np.max(np.where(weights > 0, j, 1.0), axis=-1)
    return out


def mean_pass_sessions(
    clients: ArrayLike,
    max_batch: int,
    session_rounds: ArrayLike = np.inf,
) -> FloatArray:
    """Mean sessions per verifier pass (what the verifier's ``configspec_batch_sessions``
    histogram reports) in the ``sync`` branch: per cycle, ``g = ceil(N / max_batch)``
    passes of rounds hold all ``N`` clients, and ``N / session_rounds`` prefill passes
    hold one session each (a new session's prompt; ``session_rounds`` = rounds per
    session, ``inf``: no churn). ``clients`` and ``session_rounds`` broadcast; sessions
    per pass, dimensionless."""
    n = np.maximum(np.asarray(clients, dtype=np.float64), 0.0)
    if max_batch < 1:
        raise ValueError(f"max_batch={max_batch} must be at least 1")
    groups = np.maximum(np.ceil(n / max_batch - 1e-9), 1.0)
    new = n / np.asarray(session_rounds, dtype=np.float64)
    return np.where(n > 0, (n + new) / (groups + new), 0.0)


def solve_fleet(
    clients: ArrayLike,
    think_ms: ArrayLike,
    positions: ArrayLike,
    tokens_per_round: ArrayLike,
    curve: BatchLatency,
    max_batch: int,
    *,
    tol: float = 1e-6,
    max_iter: int = 2000,
    start: FleetSolution | None = None,
    damping: float = 0.3,
    gather: str = "sync",
    session_rounds: ArrayLike = np.inf,
    prefill_ms: ArrayLike = 0.0,
    drafted_weights: ArrayLike | None = None,
    output_share: float = 0.0,
) -> FleetSolution:
    """Solve one verifier replica shared by several client classes (Bard–Schweitzer AMVA).

    Arrays broadcast to (scenarios, classes): ``clients`` per class at this replica
    (fractional allowed; 0 = class absent), ``think_ms`` per round outside the verifier,
    ``positions`` per verification (drafted tokens + 1), ``tokens_per_round`` E(K).
    ``max_batch`` is capped at the largest batch ``curve`` covers. Iterates the damped
    fixed point until the queue lengths move less than ``tol`` (relative); scenarios that
    did not converge in ``max_iter`` are flagged in :attr:`FleetSolution.converged`.
    ``start`` (a solution of the same shape) warm-starts the iteration from its queues;
    ``damping`` is the weight of the previous queue lengths in each update (0 = plain
    substitution; some damping keeps the batch-dependent service time from oscillating).
    ``gather`` picks how batches form (module docstring): ``"sync"`` and ``"continuous"``
    are closed forms (no iteration; ``tol``, ``max_iter``, ``start`` and ``damping`` are
    for ``"mva"``). Session churn (those two branches only): ``session_rounds`` rounds per
    session (``inf``: sessions never end; broadcast per scenario, (scenarios, 1) or
    scalar) and ``prefill_ms`` the pass that prefills a new session's prompt: each cycle
    carries ``N / session_rounds`` such passes; the rounds lose what a prefill pass runs
    past their think time, or the verifier's whole extra work when it is the bottleneck.

    ``drafted_weights`` (broadcast to (scenarios, classes, j)): the chance that a class's
    round drafts ``j`` tokens, for drafters whose rounds vary in width (n-gram lookup).
    A pass then costs the mean over its widest block (:func:`padded_pass_ms`, with
    ``output_share``), its sessions drawn from the classes in proportion to their
    clients (lockstep) or queued requests (``mva``); ``positions`` are then ignored (the
    latency bound takes the widest block the weights allow). None: every block of a
    class is ``positions`` wide, and a pass is as wide as its widest class.
    """
    b_max = _check(max_batch, curve, gather)
    n, z, p, e = np.broadcast_arrays(
        _as2d(clients), _as2d(think_ms), _as2d(positions), _as2d(tokens_per_round)
    )
    n = np.maximum(n, 0.0)
    present = n > 0
    pmf = _weights(drafted_weights, n.shape)
    if pmf is not None:
        p = np.broadcast_to(widest_block(pmf), n.shape)
    if gather != "mva":
        total = n.sum(axis=-1, keepdims=True)
        width = np.max(np.where(present, p, 0.0), axis=-1, keepdims=True)
        if pmf is None:
            pass_at = _pass_fn(curve, width, None, output_share)
        else:
            mix = (n[..., None] * pmf).sum(axis=-2) / np.maximum(total, 1e-12)
            mix = np.where(total > 0, mix, pmf[..., 0, :])
            pass_at = _pass_fn(curve, width, mix[..., None, :], output_share)
        if gather == "sync":
            z_cycle = np.max(np.where(present, z, 0.0), axis=-1, keepdims=True)
        else:
            z_cycle = (n * z).sum(axis=-1, keepdims=True) / np.maximum(total, 1e-12)
        batch, pass_ms, cycle = _lockstep(
            pass_at, total, z_cycle, b_max, gather != "sync",
            _as2d(session_rounds), _as2d(prefill_ms),
        )  # fmt: skip
        shape = n.shape
        batch, pass_ms = np.broadcast_to(batch, shape), np.broadcast_to(pass_ms, shape)
        resp = np.broadcast_to(cycle, shape) - z
        done = np.ones(shape[0], dtype=bool)
        return _finish(curve, n, z, p, e, batch, pass_ms, resp, b_max, done, lockstep=True)
    safe_n = np.where(present, n, 1.0)
    s1 = _pass_fn(curve, p, pmf, output_share)(np.ones_like(n))
    q = np.where(present, n * s1 / (z + s1), 0.0)
    if start is not None and start.round_ms.shape == n.shape:
        q0 = start.rounds_per_s * start.verifier_ms / 1e3
        q = np.where(present & np.isfinite(q0), q0, q)
    converged = np.zeros(n.shape[0], dtype=bool)
    batch = pass_ms = resp = np.zeros_like(n)
    for _ in range(max_iter):
        q_tot = q.sum(axis=-1, keepdims=True)
        others = np.maximum(q_tot - np.where(present, q / safe_n, 0.0), 0.0)
        if pmf is None:
            # Positions of the pass: the mean over the sessions in it (by queue share).
            pq = (q * p).sum(axis=-1, keepdims=True)
            p_mix = np.where(others > 1e-12, (pq - q / safe_n * p + p) / (others + 1.0), p)
            pass_at = _pass_fn(curve, np.where(np.isfinite(p_mix), p_mix, p), None, output_share)
        else:
            mix = arrival_mix(q, safe_n, pmf, pmf, others)
            pass_at = _pass_fn(curve, p, mix, output_share)
        batch, pass_ms, resp = _response(pass_at, others, b_max)
        q_new = np.where(present, n * resp / (z + resp), 0.0)
        delta = np.nanmax(np.abs(q_new - q) / np.maximum(n, 1.0), axis=-1, initial=0.0)
        q = damping * q + (1.0 - damping) * q_new
        converged = delta < tol
        if converged.all():
            break
    return _finish(curve, n, z, p, e, batch, pass_ms, resp, b_max, converged)


def solve_population(
    max_clients: int,
    think_ms: ArrayLike,
    positions: ArrayLike,
    tokens_per_round: ArrayLike,
    curve: BatchLatency,
    max_batch: int,
    gather: str = "sync",
    session_rounds: ArrayLike = np.inf,
    prefill_ms: ArrayLike = 0.0,
    drafted_weights: ArrayLike | None = None,
    output_share: float = 0.0,
) -> FleetSolution:
    """One class of identical clients, for every N = 1..``max_clients``.

    ``think_ms``, ``positions`` and ``tokens_per_round`` are scalars or (scenarios,)
    arrays; the result's arrays are (scenarios, N) with column ``N − 1`` the network of N
    clients. Recursion over the population: an arrival in the network of N clients sees
    the mean queue of the network of N − 1 (the arrival theorem, exact for product-form
    networks; with ``max_batch = 1`` this is textbook exact MVA). That is the ``"mva"``
    branch; ``"sync"`` (default) and ``"continuous"`` are the closed forms of the module
    docstring, evaluated for every N at once, with session churn as in
    :func:`solve_fleet` (``session_rounds`` rounds per session, ``prefill_ms`` per
    prefill pass; scalars or (scenarios,) arrays). ``drafted_weights`` ((scenarios, j) or
    (j,)) and ``output_share`` as in :func:`solve_fleet`.
    """
    if max_clients < 1:
        raise ValueError(f"max_clients={max_clients} must be at least 1")
    b_max = _check(max_batch, curve, gather)
    z, p, e = (np.atleast_1d(np.asarray(x, dtype=np.float64)) for x in (think_ms, positions,
               tokens_per_round))  # fmt: skip
    z, p, e = np.broadcast_arrays(z, p, e)
    pmf = _weights(drafted_weights, z.shape)
    if pmf is not None:
        p = widest_block(pmf)
    if gather != "mva":
        ns = np.broadcast_to(np.arange(1, max_clients + 1, dtype=np.float64), (z.size, max_clients))
        zz, pp, ee = (np.broadcast_to(x[:, None], ns.shape) for x in (z, p, e))
        rr, pf = (np.atleast_1d(np.asarray(x, dtype=np.float64))[:, None]
                  for x in (session_rounds, prefill_ms))  # fmt: skip
        pass_at = _pass_fn(curve, pp, None if pmf is None else pmf[:, None, :], output_share)
        batch, pass_ms, cycle = _lockstep(pass_at, ns, zz, b_max, gather != "sync", rr, pf)
        done = np.ones(ns.shape[0], dtype=bool)
        return _finish(curve, ns, zz, pp, ee, batch, pass_ms, cycle - zz, b_max, done,
                       classes=False, lockstep=True)  # fmt: skip
    cols: list[tuple[FloatArray, FloatArray, FloatArray]] = []
    q = np.zeros_like(z)
    pass_one = _pass_fn(curve, p, pmf, output_share)
    for n in range(1, max_clients + 1):
        batch, pass_ms, resp = _response(pass_one, q, b_max)
        q = n * resp / (z + resp)
        cols.append((batch, pass_ms, resp))
    batch_a, pass_a, resp_a = (np.stack(c, axis=-1) for c in zip(*cols, strict=True))
    ns = np.broadcast_to(np.arange(1, max_clients + 1, dtype=np.float64), resp_a.shape)
    zz, pp, ee = (np.broadcast_to(x[:, None], resp_a.shape) for x in (z, p, e))
    converged = np.ones(resp_a.shape[0], dtype=bool)
    return _finish(curve, ns, zz, pp, ee, batch_a, pass_a, resp_a, b_max, converged, classes=False)


__all__ = [
    "ANCHOR_POSITIONS",
    "GATHER_MODELS",
    "P95_TAIL",
    "BatchLatency",
    "FleetSolution",
    "anchor_weight",
    "arrival_mix",
    "mean_pass_sessions",
    "one_width",
    "padded_pass_ms",
    "padded_pass_reads",
    "solve_fleet",
    "solve_population",
    "tail_round_ms",
    "widest_block",
]
