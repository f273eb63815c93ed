"""llama.cpp's own speculative decoding as a peer to check the alignment profiler against.

The PyPI package ``xllamacpp`` embeds llama.cpp's server, including draft-model
speculative decoding, and reports how many tokens it drafted and how many the target
accepted. :func:`llamacpp_speculative_counts` runs the same prompts through it (greedy,
fixed draft length K, no draft-probability cut-off) so the accepted fraction the profiler
predicts can be compared with what llama.cpp actually accepts.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from configspec.backends._native import quiet_native_stderr
from configspec.errors import BackendUnavailable, InvalidInput
from configspec.profiling.prompts import Prompt

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PeerCounts:
    """Drafted and accepted token counts llama.cpp reported for one prompt."""

    prompt_id: str
    drafted: int
    accepted: int
    generated: int
    text: str


def llamacpp_speculative_counts(
    target_path: Path,
    draft_path: Path,
    prompts: Sequence[Prompt],
    *,
    k: int,
    n_predict: int,
    n_threads: int = 2,
    n_ctx: int = 1024,
) -> list[PeerCounts]:
    """Greedy speculative decoding of ``prompts`` in llama.cpp's server (via ``xllamacpp``).

    The draft model proposes exactly ``k`` tokens per round (``n_min = n_max = k``,
    ``p_min = 0``), the target verifies at temperature 0. Returns llama.cpp's own
    drafted/accepted counts per prompt (from the response's ``timings``).
    """
    if k < 1:
        raise InvalidInput(f"K={k} is out of range (>= 1)")
    try:
        import xllamacpp as xl
    except ImportError:
        raise BackendUnavailable("xllamacpp is not installed; pip install xllamacpp") from None
    params = xl.CommonParams()
    params.model.path = str(target_path)
    params.n_ctx = n_ctx
    params.n_parallel = 1
    params.cpuparams.n_threads = n_threads
    params.cpuparams_batch.n_threads = n_threads
    params.speculative.types = [xl.common_speculative_type.COMMON_SPECULATIVE_TYPE_DRAFT_SIMPLE]
    draft = params.speculative.draft
    draft.mparams.path = str(draft_path)
    draft.n_max = k
    draft.n_min = k
    draft.p_min = 0.0
    draft.cpuparams.n_threads = n_threads
    draft.cpuparams_batch.n_threads = n_threads
    params.sampling.temp = 0.0
    out: list[PeerCounts] = []
    with quiet_native_stderr():
        server = xl.Server(params)
        try:
            for prompt in prompts:
                resp: Any = server.handle_completions(
                    {
                        "prompt": prompt.text,
                        "n_predict": n_predict,
                        "temperature": 0.0,
                        "cache_prompt": False,
                    }
                )
                if not isinstance(resp, dict) or "timings" not in resp:
                    raise BackendUnavailable(f"xllamacpp returned no timings: {str(resp)[:200]}")
                t = resp["timings"]
                out.append(
                    PeerCounts(
                        prompt_id=prompt.id,
                        drafted=int(t.get("draft_n", 0)),
                        accepted=int(t.get("draft_n_accepted", 0)),
                        generated=int(t.get("predicted_n", 0)),
                        text=str(resp["choices"][0]["text"]),
                    )
                )
                logger.info("llama.cpp %s: %s", prompt.id, out[-1])
        finally:
            del server
    return out
