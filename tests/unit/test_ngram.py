from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from configspec.backends.base import Drafter, ModelIdentity
from configspec.backends.ngram import NgramDrafter
from configspec.errors import InvalidInput


class WordTokenizer:
    """Test fake: one id per whitespace-separated word."""

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {"<s>": 0}
        self.identity = ModelIdentity(
            name="words",
            family="words-abc",
            architecture="fake",
            quantization=None,
            parameter_count=None,
            context_length=None,
            vocab_size=100,
            tokenizer_fingerprint="abc",
            file_sha256=None,
        )

    def tokenize(self, text: str, *, add_bos: bool = True) -> list[int]:
        ids = [self.vocab.setdefault(w, len(self.vocab)) for w in text.split()]
        return ([0] if add_bos else []) + ids

    def detokenize(self, tokens: Sequence[int]) -> str:
        inv = {v: k for k, v in self.vocab.items()}
        return " ".join(inv[t] for t in tokens if t != 0)


def test_proposes_continuation_of_latest_match() -> None:
    tok = WordTokenizer()
    d = NgramDrafter(tok, min_n=1, max_n=3)
    assert isinstance(d, Drafter)
    ctx = tok.tokenize("the cat sat on the mat . the cat sat on the")
    out = d.draft(ctx, 3)
    assert d.detokenize(out.tokens) == "mat . the"
    assert out.token_probs == [1.0, 1.0, 1.0]
    assert out.distributions is None


def test_longest_ngram_wins_over_recent_short_match() -> None:
    tok = WordTokenizer()
    d = NgramDrafter(tok, min_n=1, max_n=2)
    # "b c" matched at the start (→ "x"); "c" alone more recently (→ "y")
    ctx = tok.tokenize("b c x c y b c")
    assert d.detokenize(d.draft(ctx, 1).tokens) == "x"
    d1 = NgramDrafter(tok, min_n=1, max_n=1)
    assert d1.detokenize(d1.draft(ctx, 1).tokens) == "y"


def test_extends_by_repeated_lookup_up_to_k() -> None:
    tok = WordTokenizer()
    d = NgramDrafter(tok, min_n=1, max_n=2)
    ctx = tok.tokenize("a b a b")
    assert d.detokenize(d.draft(ctx, 5).tokens) == "a b a b a"


def test_no_match_proposes_nothing() -> None:
    tok = WordTokenizer()
    d = NgramDrafter(tok, min_n=2, max_n=3)
    out = d.draft(tok.tokenize("one two three four"), 4)
    assert out.tokens == [] and out.token_probs == []
    assert d.draft([0], 4).tokens == []


def test_identity_shares_the_tokenizer_fingerprint() -> None:
    tok = WordTokenizer()
    d = NgramDrafter(tok, min_n=1, max_n=4)
    assert d.identity.tokenizer_fingerprint == "abc"
    assert d.identity.family == "words-abc"
    assert d.identity.architecture == "ngram" and d.identity.name == "ngram[1-4]"


def test_max_context_limits_the_search() -> None:
    tok = WordTokenizer()
    ctx = tok.tokenize("q z " + "w " * 20 + "q")
    assert NgramDrafter(tok, max_context=0).draft(ctx, 1).tokens == tok.tokenize("z", add_bos=False)
    # the last 10 tokens hold no earlier "q"
    assert NgramDrafter(tok, max_context=10).draft(ctx, 1).tokens == []


def test_random_sequences_continuation_is_consistent() -> None:
    rng = np.random.default_rng(0)
    tok = WordTokenizer()
    d = NgramDrafter(tok, min_n=1, max_n=3)
    for _ in range(50):
        ctx = [int(x) for x in rng.integers(0, 5, size=30)]
        out = d.draft(ctx, 4).tokens
        if out:  # the proposal continues some earlier occurrence of a suffix n-gram
            joined = ctx + out
            found = any(
                joined[i : i + n] == ctx[-n:] and joined[i + n : i + n + 1] == out[:1]
                for n in range(1, 4)
                for i in range(len(ctx) - n)
            )
            assert found


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"min_n": 0}, "min_n=0"),
        ({"min_n": 3, "max_n": 2}, "max_n=2"),
        ({"max_context": -1}, "max_context=-1"),
    ],
)
def test_bad_parameters(kwargs: dict[str, int], needle: str) -> None:
    with pytest.raises(InvalidInput, match=needle):
        NgramDrafter(WordTokenizer(), **kwargs)
    with pytest.raises(InvalidInput, match="K=0"):
        NgramDrafter(WordTokenizer()).draft([0, 1], 0)
