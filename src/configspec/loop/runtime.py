"""Run configurations through the real runtime, for ``validate``, ``quickstart`` and benchmarks.

:class:`Runtime` starts the verifier as a subprocess (``configspec serve verifier``, the
very command a user deploys), injects the RTT with kernel netem where the machine offers
it and the TCP delay proxy otherwise (:mod:`configspec.serving.netem`), and drives the real
:class:`~configspec.serving.client.EdgeClient` with real drafters. Each configuration is run
over the same prompt set (one session per prompt) and stored as one
:class:`~configspec.config.RunRecord` whose rounds are those of every prompt in turn.

:meth:`Runtime.calibrate_overhead` measures the runtime's fixed per-round cost — the part
of a round that is neither drafting, verification nor the injected delay (HTTP framing,
JSON, session bookkeeping, the proxy hop, loopback) — with K=0 rounds (no drafting, one
position verified), so it becomes an explicit, measured model input
(:attr:`~configspec.config.NetworkSettings.round_overhead_ms`) instead of a fudge factor.
"""

from __future__ import annotations

import logging
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType

import httpx
import numpy as np

from configspec.backends.base import Drafter, Tokenizing
from configspec.backends.factory import LlamaSettings, open_drafter, open_tokenizer
from configspec.backends.specs import is_ngram
from configspec.config import ContentionProbe, Estimate, RoundTiming, RunRecord
from configspec.errors import BackendUnavailable, InvalidInput
from configspec.profiling.prompts import Prompt
from configspec.progress import NO_PROGRESS, ProgressEvent, ProgressFn
from configspec.records import K_LIMIT
from configspec.serving.client import EdgeClient, Generation
from configspec.serving.netem import LINK_KINDS, open_link
from configspec.serving.record import build_run_record, model_hashes, run_config
from configspec.serving.server import free_port
from configspec.stats import bootstrap_median

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunPlan:
    """One configuration to execute: drafter spec, K, the RTT injected by the link (ms),
    and the sampling temperature (0 = greedy) with its seed (prompt i decodes with seed
    ``seed + i``, so a run is reproducible and its prompts are independent draws)."""

    drafter: str
    k: int
    added_rtt_ms: float = 0.0
    temperature: float = 0.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.k <= K_LIMIT:
            raise InvalidInput(f"K={self.k} is out of range (0..{K_LIMIT})")
        if not (np.isfinite(self.temperature) and self.temperature >= 0):
            raise InvalidInput(f"temperature {self.temperature} is out of range (>= 0)")
        if not (np.isfinite(self.added_rtt_ms) and 0 <= self.added_rtt_ms <= 20_000):
            raise InvalidInput(f"added RTT {self.added_rtt_ms} ms is out of range (0..20000)")


@dataclass(frozen=True)
class RuntimeSettings:
    """How the local runtime is set up.

    ``target`` and drafter specs are registered model names or GGUF paths; ``threads``
    applies to the verifier and to each drafter (they never run at the same time: a round
    drafts, then waits for verification); ``max_tokens`` is generated per prompt.
    """

    target: str
    prompts: tuple[Prompt, ...]
    max_tokens: int = 48
    threads: int = 2
    n_ctx: int = 1024
    max_k: int = 16
    device: str | None = None
    cache_dir: Path | None = None
    start_timeout_s: float = 180.0
    warmup_rounds: int = 2
    link: str = "auto"
    """How the RTT is injected: ``auto`` (kernel netem where available, else the delay
    proxy), ``netem`` or ``proxy`` (see :mod:`configspec.serving.netem`)."""
    draft_top_k: int = 64
    """Ids per draft distribution the client sends when sampling."""
    probe_contention: bool = True
    """Time the drafter and the verifier right before and right after each run (see
    :meth:`Runtime.probe`; the two bracket the load the run saw),
    so ``validate`` can scale the profiled latencies to the host load the run saw."""

    def __post_init__(self) -> None:
        if not self.prompts:
            raise InvalidInput("no prompts to run; give at least one")
        if self.max_tokens < 2:
            raise InvalidInput(f"max_tokens={self.max_tokens} is out of range (>= 2)")
        if self.link not in LINK_KINDS:
            raise InvalidInput(f"link {self.link!r} is not one of {', '.join(LINK_KINDS)}")


class VerifierProcess:
    """``configspec serve verifier`` in a subprocess on a free loopback port.

    The process is started by :meth:`start` and always terminated by :meth:`stop` (only
    this process, by its own handle).
    """

    def __init__(self, settings: RuntimeSettings, port: int | None = None) -> None:
        self.settings = settings
        self.port = port or free_port()
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_path: Path | None = None

    @property
    def url(self) -> str:
        """Base URL of the verifier."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> VerifierProcess:
        """Start the server and wait until ``/health`` answers (or raise)."""
        s = self.settings
        cmd = [
            sys.executable, "-m", "configspec", "serve", "verifier",
            "--target", s.target, "--host", "127.0.0.1", "--port", str(self.port),
            "--threads", str(s.threads), "--n-ctx", str(s.n_ctx), "--max-k", str(s.max_k),
        ]  # fmt: skip
        if s.cache_dir is not None:
            cmd += ["--cache-dir", str(s.cache_dir)]
        env = dict(os.environ)
        env.pop("CONFIGSPEC_API_KEY", None)  # a private loopback verifier: no key
        src = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH", "")) if p)
        import tempfile

        fd, name = tempfile.mkstemp(prefix="configspec-verifier-", suffix=".log")
        self._log_path = Path(name)
        with os.fdopen(fd, "wb") as log_file:
            self._proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + s.start_timeout_s
        while True:
            if self._proc.poll() is not None:
                tail = self._log_tail()
                self.stop()
                raise BackendUnavailable(f"the verifier exited at start: {tail}")
            try:
                if httpx.get(self.url + "/health", timeout=1.0, trust_env=False).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise BackendUnavailable(
                    f"the verifier did not answer on {self.url} within {s.start_timeout_s:g} s"
                )
            time.sleep(0.2)

    def _log_tail(self) -> str:
        if self._log_path is None or not self._log_path.exists():
            return "no output"
        lines = self._log_path.read_text(errors="replace").strip().splitlines()
        return lines[-1] if lines else "no output"

    def stop(self) -> None:
        """Terminate the server (SIGTERM, then SIGKILL after 10 s) and remove its log."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
        self._proc = None
        if self._log_path is not None:
            self._log_path.unlink(missing_ok=True)
            self._log_path = None


def merge_generations(gens: Sequence[Generation]) -> Generation:
    """One :class:`Generation` holding the rounds of several prompts in turn (rounds are
    renumbered; decode time, prefill times and reconnects add up)."""
    if not gens:
        raise InvalidInput("no generations to merge")
    rounds: list[RoundTiming] = []
    for g in gens:
        for r in g.rounds:
            rounds.append(r.model_copy(update={"round": len(rounds)}))
    stopped = {g.stopped_by for g in gens}
    return Generation(
        prompt_tokens=gens[0].prompt_tokens,
        tokens=[t for g in gens for t in g.tokens],
        text="".join(g.text for g in gens),
        rounds=rounds,
        decode_s=sum(g.decode_s for g in gens),
        prefill_ms=sum(g.prefill_ms for g in gens),
        draft_prefill_ms=sum(g.draft_prefill_ms for g in gens),
        reconnects=sum(g.reconnects for g in gens),
        stopped_by="max_tokens" if "max_tokens" in stopped else gens[-1].stopped_by,
        target_name=gens[0].target_name,
        target_family=gens[0].target_family,
        sessions=[s for g in gens for s in g.sessions],
    )


@dataclass
class Runtime:
    """The real runtime on this machine: verifier subprocess, delay proxy, edge client."""

    settings: RuntimeSettings
    _server: VerifierProcess | None = None
    _drafters: dict[str, Drafter] = field(default_factory=dict)
    _tokenizer: Tokenizing | None = None

    def __enter__(self) -> Runtime:
        self._server = VerifierProcess(self.settings).start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop the verifier and free the drafters."""
        if self._server is not None:
            self._server.stop()
            self._server = None
        for d in self._drafters.values():
            close = getattr(d, "close", None)
            if callable(close):
                close()
        self._drafters.clear()

    @property
    def url(self) -> str:
        """The verifier's URL (direct, without the proxy)."""
        if self._server is None:
            raise RuntimeError("runtime not started")
        return self._server.url

    def drafter(self, spec: str) -> Drafter:
        """The drafter for ``spec``, loaded once and kept for the runtime's lifetime."""
        if spec not in self._drafters:
            s = self.settings
            if self._tokenizer is None and is_ngram(spec):
                self._tokenizer = open_tokenizer(s.target, cache_dir=s.cache_dir)
            self._drafters[spec] = open_drafter(
                spec,
                tokenizer=self._tokenizer,
                cache_dir=s.cache_dir,
                settings=LlamaSettings(n_threads=s.threads, n_ctx=s.n_ctx),
            )
        return self._drafters[spec]

    def _generate(
        self, plan: RunPlan, drafter: Drafter, progress: ProgressFn, label: str
    ) -> tuple[Generation, list[int], str]:
        s = self.settings
        upstream = ("127.0.0.1", self._server.port if self._server else 0)
        gens: list[Generation] = []
        prompt_lengths: list[int] = []
        with (
            open_link(s.link, upstream, delay_ms=plan.added_rtt_ms / 2.0) as link,
            EdgeClient(
                link.url, drafter, k=plan.k, timeout_s=120.0, temperature=plan.temperature,
                draft_top_k=s.draft_top_k,
            ) as client,
        ):  # fmt: skip
            if s.warmup_rounds:
                # warm the connection, the server's slot and the drafter (not recorded)
                first = drafter.tokenize(s.prompts[0].text)
                client.seed = plan.seed
                client.generate(first, max_tokens=min(s.max_tokens, s.warmup_rounds + 1))
            for i, prompt in enumerate(s.prompts):
                tokens = drafter.tokenize(prompt.text)
                prompt_lengths.append(len(tokens))
                client.seed = None if plan.seed is None else plan.seed + i
                gens.append(client.generate(tokens, s.max_tokens))
                progress(ProgressEvent(label, i + 1, len(s.prompts), prompt.id))
            described = link.describe()
        return merge_generations(gens), prompt_lengths, described

    def run(self, plan: RunPlan, progress: ProgressFn = NO_PROGRESS) -> RunRecord:
        """Execute ``plan`` over every prompt; return its run record (not yet stored)."""
        s = self.settings
        drafter = self.drafter(plan.drafter)
        label = f"run {drafter.identity.name} K={plan.k} +{plan.added_rtt_ms:g} ms RTT"
        if plan.temperature:
            label += f" T={plan.temperature:g}"
        progress(ProgressEvent(label, 0, len(s.prompts), "starting"))
        probing = s.probe_contention and plan.k > 0
        probe = self.probe(plan) if probing else None
        gen, lengths, link = self._generate(plan, drafter, progress, label)
        probe_after = self.probe(plan) if probing else None
        config = run_config(
            drafter.identity,
            gen,
            k=plan.k,
            temperature=plan.temperature,
            added_rtt_ms=plan.added_rtt_ms,
            server_url=self.url,
            device=s.device,
            prompt_tokens=round(statistics.fmean(lengths)),
            max_tokens=s.max_tokens,
            seed=plan.seed,
            draft_top_k=s.draft_top_k if plan.temperature > 0 else None,
        )
        return build_run_record(
            gen,
            config,
            backend="llama.cpp",
            model_sha256=model_hashes(drafter.identity),
            settings={
                "prompts": [p.id for p in s.prompts],
                "max_tokens_per_prompt": s.max_tokens,
                "threads": s.threads,
                "link": link,
                "domains": sorted({p.domain for p in s.prompts}),
                **({"contention": probe.model_dump(mode="json")} if probe is not None else {}),
                **(
                    {"contention_after": probe_after.model_dump(mode="json")}
                    if probe_after is not None
                    else {}
                ),
            },
            energy_note="energy not recorded: no device power meter is wired into the edge client",
        )

    def probe(self, plan: RunPlan, samples: int = 9, verify_rounds: int = 12) -> ContentionProbe:
        """Time the drafter (K=1, sampled like the run) and the verifier (K=0 rounds, one
        position, through the run's link) right now, at the run's mean context.

        Taken right before each run, and once right after profiling as the baseline
        (:func:`configspec.loop.contention.take_baseline`); ``validate`` divides the run's
        probe by the baseline at the same point (same method, so like for like) and scales
        the profiled latencies by a ratio only when it is distinguishable from 1 (see
        :mod:`configspec.loop.contention`). Keeps every sample: ``samples`` drafting
        timings (ms per token, each averaged over the timer's inner repeats) and
        ``verify_rounds`` verification times (ms, as the verifier reports them), with
        their medians.
        """
        from configspec.profiling.device import DraftTimer, build_context, inner_repeats

        s = self.settings
        d = self.drafter(plan.drafter)
        lengths = [len(d.tokenize(p.text)) for p in s.prompts]
        ctx = round(statistics.fmean(lengths) + s.max_tokens / 2)
        timer = DraftTimer(d, build_context(d, ctx), 1, plan.temperature, s.draft_top_k)
        timer.once()  # primes the context
        inner = inner_repeats(timer)
        draft = [float(timer.per_token_ms(inner)) for _ in range(samples)]
        prompt = d.tokenize(s.prompts[0].text)
        gen = self._k0_rounds(d, plan.added_rtt_ms, prompt, verify_rounds)
        verify = [float(r.verify_ms) for r in gen.rounds]
        return ContentionProbe(
            drafter=d.identity.name,
            temperature=plan.temperature,
            added_rtt_ms=plan.added_rtt_ms,
            draft_context_tokens=ctx,
            draft_ms_per_token=float(np.median(draft)),
            draft_samples_ms=draft,
            verify_context_tokens=len(prompt) + verify_rounds // 2,
            verify_one_ms=float(np.median(verify)),
            verify_samples_ms=verify,
            load_average_1m=os.getloadavg()[0],
            taken_at=datetime.now(timezone.utc),
        )

    def _k0_rounds(
        self, d: Drafter, added_rtt_ms: float, prompt: list[int], rounds: int
    ) -> Generation:
        """``rounds`` K=0 rounds (nothing drafted, one position verified) after a warm-up."""
        upstream = ("127.0.0.1", self._server.port if self._server else 0)
        with (
            open_link(self.settings.link, upstream, delay_ms=added_rtt_ms / 2.0) as link,
            EdgeClient(link.url, d, k=0) as client,
        ):
            client.generate(prompt, max_tokens=3)  # warm-up
            return client.generate(prompt, max_tokens=rounds)

    def calibrate_overhead(
        self, drafter: str, added_rtt_ms: float = 0.0, rounds: int = 24
    ) -> Estimate:
        """The runtime's fixed per-round cost (ms) beyond drafting, verification and the
        injected delay, measured with K=0 rounds through the proxy at ``added_rtt_ms``.

        Measure it at the RTT the configurations will run at: on a loaded host the time
        the processes wait to be scheduled depends on how long they slept. Returns the
        median of ``round_ms - draft_ms - verify_ms - added_rtt_ms`` with a bootstrap 95%
        CI of the median (source ``measured``, clipped at 0).
        """
        d = self.drafter(drafter)
        prompt = d.tokenize(self.settings.prompts[0].text)
        gen = self._k0_rounds(d, added_rtt_ms, prompt, rounds)
        over = np.array([r.round_ms - r.draft_ms - r.verify_ms - added_rtt_ms for r in gen.rounds])
        return bootstrap_median(over, floor=0.0)
