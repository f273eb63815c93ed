"""Remote-versus-local alignment: the same prompts profiled against the F32 Gemma 3 270M
target loaded locally (llama.cpp) and served by ``python -m llama_cpp.server``.

Starts the server on a free loopback port, runs ``profile_alignment`` both ways with the
same drafters, prompts and settings (fresh caches), and prints per drafter × T the local
α, the remote α, their difference in percentage points, the local 95% bootstrap CI, the
remote lower bound of α (the target's mass outside its top-k at its worst), and the
seconds per prompt spent producing the target's references each way. Writes JSON to
``benchmarks/results/bench_remote_alignment.json``.

Timing is wall time on whatever else the machine runs: the load average is recorded.

    PYTHONPATH=src python benchmarks/bench_remote_alignment.py --per-domain 2 --tokens 16
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from configspec.backends.models import prepare_family
from configspec.profiling.alignment import AlignmentSettings, profile_alignment
from configspec.profiling.prompts import bundled_prompts, select_prompts
from configspec.store import ProfileStore


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(model: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host"]
    cmd += ["127.0.0.1", "--port", str(port), "--n_ctx", "512", "--n_threads", "2"]
    cmd += ["--logits_all", "true", "--verbose", "false"]
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"llama_cpp.server did not start; see {log}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-domain", type=int, default=1, help="Bundled prompts per domain.")
    ap.add_argument("--tokens", type=int, default=12, help="Reference tokens per prompt.")
    ap.add_argument("-T", "--temperature", type=float, action="append", default=None)
    ap.add_argument("-d", "--drafter", action="append", default=None, help="F16, ngram, ...")
    ap.add_argument("--top-k", type=int, default=20, help="Log-probs asked per position.")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args()
    console = Console()
    cache = Path(os.environ.get("CONFIGSPEC_TEST_MODELS", "/work/.cache/configspec-test-models"))
    fam = prepare_family(cache)
    target = str(fam.target_path)
    drafters = [
        "ngram" if d == "ngram" else str(fam.drafter_path(d))
        for d in args.drafter or ["F16", "ngram"]
    ]
    temps = tuple(args.temperature or [0.0, 0.8])
    settings = AlignmentSettings(
        n_tokens=args.tokens, temperatures=temps, k_max=4, top_k=args.top_k, n_boot=1000
    )
    prompts = select_prompts(bundled_prompts(None), args.per_domain)
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        local = profile_alignment(
            target, drafters, prompts, ProfileStore(root / "l"), settings=settings
        )
        port = _free_port()
        proc = _start(fam.target_path, port, root / "server.log")
        url = f"http://127.0.0.1:{port}"
        try:
            remote = profile_alignment(url, drafters, prompts, ProfileStore(root / "r"),
                                       settings=settings, tokenizer=target)  # fmt: skip
        finally:
            _stop(proc)
    table = Table(
        title=f"alignment, local GGUF vs llama_cpp.server ({len(prompts)} prompts × "
        f"≤{args.tokens} tokens)"
    )
    for col in ("drafter", "T", "local α", "local 95% CI", "remote α", "diff pp", "remote α low"):
        table.add_column(col, justify="right" if col != "drafter" else "left")
    rows = []
    remote_alpha = {
        (e.drafter, e.temperature): e.alpha for e in remote.profile.entries if e.domain == "all"
    }
    for e in sorted(local.profile.entries, key=lambda e: (e.temperature, e.drafter)):
        if e.domain != "all" or e.alpha is None:
            continue
        r = remote_alpha[(e.drafter, e.temperature)]
        assert r is not None
        lo = remote.alpha_bounds.get((e.drafter, "all", e.temperature), (r.mean, r.mean))[0]
        diff = (r.mean - e.alpha.mean) * 100
        rows.append({"drafter": e.drafter, "temperature": e.temperature,
                     "local_alpha": e.alpha.mean,
                     "local_ci": [e.alpha.low, e.alpha.high], "remote_alpha": r.mean,
                     "diff_pp": diff, "remote_alpha_low": lo})  # fmt: skip
        table.add_row(e.drafter, f"{e.temperature:g}", f"{e.alpha.mean:.4f}",
                      f"{e.alpha.low:.3f}-{e.alpha.high:.3f}", f"{r.mean:.4f}", f"{diff:+.2f}",
                      f"{lo:.4f}")  # fmt: skip
    console.print(table)
    n_refs = len(prompts) * len(temps)
    timing = {
        "local_reference_s_per_prompt": local.reference_s / n_refs,
        "remote_reference_s_per_prompt": remote.reference_s / max(remote.n_references_computed, 1),
        "local_drafters_s": local.drafter_s,
        "remote_drafters_s": remote.drafter_s,
    }
    console.print(
        "target reference seconds per prompt and temperature: local "
        f"{timing['local_reference_s_per_prompt']:.2f} s, remote "
        f"{timing['remote_reference_s_per_prompt']:.2f} s; load average {load[0]:.2f} "
        f"(shared host, {os.cpu_count()} CPUs)",
        highlight=False,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / "bench_remote_alignment.json"
    out.write_text(json.dumps({
        "when": datetime.now(timezone.utc).isoformat(), "load_average": load,
        "prompts": len(prompts), "tokens": args.tokens, "top_k": args.top_k,
        "rows": rows, "timing": timing,
    }, indent=2))  # fmt: skip
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
