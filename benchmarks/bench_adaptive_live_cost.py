"""The adaptive policy's cost per round in a live decode, two revisions side by side (issue 18).

One live run (real target and drafter through the runtime and the delay proxy, ``--k auto``
driven by this checkout's policy) feeds every round to this checkout's policy and to a
*shadow* policy from another source tree (``--old-src``, e.g. an older revision's
``src``): both choose and observe the very same rounds, in alternating order, each timed
by the wall clock and the thread CPU clock. So both see the cold caches a live round
leaves behind (drafting, network, parsing) and the same host load, and their ratio is
fair on a shared host. Prints medians / p95 per policy and writes
``benchmarks/results/bench_adaptive_live_cost.json``.

    PYTHONPATH=src python benchmarks/bench_adaptive_live_cost.py \
        --profiles DIR --old-src /tmp/old/src [--drafter ngram] [--prompts 4]

``--profiles``: device, verification and alignment profiles of this machine (the prior).
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

from configspec.config import KChoice  # noqa: E402
from configspec.loop.runtime import Runtime, RuntimeSettings  # noqa: E402
from configspec.profiling.prompts import bundled_prompts  # noqa: E402
from configspec.search.space import read_profiles  # noqa: E402
from configspec.serving.adaptive import AdaptiveK, prior_from_profiles  # noqa: E402
from configspec.serving.client import EdgeClient  # noqa: E402
from configspec.serving.proxy import DelayProxy, DelaySchedule  # noqa: E402
from configspec.store import ProfileStore, atomic_write_json  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from old_policy import load_old  # noqa: E402


class Shadowed(AdaptiveK):
    """This checkout's policy (drives the run) with another one shadowing every round."""

    def __init__(self, shadow: object, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.shadow = shadow
        self.cost: dict[str, list[tuple[float, float]]] = {"new": [], "old": []}
        self._pending: dict[str, tuple[float, float]] = {}
        self._turn = 0

    def _timed(self, name: str, call: object, kwargs: dict[str, object]) -> object:
        t, c = time.perf_counter(), time.thread_time()
        out = call(**kwargs)  # type: ignore[operator]
        return out, (time.perf_counter() - t, time.thread_time() - c)

    def _both(self, method: str, kwargs: dict[str, object]) -> object:
        calls = {"new": getattr(super(), method), "old": getattr(self.shadow, method)}
        order = ("new", "old") if self._turn % 2 == 0 else ("old", "new")
        results = {}
        for name in order:
            out, dt = self._timed(name, calls[name], kwargs)
            results[name] = out
            if method == "choose":
                self._pending[name] = dt
            else:
                p = self._pending.pop(name, (0.0, 0.0))
                self.cost[name].append((p[0] + dt[0], p[1] + dt[1]))
        return results["new"]

    def choose(self) -> KChoice:
        return self._both("choose", {})  # type: ignore[return-value]

    def observe(self, **kwargs: object) -> None:  # type: ignore[override]
        self._both("observe", kwargs)
        self._turn += 1


def summary(costs: list[tuple[float, float]]) -> dict[str, float]:
    wall = sorted(1e3 * w for w, _ in costs)
    cpu = sorted(1e3 * c for _, c in costs)
    p95 = int(0.95 * (len(wall) - 1))
    return {
        "median_ms": statistics.median(wall),
        "p95_ms": wall[p95],
        "cpu_median_ms": statistics.median(cpu),
        "cpu_p95_ms": cpu[p95],
        "rounds": len(wall),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profiles", type=Path, required=True)
    ap.add_argument("--old-src", type=Path, required=True, help="the other revision's src/")
    ap.add_argument("--drafter", default="ngram")
    ap.add_argument("--target", default="gemma-3-270m-f32")
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--one-way-ms", type=float, default=2.5)
    ap.add_argument("--k-max", type=int, default=8)
    ap.add_argument(
        "--out",
        type=Path,
        default=ROOT / "benchmarks" / "results" / "bench_adaptive_live_cost.json",
    )
    args = ap.parse_args()
    old = load_old(args.old_src)
    profiles = read_profiles(ProfileStore(args.profiles))
    prompts = bundled_prompts(["code"])[: args.prompts]
    settings = RuntimeSettings(
        target=args.target,
        prompts=tuple(prompts[:1]),
        max_tokens=args.max_tokens,
        threads=1,
        device=profiles.devices[0].device.name,
        max_k=max(16, args.k_max),
        link="proxy",
        probe_contention=False,
    )
    load_before = os.getloadavg()
    with Runtime(settings) as runtime:
        upstream = ("127.0.0.1", int(runtime.url.rsplit(":", 1)[1]))
        drafter = runtime.drafter(args.drafter)
        name = drafter.identity.name
        lengths = [len(drafter.tokenize(p.text)) for p in prompts]
        context = round(statistics.fmean(lengths) + args.max_tokens / 2)
        kw = {"drafter": name, "domain": "code", "k_max": args.k_max, "context_tokens": context}
        policy = Shadowed(
            old.AdaptiveK(old.prior_from_profiles(profiles, **kw), k_max=args.k_max),
            prior_from_profiles(profiles, **kw),  # type: ignore[arg-type]
            k_max=args.k_max,
        )
        with DelayProxy(upstream, schedule=DelaySchedule()) as proxy:
            assert proxy.schedule is not None
            proxy.schedule.set_delay_ms(args.one_way_ms)
            client = EdgeClient(proxy.url, drafter, k=0, policy=policy, timeout_s=120.0)
            for p in prompts:
                client.generate(drafter.tokenize(p.text), args.max_tokens)
            client.close()
    load_after = os.getloadavg()
    res = {k: summary(v) for k, v in policy.cost.items()}
    print(f"{'policy':<8} {'median':>8} {'p95':>8} {'CPU med':>8} {'CPU p95':>8}  (ms per round)")
    for k, r in res.items():
        print(f"{k:<8} {r['median_ms']:>8.3f} {r['p95_ms']:>8.3f} {r['cpu_median_ms']:>8.3f} "
              f"{r['cpu_p95_ms']:>8.3f}  over {r['rounds']} rounds")  # fmt: skip
    ratio = res["new"]["median_ms"] / res["old"]["median_ms"]
    print(f"new/old median {ratio:.3f}; load average before "
          f"{' '.join(f'{x:.2f}' for x in load_before)}, after "
          f"{' '.join(f'{x:.2f}' for x in load_after)}")  # fmt: skip
    atomic_write_json(
        args.out,
        {
            "benchmark": "bench_adaptive_live_cost",
            "policies": res,
            "new_over_old_median": ratio,
            "load_average_before": load_before,
            "load_average_after": load_after,
            "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
