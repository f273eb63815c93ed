"""Small deterministic stand-ins for llama.cpp models (tests only).

A "bigram" model: the distribution of the next token depends only on the previous one,
through a fixed random table, so target-only decoding and exact distributions are cheap
to compute and compare against.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np

from configspec.backends.base import DraftResult, Evaluation, ModelIdentity


def bigram_table(vocab: int, seed: int, sharpness: float = 3.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(vocab, vocab)) * sharpness
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)


def identity(name: str, vocab: int, fingerprint: str = "fake-tok") -> ModelIdentity:
    return ModelIdentity(
        name=name,
        family="fake",
        architecture="bigram",
        quantization=None,
        parameter_count=None,
        context_length=None,
        vocab_size=vocab,
        tokenizer_fingerprint=fingerprint,
        file_sha256=None,
    )


class _Tok:
    vocab: int

    def tokenize(self, text: str, *, add_bos: bool = True) -> list[int]:
        return ([1] if add_bos else []) + [2 + (ord(c) % (self.vocab - 2)) for c in text]

    def detokenize(self, tokens: Sequence[int]) -> str:
        return "".join(f"<{t}>" for t in tokens)


class FakeTarget(_Tok):
    """A bigram target with a real rollback-able 'cache' (the evaluated sequence)."""

    def __init__(
        self, table: np.ndarray, *, stop_token_ids: Sequence[int] = (), delay_s: float = 0.0
    ):
        self.table = table
        self.vocab = table.shape[0]
        self.identity = identity("fake-target", self.vocab)
        self.stop_token_ids = list(stop_token_ids)
        self.cache: list[int] = []
        self.evaluated_tokens = 0
        self.delay_s = delay_s

    def evaluate(self, context: Sequence[int], tokens: Sequence[int]) -> Evaluation:
        t0 = time.perf_counter()
        seq = [*context, *tokens]
        common = 0
        while common < min(len(seq), len(self.cache)) and seq[common] == self.cache[common]:
            common += 1
        self.evaluated_tokens += len(seq) - common
        self.cache = seq
        rows = self.table[seq[len(context) - 1 : len(seq)]]
        if self.delay_s:
            time.sleep(self.delay_s)
        return Evaluation(
            argmax=[int(i) for i in rows.argmax(axis=1)],
            probs=rows,
            elapsed_s=time.perf_counter() - t0,
        )

    def rollback(self, n_tokens: int) -> None:
        assert n_tokens <= len(self.cache), (n_tokens, len(self.cache))
        self.cache = self.cache[:n_tokens]

    def greedy(self, prompt: Sequence[int], n: int) -> list[int]:
        out, prev = [], prompt[-1]
        for _ in range(n):
            prev = int(self.table[prev].argmax())
            out.append(prev)
        return out


class FakeDrafter(_Tok):
    """A bigram drafter: greedy argmax, or sampling from its table at a temperature."""

    def __init__(
        self, table: np.ndarray, *, fingerprint: str = "fake-tok", name: str = "fake-draft"
    ):
        self.table = table.astype(np.float64)
        self.vocab = table.shape[0]
        self.identity = identity(name, self.vocab, fingerprint)
        self.calls = 0

    def draft(
        self, context: Sequence[int], k: int, *, temperature: float = 0.0, seed: int | None = None
    ) -> DraftResult:
        self.calls += 1
        rng = np.random.default_rng(seed)
        prev = context[-1]
        toks, probs, dists = [], [], []
        for _ in range(k):
            q = self.table[prev]
            if temperature == 0:
                tok = int(q.argmax())
                probs.append(1.0)
            else:
                q = q ** (1 / temperature)
                q = q / q.sum()
                tok = int(rng.choice(self.vocab, p=q))
                probs.append(float(q[tok]))
                dists.append(q)
            toks.append(tok)
            prev = tok
        return DraftResult(
            tokens=toks,
            token_probs=probs,
            distributions=np.array(dists, dtype=np.float32) if dists else None,
        )


class FakeBatchTarget(_Tok):
    """A bigram target with one 'KV sequence' per session and batched passes.

    Records every pass (the sequences and positions in it); ``pass_delay_s`` makes passes
    take time so concurrent requests gather."""

    def __init__(
        self,
        table: np.ndarray,
        *,
        n_seqs: int = 16,
        n_batch: int = 512,
        n_ctx: int = 4096,
        pass_delay_s: float = 0.0,
    ):
        self.table = table
        self.vocab = table.shape[0]
        self.identity = identity("fake-target", self.vocab)
        self.stop_token_ids: list[int] = []
        self.n_seqs, self.n_batch, self.n_ctx = n_seqs, n_batch, n_ctx
        self.pass_delay_s = pass_delay_s
        self.cache: dict[int, list[int]] = {}
        self.free = list(range(n_seqs))
        self.passes: list[list[tuple[int, int]]] = []  # (seq, positions) per pass

    def new_sequence(self) -> int:
        seq = self.free.pop(0)
        self.cache[seq] = []
        return seq

    def free_sequence(self, seq: int) -> None:
        if self.cache.pop(seq, None) is not None:
            self.free.append(seq)

    def rollback(self, seq: int, n_tokens: int) -> None:
        assert n_tokens <= len(self.cache[seq]), (n_tokens, len(self.cache[seq]))
        del self.cache[seq][n_tokens:]

    def _keep(self, seq: int, full: list[int], n_context: int) -> int:
        common = 0
        held = self.cache[seq]
        while common < min(len(full), len(held)) and full[common] == held[common]:
            common += 1
        return min(common, n_context - 1)

    def plan_positions(self, seq: int, context: Sequence[int], tokens: Sequence[int]) -> int:
        full = [*context, *tokens]
        return len(full) - self._keep(seq, full, len(context))

    def evaluate_many(self, requests: Sequence[object]) -> list[Evaluation]:
        t0 = time.perf_counter()
        out, record = [], []
        for r in requests:
            seq, context, tokens = r.seq, list(r.context), list(r.tokens)  # type: ignore[attr-defined]
            full = [*context, *tokens]
            n = len(full) - self._keep(seq, full, len(context))
            record.append((seq, n))
            self.cache[seq] = full
            rows = self.table[full[len(context) - 1 :]]
            out.append(
                Evaluation(
                    argmax=[int(i) for i in rows.argmax(axis=1)],
                    probs=rows,
                    extra={"evaluated_tokens": float(n)},
                )
            )
        assert max(2, *(n for _, n in record)) * len(record) <= self.n_batch
        self.passes.append(record)
        if self.pass_delay_s:
            time.sleep(self.pass_delay_s)
        elapsed = time.perf_counter() - t0
        return [Evaluation(e.argmax, e.probs, elapsed_s=elapsed, extra=e.extra) for e in out]

    def greedy(self, prompt: Sequence[int], n: int) -> list[int]:
        out, prev = [], prompt[-1]
        for _ in range(n):
            prev = int(self.table[prev].argmax())
            out.append(prev)
        return out


@contextmanager
def batched_fake_server(
    pass_delay_s: float, max_gather_wait_ms: float
) -> Iterator[tuple[str, FakeBatchTarget]]:
    """A real batched verifier over HTTP (fixed gather of up to 4 sessions, 8 sessions,
    K ≤ 4, 512-token contexts) on a :class:`FakeBatchTarget` whose passes take
    ``pass_delay_s``: its URL and the target (for its recorded passes)."""
    from configspec.serving.batched import BatchedVerifierService, BatchPolicy
    from configspec.serving.server import ServerThread
    from configspec.serving.sessions import ServerLimits

    target = FakeBatchTarget(bigram_table(64, seed=2), pass_delay_s=pass_delay_s)
    service = BatchedVerifierService(
        target,
        ServerLimits(max_sessions=8, max_k=4, max_context_tokens=512),
        BatchPolicy(
            max_sessions_per_batch=4, max_gather_wait_ms=max_gather_wait_ms, gather="fixed"
        ),
    )
    with ServerThread(service) as srv:
        yield srv.url, target
