"""llama.cpp backend against plain llama-cpp-python on the real Gemma 3 270M family."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import llama_cpp
import numpy as np
import pytest

from configspec.backends._native import model_params, quiet_native_stderr
from configspec.backends.base import Drafter, Target
from configspec.backends.llamacpp import LlamaCppDrafter, LlamaCppTarget
from configspec.backends.models import PreparedFamily
from configspec.errors import InvalidInput

pytestmark = pytest.mark.slow

#: Batched vs token-by-token distributions: llama.cpp's batched matmuls round differently,
#: measured max |Δp| ≈ 5e-4 on the F32 target; we allow 4x that.
PROB_TOLERANCE = 2e-3
PROMPTS = [
    "The capital of France is Paris. The capital of Germany is",
    "def fibonacci(n):\n    if n < 2:\n        return n\n",
]


@pytest.fixture(scope="module")
def drafter(model_family: PreparedFamily) -> Iterator[LlamaCppDrafter]:
    with LlamaCppDrafter(
        model_family.drafter_path("Q8_0"), identity=model_family.drafters["Q8_0"], n_ctx=256
    ) as d:
        yield d


@pytest.fixture(scope="module")
def target(model_family: PreparedFamily) -> Iterator[LlamaCppTarget]:
    with LlamaCppTarget(model_family.target_path, identity=model_family.target, n_ctx=256) as t:
        yield t


def test_protocols(drafter: LlamaCppDrafter, target: LlamaCppTarget) -> None:
    assert isinstance(drafter, Drafter)
    assert isinstance(target, Target)
    assert drafter.identity.tokenizer_fingerprint == target.identity.tokenizer_fingerprint
    ids = drafter.tokenize("Hello world")
    assert ids[0] == 2  # Gemma BOS
    assert drafter.detokenize(ids[1:]) == "Hello world"


def test_greedy_draft_is_token_identical_to_llama_cpp(
    model_family: PreparedFamily, drafter: LlamaCppDrafter
) -> None:
    # model_params(): the same extra-buffer policy as the backend (no AMX where a VM
    # advertises it without supporting it), so both arms run the same kernels.
    with quiet_native_stderr(), model_params():
        raw = llama_cpp.Llama(
            str(model_family.drafter_path("Q8_0")),
            n_ctx=256,
            n_threads=2,
            n_threads_batch=2,
            swa_full=True,
            verbose=False,
        )
    try:
        for prompt in PROMPTS:
            context = drafter.tokenize(prompt)
            ours = drafter.draft(context, 12)
            raw.reset()
            theirs = list(itertools.islice(raw.generate(context, temp=0.0), 12))
            assert ours.tokens == theirs
            assert ours.token_probs == [1.0] * 12
            assert ours.distributions is None
            assert ours.elapsed_s > 0
    finally:
        with quiet_native_stderr():
            raw.close()


def test_sampled_draft_is_seeded_and_returns_distributions(drafter: LlamaCppDrafter) -> None:
    context = drafter.tokenize(PROMPTS[0])
    a = drafter.draft(context, 4, temperature=0.8, seed=7)
    b = drafter.draft(context, 4, temperature=0.8, seed=7)
    assert a.tokens == b.tokens and a.token_probs == b.token_probs
    assert a.distributions is not None
    assert a.distributions.shape == (4, drafter.n_vocab)
    np.testing.assert_allclose(a.distributions.sum(axis=1), 1.0, atol=1e-4)
    for i, tok in enumerate(a.tokens):
        assert a.token_probs[i] == pytest.approx(float(a.distributions[i, tok]))
        assert a.token_probs[i] > 0


def test_rollback_then_redraft_equals_fresh(drafter: LlamaCppDrafter) -> None:
    context = drafter.tokenize(PROMPTS[1])
    first = drafter.draft(context, 8)
    # accept 3, continue from there with the KV cache reused
    accepted = context + first.tokens[:3]
    before = drafter.n_evaluated_tokens
    reused = drafter.draft(accepted, 5)
    assert drafter.n_evaluated_tokens - before <= 5  # no prefix re-evaluation
    drafter.reset()
    fresh = drafter.draft(accepted, 5)
    assert reused.tokens == fresh.tokens == first.tokens[3:8]


def test_batched_distributions_match_token_by_token(target: LlamaCppTarget) -> None:
    context = target.tokenize(PROMPTS[0])
    block = [15687, 236761, 669, 5279, 529, 506]  # " Berlin. The capital of the"
    target.reset()
    batched = target.evaluate(context, block)
    assert batched.probs is not None and batched.probs.shape == (len(block) + 1, target.n_vocab)
    target.reset()
    rows = []
    for i in range(len(block) + 1):
        ev = target.evaluate(context + block[:i], [])
        assert ev.probs is not None
        rows.append(ev.probs[0])
    single = np.stack(rows)
    # every target pass has >= 2 rows, so both use the same kernels: bit-identical
    assert np.array_equal(single, batched.probs)
    assert batched.argmax == [int(r.argmax()) for r in single]
    np.testing.assert_allclose(batched.probs.sum(axis=1), 1.0, atol=1e-4)


def test_evaluate_at_gives_the_verifiers_probabilities(target: LlamaCppTarget) -> None:
    # what the verifier computes in its pass: no probabilities for a greedy round, the
    # softmax at T for a sampled one (not T=1 probabilities re-tempered afterwards)
    from configspec.serving.verify import apply_temperature

    context = target.tokenize(PROMPTS[0])
    block = [15687, 236761, 669]
    plain = target.evaluate(context, block)
    greedy = target.evaluate_at(context, block, None)
    assert greedy.probs is None and greedy.argmax == plain.argmax
    hot = target.evaluate_at(context, block, 0.8)
    assert hot.extra["probs_temperature"] == 0.8 and hot.argmax == plain.argmax
    assert plain.probs is not None and hot.probs is not None
    np.testing.assert_allclose(hot.probs, apply_temperature(plain.probs, 0.8), atol=1e-6)


def test_target_rollback_reuses_prefix(target: LlamaCppTarget) -> None:
    context = target.tokenize(PROMPTS[0])
    target.reset()
    draft = [15687, 236761, 669, 5279]
    target.evaluate(context, draft)
    target.rollback(len(context) + 2)  # accept two drafted tokens
    assert target.cached_tokens == context + draft[:2]
    before = target.n_evaluated_tokens
    bonus, more = 669, [5279, 529]
    after = target.evaluate(context + draft[:2] + [bonus], more)
    assert target.n_evaluated_tokens - before == 1 + len(more)  # prefix not re-evaluated
    target.reset()
    fresh = target.evaluate(context + draft[:2] + [bonus], more)
    assert after.argmax == fresh.argmax
    assert after.probs is not None and fresh.probs is not None
    assert np.abs(after.probs - fresh.probs).max() < PROB_TOLERANCE


def test_bad_calls_are_clear(drafter: LlamaCppDrafter, target: LlamaCppTarget) -> None:
    with pytest.raises(InvalidInput, match="K=0"):
        drafter.draft([2, 100], 0)
    with pytest.raises(InvalidInput, match="context is empty"):
        drafter.draft([], 3)
    with pytest.raises(InvalidInput, match="out of range"):
        target.evaluate([2, 10**9], [])
    with pytest.raises(InvalidInput, match="n_ctx=256"):
        target.evaluate([2] * 300, [])
    with pytest.raises(InvalidInput, match="rollback to 9999"):
        target.rollback(9999)


def test_blocks_longer_than_n_batch_are_chunked(
    model_family: PreparedFamily, target: LlamaCppTarget
) -> None:
    context = target.tokenize(PROMPTS[0])
    block = [15687, 236761, 669, 5279, 529, 506]
    target.reset()
    whole = target.evaluate(context, block)
    with LlamaCppTarget(
        model_family.target_path, identity=model_family.target, n_ctx=64, n_batch=4
    ) as small:
        chunked = small.evaluate(context, block)
    assert chunked.argmax == whole.argmax
    assert chunked.probs is not None and whole.probs is not None
    assert np.abs(chunked.probs - whole.probs).max() < PROB_TOLERANCE
