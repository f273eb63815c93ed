"""Drafting speed through the ConfigSpec llama.cpp backend versus raw ``llama_cpp.Llama``.

Both run in one process on the same GGUF file with the same thread count, interleaved
round by round (so load from other processes hits both alike). Each round drafts
``--tokens`` greedy tokens after the same prompt, reusing the cached prompt prefix, as a
drafter does every speculative round; the raw side is ``Llama.generate(temp=0)``.
Reports median tokens/s with the interquartile range, the ratio of medians (target ≥ 0.95)
and the per-round paired ratio, checks the two produced the same tokens, and writes JSON
to ``benchmarks/results/bench_backend.json``. All figures are measured.

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
from datetime import datetime, timezone
from pathlib import Path

import llama_cpp
import numpy as np
from rich.console import Console
from rich.table import Table

from configspec._version import __version__
from configspec.backends._native import quiet_native_stderr
from configspec.backends.llamacpp import LlamaCppDrafter
from configspec.backends.models import prepare_family

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
    ap.add_argument("--tokens", type=int, default=32, help="tokens drafted per round")
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--cache-dir", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args()
    console = Console()

    if args.model is not None:
        path, identity = args.model, None
    else:
        cache = args.cache_dir or os.environ.get("CONFIGSPEC_TEST_MODELS")
        family = prepare_family(Path(cache) if cache else None)
        identity = family.drafter(args.quant)
        path = family.drafter_path(args.quant)

    n_ctx = 512
    ours = LlamaCppDrafter(path, identity=identity, n_threads=args.threads, n_ctx=n_ctx)
    with quiet_native_stderr():
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

    def run_raw() -> tuple[float, list[int]]:
        start = time.perf_counter()
        toks = list(itertools.islice(raw.generate(context, temp=0.0), args.tokens))
        return time.perf_counter() - start, toks

    def run_ours() -> tuple[float, list[int]]:
        start = time.perf_counter()
        toks = ours.draft(context, args.tokens).tokens
        return time.perf_counter() - start, toks

    run_raw(), run_ours()  # warm-up: prompt evaluated and cached on both sides
    raw_tps, our_tps = [], []
    identical = True
    for r in range(args.rounds):
        order = (run_raw, run_ours) if r % 2 == 0 else (run_ours, run_raw)
        results = {fn: fn() for fn in order}
        (t_raw, tok_raw), (t_our, tok_our) = results[run_raw], results[run_ours]
        identical &= tok_raw == tok_our
        raw_tps.append(args.tokens / t_raw)
        our_tps.append(args.tokens / t_our)
    raw_a, our_a = np.array(raw_tps), np.array(our_tps)
    paired = our_a / raw_a
    ratio = float(np.median(our_a) / np.median(raw_a))

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
    for col in ("path", "median tok/s", "IQR tok/s", "ratio vs raw"):
        table.add_column(col, justify="left" if col == "path" else "right")
    rlo, rmed, rhi = q(raw_a)
    olo, omed, ohi = q(our_a)
    plo, _, phi = q(paired)
    table.add_row("raw llama_cpp.Llama.generate", f"{rmed:.1f}", f"{rlo:.1f}-{rhi:.1f}", "1.000")
    table.add_row(
        "configspec LlamaCppDrafter.draft",
        f"{omed:.1f}",
        f"{olo:.1f}-{ohi:.1f}",
        f"{ratio:.3f} (paired IQR {plo:.3f}-{phi:.3f})",
    )
    console.print(table)
    passed = ratio >= TARGET_RATIO and identical
    console.print(
        f"tokens identical: {identical}; target ratio >= {TARGET_RATIO}: "
        f"{'PASS' if passed else 'FAIL'} ({ratio:.3f})"
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
        "raw_median_tokens_per_s": rmed,
        "backend_median_tokens_per_s": omed,
        "ratio_of_medians": ratio,
        "paired_ratio_iqr": [plo, phi],
        "tokens_identical": identical,
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
