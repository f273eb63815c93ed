"""How a T > 0 reference is drawn: one seed per prompt, llama.cpp's sampler chain (the
chain ``llama_cpp.server`` builds with the filters off). No model is loaded: the sampler
runs on hand-made logits, the target is a test fake."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from configspec.profiling.prompts import Prompt
from configspec.profiling.reference import (
    LlamaCppSampler,
    ReferenceSettings,
    cache_key,
    compute_reference,
    prompt_seed,
)

PROMPTS = [Prompt("a", "chat", "Hello there"), Prompt("b", "code", "def f():")]


class RecordingTarget:
    """Test fake of TeacherForcedModel: records the seed of every generation."""

    n_ctx = 64
    n_vocab = 5

    def __init__(self) -> None:
        self.seeds: list[int] = []

    def tokenize(self, text: str, *, add_bos: bool = True) -> list[int]:
        return [0, 1]

    def generate(
        self, context: Sequence[int], n_tokens: int, *, temperature: float, seed: int
    ) -> list[int]:
        self.seeds.append(seed)
        return [2] * n_tokens

    def logits_along(self, context: Sequence[int], tokens: Sequence[int]) -> np.ndarray:
        return np.tile(np.arange(self.n_vocab, dtype=np.float64), (len(tokens), 1))


def test_every_prompt_gets_its_own_seed() -> None:
    target = RecordingTarget()
    settings = ReferenceSettings(n_tokens=3, temperature=0.8, seed=7, top_k=2)
    for p in PROMPTS:
        compute_reference(target, p, settings)  # type: ignore[arg-type]
    assert target.seeds == [prompt_seed(7, p) for p in PROMPTS]
    assert target.seeds[0] != target.seeds[1]
    assert prompt_seed(7, PROMPTS[0]) == prompt_seed(7, Prompt("x", "math", "Hello there"))
    assert prompt_seed(7, PROMPTS[0]) != prompt_seed(8, PROMPTS[0])
    assert all(0 <= s < 2**31 for s in target.seeds)


def test_sampled_references_are_not_reused_from_the_one_seed_scheme() -> None:
    # the key a T = 0.8 reference had when every prompt was sampled with one seed
    one_seed_key = "74d5e67cd3dc212b67ff8f94c1479b3a"
    assert cache_key("sha", PROMPTS[0], ReferenceSettings(temperature=0.8)) != one_seed_key
    # greedy references do not depend on the sampler: their key is unchanged
    assert cache_key("sha", PROMPTS[0], ReferenceSettings()) == "e87c709925dbac6f0fe86d3a8a4dfece"


@pytest.mark.parametrize("temperature", [0.5, 1.0])
def test_llama_cpp_sampler_draws_from_the_tempered_distribution(temperature: float) -> None:
    logits = np.log(np.array([0.1, 0.2, 0.3, 0.4]))
    sampler = LlamaCppSampler(4, temperature, seed=3)
    try:
        draws = np.array([sampler.sample(logits) for _ in range(4000)])
    finally:
        sampler.close()
    want = np.exp(logits / temperature) / np.exp(logits / temperature).sum()
    freq = np.bincount(draws, minlength=4) / draws.size
    assert np.max(np.abs(freq - want)) < 0.03  # 4000 draws: sd <= 0.008


def test_llama_cpp_sampler_is_reproducible_by_seed() -> None:
    logits = np.zeros(50)

    def run(seed: int) -> list[int]:
        s = LlamaCppSampler(50, 0.8, seed)
        try:
            return [s.sample(logits) for _ in range(20)]
        finally:
            s.close()

    assert run(1) == run(1) and run(1) != run(2)
