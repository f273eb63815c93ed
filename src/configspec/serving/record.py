"""Turning a :class:`~configspec.serving.client.Generation` into a stored run record."""

from __future__ import annotations

import secrets
from datetime import datetime, timezone
from typing import Any

import numpy as np

from configspec.backends.base import ModelIdentity
from configspec.config import Estimate, Provenance, RunConfig, RunRecord, RunTotals, Source
from configspec.serving.client import Generation
from configspec.stats import bootstrap_ratio


def run_config(drafter: ModelIdentity, gen: Generation, **fields: Any) -> RunConfig:
    """The :class:`RunConfig` of a generation by ``drafter``: drafter and target names and
    families filled in, the rest (K, RTT, device, tokens, ...) from ``fields``."""
    return RunConfig(
        drafter=drafter.name,
        drafter_family=drafter.family,
        target=gen.target_name,
        target_family=gen.target_family,
        **fields,
    )


def model_hashes(*models: ModelIdentity) -> dict[str, str]:
    """Model name → file sha256 for the models that have a file."""
    return {m.name: m.file_sha256 for m in models if m.file_sha256}


def run_id_now(prefix: str = "edge") -> str:
    """A sortable, unique run id: ``edge-20260101T120000Z-1a2b3c``."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{prefix}-{stamp}-{secrets.token_hex(3)}"


def build_run_record(
    gen: Generation,
    config: RunConfig,
    *,
    run_id: str | None = None,
    energy_note: str = "",
    energy_source: Source = "measured",
    settings: dict[str, Any] | None = None,
    backend: str | None = None,
    backend_version: str | None = None,
    model_sha256: dict[str, str] | None = None,
) -> RunRecord:
    """A :class:`RunRecord` with totals, measured goodput and acceptance (bootstrap CIs).

    Goodput is generated tokens per second of decode wall time (prefill excluded), the
    quantity the model predicts; ``tokens_per_joule`` is filled only when every round has
    a metered energy.
    """
    rounds = gen.rounds
    tokens = np.array([r.accepted + 1 for r in rounds], dtype=np.float64)
    round_ms = np.array([r.round_ms for r in rounds], dtype=np.float64)
    drafted = np.array([r.k for r in rounds], dtype=np.float64)
    accepted = np.array([r.accepted for r in rounds], dtype=np.float64)
    energies = [r.energy_j for r in rounds]
    have_energy = bool(rounds) and all(e is not None for e in energies)
    energy_j = float(sum(e or 0.0 for e in energies)) if have_energy else None
    totals = RunTotals(
        rounds=len(rounds),
        generated_tokens=len(gen.tokens),
        draft_tokens=int(drafted.sum()),
        accepted_tokens=int(accepted.sum()),
        decode_s=gen.decode_s,
        prefill_ms=gen.prefill_ms,
        draft_prefill_ms=gen.draft_prefill_ms,
        draft_ms=float(sum(r.draft_ms for r in rounds)),
        verify_ms=float(sum(r.verify_ms for r in rounds)),
        network_ms=float(sum(r.network_ms for r in rounds)),
        energy_j=energy_j,
        reconnects=gen.reconnects,
        stopped_by=gen.stopped_by,
    )
    goodput = Estimate(mean=0.0, n=0, source="measured")
    if rounds and gen.decode_s > 0:
        # mean from the true decode wall time; the CI's relative width from the rounds
        per_round = bootstrap_ratio(tokens, round_ms, 1e3)
        mean = len(gen.tokens) / gen.decode_s
        f = mean / per_round.mean if per_round.mean > 0 else 1.0
        goodput = Estimate(
            mean=mean,
            ci_low=min(per_round.low * f, mean),
            ci_high=max(per_round.high * f, mean),
            n=len(rounds),
            estimator=per_round.estimator,
        )
    acceptance = bootstrap_ratio(accepted, drafted, 1.0) if drafted.sum() > 0 else None
    per_joule = None
    if have_energy:
        e = np.array(energies, dtype=np.float64)
        if e.sum() > 0:
            per_joule = bootstrap_ratio(tokens, e, 1.0).model_copy(update={"source": energy_source})
    elif not energy_note:
        energy_note = "no device power meter was used; energy not recorded"
    return RunRecord(
        run_id=run_id or run_id_now(),
        config=config,
        rounds=rounds,
        totals=totals,
        goodput_tokens_per_s=goodput,
        accepted_fraction=acceptance,
        tokens_per_joule=per_joule,
        energy_note=energy_note,
        provenance=Provenance.here(
            "measured",
            backend=backend,
            backend_version=backend_version,
            model_sha256=model_sha256 or {},
            settings=settings or {},
        ),
    )
