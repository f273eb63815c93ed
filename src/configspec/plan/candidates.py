"""Per-class candidate configurations and the verifier's batch latency, from the profiles.

A candidate is one (drafter — which fixes the quantisation —, K) a class's device can run
against the fleet's target, plus cloud-only decoding (K = 0) when the class allows it.
Each is reduced to what the fleet model needs: the round's *think time* outside the
verifier (drafting, both link legs at the class's RTT, the runtime's per-round overhead),
the positions it sends for verification (drafted + 1; for a drafter whose rounds vary in
width, the distribution of its drafted counts, which batched passes pad) and E(K), all from the
single-client model (:func:`configspec.model.evaluate.evaluate_grid`) on the same
profiles ``select`` uses. Python loops here run over classes; candidates are arrays.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from configspec import records as R
from configspec.config import VerificationProfile
from configspec.errors import ProfileMissing
from configspec.model.evaluate import evaluate_grid
from configspec.model.fleet import BatchLatency, widest_block
from configspec.model.presets import CONFIGSPEC
from configspec.plan.spec import FleetSpec
from configspec.search.evaluate import link_from_network
from configspec.search.space import (
    Profiles,
    SearchSettings,
    space_from_profiles,
)
from configspec.search.tables import verify_latency_table

log = logging.getLogger(__name__)

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


@dataclass(frozen=True)
class Candidates:
    """Candidates of every class, padded to (classes, M); ``valid`` marks real entries.

    ``think_ms`` per round outside the verifier, ``positions`` per verification (mean),
    ``drafted_weights`` (classes, M, j) the chance a round drafts ``j`` tokens
    (:attr:`configspec.search.space.Space.drafted_weights`), ``tokens_per_round`` E(K),
    ``alone_goodput_tok_s`` the single-client goodput with a one-at-a-time verifier
    (what ``select`` reports). Labels are per class lists.
    """

    class_names: list[str]
    devices: list[str]
    counts: FloatArray
    min_goodput_tok_s: FloatArray
    max_p95_ms: FloatArray
    """inf where a class sets no latency SLO."""
    think_ms: FloatArray
    positions: FloatArray
    drafted_weights: FloatArray
    tokens_per_round: FloatArray
    alone_goodput_tok_s: FloatArray
    k: IntArray
    valid: NDArray[np.bool_]
    drafters: list[list[str]]
    quantizations: list[list[str]]
    sources: dict[str, set[str]] = field(default_factory=dict)
    output_share: float = 0.0
    """The verifier's ``output_share`` (:class:`configspec.plan.spec.Verifier`)."""

    @property
    def widest_positions(self) -> float:
        """The widest block any valid candidate sends (positions)."""
        return float(np.max(widest_block(self.drafted_weights)[self.valid], initial=1.0))

    def label(self, c: int, m: int) -> str:
        """``drafter K=k`` or ``cloud-only`` for candidate ``m`` of class ``c``."""
        d = self.drafters[c][m]
        return "cloud-only" if not d else f"{d} K={int(self.k[c, m])}"

    @property
    def n_candidates(self) -> int:
        """Total real candidates over every class."""
        return int(self.valid.sum())


def _verification(profiles: Profiles, target: str) -> VerificationProfile:
    for v in profiles.verifications:
        if v.target == target:
            return v
    known = ", ".join(sorted(v.target for v in profiles.verifications)) or "none"
    raise ProfileMissing(
        f"verifier target {target!r} has no verification profile (known: {known}); run "
        "`configspec profile verify` for it or fix verifier.target"
    )


def batch_curve(
    profile: VerificationProfile, k_cap: int, context_tokens: int, max_batch: int | None
) -> tuple[BatchLatency, int, list[str]]:
    """The pass latency table for batches 1..B of ``profile`` and the batch cap to plan with.

    B is the largest profiled batch; a ``max_batch`` above it is capped (latency beyond
    the profiled batches is unknown) with a warning. A profile without batch points is a
    one-at-a-time verifier (B = 1), also with a warning.
    """
    warnings: list[str] = []
    levels = sorted({p.batch for p in profile.latency})
    profiled = levels[-1]
    rows = []
    for b in levels:
        at_b = profile.model_copy(update={"latency": [p for p in profile.latency if p.batch == b]})
        rows.append(verify_latency_table(at_b, k_cap, context_tokens, b)[0])
    if levels[0] != 1:
        raise ProfileMissing(
            f"the verification profile of {profile.target!r} has no batch-1 points; "
            "re-run `configspec profile verify`"
        )
    curve = BatchLatency(np.stack(rows), np.asarray(levels, dtype=np.float64))
    if profiled == 1:
        warnings.append(
            f"the verification profile of {profile.target!r} has no batch dimension: planning "
            "a one-at-a-time verifier (run `configspec profile verify` with batches to plan "
            "batched verification)"
        )
    cap = profiled if max_batch is None else min(max_batch, profiled)
    if max_batch is not None and max_batch > profiled:
        warnings.append(
            f"verifier.max_batch={max_batch} is above the largest profiled batch ({profiled}); "
            f"planning with max_batch={profiled}"
        )
    return curve, cap, warnings


def build_candidates(spec: FleetSpec, profiles: Profiles) -> tuple[Candidates, list[str]]:
    """Every class's candidates (see the module docstring) and the warnings raised."""
    verification = _verification(profiles, spec.verifier.target)
    known = {d.device.name for d in profiles.devices}
    for c in spec.classes:
        if c.device not in known:
            raise ProfileMissing(
                f"class {c.name!r}: device {c.device!r} has no device profile (known: "
                f"{', '.join(sorted(known)) or 'none'}); run `configspec profile device` on it"
            )
    settings = SearchSettings(
        k_max=spec.k_max,
        context_tokens=spec.context_tokens,
        devices=tuple(sorted({c.device for c in spec.classes})),
        targets=(verification.target,),
    )
    space = space_from_profiles(profiles, CONFIGSPEC, settings)
    g = space.inputs
    drafted = g.drafted if g.drafted is not None else g.k.astype(np.float64)
    positions_all = np.where(g.mode == R.Mode.SPECULATIVE, drafted + 1.0, 1.0)
    fits = ~(space.drafter_memory_bytes > space.device_memory_bytes)
    per_class: list[IntArray] = []
    cols_per_class: list[dict[str, FloatArray]] = []
    for c in spec.classes:
        link = link_from_network(profiles.network, rtt_ms=c.rtt_ms)
        cols = evaluate_grid(g, link, CONFIGSPEC)
        dev = space.device_names.index(c.device)
        ok = (space.device_code == dev) & fits & np.isfinite(cols[R.GOODPUT_TOK_S])
        ok &= (g.mode == R.Mode.SPECULATIVE) | ((g.mode == R.Mode.CLOUD_ONLY) & c.cloud_only)
        if c.drafters:
            wanted = {space.drafter_names.index(d) for d in c.drafters if d in space.drafter_names}
            missing = [d for d in c.drafters if d not in space.drafter_names]
            if missing:
                raise ProfileMissing(
                    f"class {c.name!r}: drafter {missing[0]!r} has no device profile paired "
                    f"with {verification.target!r} (known: {', '.join(space.drafter_names)})"
                )
            ok &= np.isin(space.drafter_code, list(wanted)) | (g.mode == R.Mode.CLOUD_ONLY)
        rows = np.flatnonzero(ok)
        if rows.size == 0:
            raise ProfileMissing(
                f"class {c.name!r}: no configuration of {c.device!r} can verify with "
                f"{verification.target!r} (no drafter of its family fits, and cloud-only is off)"
            )
        per_class.append(rows)
        cols_per_class.append({k: np.asarray(v, dtype=np.float64) for k, v in cols.items()})
    m = max(r.size for r in per_class)
    n_c = len(spec.classes)
    think, pos, tok, alone = (np.full((n_c, m), np.nan) for _ in range(4))
    k = np.zeros((n_c, m), dtype=np.int64)
    weights = np.zeros((n_c, m, space.drafted_weights.shape[1]))
    weights[..., 0] = 1.0  # padding: one position, never read
    valid = np.zeros((n_c, m), dtype=bool)
    drafters: list[list[str]] = []
    quants: list[list[str]] = []
    for i, (rows, table) in enumerate(zip(per_class, cols_per_class, strict=True)):
        n = rows.size
        think[i, :n] = table[R.ROUND_MS][rows] - table[R.VERIFY_MS][rows]
        pos[i, :n] = positions_all[rows]
        weights[i, :n] = space.drafted_weights[rows]
        tok[i, :n] = table[R.TOKENS_PER_ROUND][rows]
        alone[i, :n] = table[R.GOODPUT_TOK_S][rows]
        k[i, :n] = g.k[rows]
        valid[i, :n] = True
        dc, qc = space.drafter_code[rows], space.quant_code[rows]
        drafters.append([space.drafter_names[x] if x >= 0 else "" for x in dc] + [""] * (m - n))
        quants.append([space.quantizations[x] if x >= 0 else "" for x in qc] + [""] * (m - n))
    cands = Candidates(
        class_names=[c.name for c in spec.classes],
        devices=[c.device for c in spec.classes],
        counts=np.asarray([c.count for c in spec.classes], dtype=np.float64),
        min_goodput_tok_s=np.asarray([c.min_goodput_tok_s for c in spec.classes]),
        max_p95_ms=np.asarray(
            [np.inf if c.max_p95_itl_ms is None else c.max_p95_itl_ms for c in spec.classes]
        ),
        think_ms=think,
        positions=pos,
        drafted_weights=weights,
        tokens_per_round=tok,
        alone_goodput_tok_s=alone,
        k=k,
        valid=valid,
        drafters=drafters,
        quantizations=quants,
        sources=dict(space.sources) | {"network": {profiles.network.source}},
        output_share=spec.verifier.output_share,
    )
    return cands, list(space.warnings)


__all__ = ["Candidates", "batch_curve", "build_candidates"]
