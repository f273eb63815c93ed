"""Enumerate the configuration space from a profile store into flat per-configuration arrays.

A configuration is (device, drafter on that device — which fixes its quantisation —,
target, K) for speculative decoding, plus the two no-speculation baselines (K = 0):
``cloud_only`` per (device, target) and ``edge_only`` per (device, drafter). A drafter and
a target are paired only when their ``family`` (tokenizer) matches and the target's
alignment profile has an entry for the drafter (by exact id, or by the id with its
quantisation suffix removed: acceptance is usually measured per model, speed per file).

Python loops here run over profile entries (devices × drafters, targets, alignment
entries) and pairs; every per-configuration quantity is gathered with numpy indexing.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from configspec.config import (
    AlignmentEntry,
    AlignmentProfile,
    DeviceProfile,
    DrafterOnDevice,
    Estimate,
    GpuTimePrice,
    NetworkSettings,
    VerificationProfile,
)
from configspec.errors import InvalidInput, ProfileMissing
from configspec.model.acceptance import drafted_length_distribution
from configspec.model.evaluate import Bounded, GridInputs
from configspec.model.presets import ModelPreset
from configspec.records import K_LIMIT, AcceptanceSource, Mode
from configspec.search.tables import (
    acceptance_table,
    drafter_latency_table,
    estimate_triple,
    profiled_temperature,
    verify_latency_table,
)
from configspec.store import ProfileStore

log = logging.getLogger(__name__)

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

POWER_SOURCES = ("none", "measured", "estimated", "imported", "fitted", "modelled", "illustrative")
"""Where a row's edge power came from (the :class:`~configspec.config.Estimate` source of
the drafter's ``draft_power_w``, or of the device's ``idle_power_w`` for cloud-only rows);
``none`` when there is no power data."""


def _power_code(est: Estimate | None) -> int:
    return POWER_SOURCES.index(est.source) if est is not None else 0


@dataclass(frozen=True)
class SearchSettings:
    """What to enumerate. ``k_max`` None means the preset's default, clipped per drafter to
    the profiled range; an explicit ``k_max`` beyond every profiled range is an error."""

    k_max: int | None = None
    context_tokens: int = 512
    batch: int = 1
    domain: str = "all"
    temperature: float = 0.0
    devices: tuple[str, ...] = ()
    drafters: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()


@dataclass(frozen=True)
class Space:
    """The enumerated space: model inputs plus the labels of every configuration."""

    inputs: GridInputs
    device_names: list[str]
    drafter_names: list[str]
    quantizations: list[str]
    target_names: list[str]
    family_names: list[str]
    device_code: IntArray
    drafter_code: IntArray
    quant_code: IntArray
    target_code: IntArray
    family_code: IntArray
    device_emulated: NDArray[np.bool_]
    power_source: IntArray
    acceptance_source: IntArray
    drafter_memory_bytes: FloatArray
    device_memory_bytes: FloatArray
    drafted_weights: FloatArray
    """(rows, j = 0..k_cap): the weight of a round verifying ``j`` drafted tokens
    (:func:`verify_weights`; for rows without a draft all the weight is at ``j`` = 0);
    what ``verify_ms`` is the mean over, and what the fleet planner pads batched passes
    with."""
    sources: dict[str, set[str]] = field(default_factory=dict)
    """Input kind (device, alignment, verification, network) → provenance sources seen."""
    warnings: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.inputs)


def _base_id(drafter: DrafterOnDevice) -> str:
    q = drafter.quantization
    name = drafter.drafter
    if q and name.lower().endswith(q.lower()) and len(name) > len(q):
        return name[: -len(q)].rstrip("-._")
    return name


def pick_entry(entries: list[AlignmentEntry], settings: SearchSettings) -> AlignmentEntry:
    """The entry for the wanted domain and temperature; failing that, the wanted domain
    at the nearest temperature, then any domain (``all`` first)."""

    def score(e: AlignmentEntry) -> tuple[bool, bool, float, bool]:
        same_t = math.isclose(e.temperature, settings.temperature, abs_tol=1e-9)
        return (
            e.domain == settings.domain,
            same_t,
            -abs(e.temperature - settings.temperature),
            e.domain == "all",
        )

    return max(entries, key=score)


# ---------------------------------------------------------------- enumeration


def _warn_temperature(
    temperatures: Sequence[float], wanted: float, what: str, command: str, warnings: list[str]
) -> None:
    """Note when latency at ``wanted`` comes from points profiled greedy or sampled the
    other way (sampling adds a softmax and a draw per token)."""
    used = profiled_temperature(temperatures, wanted)
    if (used > 0) != (wanted > 0):
        kind = "greedily" if used == 0 else f"at temperature {used:g}"
        warnings.append(
            f"{what} has latency profiled only {kind}; temperature {wanted:g} uses it "
            f"(run `{command} {wanted:g}`)"
        )


def _check_filters(
    names: Sequence[str], wanted: tuple[str, ...], what: str, where: str, hint: str
) -> None:
    for w in wanted:
        if w not in names:
            raise ProfileMissing(
                f"{what} {w!r} has no {where} (known: {', '.join(sorted(set(names))) or 'none'}); "
                f"{hint}"
            )


AccTable = tuple[FloatArray, FloatArray, FloatArray, IntArray, FloatArray]
"""One acceptance table: E(K) mean, low, high, :class:`AcceptanceSource`, drafted per round."""


@dataclass(frozen=True)
class _EdgeTables:
    """Per (device, drafter on device) row: drafting latency per token (3, n, k_cap) for
    K = 1..k_cap, drafting and idle power (3, n), catch-up time (3, n); ms and W."""

    rows: list[tuple[DeviceProfile, DrafterOnDevice]]
    latency: FloatArray
    power: FloatArray
    idle: FloatArray
    catchup: FloatArray


@dataclass(frozen=True)
class _TargetTables:
    """Per target row: verification latency (3, n, k_cap + 2) for 0..k_cap+1 positions, ms."""

    rows: list[VerificationProfile]
    latency: FloatArray


@dataclass(frozen=True)
class _Pairs:
    """Speculative (drafter row, target row, acceptance table) triples."""

    drafter: IntArray
    target: IntArray
    acceptance: IntArray
    tables: list[AccTable]
    alignment_sources: tuple[str, ...]


@dataclass(frozen=True)
class _Rows:
    """Row indices of the three kinds of configuration, in :class:`Space` order.

    Speculative rows: K and the edge (``di``), target (``ti``) and acceptance (``ai``)
    row of each; cloud-only rows: device row ``cd`` × target ``ct``; edge-only: ``ed``.
    """

    k: IntArray
    di: IntArray
    ti: IntArray
    ai: IntArray
    cd: IntArray
    ct: IntArray
    ed: IntArray

    @property
    def sizes(self) -> tuple[int, int, int]:
        """(speculative, cloud-only, edge-only) row counts."""
        return self.k.size, self.cd.size, self.ed.size


def build_space(
    devices: list[DeviceProfile],
    alignments: list[AlignmentProfile],
    verifications: list[VerificationProfile],
    preset: ModelPreset,
    settings: SearchSettings | None = None,
) -> Space:
    """Enumerate every configuration (see the module docstring) into a :class:`Space`."""
    s = settings or SearchSettings()
    warnings: list[str] = []
    if s.k_max is not None and not preset.k_min <= s.k_max <= K_LIMIT:
        raise InvalidInput(
            f"K={s.k_max} is out of range ({preset.k_min}..{K_LIMIT}); pass a --k-max in range"
        )
    k_cap = s.k_max if s.k_max is not None else preset.k_max_default
    _check_all_filters(devices, verifications, s)
    edge = _edge_tables(devices, s, k_cap, warnings)
    targets = _target_tables(verifications, alignments, preset, s, k_cap, warnings)
    pairs = _pairs(edge, targets, alignments, preset, s, k_cap, warnings)
    return _assemble(edge, targets, pairs, preset, s, k_cap, warnings)


def _check_all_filters(
    devices: list[DeviceProfile], verifications: list[VerificationProfile], s: SearchSettings
) -> None:
    _check_filters(
        [d.device.name for d in devices],
        s.devices,
        "device",
        "device profile",
        "run `configspec profile device` on it or fix --device",
    )
    _check_filters(
        [d.drafter for dev in devices for d in dev.drafters],
        s.drafters,
        "drafter",
        "device profile",
        "run `configspec profile device --drafter ...` for it or fix --drafter",
    )
    _check_filters(
        [v.target for v in verifications],
        s.targets,
        "target",
        "verification profile",
        "run `configspec profile verify` or fix --target",
    )


def _edge_tables(
    devices: list[DeviceProfile], s: SearchSettings, k_cap: int, warnings: list[str]
) -> _EdgeTables:
    """Edge rows: one per (device, drafter on device) kept by the filters."""
    rows = [
        (dev, d)
        for dev in devices
        if not s.devices or dev.device.name in s.devices
        for d in dev.drafters
        if not s.drafters or d.drafter in s.drafters
    ]
    n = len(rows)
    lat, power, idle = np.empty((3, n, k_cap)), np.empty((3, n)), np.empty((3, n))
    catchup = np.zeros((3, n))
    for i, (dev, d) in enumerate(rows):
        lat[:, i] = drafter_latency_table(d, k_cap, s.context_tokens, s.temperature)
        _warn_temperature(
            [p.temperature for p in d.latency], s.temperature, f"drafter {d.drafter!r} on "
            f"{dev.device.name!r}", "configspec profile device --temperature", warnings,
        )  # fmt: skip
        power[:, i] = estimate_triple(d.draft_power_w)
        idle[:, i] = estimate_triple(dev.idle_power_w)
        if d.catchup_ms is not None:
            catchup[:, i] = np.clip(estimate_triple(d.catchup_ms), 0.0, None)
    return _EdgeTables(rows, lat, power, idle, catchup)


def _target_tables(
    verifications: list[VerificationProfile],
    alignments: list[AlignmentProfile],
    preset: ModelPreset,
    s: SearchSettings,
    k_cap: int,
    warnings: list[str],
) -> _TargetTables:
    """Target rows: verification profiles (an alignment profile is optional: cloud-only)."""
    rows = [v for v in verifications if not s.targets or v.target in s.targets]
    lat = np.empty((3, len(rows), k_cap + 2))
    for j, v in enumerate(rows):
        if preset.require_per_token_price and isinstance(v.price, GpuTimePrice):
            raise InvalidInput(
                f"model preset {preset.name!r} bills per token but target {v.target!r} has a "
                "gpu_time price; give its verification profile a per_token price"
            )
        lat[:, j] = verify_latency_table(v, k_cap, s.context_tokens, s.batch, s.temperature)
        _warn_temperature(
            [p.temperature for p in v.latency], s.temperature, f"target {v.target!r}",
            "configspec profile verify --temperature", warnings,
        )  # fmt: skip
    for a in alignments:
        if a.target not in {v.target for v in verifications}:
            warnings.append(
                f"target {a.target!r} has an alignment profile but no verification profile; "
                f"skipped (run `configspec profile verify --target {a.target}`)"
            )
    return _TargetTables(rows, lat)


def _pairs(
    edge: _EdgeTables,
    targets: _TargetTables,
    alignments: list[AlignmentProfile],
    preset: ModelPreset,
    s: SearchSettings,
    k_cap: int,
    warnings: list[str],
) -> _Pairs:
    """Pair every edge row with every target of its family whose alignment profile has an
    entry for the drafter; one acceptance table per (target, alignment entry)."""
    align_by_target = {a.target: a for a in alignments}
    pair_d: list[int] = []
    pair_t: list[int] = []
    pair_a: list[int] = []
    tables: list[AccTable] = []
    on_devices = {d.drafter for _, d in edge.rows} | {_base_id(d) for _, d in edge.rows}
    for j, v in enumerate(targets.rows):
        align = align_by_target.get(v.target)
        if align is None:
            warnings.append(
                f"target {v.target!r} has no alignment profile: only cloud-only decoding is "
                f"modelled (run `configspec profile alignment --target {v.target}`)"
            )
            continue
        by_drafter = _entries_by_drafter(align, on_devices, s, warnings)
        cache: dict[str, int] = {}
        for i, (_, d) in enumerate(edge.rows):
            if d.family != align.target_family:
                continue
            key = d.drafter if d.drafter in by_drafter else _base_id(d)
            if key not in by_drafter:
                continue
            if key not in cache:
                cache[key] = len(tables)
                entry = pick_entry(by_drafter[key], s)
                same_t = math.isclose(entry.temperature, s.temperature, abs_tol=1e-9)
                if entry.domain != s.domain or not same_t:
                    warnings.append(
                        f"no acceptance for drafter {key!r} on {v.target!r} at domain "
                        f"{s.domain!r}, temperature {s.temperature:g}; using domain "
                        f"{entry.domain!r}, temperature {entry.temperature:g}"
                    )
                tables.append(acceptance_table(entry, k_cap, preset))
            pair_d.append(i)
            pair_t.append(j)
            pair_a.append(cache[key])
    sources = tuple(
        align_by_target[v.target].provenance.source
        for v in targets.rows
        if v.target in align_by_target
    )
    return _Pairs(_ints(pair_d), _ints(pair_t), _ints(pair_a), tables, sources)


def _ints(values: list[int]) -> IntArray:
    return np.asarray(values, dtype=np.int64)


def _entries_by_drafter(
    align: AlignmentProfile, on_devices: set[str], s: SearchSettings, warnings: list[str]
) -> dict[str, list[AlignmentEntry]]:
    by_drafter: dict[str, list[AlignmentEntry]] = {}
    for e in align.entries:
        by_drafter.setdefault(e.drafter, []).append(e)
        if e.drafter not in on_devices and not s.drafters:
            warnings.append(
                f"drafter {e.drafter!r} (alignment profile of {align.target!r}) has no device "
                "profile; skipped (run `configspec profile device` with it)"
            )
    return by_drafter


def _cat(labels: list[str]) -> tuple[list[str], dict[str, int]]:
    names = sorted(set(labels))
    return names, {n: i for i, n in enumerate(names)}


def _stack_acceptance(
    tables: list[AccTable], k_cap: int
) -> tuple[FloatArray, IntArray, FloatArray]:
    """E(K) (3, n, k_cap+1), its :class:`AcceptanceSource` and drafted tokens per round."""
    n_a = max(len(tables), 1)
    acc = np.full((3, n_a, k_cap + 1), np.nan)
    acc_src = np.full((n_a, k_cap + 1), AcceptanceSource.NONE, dtype=np.int64)
    acc_drafted = np.tile(np.arange(k_cap + 1, dtype=np.float64), (n_a, 1))
    for idx, (m, lo, hi, src, drafted) in enumerate(tables):
        acc[:, idx] = (m, lo, hi)
        acc_src[idx] = src
        acc_drafted[idx] = drafted
    return acc, acc_src, acc_drafted


def _speculative_rows(
    edge: _EdgeTables,
    targets: _TargetTables,
    pairs: _Pairs,
    acc: FloatArray,
    preset: ModelPreset,
    s: SearchSettings,
    k_cap: int,
    warnings: list[str],
) -> tuple[IntArray, IntArray]:
    """(pair index, K) of every speculative configuration with acceptance and verification
    data; raises when an explicit ``k_max`` is beyond every pair's profiled range."""
    ks = np.arange(1, k_cap + 1)
    e_pk = acc[0][pairs.acceptance][:, 1:]
    v_pk = targets.latency[0][pairs.target][:, 2:]
    valid = np.isfinite(e_pk) & np.isfinite(v_pk) & (ks >= preset.k_min)[None, :]
    if s.k_max is not None and pairs.drafter.size and not valid[:, s.k_max - 1].any():
        k_best = int(ks[valid.any(axis=0)].max()) if valid.any() else 0
        e_max = int(ks[np.isfinite(e_pk).any(axis=0)].max()) if np.isfinite(e_pk).any() else 0
        v_max = int(ks[np.isfinite(v_pk).any(axis=0)].max()) if np.isfinite(v_pk).any() else 0
        limit = "acceptance" if e_max < s.k_max else "verification (K+1 positions)"
        raise InvalidInput(
            f"K={s.k_max} is beyond the profiled range: {limit} data reach K={min(e_max, v_max)}"
            f" at most; pass --k-max {max(k_best, preset.k_min)} or profile longer drafts"
        )
    pi, ki = np.nonzero(valid)
    short = np.flatnonzero(~valid[:, -1]) if pairs.drafter.size else np.zeros(0, dtype=np.int64)
    if short.size:
        first = int(short[0])
        reach = int(ks[valid[first]].max()) if valid[first].any() else 0
        message = (
            f"{short.size} drafter/target pair(s) have no data up to K={k_cap} (e.g. "
            f"{edge.rows[pairs.drafter[first]][1].drafter} → "
            f"{targets.rows[pairs.target[first]].target} reaches "
            f"K={reach}); they are evaluated within their profiled range"
        )
        if s.k_max is not None:
            warnings.append(message)
        else:
            log.info(message)
    return pi, (ki + 1).astype(np.int64)


def _rows(
    edge: _EdgeTables, targets: _TargetTables, pairs: _Pairs, pi: IntArray, k: IntArray
) -> _Rows:
    """Speculative rows, then cloud-only per (device, target), edge-only per edge row."""
    first_row_of_device: dict[str, int] = {}
    for i, (dev, _) in enumerate(edge.rows):
        first_row_of_device.setdefault(dev.device.name, i)
    dev_rows = np.asarray(list(first_row_of_device.values()), dtype=np.int64)
    n_t = len(targets.rows)
    return _Rows(
        k=k,
        di=pairs.drafter[pi],
        ti=pairs.target[pi],
        ai=pairs.acceptance[pi],
        cd=np.repeat(dev_rows, n_t),
        ct=np.tile(np.arange(n_t, dtype=np.int64), dev_rows.size),
        ed=np.arange(len(edge.rows), dtype=np.int64),
    )


def _bounded(spec: list[FloatArray], cloud: list[FloatArray], edge: list[FloatArray]) -> Bounded:
    """A :class:`Bounded` of (mean, low, high) parts for the three kinds of row, in order."""
    parts = [np.concatenate([a, b, c]) for a, b, c in zip(spec, cloud, edge, strict=True)]
    return Bounded(parts[0], parts[1], parts[2])


DISTRIBUTION_TOL = 0.1
"""Tokens by which the mean of the drafted-length distribution derived from a profile's
per-K means may miss the measured mean at K before verification falls back to the time at
the mean width (:func:`_grid_inputs`): the derivation clips and smooths noisy steps, which
moves the mean by a few hundredths, but a profile measured at some K only breaks it."""


def verify_weights(drafted_by: FloatArray, ai: IntArray, k: IntArray) -> FloatArray:
    """(rows, j = 0..k_cap): the weight of verifying ``j`` drafted tokens (``j + 1``
    positions) in a round of acceptance table ``ai`` at ``k``; rows sum to 1.

    Verification covers the drafted tokens plus one position. A drafter that proposes
    fewer than K (n-gram lookup) is charged the mean over the widths its rounds draft
    (:func:`~configspec.model.acceptance.drafted_length_distribution`), not the time at
    its mean width: verification is not linear in the positions, and such a drafter's
    rounds mostly draft 0 or K. Where the profile's means do not pin that distribution
    down (drafted measured at some K only: the distribution's mean then misses the
    measured one by more than :data:`DISTRIBUTION_TOL` tokens), the weight is split
    between the two drafted counts around its mean, which charges the time interpolated
    at the mean width. A model drafter has all its weight at K.
    """
    drafted = drafted_by[ai, k]
    weights = drafted_length_distribution(drafted_by)[ai, k]  # (rows, j = 0..k_cap)
    width = weights.shape[1]
    spread = np.abs(weights @ np.arange(width, dtype=np.float64) - drafted) <= DISTRIBUTION_TOL
    lo = np.floor(drafted).astype(np.int64)
    frac = drafted - lo
    hi = np.minimum(lo + 1, k)
    rows = np.arange(k.size)
    at_mean = np.zeros_like(weights)
    np.add.at(at_mean, (rows, lo), 1.0 - frac)
    np.add.at(at_mean, (rows, hi), frac)
    out: FloatArray = np.where(spread[:, None], weights, at_mean)
    return out


def _grid_inputs(
    edge: _EdgeTables,
    targets: _TargetTables,
    r: _Rows,
    acc: FloatArray,
    drafted_by: FloatArray,
    weights: FloatArray,
) -> GridInputs:
    """The model's per-configuration inputs, gathered from the tables by row index;
    ``weights`` the speculative rows' :func:`verify_weights`."""
    n_s, n_c, n_e = r.sizes
    k, di, ti, ai, cd, ct, ed = r.k, r.di, r.ti, r.ai, r.cd, r.ct, r.ed
    d_lat, t_lat = edge.latency, targets.latency
    nan_c, nan_e = np.full(n_c, np.nan), np.full(n_e, np.nan)
    zero_c, zero_e = np.zeros(n_c), np.zeros(n_e)
    three = range(3)
    tokens = _bounded([acc[x][ai, k] for x in three], [np.ones(n_c)] * 3, [np.ones(n_e)] * 3)
    draft_tok = _bounded(
        [d_lat[x][di, k - 1] for x in three], [zero_c] * 3, [d_lat[x][ed, 0] for x in three]
    )
    edge_tok = _bounded(
        [d_lat[x][di, 0] for x in three],
        [d_lat[x][cd, 0] for x in three],
        [d_lat[x][ed, 0] for x in three],
    )
    # verification: the mean over the widths the rounds verify (verify_weights)
    drafted = drafted_by[ai, k]
    width = weights.shape[1]

    def verify_at(x: int) -> FloatArray:
        lat = t_lat[x][ti][:, 1 : width + 1]
        return np.asarray(np.where(weights > 0.0, weights * lat, 0.0).sum(axis=1))

    verify = _bounded([verify_at(x) for x in three], [t_lat[x][ct, 1] for x in three], [zero_e] * 3)
    verify_one = _bounded(
        [t_lat[x][ti, 1] for x in three], [t_lat[x][ct, 1] for x in three], [nan_e] * 3
    )
    power = _bounded(
        [edge.power[x][di] for x in three], [nan_c] * 3, [edge.power[x][ed] for x in three]
    )
    # A round after one whose K drafts were all accepted starts with two new tokens; the
    # probability of that is E(K) - E(K-1) (= a_1 ... a_K, the reach of the last draft).
    p_all = np.clip(acc[0][ai, k] - acc[0][ai, k - 1], 0.0, 1.0)
    p_all = np.where(np.isfinite(p_all), p_all, 0.0)
    catchup = _bounded([p_all * edge.catchup[x][di] for x in three], [zero_c] * 3, [zero_e] * 3)
    idle = _bounded(
        [edge.idle[x][di] for x in three],
        [edge.idle[x][cd] for x in three],
        [edge.idle[x][ed] for x in three],
    )
    prices = [v.price for v in targets.rows]

    def by_target(values: list[float] | list[bool], fill: float | bool) -> NDArray[np.generic]:
        arr = np.asarray(values) if values else np.asarray([fill])
        return np.concatenate([arr[ti], arr[ct], np.full(n_e, fill, dtype=arr.dtype)])

    gpu = [isinstance(p, GpuTimePrice) for p in prices]
    return GridInputs(
        mode=np.concatenate(
            [
                np.full(n_s, Mode.SPECULATIVE),
                np.full(n_c, Mode.CLOUD_ONLY),
                np.full(n_e, Mode.EDGE_ONLY),
            ]
        ).astype(np.int64),
        k=np.concatenate([k, np.zeros(n_c + n_e, dtype=np.int64)]),
        tokens_per_round=tokens,
        draft_ms_per_token=draft_tok,
        edge_ms_per_token=edge_tok,
        verify_ms=verify,
        verify_one_ms=verify_one,
        draft_power_w=power,
        idle_power_w=idle,
        gpu_price=by_target(gpu, False).astype(bool),
        price_usd_per_hour=by_target(
            [getattr(p, "price_usd_per_hour", 0.0) for p in prices], 0.0
        ).astype(np.float64),
        overhead_ms_per_round=by_target(
            [getattr(p, "overhead_ms_per_round", 0.0) for p in prices], 0.0
        ).astype(np.float64),
        price_usd_per_mtok=by_target(
            [getattr(p, "price_usd_per_million_tokens", 0.0) for p in prices], 0.0
        ).astype(np.float64),
        bill_draft_tokens=by_target(
            [getattr(p, "billed", "") == "draft_tokens" for p in prices], False
        ).astype(bool),
        drafted=np.concatenate([drafted, np.zeros(n_c + n_e)]),
        draft_catchup_ms=catchup,
    )


def _assemble(
    edge: _EdgeTables,
    targets: _TargetTables,
    pairs: _Pairs,
    preset: ModelPreset,
    s: SearchSettings,
    k_cap: int,
    warnings: list[str],
) -> Space:
    """The :class:`Space`: model inputs plus every configuration's labels."""
    acc, acc_src, acc_drafted = _stack_acceptance(pairs.tables, k_cap)
    pi, k = _speculative_rows(edge, targets, pairs, acc, preset, s, k_cap, warnings)
    r = _rows(edge, targets, pairs, pi, k)
    weights = verify_weights(acc_drafted, r.ai, k)
    inputs = _grid_inputs(edge, targets, r, acc, acc_drafted, weights)
    _, n_c, n_e = r.sizes
    # a round without a draft (cloud-only) verifies one position, as j = 0
    none = np.zeros((n_c + n_e, weights.shape[1]))
    none[:, 0] = 1.0
    di, ti, cd, ct, ed = r.di, r.ti, r.cd, r.ct, r.ed
    d_rows, t_rows = edge.rows, targets.rows
    device_names, dev_idx = _cat([dev.device.name for dev, _ in d_rows])
    drafter_names, drf_idx = _cat([d.drafter for _, d in d_rows])
    quant_names, q_idx = _cat([d.quantization or "" for _, d in d_rows])
    target_names, tgt_idx = _cat([v.target for v in t_rows])
    family_names, fam_idx = _cat([d.family for _, d in d_rows] + [v.target_family for v in t_rows])
    row_dev = np.asarray([dev_idx[dev.device.name] for dev, _ in d_rows], dtype=np.int64)
    row_drf = np.asarray([drf_idx[d.drafter] for _, d in d_rows], dtype=np.int64)
    row_q = np.asarray([q_idx[d.quantization or ""] for _, d in d_rows], dtype=np.int64)
    row_fam = np.asarray([fam_idx[d.family] for _, d in d_rows], dtype=np.int64)
    t_code = np.asarray([tgt_idx[v.target] for v in t_rows], dtype=np.int64)
    t_fam = np.asarray([fam_idx[v.target_family] for v in t_rows], dtype=np.int64)
    row_emul = np.asarray([dev.device.emulated for dev, _ in d_rows], dtype=bool)
    row_pdraft = np.asarray([_power_code(d.draft_power_w) for _, d in d_rows], dtype=np.int64)
    row_pidle = np.asarray([_power_code(dev.idle_power_w) for dev, _ in d_rows], dtype=np.int64)
    row_dmem = np.asarray([float(d.memory_bytes) for _, d in d_rows])
    row_devmem = np.asarray(
        [float(dev.device.memory_bytes or np.nan) for dev, _ in d_rows], dtype=np.float64
    )
    minus_e = np.full(n_e, -1, dtype=np.int64)
    minus_c = np.full(n_c, -1, dtype=np.int64)
    return Space(
        inputs=inputs,
        device_names=device_names,
        drafter_names=drafter_names,
        quantizations=quant_names,
        target_names=target_names,
        family_names=family_names,
        device_code=np.concatenate([row_dev[di], row_dev[cd], row_dev[ed]]),
        drafter_code=np.concatenate([row_drf[di], minus_c, row_drf[ed]]),
        quant_code=np.concatenate([row_q[di], minus_c, row_q[ed]]),
        target_code=np.concatenate(
            [t_code[ti] if t_code.size else ti, t_code[ct] if t_code.size else ct, minus_e]
        ),
        family_code=np.concatenate(
            [row_fam[di], t_fam[ct] if t_fam.size else minus_c, row_fam[ed]]
        ),
        device_emulated=np.concatenate([row_emul[di], row_emul[cd], row_emul[ed]]),
        power_source=np.concatenate([row_pdraft[di], row_pidle[cd], row_pdraft[ed]]),
        acceptance_source=np.concatenate(
            [acc_src[r.ai, k], np.full(n_c + n_e, AcceptanceSource.NONE, dtype=np.int64)]
        ),
        drafter_memory_bytes=np.concatenate([row_dmem[di], np.zeros(n_c), row_dmem[ed]]),
        device_memory_bytes=np.concatenate([row_devmem[di], row_devmem[cd], row_devmem[ed]]),
        drafted_weights=np.concatenate([weights, none]),
        sources=_sources(edge, targets, pairs),
        warnings=warnings,
    )


def _sources(edge: _EdgeTables, targets: _TargetTables, pairs: _Pairs) -> dict[str, set[str]]:
    """Input kind → the provenance sources seen (``device estimates``: latency figures)."""
    return {
        "device": {dev.provenance.source for dev, _ in edge.rows},
        "verification": {v.provenance.source for v in targets.rows},
        "alignment": set(pairs.alignment_sources),
        "device estimates": {p.per_token_ms.source for _, d in edge.rows for p in d.latency},
    }


@dataclass(frozen=True)
class Profiles:
    """Every profile read from one profile directory."""

    devices: list[DeviceProfile]
    alignments: list[AlignmentProfile]
    verifications: list[VerificationProfile]
    network: NetworkSettings


def read_profiles(store: ProfileStore) -> Profiles:
    """Read and validate every profile in ``store`` (one clear error per bad file)."""
    return Profiles(
        store.device_profiles(),
        store.alignment_profiles(),
        store.verification_profiles(),
        store.network(),
    )


def space_from_profiles(
    profiles: Profiles, preset: ModelPreset, settings: SearchSettings | None = None
) -> Space:
    """Enumerate the space of already-read ``profiles``."""
    space = build_space(
        profiles.devices, profiles.alignments, profiles.verifications, preset, settings
    )
    space.sources["network"] = {profiles.network.source}
    return space


def load_space(
    store: ProfileStore, preset: ModelPreset, settings: SearchSettings | None = None
) -> tuple[Space, NetworkSettings]:
    """Read every profile in ``store`` and enumerate the space; also return the network."""
    profiles = read_profiles(store)
    return space_from_profiles(profiles, preset, settings), profiles.network


__all__ = [
    "POWER_SOURCES",
    "Profiles",
    "SearchSettings",
    "Space",
    "acceptance_table",
    "build_space",
    "drafter_latency_table",
    "load_space",
    "pick_entry",
    "profiled_temperature",
    "read_profiles",
    "space_from_profiles",
    "verify_latency_table",
]
