"""Profiler vs llama.cpp's own speculative decoding (xllamacpp) on the same pair and prompts.

Runs greedy draft-model speculative decoding in llama.cpp's server (draft length exactly K,
no p_min cut-off) and reads its drafted/accepted counts; profiles the same drafter against
the same target on the same prompts and token budget; prints both accepted fractions and
writes ``benchmarks/results/validate_alignment_llamacpp.json``.

Usage: PYTHONPATH=src python benchmarks/validate_alignment_llamacpp.py [--per-domain 2]
       [--tokens 64] [--k 4] [--drafter gemma-3-270m-q4_0]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from configspec.backends.factory import resolve_identity
from configspec.backends.models import default_cache_dir
from configspec.profiling.alignment import AlignmentSettings, profile_alignment
from configspec.profiling.peer import llamacpp_speculative_counts
from configspec.profiling.prompts import bundled_prompts, select_prompts
from configspec.store import ProfileStore

ROOT = Path(__file__).resolve().parent
MODELS = default_cache_dir()  # $CONFIGSPEC_CACHE_DIR, else the default cache


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-domain", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--target", default="gemma-3-270m-f32")
    ap.add_argument("--drafter", action="append")
    ap.add_argument("--models", type=Path, default=MODELS, help="model cache")
    # 1 thread: on an oversubscribed machine llama.cpp's spinning 2-thread barrier was
    # measured 10x slower per token than a single thread
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--store", type=Path, default=ROOT / "results" / "alignment-store")
    args = ap.parse_args()
    drafters = args.drafter or ["gemma-3-270m-q4_0"]
    prompts = select_prompts(bundled_prompts(), args.per_domain)
    target = resolve_identity(args.target, cache_dir=args.models)
    rows = []
    for spec in drafters:
        drafter = resolve_identity(spec, cache_dir=args.models)
        t0 = time.perf_counter()
        peer = llamacpp_speculative_counts(
            Path(str(target.path)),
            Path(str(drafter.path)),
            prompts,
            k=args.k,
            n_predict=args.tokens,
            n_threads=args.threads,
        )
        peer_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        result = profile_alignment(
            args.target,
            [spec],
            prompts,
            ProfileStore(args.store),
            settings=AlignmentSettings(
                n_tokens=args.tokens, k_max=args.k, n_boot=200, n_threads=args.threads
            ),
            cache_dir=args.models,
            save=False,
        )
        prof_s = time.perf_counter() - t0
        entry = next(e for e in result.profile.entries if e.domain == "all")
        assert entry.by_k is not None
        predicted = entry.by_k[args.k - 1].accepted_fraction
        drafted = sum(p.drafted for p in peer)
        accepted = sum(p.accepted for p in peer)
        measured = accepted / drafted if drafted else float("nan")
        rows.append(
            {
                "drafter": drafter.name,
                "target": target.name,
                "k": args.k,
                "prompts": len(prompts),
                "tokens": args.tokens,
                "llamacpp_drafted": drafted,
                "llamacpp_accepted": accepted,
                "llamacpp_accepted_fraction": measured,
                "profiler_accepted_fraction": predicted.mean,
                "profiler_ci": [predicted.low, predicted.high],
                "abs_diff_pp": 100 * abs(predicted.mean - measured),
                "llamacpp_s": peer_s,
                "profiler_s": prof_s,
                "per_prompt": [p.__dict__ | {"text": p.text[:80]} for p in peer],
            }
        )
    print(
        f"{'drafter':22} {'K':>2} {'llama.cpp accepted':>22} "
        f"{'profiler (95% CI)':>26} {'|diff| pp':>9}"
    )
    for r in rows:
        ci = r["profiler_ci"]
        print(
            f"{r['drafter']:22} {r['k']:>2} "
            f"{r['llamacpp_accepted_fraction']:>8.3f} "
            f"({r['llamacpp_accepted']}/{r['llamacpp_drafted']})"
            f"{'':>4} {r['profiler_accepted_fraction']:>8.3f} ({ci[0]:.3f}-{ci[1]:.3f})"
            f"{r['abs_diff_pp']:>10.1f}"
        )
    out = ROOT / "results" / "validate_alignment_llamacpp.json"
    out.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"wrote {out}", flush=True)


if __name__ == "__main__":
    main()
