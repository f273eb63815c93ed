"""Sampled decoding in the model inputs: latency and acceptance keyed by temperature."""

from __future__ import annotations

import numpy as np
import pytest
from _model_factory import NO_NETWORK, alignment, alpha_entry, device, drafter, verification
from test_profiling import IDENT, SETTINGS, FakeDrafter, make_profiler

from configspec import records as R
from configspec.backends.base import DraftResult
from configspec.config import DraftLatencyPoint, Estimate, VerifyLatencyPoint
from configspec.model import CONFIGSPEC
from configspec.profiling.acceptance import truncate_draft
from configspec.search import SearchSettings, build_space, pick
from configspec.search.tables import profiled_temperature


def test_profiled_temperature_prefers_exact_then_same_kind() -> None:
    assert profiled_temperature([0.0, 0.8], 0.8) == 0.8
    assert profiled_temperature([0.0, 0.8], 0.7) == 0.8  # sampled, nearest
    assert profiled_temperature([0.0, 0.8], 0.0) == 0.0
    assert profiled_temperature([0.0], 0.7) == 0.0  # only greedy profiled


def _sampled_space(temperature: float):  # type: ignore[no-untyped-def]
    d = drafter("d", per_token_ms=10.0)
    d = d.model_copy(
        update={
            "latency": [
                *d.latency,
                *[p.model_copy(update={"temperature": 0.8, "per_token_ms": Estimate(mean=15.0)})
                  for p in d.latency],
            ]
        }
    )  # fmt: skip
    v = verification(base_ms=10.0, per_position_ms=4.0)
    v = v.model_copy(
        update={
            "latency": [
                *v.latency,
                *[VerifyLatencyPoint(positions=p.positions, context_tokens=p.context_tokens,
                                     latency_ms=Estimate(mean=p.latency_ms.mean + 3 * p.positions),
                                     temperature=0.8) for p in v.latency],
            ]
        }
    )  # fmt: skip
    greedy = alpha_entry("d", 0.8)
    sampled = alpha_entry("d", 0.5).model_copy(update={"temperature": 0.8})
    return build_space(
        [device(drafters=[d])],
        [alignment([greedy, sampled])],
        [v],
        CONFIGSPEC,
        SearchSettings(k_max=2, temperature=temperature),
    )


def test_model_uses_the_temperature_specific_latency_and_acceptance() -> None:
    g = pick(_sampled_space(0.0), NO_NETWORK).table
    s = pick(_sampled_space(0.8), NO_NETWORK).table
    g1 = g[(g[R.MODE] == R.MODE_SPECULATIVE) & (g[R.K] == 2)].iloc[0]
    s1 = s[(s[R.MODE] == R.MODE_SPECULATIVE) & (s[R.K] == 2)].iloc[0]
    assert g1[R.DRAFT_MS] == pytest.approx(20.0)
    assert s1[R.DRAFT_MS] == pytest.approx(30.0)
    assert s1[R.VERIFY_MS] == pytest.approx(g1[R.VERIFY_MS] + 9.0)  # 3 positions × 3 ms
    assert g1[R.TOKENS_PER_ROUND] == pytest.approx(1 + 0.8 + 0.64)
    assert s1[R.TOKENS_PER_ROUND] == pytest.approx(1 + 0.5 + 0.25)


def test_sampling_without_sampled_latency_says_so() -> None:
    space = build_space(
        [device(drafters=[drafter("d")])],
        [alignment([alpha_entry("d", 0.5).model_copy(update={"temperature": 0.8})])],
        [verification()],
        CONFIGSPEC,
        SearchSettings(k_max=2, temperature=0.8),
    )
    assert any("profiled only greedily" in w for w in space.warnings)


def test_truncated_draft_keeps_top_ids_and_reports_their_mass() -> None:
    q = np.array([[0.5, 0.3, 0.1, 0.1], [0.25, 0.25, 0.25, 0.25]])
    cut, mass = truncate_draft(q, 2)
    assert mass == pytest.approx([0.8, 0.5])
    assert cut[0] == pytest.approx([0.625, 0.375, 0.0, 0.0])
    assert cut.sum(axis=1) == pytest.approx([1.0, 1.0])
    full, ones = truncate_draft(q, 10)
    assert full == pytest.approx(q) and ones == pytest.approx([1.0, 1.0])


class SamplingDrafter(FakeDrafter):
    """Returns a draft distribution per token when sampling, as a llama.cpp drafter does."""

    def draft(self, context, k, **kw):  # type: ignore[no-untyped-def]
        res = super().draft(context, k)
        if not kw.get("temperature"):
            return res
        dist = np.full((k, 100), 1e-3)
        dist[:, 5] = 1.0 - 99e-3
        return DraftResult(tokens=res.tokens, token_probs=[float(dist[0, 5])] * k,
                           distributions=dist)  # fmt: skip


def test_device_sweep_times_sampled_drafting_per_temperature(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    import dataclasses

    settings = dataclasses.replace(SETTINGS, temperatures=(0.0, 0.8), context_tokens=(16,))
    fake = SamplingDrafter(IDENT, 1.0)
    profile, _, report = make_profiler(
        tmp_path, {"fast": fake}, monkeypatch, settings=settings
    ).run()
    points: list[DraftLatencyPoint] = profile.drafters[0].latency
    assert sorted({p.temperature for p in points}) == [0.0, 0.8]
    assert len(points) == 2 * settings.k_max
    by = {(p.k, p.temperature): p.per_token_ms.mean for p in points}
    # the sampled path also builds the top-k request: never cheaper than greedy (1 ms/token)
    assert all(by[(k, 0.8)] >= 0.9 for k in range(1, 4))
    assert len(report.points) == len(points)
