"""Test helper: a tokenizer wrapper that splits text differently from Gemma's."""

from __future__ import annotations

from collections.abc import Sequence

from configspec.backends.base import ModelIdentity, Tokenizing


class _Shifted:
    """Wraps a real tokenizer but shifts every id by one (a different vocabulary)."""

    def __init__(self, inner: Tokenizing) -> None:
        self.inner = inner

    @property
    def identity(self) -> ModelIdentity:
        return self.inner.identity

    def tokenize(self, text: str, *, add_bos: bool = True) -> list[int]:
        return [t + 1 for t in self.inner.tokenize(text, add_bos=add_bos)]

    def detokenize(self, tokens: Sequence[int]) -> str:
        return self.inner.detokenize([t - 1 for t in tokens])


def other_vocab_tokenizer(inner: Tokenizing) -> Tokenizing:
    """A tokenizer test double disagreeing with ``inner`` on every id."""
    return _Shifted(inner)
