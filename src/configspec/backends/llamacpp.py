"""llama.cpp backend (``llama-cpp-python``): a GGUF model as a Drafter or as a Target.

One :class:`llama_cpp.Llama` per model, driven at the batch level: the backend keeps the
token sequence held in the KV cache, reuses the longest common prefix with each request
and removes the rest with ``llama_memory_seq_rm`` (so :meth:`LlamaCppTarget.rollback`
never re-evaluates the accepted prefix). Greedy drafting takes the argmax of the same
logits llama.cpp's greedy sampler reads, so it is token-identical to
``Llama.generate(..., temp=0)``. Verification asks for logits at every position of the
block (the batch-level equivalent of ``logits_all=True`` without its n_ctx × vocab
buffer) and returns softmax distributions.

Gemma 3 and other sliding-window models get ``swa_full=True`` by default, because a
pruned SWA cache cannot be rolled back to an arbitrary position.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from configspec.backends._native import model_params, quiet_native_stderr
from configspec.backends.base import DraftResult, Evaluation, FloatArray, ModelIdentity
from configspec.backends.gguf_meta import Sha256Cache, read_identity
from configspec.errors import BackendUnavailable, InvalidInput, ModelFileError

if TYPE_CHECKING:
    import llama_cpp

logger = logging.getLogger(__name__)


def _silence_llama_logger() -> None:
    # Llama(verbose=False) sets ERROR, which still lets llama.cpp warnings through
    log = logging.getLogger("llama-cpp-python")
    log.setLevel(max(log.level, logging.CRITICAL + 1))


def softmax(logits: FloatArray, temperature: float = 1.0) -> FloatArray:
    """Row-wise softmax of ``logits / temperature`` (float32; sums accumulated in float64).

    float32 exponentials halve the cost over a 262k vocabulary; the result differs from a
    float64 softmax by < 1e-7 per probability. The maximum is subtracted before dividing,
    so a tiny ``temperature`` (down to 5e-324) gives the exact limit, one-hot on the
    argmax (split over ties), instead of overflowing to NaN.
    """
    z = np.array(logits, dtype=np.float32, copy=True)
    z -= z.max(axis=-1, keepdims=True)
    if temperature != 1.0:
        t32 = np.float32(temperature)
        if t32 > 0:
            with np.errstate(over="ignore"):
                z /= t32
        else:  # below float32's range: only the argmax ties keep mass
            z[z < 0] = -np.inf
    np.exp(z, out=z)
    z /= z.sum(axis=-1, keepdims=True, dtype=np.float64).astype(np.float32)
    return z


class LlamaCppModel:
    """A GGUF model loaded in llama.cpp with a prefix-reusing KV cache.

    ``min_block_rows`` (class attribute) is 1 for drafters (one-token decoding at full
    speed) and 2 for targets (see :meth:`_decode_chunk`).

    ``n_threads`` is used for both generation and batch evaluation; ``n_ctx`` is the
    context window in tokens; ``n_batch`` the largest block decoded at once. ``identity``
    skips re-reading the GGUF metadata (the factory passes the registry's);
    ``hash_cache`` remembers the file's sha256 across runs.
    """

    min_block_rows = 1

    def __init__(
        self,
        path: Path | str,
        *,
        n_threads: int = 2,
        n_ctx: int = 512,
        n_batch: int = 512,
        identity: ModelIdentity | None = None,
        hash_cache: Sha256Cache | None = None,
        swa_full: bool = True,
    ) -> None:
        if n_threads < 1:
            raise InvalidInput(f"n_threads={n_threads} is out of range (>= 1)")
        if n_ctx < 16:
            raise InvalidInput(f"n_ctx={n_ctx} is out of range (>= 16)")
        if n_batch < self.min_block_rows:
            raise InvalidInput(f"n_batch={n_batch} is out of range (>= {self.min_block_rows})")
        self.path = Path(path)
        self._identity = identity or read_identity(self.path, hash_cache=hash_cache)
        import llama_cpp

        try:
            with quiet_native_stderr(), model_params():
                self._llm = llama_cpp.Llama(
                    model_path=str(self.path),
                    n_ctx=n_ctx,
                    n_batch=n_batch,
                    n_ubatch=n_batch,
                    n_threads=n_threads,
                    n_threads_batch=n_threads,
                    logits_all=False,
                    swa_full=swa_full,
                    verbose=False,
                )
        except (ValueError, RuntimeError) as exc:
            raise ModelFileError(f"llama.cpp cannot load {self.path}: {exc}") from None
        _silence_llama_logger()
        self.n_threads = n_threads
        self.n_ctx = int(self._llm.n_ctx())
        self.n_batch = n_batch
        self.n_vocab = int(self._llm.n_vocab())
        self._closed = False
        self._tokens: list[int] = []  # what the KV cache holds, position by position
        self._last_row = -1  # batch index of the last decode's last token
        #: Tokens decoded since construction (a rollback that re-evaluated would show here).
        self.n_evaluated_tokens = 0

    # Tokenizing ----------------------------------------------------------
    @property
    def identity(self) -> ModelIdentity:
        """The model's identity from its GGUF metadata."""
        return self._identity

    @property
    def llama(self) -> llama_cpp.Llama:
        """The underlying ``llama_cpp.Llama`` (for benchmarks comparing against raw use)."""
        return self._llm

    @property
    def cached_tokens(self) -> list[int]:
        """Tokens currently held in the KV cache."""
        return list(self._tokens)

    def tokenize(self, text: str, *, add_bos: bool = True) -> list[int]:
        """Token ids of ``text`` with the model's vocabulary (special tokens parsed)."""
        return list(self._llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True))

    def detokenize(self, tokens: Sequence[int]) -> str:
        """Text of ``tokens`` (invalid UTF-8 fragments replaced)."""
        return self._llm.detokenize(list(tokens)).decode("utf-8", errors="replace")

    @property
    def eos_token(self) -> int:
        """The end-of-sequence token id."""
        return int(self._llm.token_eos())

    # KV cache ------------------------------------------------------------
    def _check_tokens(self, tokens: Sequence[int], what: str) -> None:
        if not len(tokens):
            return
        arr = np.asarray(tokens, dtype=np.int64)
        bad = arr[(arr < 0) | (arr >= self.n_vocab)]
        if bad.size:
            raise InvalidInput(
                f"{what} token id {int(bad[0])} is out of range (0..{self.n_vocab - 1})"
            )

    def _truncate(self, n_keep: int) -> None:
        if n_keep >= len(self._tokens):
            return
        if not self._llm._ctx.kv_cache_seq_rm(-1, n_keep, -1):
            # the cache cannot drop a suffix (e.g. pruned SWA): start from empty instead
            logger.warning("KV cache refused partial removal; clearing it")
            self._clear_kv()
            n_keep = 0
        del self._tokens[n_keep:]

    def _decode(
        self,
        tokens: Sequence[int],
        *,
        logits_from: int | None = None,
        all_logits: bool = False,
        copy: bool = True,
    ) -> FloatArray:
        """Append ``tokens`` to the KV cache and return logits.

        With ``logits_from=None`` only the last token's row is returned (1 × vocab);
        otherwise the rows of ``tokens[logits_from:]`` (earlier positions get no logits, so
        a long new prompt does not cost a prompt × vocab buffer). ``all_logits=True`` is
        ``logits_from=0`` (kept for subclasses written against the first version).
        ``copy=False`` returns the last row as a view of llama.cpp's buffer, valid only
        until the next decode (the drafting loop's argmax needs no 1 MB copy per token).
        """
        if all_logits and logits_from is None:
            logits_from = 0
        if not tokens:
            raise InvalidInput("nothing to evaluate: the token block is empty")
        if len(self._tokens) + len(tokens) > self.n_ctx:
            raise InvalidInput(
                f"{len(self._tokens) + len(tokens)} tokens exceed the context window "
                f"n_ctx={self.n_ctx}; raise n_ctx or shorten the prompt"
            )
        if logits_from is not None and not 0 <= logits_from < len(tokens):
            raise ValueError(f"logits_from={logits_from} outside the block of {len(tokens)}")
        rows: list[FloatArray] = []
        for start in range(0, len(tokens), self.n_batch):
            chunk = [int(t) for t in tokens[start : start + self.n_batch]]
            last_chunk = start + self.n_batch >= len(tokens)
            wanted = None
            if logits_from is not None:
                wanted = [start + i >= logits_from for i in range(len(chunk))]
            got = self._decode_chunk(chunk, wanted)
            if got is not None:
                rows.append(got)
            elif logits_from is None and last_chunk:
                rows.append(self._last_logits(copy).reshape(1, -1))
        return np.concatenate(rows, axis=0) if len(rows) > 1 else rows[0]

    def _decode_chunk(self, chunk: list[int], wanted: list[bool] | None) -> FloatArray | None:
        """Decode one block (<= n_batch tokens) after the cache; rows where ``wanted``.

        ``wanted=None`` asks for the last row only, read afterwards by
        :meth:`_last_logits`. With ``min_block_rows`` 2 no matrix product ever has a single
        row: llama.cpp's CPU kernels for one row round differently from those for two or
        more, while blocks of >= 2 rows give each position the same bits whatever the
        block's size or split (``tests/integration/test_verifier_isolation.py``). So the
        cache holds, at each position, values that depend only on the tokens, never on
        how they were batched (prefix reuse across sessions is neutral), and a
        verification pass equals target-only decoding bit for bit. A one-token block is
        padded by re-decoding the previous cached token (its entry is rewritten with the
        same values) or, at position 0, by a trailing copy of the token that is removed
        afterwards (causal attention: it cannot change earlier rows); a single wanted
        output row gets a neighbour row computed with it and dropped.
        """
        import llama_cpp

        flags = [False] * len(chunk)
        if wanted is None:
            flags[-1] = True
        else:
            flags = list(wanted)
        trail = 0
        if self.min_block_rows >= 2:
            if len(chunk) == 1 and self._tokens:
                prev = self._tokens[-1]
                self._truncate(len(self._tokens) - 1)
                chunk, flags = [prev, *chunk], [False, *flags]
            elif len(chunk) == 1:
                trail = 1
                chunk, flags = [chunk[0], chunk[0]], [*flags, False]
        keep = list(flags)
        if self.min_block_rows >= 2 and sum(flags) == 1:
            i = flags.index(True)
            flags[i - 1 if i else i + 1] = True  # a computed-and-dropped neighbour row
        batch = self._llm._batch
        batch.set_batch(batch=chunk, n_past=len(self._tokens), logits_all=False)
        for i, f in enumerate(flags):
            batch.batch.logits[i] = f
        try:
            self._llm._ctx.decode(batch)
        except RuntimeError as exc:
            raise BackendUnavailable(f"llama.cpp decode failed: {exc}") from None
        self._tokens.extend(chunk)
        self.n_evaluated_tokens += len(chunk)
        if trail:
            self._truncate(len(self._tokens) - 1)
        n_out = sum(flags)
        if not n_out:
            return None
        ptr = llama_cpp.llama_get_logits(self._llm.ctx)
        out: FloatArray = np.ctypeslib.as_array(ptr, shape=(n_out * self.n_vocab,)).reshape(
            n_out, self.n_vocab
        )
        sel = [j for j, i in enumerate(i for i, f in enumerate(flags) if f) if keep[i]]
        if wanted is None:
            self._last_row = keep.index(True)  # a batch index, as get_logits_ith takes
            return None
        return out[sel].copy() if sel else None

    def _last_logits(self, copy: bool = True) -> FloatArray:
        ptr = self._llm._ctx.get_logits_ith(self._last_row)
        view: FloatArray = np.ctypeslib.as_array(
            ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)), shape=(self.n_vocab,)
        )
        return view.copy() if copy else view

    def _clear_kv(self) -> None:
        import llama_cpp

        memory = llama_cpp.llama_get_memory(self._llm.ctx)
        if memory is not None:
            llama_cpp.llama_memory_clear(memory, True)

    def _common_prefix(self, tokens: Sequence[int]) -> int:
        n = 0
        for a, b in zip(self._tokens, tokens, strict=False):
            if a != b:
                break
            n += 1
        return n

    def reset(self) -> None:
        """Empty the KV cache."""
        self._clear_kv()
        self._tokens.clear()

    def close(self) -> None:
        """Free the model and context (quietly: llama.cpp logs its buffer sizes on exit)."""
        llm = getattr(self, "_llm", None)
        if llm is not None and not self._closed:
            self._closed = True
            with quiet_native_stderr():
                llm.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown: modules may be gone
            self.close()

    def __enter__(self) -> LlamaCppModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LlamaCppDrafter(LlamaCppModel):
    """A llama.cpp model proposing tokens (a :class:`~configspec.backends.base.Drafter`)."""

    def _prime(self, context: Sequence[int]) -> FloatArray:
        """Make the cache hold ``context``; return the logits after its last token.

        The row is a view of llama.cpp's buffer: use it before the next decode.
        """
        if not context:
            raise InvalidInput("the context is empty; it needs at least one token (BOS)")
        self._check_tokens(context, "context")
        keep = min(self._common_prefix(context), len(context) - 1)
        self._truncate(keep)
        keep = len(self._tokens)  # 0 if the cache had to be cleared
        last: FloatArray = self._decode(context[keep:], copy=False)[-1]
        return last

    def prefill(self, context: Sequence[int]) -> None:
        """Evaluate ``context`` into the cache, so the next :meth:`draft` after it (or after
        it plus a few tokens) decodes only what is new."""
        self._prime(context)

    def draft(
        self,
        context: Sequence[int],
        k: int,
        *,
        temperature: float = 0.0,
        seed: int | None = None,
    ) -> DraftResult:
        """Propose ``k`` tokens after ``context``.

        Greedy (argmax) at ``temperature`` 0; otherwise samples from
        softmax(logits / temperature) with a numpy generator seeded by ``seed`` and returns
        each step's distribution (k × vocab) and the sampled tokens' probabilities.
        ``elapsed_s`` is wall time in seconds.
        """
        if k < 1:
            raise InvalidInput(f"K={k} is out of range (>= 1)")
        if temperature < 0:
            raise InvalidInput(f"temperature={temperature} is out of range (>= 0)")
        start = time.perf_counter()
        logits = self._prime(context)
        greedy = temperature == 0.0
        rng = None if greedy else np.random.default_rng(seed)
        tokens: list[int] = []
        probs: list[float] = []
        dists: list[FloatArray] = []
        for i in range(k):
            if greedy:
                tok = int(np.argmax(logits))
                probs.append(1.0)
            else:
                assert rng is not None
                dist = softmax(logits, temperature)
                cdf = np.cumsum(dist, dtype=np.float64)
                tok = int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"))
                tok = min(tok, self.n_vocab - 1)
                probs.append(float(dist[tok]))
                dists.append(dist)
            tokens.append(tok)
            if i + 1 < k:
                logits = self._decode([tok], copy=False)[-1]
        return DraftResult(
            tokens=tokens,
            token_probs=probs,
            distributions=np.stack(dists) if dists else None,
            elapsed_s=time.perf_counter() - start,
        )


class LlamaCppTarget(LlamaCppModel):
    """A llama.cpp model verifying blocks (a :class:`~configspec.backends.base.Target`)."""

    min_block_rows = 2

    def evaluate(self, context: Sequence[int], tokens: Sequence[int]) -> Evaluation:
        """Distributions after ``context + tokens[:i]`` for i = 0..len(tokens).

        Reuses the cached prefix; evaluates the rest in one batched pass with logits at
        every position. ``probs`` is (len(tokens)+1) × vocab; ``elapsed_s`` in seconds.
        """
        return self.evaluate_at(context, tokens, 1.0)

    def evaluate_at(
        self, context: Sequence[int], tokens: Sequence[int], temperature: float | None
    ) -> Evaluation:
        """:meth:`evaluate` with ``probs`` at ``temperature`` (the verifier's own pass: the
        softmax of the logits at the sampling temperature, marked in
        ``extra["probs_temperature"]``), or no ``probs`` at all for ``None`` (greedy
        verification reads only the argmax)."""
        if not context:
            raise InvalidInput("the context is empty; it needs at least one token (BOS)")
        self._check_tokens(context, "context")
        self._check_tokens(tokens, "draft")
        start = time.perf_counter()
        full = [*context, *tokens]
        # positions len(context)-1 .. len(full)-1 need logits, so they are (re)decoded
        keep = min(self._common_prefix(full), len(context) - 1)
        self._truncate(keep)
        keep = len(self._tokens)  # 0 if the cache had to be cleared
        rows = self._decode(full[keep:], logits_from=len(context) - 1 - keep)
        extra = {"evaluated_tokens": float(len(full) - keep)}
        if temperature is not None:
            extra["probs_temperature"] = temperature
        return Evaluation(
            argmax=[int(i) for i in np.argmax(rows, axis=1)],
            probs=None if temperature is None else softmax(rows, temperature),
            elapsed_s=time.perf_counter() - start,
            extra=extra,
        )

    def rollback(self, n_tokens: int) -> None:
        """Keep the first ``n_tokens`` cached tokens (the accepted prefix); drop the rest."""
        if not 0 <= n_tokens <= len(self._tokens):
            raise InvalidInput(
                f"rollback to {n_tokens} tokens is out of range (0..{len(self._tokens)})"
            )
        self._truncate(n_tokens)


class LlamaCppTokenizer:
    """Only the vocabulary of a GGUF model (``vocab_only``): tokenize/detokenize, no weights.

    What the n-gram drafter and the remote target use to speak the target's token ids.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        identity: ModelIdentity | None = None,
        hash_cache: Sha256Cache | None = None,
    ) -> None:
        self.path = Path(path)
        self._identity = identity or read_identity(self.path, hash_cache=hash_cache)
        import llama_cpp

        try:
            with quiet_native_stderr(), model_params():
                self._llm = llama_cpp.Llama(
                    model_path=str(self.path), vocab_only=True, verbose=False
                )
        except (ValueError, RuntimeError) as exc:
            raise ModelFileError(f"llama.cpp cannot load {self.path}: {exc}") from None
        _silence_llama_logger()
        self.n_vocab = int(self._llm.n_vocab())

    @property
    def identity(self) -> ModelIdentity:
        """The identity of the model whose vocabulary this is."""
        return self._identity

    def tokenize(self, text: str, *, add_bos: bool = True) -> list[int]:
        """Token ids of ``text`` (special tokens parsed)."""
        return list(self._llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True))

    def detokenize(self, tokens: Sequence[int]) -> str:
        """Text of ``tokens`` (invalid UTF-8 fragments replaced)."""
        return self._llm.detokenize(list(tokens)).decode("utf-8", errors="replace")

    @property
    def bos_token(self) -> int:
        """The beginning-of-sequence token id."""
        return int(self._llm.token_bos())

    @property
    def eos_token(self) -> int:
        """The end-of-sequence token id."""
        return int(self._llm.token_eos())
