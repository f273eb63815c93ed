"""A llama.cpp target that verifies many sessions in one forward pass.

One model, one context, one KV sequence per session (llama.cpp's multi-sequence batch:
``seq_id`` per token, ``kv_unified=False`` so each sequence has its own KV stream), and
rollback per sequence with ``llama_memory_seq_rm``. :meth:`LlamaCppBatchTarget.
evaluate_many` decodes the blocks of several sequences in one ``llama_decode`` call, so
the weights are read once for all of them.

Isolation. A position's values must not depend on which other sequences share the pass,
nor on how earlier passes were shaped. Measured on llama.cpp's CPU kernels (and checked
by ``tests/integration/test_verifier_isolation.py`` on the real model): with two or more
rows per sequence every product gives each row the same bits whatever the block size or
the batch mates, while a single row takes a different kernel; a unified KV cache
interleaves sequences' cells and changes the attention sums' rounding, separate streams
do not. So every sequence's block in a pass has the same width of >= 2 rows (shorter
blocks re-decode cached tokens in front, which rewrites them with the same bits, or get
trailing pad tokens that are removed afterwards: causal attention keeps them out of the
real rows), and no block yields a single output row.

Speed. llama.cpp decodes a pass over separate KV streams as one micro-batch per run of
consecutive sequence ids (each reading every weight again), so blocks go in by sequence id
and small gaps between the pass's ids are filled with blocks that change nothing (a live
sequence's last cached tokens re-decoded, or pads in a free one, removed after the pass):
:func:`gap_fillers`. Live passes have gaps (sessions come and go; a pass holds only those
that arrived), and a profile of sessions 0..B-1 has none.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from configspec.backends._native import extra_buffers_enabled, quiet_native_stderr
from configspec.backends.base import Evaluation, FloatArray, ModelIdentity
from configspec.backends.gguf_meta import Sha256Cache, read_identity
from configspec.backends.llamacpp import LlamaCppTokenizer, softmax
from configspec.errors import BackendUnavailable, InvalidInput, ModelFileError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SeqRequest:
    """One sequence's share of a pass: distributions after ``context + tokens[:i]``.

    ``probs=False`` skips the softmax (greedy verification needs only the argmax);
    ``temperature`` is the one the softmax is taken at (a sampled round's own, so the
    verifier never re-tempers: ``serving.verify.target_probs_at``).
    """

    seq: int
    context: Sequence[int]
    tokens: Sequence[int]
    probs: bool = True
    temperature: float = 1.0


class LlamaCppBatchTarget:
    """A GGUF target serving up to ``n_seqs`` sequences in one context.

    ``n_ctx`` is the longest sequence in tokens (each sequence has its own KV stream of
    ``n_ctx + n_batch`` cells, so memory grows with ``n_seqs``); ``n_batch`` the most
    positions in one pass, padding included (one ubatch).
    """

    def __init__(
        self,
        path: Path | str,
        *,
        n_seqs: int = 8,
        n_threads: int = 2,
        n_ctx: int = 4096,
        n_batch: int = 512,
        identity: ModelIdentity | None = None,
        hash_cache: Sha256Cache | None = None,
    ) -> None:
        if n_seqs < 1:
            raise InvalidInput(f"n_seqs={n_seqs} is out of range (>= 1)")
        if n_batch < 2:
            raise InvalidInput(f"n_batch={n_batch} is out of range (>= 2)")
        if n_threads < 1:
            raise InvalidInput(f"n_threads={n_threads} is out of range (>= 1)")
        import llama_cpp

        self.path = Path(path)
        self._identity = identity or read_identity(self.path, hash_cache=hash_cache)
        self._tok = LlamaCppTokenizer(self.path, identity=self._identity)
        # one KV stream per sequence, each n_ctx plus room for trailing pads
        kv = (n_ctx + n_batch) * n_seqs
        with quiet_native_stderr():
            llama_cpp.llama_backend_init()
            mparams = llama_cpp.llama_model_default_params()
            # the same policy as the llama.cpp backend: no AMX tiles where a VM advertises
            # them without supporting them (SIGILL tilezero on quantised targets)
            mparams.use_extra_bufts = extra_buffers_enabled()
            model = llama_cpp.llama_model_load_from_file(str(self.path).encode(), mparams)
            if not model:
                raise ModelFileError(f"llama.cpp cannot load {self.path}")
            cparams = llama_cpp.llama_context_default_params()
            cparams.n_ctx = kv
            cparams.n_batch = cparams.n_ubatch = n_batch
            cparams.n_seq_max = n_seqs
            cparams.n_threads = cparams.n_threads_batch = n_threads
            cparams.kv_unified = False  # a stream per sequence: cell layout as if alone
            cparams.swa_full = True  # rollback to any position
            cparams.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
            cparams.no_perf = True
            ctx = llama_cpp.llama_init_from_model(model, cparams)
        if not ctx:
            llama_cpp.llama_model_free(model)
            raise ModelFileError(f"llama.cpp cannot create a context for {self.path}")
        self._llama = llama_cpp
        self._model, self._ctx = model, ctx
        self._mem = llama_cpp.llama_get_memory(ctx)
        self._batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(model)))
        self.n_seqs, self.n_ctx, self.n_batch, self.kv_tokens = n_seqs, n_ctx, n_batch, kv
        self.n_threads = n_threads
        self._tokens: dict[int, list[int]] = {}
        self._free = list(range(n_seqs))
        self._closed = False
        #: Tokens decoded since construction (padding included).
        self.n_evaluated_tokens = 0

    # Identity and vocabulary (the Target protocol's Tokenizing part) ---------------
    @property
    def identity(self) -> ModelIdentity:
        """The model's identity from its GGUF metadata."""
        return self._identity

    def tokenize(self, text: str, *, add_bos: bool = True) -> list[int]:
        """Token ids of ``text`` (special tokens parsed)."""
        return self._tok.tokenize(text, add_bos=add_bos)

    def detokenize(self, tokens: Sequence[int]) -> str:
        """Text of ``tokens``."""
        return self._tok.detokenize(tokens)

    @property
    def eos_token(self) -> int:
        """The end-of-sequence token id."""
        return self._tok.eos_token

    # Sequences --------------------------------------------------------------------
    @property
    def free_sequences(self) -> int:
        """Sequences not in use."""
        return len(self._free)

    def new_sequence(self) -> int:
        """Reserve an empty KV sequence; its id."""
        if not self._free:
            raise InvalidInput(f"all {self.n_seqs} KV sequences are in use")
        seq = min(self._free)  # lowest id: live sequences stay contiguous (see evaluate_many)
        self._free.remove(seq)
        self._tokens[seq] = []
        return seq

    def free_sequence(self, seq: int) -> None:
        """Drop a sequence's cache and make its id reusable."""
        if self._tokens.pop(seq, None) is None:
            return
        self._llama.llama_memory_seq_rm(self._mem, seq, 0, -1)
        self._free.append(seq)

    def cached_tokens(self, seq: int) -> list[int]:
        """Tokens sequence ``seq`` holds in the cache."""
        return list(self._tokens[seq])

    def rollback(self, seq: int, n_tokens: int) -> None:
        """Keep the first ``n_tokens`` of sequence ``seq`` (the accepted prefix)."""
        held = self._tokens[seq]
        if not 0 <= n_tokens <= len(held):
            raise InvalidInput(f"rollback to {n_tokens} tokens is out of range (0..{len(held)})")
        if n_tokens < len(held):
            self._llama.llama_memory_seq_rm(self._mem, seq, n_tokens, -1)
            del held[n_tokens:]

    def plan_positions(self, seq: int, context: Sequence[int], tokens: Sequence[int]) -> int:
        """Positions a request must decode (the part not cached); a pass of S requests
        costs ``max(2, widest) * S`` positions."""
        full = [*context, *tokens]
        return len(full) - min(_common(self._tokens[seq], full), len(context) - 1)

    # Passes -----------------------------------------------------------------------
    def evaluate_many(self, requests: Sequence[SeqRequest]) -> list[Evaluation]:
        """One forward pass for every request (distinct sequences); one Evaluation each.

        Each Evaluation is what :meth:`LlamaCppTarget.evaluate` returns for that sequence
        alone: (len(tokens)+1) rows after ``context``; ``probs`` None when not asked for.
        ``elapsed_s`` is the whole pass. Raises :class:`InvalidInput` when the pass does
        not fit ``n_batch`` positions or a token is outside the vocabulary.
        """
        order = sorted(range(len(requests)), key=lambda i: requests[i].seq)
        if order != list(range(len(requests))):
            # llama.cpp splits a pass over separate KV streams into one micro-batch per run
            # of consecutive sequence ids in batch order, each reading every weight again:
            # blocks go in by sequence id (and ids are handed out lowest first), so a pass
            # of sessions 0..B-1 is one micro-batch (8 sessions: 1.6x faster than shuffled)
            ordered = self.evaluate_many([requests[i] for i in order])
            out: list[Evaluation | None] = [None] * len(requests)
            for j, i in enumerate(order):
                out[i] = ordered[j]
            return [ev for ev in out if ev is not None]
        t0 = time.perf_counter()
        seqs = [r.seq for r in requests]
        if len(set(seqs)) != len(seqs):
            raise ValueError("a pass holds each sequence at most once")
        plans: list[tuple[int, list[int], int]] = []
        for r in requests:
            if not r.context:
                raise InvalidInput("the context is empty; it needs at least one token (BOS)")
            full = [int(t) for t in (*r.context, *r.tokens)]
            bad = [t for t in full if not 0 <= t < self.n_vocab]
            if bad:
                raise InvalidInput(f"token id {bad[0]} is out of range (0..{self.n_vocab - 1})")
            if len(full) > self.n_ctx:
                raise InvalidInput(
                    f"{len(full)} tokens exceed the context window n_ctx={self.n_ctx}"
                )
            keep = min(_common(self._tokens[r.seq], full), len(r.context) - 1)
            plans.append((keep, full, len(r.context) - 1))
        width = max(2, *(len(full) - keep for keep, full, _ in plans))
        if width * len(plans) > self.n_batch:
            raise InvalidInput(
                f"{len(plans)} blocks of {width} positions exceed one pass (n_batch={self.n_batch})"
            )
        # equal blocks of >= 2 rows per sequence (see the module docstring): shorter ones
        # re-decode cached tokens in front, or get trailing pads removed afterwards
        width = max(2, *(len(full) - keep for keep, full, _ in plans))
        fillers = gap_fillers(seqs, width, self.n_batch)
        b = self._batch
        n = 0
        pending = list(fillers)  # ascending, interleaved by id: the run stays in order
        out_rows: list[list[int]] = []
        trails: list[int] = []
        for i, (r, (keep, full, first_out)) in enumerate(zip(requests, plans, strict=True)):
            while pending and pending[0] < r.seq:
                n = self._fill(pending.pop(0), width, n)
            lead = min(keep, width - (len(full) - keep))
            keep -= lead
            plans[i] = (keep, full, first_out)
            trail = width - (len(full) - keep)
            trails.append(trail)
            self.rollback(r.seq, keep)
            rows = []
            first = n
            for pos in range(keep, len(full) + trail):
                tok = full[min(pos, len(full) - 1)]
                b.token[n], b.pos[n], b.n_seq_id[n] = tok, pos, 1
                b.seq_id[n][0] = r.seq
                b.logits[n] = first_out <= pos < len(full)
                if b.logits[n]:
                    rows.append(n)
                n += 1
            if len(rows) == 1:  # a neighbour row computed with it, and dropped
                b.logits[rows[0] - 1 if rows[0] > first else rows[0] + 1] = True
            out_rows.append(rows)
        b.n_tokens = n
        rc = self._llama.llama_decode(self._ctx, b)
        for r, (_, full, _), trail in zip(requests, plans, trails, strict=True):
            if trail:
                self._llama.llama_memory_seq_rm(self._mem, r.seq, len(full), -1)
        for g in fillers:  # their pads go; their cached tokens were rewritten unchanged
            self._llama.llama_memory_seq_rm(self._mem, g, len(self._tokens.get(g, ())), -1)
        if rc != 0:
            # the cache may hold part of the pass: start them afresh
            for seq in [*seqs, *(g for g in fillers if g in self._tokens)]:
                self._llama.llama_memory_seq_rm(self._mem, seq, 0, -1)
                self._tokens[seq] = []
            what = "the KV cache is full" if rc == 1 else f"error {rc}"
            raise BackendUnavailable(f"llama.cpp decode failed: {what}")
        self.n_evaluated_tokens += n
        for r, (_, full, _) in zip(requests, plans, strict=True):
            self._tokens[r.seq] = full
        evaluations: list[Evaluation] = []
        for r, (keep, full, _), rows in zip(requests, plans, out_rows, strict=True):
            logits = np.stack([self._row(i) for i in rows])
            extra = {"evaluated_tokens": float(len(full) - keep)}
            if r.probs:
                extra["probs_temperature"] = r.temperature
            evaluations.append(
                Evaluation(
                    argmax=[int(i) for i in np.argmax(logits, axis=1)],
                    probs=softmax(logits, r.temperature) if r.probs else None,
                    elapsed_s=0.0,
                    extra=extra,
                )
            )
        elapsed_s = time.perf_counter() - t0
        return [dataclasses.replace(ev, elapsed_s=elapsed_s) for ev in evaluations]

    def _fill(self, seq: int, width: int, n: int) -> int:
        """Add a filler block of ``width`` rows for ``seq`` at batch row ``n`` (no outputs):
        its last cached tokens re-decoded (the same bits: see the module docstring), then
        pads at the following positions, removed after the pass; a free sequence gets pads
        only. Returns the next batch row."""
        held = self._tokens.get(seq, [])
        lead = min(len(held), width)
        start = len(held) - lead
        if lead:
            self._llama.llama_memory_seq_rm(self._mem, seq, start, -1)
        b = self._batch
        for pos in range(start, start + width):
            b.token[n] = held[min(pos, len(held) - 1)] if held else 0
            b.pos[n], b.n_seq_id[n], b.logits[n] = pos, 1, False
            b.seq_id[n][0] = seq
            n += 1
        return n

    def _row(self, i: int) -> FloatArray:
        ptr = self._llama.llama_get_logits_ith(self._ctx, i)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).copy()

    # One-sequence Target protocol (profiling, tools that expect a plain Target) ---------
    def evaluate(self, context: Sequence[int], tokens: Sequence[int]) -> Evaluation:
        """:meth:`evaluate_many` on a default sequence (the plain Target protocol)."""
        return self.evaluate_many([SeqRequest(self._default_seq(), context, tokens)])[0]

    def evaluate_at(
        self, context: Sequence[int], tokens: Sequence[int], temperature: float | None
    ) -> Evaluation:
        """:meth:`evaluate` with ``probs`` at ``temperature`` (None: no ``probs``), as
        :meth:`LlamaCppTarget.evaluate_at <configspec.backends.llamacpp.LlamaCppTarget.
        evaluate_at>`."""
        req = SeqRequest(
            self._default_seq(), context, tokens, temperature is not None, temperature or 1.0
        )
        return self.evaluate_many([req])[0]

    def _default_seq(self) -> int:
        if not hasattr(self, "_default"):
            self._default = self.new_sequence()
        return self._default

    def close(self) -> None:
        """Free the context and the model."""
        if self._closed:
            return
        self._closed = True
        with quiet_native_stderr():
            self._llama.llama_batch_free(self._batch)
            self._llama.llama_free(self._ctx)
            self._llama.llama_model_free(self._model)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def __enter__(self) -> LlamaCppBatchTarget:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


FILL_GAP_POSITIONS = 16
"""Most positions of filler blocks per gap (see :func:`gap_fillers`)."""


def gap_fillers(seqs: Sequence[int], width: int, n_batch: int) -> list[int]:
    """The sequence ids to add to a pass of ``seqs`` (blocks of ``width`` positions) so
    that it is one run of consecutive ids.

    llama.cpp decodes a pass over separate KV streams as one micro-batch per run of
    consecutive sequence ids, each reading every weight again: on the F32 Gemma 3 270M
    (1 thread, B = 8, 5 positions) sequences 0..7 took 461 ms, 0..3 with 20..23 575 ms,
    and the even ids 0..14 1434 ms. Sessions come and go, and a pass holds only those
    that arrived, so live passes have gaps. A filler block (a sequence's last tokens
    re-decoded, or pads) costs one session's rows instead of a pass's weight reads, so a
    gap is filled when its blocks hold at most :data:`FILL_GAP_POSITIONS` positions
    (about the weight read's cost in rows on that model: S(1, P) ~ 80-120 ms against
    ~13-30 ms per further session, from the server-path profile) and the pass still
    fits ``n_batch``.
    """
    ids = sorted(set(seqs))
    gaps = [
        list(range(lo + 1, hi))
        for lo, hi in itertools.pairwise(ids)
        if 0 < (hi - lo - 1) * width <= FILL_GAP_POSITIONS
    ]
    while gaps and (len(ids) + sum(map(len, gaps))) * width > n_batch:
        gaps.pop()  # the pass must fit: leave the last gaps split
    return [g for gap in gaps for g in gap]


def _common(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
