"""Write the ILLUSTRATIVE example profile set in ``examples/profiles/``.

Every figure here is made up to look plausible: none is a measurement. Every profile's
provenance and every Estimate is labelled ``illustrative`` so that any number derived from
them says so. Re-run after a schema change:

    PYTHONPATH=src python examples/make_example_profiles.py
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

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
    MeterInfo,
    NetworkSettings,
    PerTokenPrice,
    Provenance,
    VerificationProfile,
    VerifyLatencyPoint,
)
from configspec.store import ProfileStore

OUT = Path(__file__).resolve().parent / "profiles"
WHEN = datetime(2026, 1, 1, tzinfo=timezone.utc)
NOTE = "ILLUSTRATIVE example data shipped with ConfigSpec: plausible values, not measurements."


def est(mean: float, rel: float = 0.05, n: int = 0) -> Estimate:
    return Estimate(
        mean=round(mean, 4),
        ci_low=round(mean * (1 - rel), 4),
        ci_high=round(mean * (1 + rel), 4),
        n=n,
        source="illustrative",
    )


def prob(mean: float, half: float = 0.03) -> Estimate:
    return Estimate(
        mean=round(mean, 4),
        ci_low=round(max(0.0, mean - half), 4),
        ci_high=round(min(1.0, mean + half), 4),
        source="illustrative",
    )


def prov() -> Provenance:
    return Provenance(source="illustrative", created_at=WHEN, notes=NOTE)


def drafter(name: str, family: str, quant: str, mem_mb: float, ms: float, power_w: float | None):
    # Per-token latency grows mildly with context; K barely matters for sequential drafting.
    points = [
        DraftLatencyPoint(
            k=k, context_tokens=ctx, per_token_ms=est(ms * (1 + ctx / 8192) * (1 + 0.004 * k))
        )
        for k in (1, 4, 8, 16)
        for ctx in (0, 512, 2048)
    ]
    return DrafterOnDevice(
        drafter=f"{name}-{quant}",
        family=family,
        quantization=quant,
        memory_bytes=int(mem_mb * 2**20),
        latency=points,
        draft_power_w=None if power_w is None else est(power_w, 0.04),
    )


def devices() -> list[DeviceProfile]:
    pi = DeviceProfile(
        device=DeviceInfo(
            name="rpi5-8gb",
            description="Raspberry Pi 5 class board, 4x Cortex-A76, CPU decoding (illustrative)",
            memory_bytes=8 * 2**30,
            threads=4,
        ),
        meter=MeterInfo(name="illustrative", source="illustrative"),
        idle_power_w=est(2.7, 0.05),
        drafters=[
            drafter("gemma-3-270m-it", "gemma3", "Q4_0", 241, 21.0, 6.4),
            drafter("gemma-3-270m-it", "gemma3", "Q4_K_M", 253, 24.0, 6.6),
            drafter("gemma-3-270m-it", "gemma3", "Q8_0", 292, 29.0, 6.9),
            drafter("gemma-3-270m-it", "gemma3", "F16", 543, 47.0, 7.3),
            drafter("qwen2.5-0.5b-instruct", "qwen2.5", "Q4_K_M", 398, 41.0, 7.0),
        ],
        provenance=prov(),
    )
    jetson = DeviceProfile(
        device=DeviceInfo(
            name="jetson-orin-nano",
            description="Jetson Orin Nano class module, GPU offload (illustrative)",
            memory_bytes=8 * 2**30,
        ),
        meter=MeterInfo(name="illustrative", source="illustrative"),
        idle_power_w=est(4.8, 0.05),
        drafters=[
            drafter("gemma-3-270m-it", "gemma3", "Q4_K_M", 253, 6.5, 11.5),
            drafter("gemma-3-270m-it", "gemma3", "Q8_0", 292, 7.2, 12.0),
            drafter("gemma-3-270m-it", "gemma3", "F16", 543, 9.5, 13.1),
            drafter("qwen2.5-0.5b-instruct", "qwen2.5", "Q4_K_M", 398, 9.0, 12.4),
            drafter("qwen2.5-1.5b-instruct", "qwen2.5", "Q4_K_M", 986, 19.0, 14.8),
        ],
        provenance=prov(),
    )
    return [pi, jetson]


def per_position(first: float, decay: float, n: int = 16) -> list[Estimate]:
    return [prob(first * decay**i) for i in range(n)]


def alignments() -> list[AlignmentProfile]:
    gemma = AlignmentProfile(
        target="gemma-3-27b-it",
        target_family="gemma3",
        entries=[
            AlignmentEntry(drafter="gemma-3-270m-it-Q4_0", per_position=per_position(0.70, 0.985)),
            AlignmentEntry(
                drafter="gemma-3-270m-it-Q4_K_M", per_position=per_position(0.72, 0.985)
            ),
            AlignmentEntry(drafter="gemma-3-270m-it-Q8_0", per_position=per_position(0.735, 0.985)),
            AlignmentEntry(drafter="gemma-3-270m-it-F16", per_position=per_position(0.74, 0.985)),
        ],
        provenance=prov(),
    )
    qwen = AlignmentProfile(
        target="qwen2.5-7b-instruct",
        target_family="qwen2.5",
        entries=[
            # Acceptance measured per model (not per file): matched by the id without quant.
            AlignmentEntry(drafter="qwen2.5-0.5b-instruct", alpha=prob(0.68, 0.02)),
            AlignmentEntry(
                drafter="qwen2.5-1.5b-instruct",
                alpha=prob(0.76, 0.02),
                by_k=[
                    AcceptanceAtK(k=k, accepted_fraction=prob(0.79 - 0.012 * k, 0.03))
                    for k in range(1, 9)
                ],
            ),
        ],
        provenance=prov(),
    )
    return [gemma, qwen]


def verifications() -> list[VerificationProfile]:
    def points(
        base_ms: float,
        per_pos_ms: float,
        batches: tuple[int, ...] = (1,),
        per_session_ms: float = 0,
    ) -> list[VerifyLatencyPoint]:
        # A batched pass: the weight-bound base once, a little per session, then work
        # proportional to every position of every session in the batch.
        return [
            VerifyLatencyPoint(
                positions=p,
                context_tokens=ctx,
                batch=b,
                latency_ms=est(
                    base_ms * (1 + ctx / 16384) + per_session_ms * (b - 1) + per_pos_ms * b * p
                ),
            )
            for b in batches
            for p in range(1, 18)
            for ctx in (512, 2048)
        ]

    return [
        VerificationProfile(
            target="gemma-3-27b-it",
            target_family="gemma3",
            endpoint="https://verifier.example.invalid",
            hardware="1x NVIDIA L4 24GB (illustrative)",
            latency=points(38.0, 0.9, batches=(1, 2, 4, 8, 16, 32), per_session_ms=1.5),
            price=GpuTimePrice(price_usd_per_hour=0.80, overhead_ms_per_round=2.0),
            provenance=prov(),
        ),
        VerificationProfile(
            target="qwen2.5-7b-instruct",
            target_family="qwen2.5",
            endpoint="https://api.example.invalid/v1",
            hardware="hosted API (illustrative)",
            latency=points(22.0, 0.6),
            price=PerTokenPrice(price_usd_per_million_tokens=0.30, billed="positions"),
            provenance=prov(),
        ),
    ]


def main() -> None:
    store = ProfileStore(OUT)
    for profile in [*devices(), *alignments(), *verifications()]:
        store.save(profile)
    store.save_network(
        NetworkSettings(
            rtt_ms=40.0,
            uplink_mbps=20.0,
            downlink_mbps=50.0,
            bytes_per_token=8.0,
            bytes_per_message=400.0,
            radio_energy_j_per_byte=5e-7,
            source="illustrative",
        )
    )


if __name__ == "__main__":
    main()
