"""Honest losslessness: how often greedy speculative verification differs from target-only
decoding, and at what probability margin (issue 19, item 2).

Teacher-forced, so every position counts once: the reference decodes the prompt's
continuation token by token, then the same sequence is verified in blocks of K+1
positions (what the verifier does when all K drafts are the reference tokens) and each
block row's argmax is compared with the reference's at that position. A mismatch is a
near-tie the two kernels break differently; its margin is the reference's top-1 minus
top-2 probability there. Three ways of running the target, side by side on the F32
target:

* ``llama.cpp``: one-row decoding as ``Llama.generate`` does it (the n = 1 kernel),
  with K+1-row verification blocks -- the target-only decoding users compare against;
* ``verifier``: the verifier's target (every pass >= 2 rows, see
  ``LlamaCppModel._decode_chunk``) for both reference and blocks -- what
  ``configspec run edge --k 0`` is compared against through the same server;

plus the cost of the >= 2-row rule: ms per target-only step with one row vs padded.
Then, free-running through a real verifier: n-gram drafts at K against K = 0 on the same
server, tokens compared exactly.

Writes ``benchmarks/results/bench_lossless.json``.

    PYTHONPATH=src python benchmarks/bench_lossless.py [--prompts 20] [--tokens 200] [--k 4]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
from _results import result_header  # benchmarks/_results.py
from rich.console import Console
from rich.table import Table

from configspec.backends.llamacpp import LlamaCppModel, LlamaCppTarget
from configspec.backends.models import prepare_family
from configspec.backends.ngram import NgramDrafter
from configspec.profiling.prompts import bundled_prompts
from configspec.serving.client import EdgeClient
from configspec.serving.server import ServerThread
from configspec.serving.sessions import ServerLimits, VerifierService
from configspec.store import atomic_write_json


class OneRowTarget(LlamaCppTarget):
    """The target as llama.cpp runs it on its own: one-token blocks use the n = 1 kernel."""

    min_block_rows = 1


def _top2(p: np.ndarray) -> tuple[int, float]:
    i2, i1 = np.argpartition(p, -2)[-2:]
    a, b = float(p[i1]), float(p[i2])
    return int(i1 if a >= b else i2), abs(a - b)


def reference(
    model: LlamaCppModel, prompt: list[int], n: int
) -> tuple[list[int], list[float], list[float]]:
    """Greedy target-only continuation; per-step argmax margin and step time (ms)."""
    assert isinstance(model, LlamaCppTarget)
    seq = list(prompt)
    model.reset()
    margins, step_ms = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        ev = model.evaluate(seq, [])
        step_ms.append((time.perf_counter() - t0) * 1e3)
        assert ev.probs is not None
        tok, margin = _top2(ev.probs[0])
        margins.append(margin)
        seq.append(tok)
    return seq[len(prompt) :], margins, step_ms


def blocks(target: LlamaCppTarget, prompt: list[int], ref: list[int], k: int) -> list[int]:
    """Argmax at every reference position from verification blocks of K+1 rows."""
    target.reset()
    out: list[int] = []
    i = 0
    while i < len(ref):
        drafts = ref[i : i + k]
        ev = target.evaluate(prompt + ref[:i], drafts)
        out.extend(ev.argmax[: len(drafts) + 1])
        target.rollback(len(prompt) + i + len(drafts))  # all drafts accepted
        i += len(drafts) + 1
    return out[: len(ref)]


def compare(ref: list[int], got: list[int], margins: list[float]) -> list[dict[str, Any]]:
    return [
        {"position": j, "reference": a, "block": b, "margin": margins[j]}
        for j, (a, b) in enumerate(zip(ref, got, strict=True))
        if a != b
    ]


def free_running(
    target: LlamaCppTarget, prompts: list[list[int]], n: int, k: int
) -> dict[str, Any]:
    limits = ServerLimits(max_k=max(k, 1), max_context_tokens=target.n_ctx)
    same, first_div = 0, []
    with ServerThread(VerifierService([target], limits)) as srv:
        for prompt in prompts:
            outs = []
            for kk in (k, 0):
                with EdgeClient(srv.url, NgramDrafter(target), k=kk) as c:
                    outs.append(c.generate(prompt, n).tokens)
            if outs[0] == outs[1]:
                same += 1
            else:
                first_div.append(
                    next(j for j, (a, b) in enumerate(zip(*outs, strict=False)) if a != b)
                )
    return {"prompts": len(prompts), "identical": same, "first_divergence": first_div}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=20)
    ap.add_argument("--tokens", type=int, default=200)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--free-running-prompts", type=int, default=4)
    ap.add_argument(
        "--verifier-prompts",
        type=int,
        default=5,
        help="prompts for the verifier-kernel reference (the same kernel as the blocks)",
    )
    ap.add_argument("--cache-dir", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/bench_lossless.json"))
    args = ap.parse_args()
    cache_dir = args.cache_dir or Path(
        os.environ.get("CONFIGSPEC_TEST_MODELS", "/work/.cache/configspec-test-models")
    )
    family = prepare_family(cache_dir)
    console = Console()
    load_before = os.getloadavg()
    n_ctx = 1024
    kw: dict[str, Any] = {"identity": family.target, "n_ctx": n_ctx, "n_threads": args.threads}
    padded = LlamaCppTarget(family.target_path, **kw)
    one_row = OneRowTarget(family.target_path, **kw)
    texts = [p.text for p in bundled_prompts()][: args.prompts]
    prompts = [padded.tokenize(t)[: n_ctx - args.tokens - args.k - 8] for t in texts]
    modes: dict[str, dict[str, Any]] = {}
    for name, model in (("llama.cpp", one_row), ("verifier", padded)):
        mism: list[dict[str, Any]] = []
        step_ms: list[float] = []
        margins_all: list[float] = []
        subset = prompts if name == "llama.cpp" else prompts[: args.verifier_prompts]
        for pi, prompt in enumerate(subset):
            ref, margins, ms = reference(model, prompt, args.tokens)
            step_ms += ms
            margins_all += margins
            got = blocks(padded, prompt, ref, args.k)
            mism += [{"prompt": pi, **m} for m in compare(ref, got, margins)]
            console.print(f"{name}: prompt {pi + 1}/{len(subset)}, {len(mism)} mismatches so far")
            console.file.flush()
        n_pos = len(subset) * args.tokens
        modes[name] = {
            "prompts": len(subset),
            "positions": n_pos,
            "mismatches": len(mism),
            "per_1000": 1000.0 * len(mism) / n_pos,
            "mismatch_margins": [m["margin"] for m in mism],
            "max_mismatch_margin": max((m["margin"] for m in mism), default=None),
            "positions_with_margin_below_1e-3": int(sum(m < 1e-3 for m in margins_all)),
            "target_only_step_ms_median": statistics.median(step_ms),
            "details": mism,
        }
    free = free_running(padded, prompts[: args.free_running_prompts], args.tokens, args.k)
    load_after = os.getloadavg()
    padded.close()
    one_row.close()
    table = Table(
        title=f"greedy K={args.k} blocks vs target-only, {len(prompts)} prompts x "
        f"{args.tokens} tokens (F32 Gemma 3 270M)"
    )
    for col in (
        "target-only reference",
        "prompts",
        "mismatches",
        "per 1,000",
        "largest margin at a mismatch",
        "target-only step ms (median)",
    ):
        table.add_column(col)
    for name, m in modes.items():
        mm = m["max_mismatch_margin"]
        table.add_row(
            name,
            str(m["prompts"]),
            str(m["mismatches"]),
            f"{m['per_1000']:.2f}",
            "-" if mm is None else f"{mm:.2e}",
            f"{m['target_only_step_ms_median']:.1f}",
        )
    console.print(table)
    console.print(
        f"free-running through the verifier, n-gram K={args.k} vs K=0: "
        f"{free['identical']}/{free['prompts']} prompts token-identical over {args.tokens} tokens; "
        f"load average {load_before[0]:.2f} -> {load_after[0]:.2f} (shared host)"
    )
    out = {
        **result_header("bench_lossless", args, cache_dir, load_before, load_after),
        "modes": modes,
        "free_running": free,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, out)


if __name__ == "__main__":
    main()
