"""Model-free n-gram (prompt-lookup) drafter, as llama.cpp's lookup decoding and vLLM's
``ngram`` speculator.

To draft, it takes the last ``n`` tokens of the context (``n`` from ``max_n`` down to
``min_n``), finds the most recent earlier place where that n-gram occurred, and proposes
the tokens that followed it. If the continuation is shorter than ``k`` it appends it and
looks again, so a repeated passage is proposed in one draft. With no match it proposes
nothing (``DraftResult.tokens`` may be shorter than ``k``, possibly empty): a verifier
then simply generates one token. Drafting costs microseconds and no model, which makes it
the cheapest drafter in the space; its proposals are deterministic (probability 1 each,
i.e. a one-hot draft distribution for speculative sampling).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from configspec.backends.base import DraftResult, ModelIdentity, Tokenizing
from configspec.backends.specs import NGRAM, ngram_name
from configspec.errors import InvalidInput


class NgramDrafter:
    """Prompt-lookup drafter over a tokenizer's ids (a :class:`~configspec.backends.base.Drafter`).

    ``tokenizer`` is the target's (any object with ``identity``, ``tokenize`` and
    ``detokenize``), so drafted ids are the target's ids. ``min_n``/``max_n`` bound the
    n-gram length matched (1..max_n); ``max_context`` caps how many recent tokens are
    searched (0 = all).
    """

    def __init__(
        self,
        tokenizer: Tokenizing,
        *,
        min_n: int = 1,
        max_n: int = 3,
        max_context: int = 4096,
    ) -> None:
        if min_n < 1:
            raise InvalidInput(f"ngram min_n={min_n} is out of range (>= 1)")
        if max_n < min_n:
            raise InvalidInput(f"ngram max_n={max_n} is out of range (>= min_n={min_n})")
        if max_context < 0:
            raise InvalidInput(f"ngram max_context={max_context} is out of range (>= 0)")
        self.tokenizer = tokenizer
        self.min_n = min_n
        self.max_n = max_n
        self.max_context = max_context
        base = tokenizer.identity
        self._identity = dataclasses.replace(
            base,
            name=ngram_name(min_n, max_n),
            architecture=NGRAM,
            quantization=None,
            parameter_count=0,
            file_sha256=None,
            file_size_bytes=None,
            path=None,
        )

    @property
    def identity(self) -> ModelIdentity:
        """Identity: the tokenizer's family and fingerprint, architecture ``ngram``."""
        return self._identity

    def tokenize(self, text: str, *, add_bos: bool = True) -> list[int]:
        """Token ids of ``text`` with the target's tokenizer."""
        return self.tokenizer.tokenize(text, add_bos=add_bos)

    def detokenize(self, tokens: Sequence[int]) -> str:
        """Text of ``tokens`` with the target's tokenizer."""
        return self.tokenizer.detokenize(tokens)

    def lookup(self, tokens: np.ndarray, k: int) -> list[int]:
        """Up to ``k`` tokens that followed the latest earlier match of the longest suffix
        n-gram of ``tokens`` (``max_n`` down to ``min_n``); empty if none matches."""
        length = len(tokens)
        for n in range(min(self.max_n, length - 1), self.min_n - 1, -1):
            pattern = tokens[length - n :]
            # candidate windows start at 0..length-n-1 (the suffix itself excluded)
            windows = sliding_window_view(tokens[: length - 1], n)
            hits = np.flatnonzero((windows == pattern).all(axis=1))
            if hits.size:
                start = int(hits[-1]) + n
                return [int(t) for t in tokens[start : start + k]]
        return []

    def draft(
        self,
        context: Sequence[int],
        k: int,
        *,
        temperature: float = 0.0,
        seed: int | None = None,
    ) -> DraftResult:
        """Propose up to ``k`` tokens continuing ``context`` by n-gram lookup.

        ``temperature`` and ``seed`` are accepted for the Protocol and ignored: lookup is
        deterministic. ``elapsed_s`` is wall time in seconds.
        """
        if k < 1:
            raise InvalidInput(f"K={k} is out of range (>= 1)")
        start = time.perf_counter()
        window = context[-self.max_context :] if self.max_context else context
        seq = np.asarray(window, dtype=np.int64)
        drafted: list[int] = []
        while len(drafted) < k:
            more = self.lookup(seq, k - len(drafted))
            if not more:
                break
            drafted.extend(more)
            seq = np.concatenate([seq, np.asarray(more, dtype=np.int64)])
        return DraftResult(
            tokens=drafted,
            token_probs=[1.0] * len(drafted),
            elapsed_s=time.perf_counter() - start,
        )
