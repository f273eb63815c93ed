"""Small profile builders for the model/search tests (fakes live only in tests)."""

from __future__ import annotations

from collections.abc import Sequence

from configspec.config import (
    AcceptanceAtK,
    AlignmentEntry,
    AlignmentProfile,
    DeviceInfo,
    DeviceProfile,
    DrafterOnDevice,
    DraftLatencyPoint,
    Estimate,
    GpuTimePrice,
    NetworkSettings,
    PerTokenPrice,
    Provenance,
    VerificationProfile,
    VerifyLatencyPoint,
)

PROV = Provenance(source="illustrative")


def device(
    name: str = "dev",
    drafters: Sequence[DrafterOnDevice] = (),
    idle_w: float | None = 2.0,
    memory_bytes: int | None = 8 * 2**30,
) -> DeviceProfile:
    return DeviceProfile(
        device=DeviceInfo(name=name, memory_bytes=memory_bytes),
        idle_power_w=None if idle_w is None else Estimate(mean=idle_w),
        drafters=list(drafters) or [drafter()],
        provenance=PROV,
    )


def drafter(
    name: str = "d",
    family: str = "fam",
    per_token_ms: float = 10.0,
    power_w: float | None = 5.0,
    memory_bytes: int = 100,
    quant: str | None = None,
    ci: float = 0.0,
) -> DrafterOnDevice:
    return DrafterOnDevice(
        drafter=name,
        family=family,
        quantization=quant,
        memory_bytes=memory_bytes,
        latency=[
            DraftLatencyPoint(
                k=1,
                context_tokens=0,
                per_token_ms=Estimate(
                    mean=per_token_ms,
                    ci_low=per_token_ms * (1 - ci),
                    ci_high=per_token_ms * (1 + ci),
                ),
            )
        ],
        draft_power_w=None if power_w is None else Estimate(mean=power_w),
    )


def alignment(
    entries: Sequence[AlignmentEntry], target: str = "t", family: str = "fam"
) -> AlignmentProfile:
    return AlignmentProfile(
        target=target, target_family=family, entries=list(entries), provenance=PROV
    )


def alpha_entry(drafter: str = "d", alpha: float = 0.7, half: float = 0.0) -> AlignmentEntry:
    return AlignmentEntry(
        drafter=drafter,
        alpha=Estimate(mean=alpha, ci_low=max(0, alpha - half), ci_high=min(1, alpha + half)),
    )


def by_k_entry(drafter: str, fractions: dict[int, float]) -> AlignmentEntry:
    return AlignmentEntry(
        drafter=drafter,
        by_k=[AcceptanceAtK(k=k, accepted_fraction=Estimate(mean=f)) for k, f in fractions.items()],
    )


def verification(
    target: str = "t",
    family: str = "fam",
    base_ms: float = 50.0,
    per_position_ms: float = 0.0,
    max_positions: int = 33,
    price: GpuTimePrice | PerTokenPrice | None = None,
) -> VerificationProfile:
    return VerificationProfile(
        target=target,
        target_family=family,
        latency=[
            VerifyLatencyPoint(
                positions=p,
                context_tokens=0,
                latency_ms=Estimate(mean=base_ms + per_position_ms * p),
            )
            for p in range(1, max_positions + 1)
        ],
        price=price or GpuTimePrice(price_usd_per_hour=1.0),
        provenance=PROV,
    )


NO_NETWORK = NetworkSettings(rtt_ms=0.0, bytes_per_token=0.0, bytes_per_message=0.0)
