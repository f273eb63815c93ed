"""Side by side: a B = 1 pass on the re-timing path against the live verifier's.

``bench_fleet_model.py`` re-times the curve cells of each N run on an in-process batched
verifier (``fleet_retime.server_path_retimer``: the bench's process, n_ctx sized for the
profile, 16 KV sequences), while the N-client runs use ``configspec serve verifier`` in a
subprocess (n_ctx ``--n-ctx``, 48 sequences). This times, in turns and in one run, the
same B = 1 shapes on three paths:

- ``retimer``: the in-process re-timing verifier (the profile's procedure, random drafts,
  context ``--context``);
- ``live``: the same procedure (``ServerPathBench``) against the live verifier subprocess;
- ``rounds``: real rounds of an n-gram client on the live verifier (bundled prompts, the
  verifier's own ``verify_ms``), split by drafted tokens (0 drafted: a 2-position block).

so any difference between the re-timing path and the live one (process, KV size, thread
placement, HTTP) shows as a ratio measured side by side, not across minutes. Prints a
table and writes JSON to ``benchmarks/results/fleet_b1_paths.json``.

    CONFIGSPEC_CACHE_DIR=~/.cache/configspec python benchmarks/fleet_b1_paths.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_fleet_model import verifier  # noqa: E402
from fleet_retime import server_path_retimer  # noqa: E402

from configspec.backends.factory import open_drafter, open_tokenizer  # noqa: E402
from configspec.profiling.device import build_context  # noqa: E402
from configspec.profiling.prompts import bundled_prompts  # noqa: E402
from configspec.profiling.server_path import ServerPathBench  # noqa: E402
from configspec.serving.client import EdgeClient  # noqa: E402
from configspec.serving.protocol import VerifyResponse  # noqa: E402
from configspec.store import atomic_write_json  # noqa: E402


class _Bench(ServerPathBench):
    """The profile's procedure, keeping the last reply's ``verify_ms`` (the forward pass
    alone, what a live round reports) next to its ``pass_ms`` (with decision and
    rollback)."""

    last_verify_ms = float("nan")

    def _verify_into(self, replies: list[VerifyResponse | None], i: int, body: str) -> None:
        super()._verify_into(replies, i, body)
        reply = replies[i]
        assert reply is not None
        self.last_verify_ms = reply.verify_ms


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", default="gemma-3-270m-f32")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n-ctx", type=int, default=1024)
    ap.add_argument("--context", type=int, default=160)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--turns", type=int, default=25)
    ap.add_argument(
        "--round-tokens",
        type=int,
        default=12,
        help="tokens per real generation (a few rounds) between the samples",
    )
    ap.add_argument(
        "--gap-ms",
        type=float,
        default=35.0,
        help="live_gap: the pause before each sample (a live round's think time)",
    )
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/fleet_b1_paths.json")
    args = ap.parse_args()
    args.policy, args.max_batch, args.gather, args.max_gather_wait_ms = "batched", 16, "sync", 0.0
    args.server_arg = []
    load0 = [round(x, 2) for x in os.getloadavg()]
    tok = open_tokenizer(args.target)
    prompts = [tok.tokenize(p.text) for p in bundled_prompts()]
    shapes = (2, args.k + 1)
    paths = ("retimer", "live", "live_gap", "rounds")
    kept = (*paths, "live_verify", "live_gap_verify")
    ms: dict[str, dict[int, list[float]]] = {path: {p: [] for p in shapes} for path in kept}
    with (
        server_path_retimer(args.target, levels=[1, 2, 4, 8, 16], k=args.k,
                            context_tokens=args.context, threads=args.threads) as open_sampler,
        verifier(args, slots=1) as port,
        open_sampler([1]) as sample,
    ):  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        live = _Bench(url, vocab_size=int(tok.identity.vocab_size or 0))
        live.open_sessions(build_context(tok, args.context), 1, 0.0)
        drafter = open_drafter("ngram", tokenizer=tok)
        client = EdgeClient(url, drafter, k=args.k, timeout_s=300)

        def one(path: str, p: int) -> None:
            if path == "retimer":
                ms[path][p].append(sample(1, p))
            else:
                if path == "live_gap":  # the think time a live round leaves between passes
                    time.sleep(args.gap_ms / 1e3)
                ms[path][p].append(live.sample(p, None, sessions=1).pass_ms)
                ms[path + "_verify"][p].append(live.last_verify_ms)

        for p in shapes:  # warm-up, discarded
            sample(1, p)
            live.sample(p, None, sessions=1)
        t0 = time.time()
        for turn in range(args.turns):
            # a short generation of real rounds between the samples, order alternating
            gen_first = turn % 2 == 0
            order = list(paths[:3]) if turn % 2 == 0 else list(paths[2::-1])
            steps: list[str] = (["rounds"] if gen_first else []) + order
            steps += [] if gen_first else ["rounds"]
            for path in steps:
                if path == "rounds":
                    gen = client.generate(prompts[turn % len(prompts)], args.round_tokens)
                    for r in gen.rounds:
                        width = max(2, r.k + 1)
                        if width in ms["rounds"]:
                            ms["rounds"][width].append(r.verify_ms)
                else:
                    for p in shapes:
                        one(path, p)
        wall = time.time() - t0
        client.close()
        live.close()
    load1 = [round(x, 2) for x in os.getloadavg()]
    table = {path: {p: (statistics.median(v) if v else float("nan"), len(v))
                    for p, v in cells.items()} for path, cells in ms.items()}  # fmt: skip
    print(
        f"B = 1 passes, context {args.context} (rounds: bundled prompts), {wall:.0f} s, "
        f"load {load0} -> {load1} (shared host: compare ratios)"
    )
    for path, cells in table.items():
        row = "  ".join(f"P={p}: {m:6.1f} ms (n={n})" for p, (m, n) in cells.items())
        print(f"  {path:<8} {row}")
    for p in shapes:
        r, lv, gp, rd, lvv, gpv = (table[x][p][0] for x in kept)
        print(
            f"  P={p}: live/retimer {lv / r:.3f}, live_gap/live {gp / lv:.3f}; forward pass "
            f"alone (verify_ms): rounds/live {rd / lvv:.3f}, rounds/live_gap {rd / gpv:.3f}"
        )
    atomic_write_json(args.out, {
        "benchmark": "fleet_b1_paths", "settings": {k: str(v) for k, v in vars(args).items()},
        "median_ms": {path: {str(p): m for p, (m, _) in c.items()} for path, c in table.items()},
        "samples_ms": {path: {str(p): v for p, v in c.items()} for path, c in ms.items()},
        "wall_s": wall, "load_avg": [load0, load1],
        "note": "shared host: compare the ratios measured side by side",
    })  # fmt: skip
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
