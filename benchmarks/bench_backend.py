"""Drafting speed through the ConfigSpec llama.cpp backend versus raw ``llama_cpp.Llama``.

Both run in one process on the same GGUF file with the same thread count, interleaved
round by round (so load from other processes hits both alike). Each round drafts
``--tokens`` greedy tokens after the same prompt, reusing the cached prompt prefix, as a
drafter does every speculative round; the raw side is ``Llama.generate(temp=0)``.
Reports median tokens/s with the interquartile range, CPU ms per token (process time, the
steadier figure on a shared machine), and the median of the per-round paired ratio
backend/raw (target ≥ 0.95); checks the two produced the same tokens; warns when the
load average exceeds the CPU count; writes JSON to ``benchmarks/results/bench_backend.json``.
All figures are measured.

    PYTHONPATH=src python benchmarks/bench_backend.py [--quant Q4_K_M] [--threads 2]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import llama_cpp
import numpy as np
from rich.console import Console
from rich.table import Table

from configspec._version import __version__
from configspec.backends._native import model_params, quiet_native_stderr
from configspec.backends.llamacpp import LlamaCppDrafter
from configspec.backends.models import prepare_family
from configspec.backends.ngram import NgramDrafter

PROMPT = (
    "Speculative decoding lets a small draft model propose several tokens that a larger "
    "target model then verifies in a single forward pass. In this report we explain"
)
TARGET_RATIO = 0.95


def _git_rev() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quant", default="Q4_K_M", help="drafter variant of the family")
    ap.add_argument("--model", type=Path, help="any GGUF instead of the embedded family")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=16, help="tokens drafted per round")
    ap.add_argument("--rounds", type=int, default=24)
    ap.add_argument("--cache-dir", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args()
    console = Console()

    if args.model is not None:
        path, identity = args.model, None
    else:
        family = prepare_family(args.cache_dir)  # None: $CONFIGSPEC_CACHE_DIR or the default
        identity = family.drafter(args.quant)
        path = family.drafter_path(args.quant)

    n_ctx = 512
    ours = LlamaCppDrafter(path, identity=identity, n_threads=args.threads, n_ctx=n_ctx)
    with quiet_native_stderr(), model_params():  # same extra-buffer policy as the backend
        raw = llama_cpp.Llama(
            str(path),
            n_ctx=n_ctx,
            n_batch=512,
            n_ubatch=512,
            n_threads=args.threads,
            n_threads_batch=args.threads,
            swa_full=True,
            verbose=False,
        )
    context = ours.tokenize(PROMPT)

    def timed(fn: Callable[[], list[int]]) -> tuple[float, float, list[int]]:
        wall, cpu = time.perf_counter(), time.process_time()
        toks = fn()
        return time.perf_counter() - wall, time.process_time() - cpu, toks

    def run_raw() -> list[int]:
        return list(itertools.islice(raw.generate(context, temp=0.0), args.tokens))

    def run_ours() -> list[int]:
        return ours.draft(context, args.tokens).tokens

    load_before = os.getloadavg()[0]
    timed(run_raw), timed(run_ours)  # warm-up: prompt evaluated and cached on both sides
    raw_tps, our_tps, raw_cpu, our_cpu = [], [], [], []
    identical = True
    for r in range(args.rounds):
        if r % 2 == 0:
            w_raw, c_raw, tok_raw = timed(run_raw)
            w_our, c_our, tok_our = timed(run_ours)
        else:
            w_our, c_our, tok_our = timed(run_ours)
            w_raw, c_raw, tok_raw = timed(run_raw)
        identical &= tok_raw == tok_our
        raw_tps.append(args.tokens / w_raw)
        our_tps.append(args.tokens / w_our)
        raw_cpu.append(1e3 * c_raw / args.tokens)
        our_cpu.append(1e3 * c_our / args.tokens)
    load_after = os.getloadavg()[0]
    raw_a, our_a = np.array(raw_tps), np.array(our_tps)
    paired = our_a / raw_a
    ratio = float(np.median(paired))

    def q(a: np.ndarray) -> tuple[float, float, float]:
        lo, med, hi = np.percentile(a, [25, 50, 75])
        return float(lo), float(med), float(hi)

    table = Table(
        title=(
            f"drafting speed, {path.name}, {args.threads} threads, {args.tokens} tokens x "
            f"{args.rounds} rounds (measured)"
        ),
        title_justify="left",
    )
    for col in ("path", "median tok/s", "IQR tok/s", "CPU ms/token", "ratio vs raw"):
        table.add_column(col, justify="left" if col == "path" else "right")
    rlo, rmed, rhi = q(raw_a)
    olo, omed, ohi = q(our_a)
    plo, _, phi = q(paired)
    raw_cpu_ms, our_cpu_ms = float(np.median(raw_cpu)), float(np.median(our_cpu))
    table.add_row(
        "raw llama_cpp.Llama.generate",
        f"{rmed:.1f}",
        f"{rlo:.1f}-{rhi:.1f}",
        f"{raw_cpu_ms:.2f}",
        "1.000",
    )
    table.add_row(
        "configspec LlamaCppDrafter.draft",
        f"{omed:.1f}",
        f"{olo:.1f}-{ohi:.1f}",
        f"{our_cpu_ms:.2f}",
        f"{ratio:.3f} (IQR {plo:.3f}-{phi:.3f})",
    )
    console.print(table)
    cores = os.cpu_count() or 1
    if max(load_before, load_after) > cores:
        console.print(
            f"[yellow]warning:[/] load average {load_before:.1f}→{load_after:.1f} on {cores} "
            "CPUs: other processes compete, wall-clock figures are noisy (the paired ratio "
            "and CPU ms/token are the steadier comparison)"
        )
    passed = ratio >= TARGET_RATIO and identical
    console.print(
        f"tokens identical: {identical}; target ratio >= {TARGET_RATIO}: "
        f"{'PASS' if passed else 'FAIL'} ({ratio:.3f})"
    )

    # the model-free drafter on the same tokens: cost per draft call (no model at all)
    ngram = NgramDrafter(ours, min_n=1, max_n=3)
    long_context = (context * (400 // len(context) + 1))[:400]
    ngram_us = []
    for _ in range(200):
        start = time.perf_counter()
        ngram.draft(long_context, 8)
        ngram_us.append(1e6 * (time.perf_counter() - start))
    ngram_med_us = float(np.median(ngram_us))
    console.print(
        f"ngram[1-3] drafter, 400-token context, K=8: median {ngram_med_us:.0f} µs per draft "
        "call (measured)"
    )

    record = {
        "benchmark": "bench_backend",
        "provenance": "measured",
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "tool_version": __version__,
        "git_revision": _git_rev(),
        "llama_cpp_python_version": llama_cpp.__version__,
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count()},
        "model": {
            "path": str(path),
            "sha256": ours.identity.file_sha256,
            "quantization": ours.identity.quantization,
        },
        "settings": {"threads": args.threads, "tokens": args.tokens, "rounds": args.rounds},
        "raw_tokens_per_s": raw_tps,
        "backend_tokens_per_s": our_tps,
        "raw_cpu_ms_per_token": raw_cpu,
        "backend_cpu_ms_per_token": our_cpu,
        "raw_median_tokens_per_s": rmed,
        "backend_median_tokens_per_s": omed,
        "ratio_median_paired": ratio,
        "ratio_paired_iqr": [plo, phi],
        "ratio_of_medians": float(np.median(our_a) / np.median(raw_a)),
        "load_average_1min": [load_before, load_after],
        "tokens_identical": identical,
        "ngram_draft_us_median": ngram_med_us,
        "target_ratio": TARGET_RATIO,
        "pass": passed,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / "bench_backend.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    console.print(f"wrote {out}")
    ours.close()
    with quiet_native_stderr():
        raw.close()
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
