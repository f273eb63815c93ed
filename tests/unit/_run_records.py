"""A synthetic run record on the example profiles' device, drafter and target, for the
validate and contention tests (fakes live only in tests)."""

from __future__ import annotations

from configspec.config import RoundTiming, RunConfig, RunRecord
from configspec.serving.client import Generation
from configspec.serving.record import build_run_record

DEVICE, DRAFTER, TARGET = "rpi5-8gb", "gemma-3-270m-it-Q4_0", "gemma-3-27b-it"


def run_record(k: int, rtt_ms: float, round_ms: float, accepted: int, n: int = 20) -> RunRecord:
    """A run of ``n`` identical rounds of ``round_ms`` (ms) accepting ``accepted`` of ``k``
    drafts at ``rtt_ms`` (ms) added RTT, on the example profiles' device, drafter, target."""
    rounds = [
        RoundTiming(
            round=i, k=k, accepted=accepted, bonus=accepted == k, draft_ms=round_ms * 0.3,
            verify_ms=round_ms * 0.3, server_ms=round_ms * 0.3, network_ms=round_ms * 0.4,
            round_ms=round_ms,
        )
        for i in range(n)
    ]  # fmt: skip
    gen = Generation(
        prompt_tokens=[1] * 100, tokens=[5] * (n * (accepted + 1)), text="", rounds=rounds,
        decode_s=n * round_ms / 1e3, prefill_ms=1.0, reconnects=0, stopped_by="max_tokens",
        target_name=TARGET, target_family="gemma3",
    )  # fmt: skip
    config = RunConfig(
        drafter=DRAFTER, target=TARGET, k=k, added_rtt_ms=rtt_ms, device=DEVICE,
        prompt_tokens=100, max_tokens=n * (accepted + 1),
    )  # fmt: skip
    return build_run_record(gen, config, run_id=f"run-k{k}-rtt{rtt_ms:g}")
