"""The backend contract: what the rest of ConfigSpec needs from an inference engine.

Two roles, two small Protocols:

* a :class:`Drafter` proposes K tokens after a context (llama.cpp model, n-gram lookup);
* a :class:`Target` evaluates a block of tokens after a context and returns its
  distribution at every position, so a verifier can accept a prefix; it keeps a cache
  that is rolled back to the accepted prefix instead of re-evaluating it
  (local llama.cpp, or a remote OpenAI-compatible engine such as vLLM).

Both are stateful per conversation: they remember the token sequence they have seen
(their KV cache) and reuse the longest common prefix with the next request. Token ids
are plain ``int``; distributions are numpy arrays of probabilities (rows sum to 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]


class HasVocabulary(Protocol):
    """Anything that names a vocabulary: a :class:`ModelIdentity` or a served target."""

    @property
    def tokenizer_fingerprint(self) -> str: ...

    @property
    def vocab_size(self) -> int: ...


def same_tokenizer(a: HasVocabulary, b: HasVocabulary) -> bool:
    """True when ``a`` and ``b`` tokenize alike (same fingerprint and vocabulary size)."""
    return a.tokenizer_fingerprint == b.tokenizer_fingerprint and a.vocab_size == b.vocab_size


@dataclass(frozen=True)
class ModelIdentity:
    """What a model is, read from its GGUF metadata rather than its file name.

    ``family`` groups models that share a tokenizer (drafter and target may only be paired
    when ``tokenizer_fingerprint`` matches); ``name`` is the id used in profiles.
    """

    name: str
    family: str
    architecture: str
    quantization: str | None
    parameter_count: int | None
    context_length: int | None
    vocab_size: int
    tokenizer_fingerprint: str
    file_sha256: str | None
    file_size_bytes: int | None = None
    path: str | None = None


@dataclass(frozen=True)
class DraftResult:
    """K proposed tokens.

    ``token_probs[i]`` is the drafter's probability of ``tokens[i]`` (1.0 for greedy or
    model-free drafting); ``distributions`` (K × vocab) is present only when drafting by
    sampling, for the speculative-sampling residual. ``elapsed_s`` is wall time spent
    drafting, measured inside the backend.
    """

    tokens: list[int]
    token_probs: list[float]
    distributions: FloatArray | None = None
    elapsed_s: float = 0.0


@dataclass(frozen=True)
class Evaluation:
    """The target's distributions after ``context + tokens[:i]`` for i = 0..len(tokens).

    ``probs`` has shape (len(tokens) + 1, vocab) when full distributions are available;
    remote engines that return only top-k log-probs fill ``top_ids``/``top_probs`` instead
    (shape (len(tokens)+1, k)) and leave ``probs`` None. ``argmax`` is always present.
    """

    argmax: list[int]
    probs: FloatArray | None = None
    top_ids: npt.NDArray[np.int64] | None = None
    top_probs: FloatArray | None = None
    elapsed_s: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)


def evaluate_at(
    target: Target, context: Sequence[int], tokens: Sequence[int], temperature: float | None
) -> Evaluation:
    """``target``'s evaluation with ``probs`` at ``temperature`` where it can compute them
    so (a local llama.cpp target's ``evaluate_at``: the softmax taken once, at the
    sampling temperature; None: no ``probs``, greedy), else its plain ``evaluate`` (probs
    at T = 1 or top-k, which the verifier re-tempers). The verifier and the verification
    profiler both call this, so the profile times the pass the verifier runs."""
    at = getattr(target, "evaluate_at", None)
    if callable(at):
        ev: Evaluation = at(context, tokens, temperature)
        return ev
    ev = target.evaluate(context, tokens)
    return ev


@runtime_checkable
class Tokenizing(Protocol):
    """Both roles tokenize with the model's own vocabulary."""

    @property
    def identity(self) -> ModelIdentity: ...

    def tokenize(self, text: str, *, add_bos: bool = True) -> list[int]:
        """Token ids of ``text`` (with the model's BOS when ``add_bos``)."""
        ...

    def detokenize(self, tokens: Sequence[int]) -> str:
        """Text of ``tokens``."""
        ...


@runtime_checkable
class Drafter(Tokenizing, Protocol):
    """Proposes tokens after a context."""

    def draft(
        self,
        context: Sequence[int],
        k: int,
        *,
        temperature: float = 0.0,
        seed: int | None = None,
    ) -> DraftResult:
        """Propose ``k`` tokens after ``context`` (greedy at temperature 0, else sampled).

        Model drafters always return ``k`` tokens; a model-free drafter (n-gram lookup)
        may return fewer, even none, when the context offers no match.

        A drafter may also offer ``prefill(context) -> None`` to read a prompt ahead of
        the first draft (the edge client calls it before decoding starts when present).
        """
        ...


@runtime_checkable
class Target(Tokenizing, Protocol):
    """Evaluates blocks of tokens after a context, keeping a rollback-able cache."""

    def evaluate(self, context: Sequence[int], tokens: Sequence[int]) -> Evaluation:
        """Distributions at every position of ``tokens`` after ``context`` (and one past it).

        Reuses the cached prefix shared with the previous call; only new tokens are
        evaluated.
        """
        ...

    def rollback(self, n_tokens: int) -> None:
        """Keep only the first ``n_tokens`` of the cached sequence (accepted prefix)."""
        ...
