"""Isolation between sessions on the real F32 target (issue 19, item 1).

A session's output must not depend on what other sessions did. The target's cache is
shared across sessions (prefix reuse), so the test drives the adversarial case the fuzz run
found: a BOS-only session, then sessions that re-prefill after a switch.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
import pytest

from configspec.backends.llamacpp import LlamaCppTarget
from configspec.backends.llamacpp_batch import LlamaCppBatchTarget, SeqRequest
from configspec.backends.models import PreparedFamily
from configspec.backends.ngram import NgramDrafter
from configspec.serving.batched import BatchedVerifierService, BatchPolicy
from configspec.serving.client import EdgeClient
from configspec.serving.server import ServerThread
from configspec.serving.sessions import ServerLimits, VerifierService

pytestmark = pytest.mark.slow

PROMPT = "What is 17 multiplied by 23? Show your working."
ADVERSARIAL = ["", "1 1 1 1 1 1 1 1", "What is 17 multiplied by 24?", "<start_of_turn>user\n"]
N_TOKENS = 10


@pytest.fixture(scope="module")
def target(model_family: PreparedFamily) -> Iterator[LlamaCppTarget]:
    with LlamaCppTarget(model_family.target_path, identity=model_family.target, n_ctx=256) as t:
        yield t


def test_target_rows_do_not_depend_on_how_the_cache_was_built(target: LlamaCppTarget) -> None:
    """The same sequence gives the same bits whether prefilled whole, after a BOS-only
    decode, or one token per call (the shapes a verifier's history can produce)."""
    prompt = target.tokenize(PROMPT)
    target.reset()
    whole = target.evaluate(prompt, []).probs
    target.reset()
    target.evaluate(prompt[:1], [])  # BOS only: the decode the fuzz run found
    after_bos = target.evaluate(prompt, []).probs
    target.reset()
    for n in range(1, 6):
        target.evaluate(prompt[:n], [])
    stepwise = target.evaluate(prompt, []).probs
    target.reset()
    block = target.evaluate(prompt[:5], prompt[5:]).probs  # a verification block
    assert whole is not None and after_bos is not None and stepwise is not None
    assert block is not None
    assert np.array_equal(whole, after_bos)
    assert np.array_equal(whole, stepwise)
    assert np.array_equal(whole[-1], block[-1])


def _generate(url: str, target: LlamaCppTarget, text: str, k: int) -> list[int]:
    prompt = target.tokenize(text) if text else [target.tokenize("x")[0]]  # "" = BOS only
    with EdgeClient(url, NgramDrafter(target), k=k) as client:
        return client.generate(prompt, N_TOKENS).tokens


def test_same_prompt_alone_and_amid_adversarial_sessions(target: LlamaCppTarget) -> None:
    limits = ServerLimits(max_k=8, max_context_tokens=256)
    target.reset()
    with ServerThread(VerifierService([target], limits)) as srv:
        alone = _generate(srv.url, target, PROMPT, k=4)
        target_only = _generate(srv.url, target, PROMPT, k=0)
    assert alone == target_only  # one kernel for every pass: lossless on this verifier

    target.reset()
    with ServerThread(VerifierService([target], limits)) as srv:
        _generate(srv.url, target, "", k=4)  # BOS-only session first
        results: dict[str, list[int]] = {}

        def run(name: str, text: str, k: int) -> None:
            results[name] = _generate(srv.url, target, text, k)

        threads = [threading.Thread(target=run, args=("victim", PROMPT, 4))]
        threads += [
            threading.Thread(target=run, args=(f"adv{i}", text, 1 + i % 4))
            for i, text in enumerate(ADVERSARIAL)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        again = _generate(srv.url, target, PROMPT, k=2)
    assert results["victim"] == alone
    assert again == alone


def test_batched_sessions_are_isolated_and_match_the_single_target(
    model_family: PreparedFamily, target: LlamaCppTarget
) -> None:
    """Through the batched verifier (one KV stream per session, shared passes), the
    victim's tokens alone, amid adversarial batch mates, and at K=0 are all the tokens
    the one-session target gives."""
    target.reset()
    with ServerThread(VerifierService([target], ServerLimits(max_k=8))) as srv:
        want = _generate(srv.url, target, PROMPT, k=4)
    with LlamaCppBatchTarget(
        model_family.target_path, identity=model_family.target, n_seqs=6, n_ctx=128, n_batch=64
    ) as engine:
        limits = ServerLimits(max_k=8, max_context_tokens=128, max_sessions=6)
        service = BatchedVerifierService(
            engine, limits, BatchPolicy(max_positions_per_pass=64, prefill_chunk_tokens=8)
        )
        with ServerThread(service) as srv:
            alone = _generate(srv.url, target, PROMPT, k=4)
            results: dict[str, list[int]] = {}

            def run(name: str, text: str, k: int) -> None:
                results[name] = _generate(srv.url, target, text, k)

            threads = [threading.Thread(target=run, args=("victim", PROMPT, 4))]
            threads += [
                threading.Thread(target=run, args=(f"adv{i}", text, i % 3))
                for i, text in enumerate(ADVERSARIAL)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            k0 = _generate(srv.url, target, PROMPT, k=0)
            passes = service.batch_metrics.batch_sessions.collect()[0].samples
    assert alone == want
    assert results["victim"] == want
    assert k0 == want
    total = next(s.value for s in passes if s.name.endswith("_sum"))
    count = next(s.value for s in passes if s.name.endswith("_count"))
    assert total > count  # some passes really were shared


def test_pass_order_does_not_change_rows_and_answers_in_request_order(
    model_family: PreparedFamily,
) -> None:
    """Blocks are decoded sorted by sequence id (one llama.cpp micro-batch for contiguous
    ids); the evaluations still come back in request order, bit-identical to alone."""
    with LlamaCppBatchTarget(
        model_family.target_path, identity=model_family.target, n_seqs=4, n_ctx=256, n_threads=1
    ) as t:
        seqs = [t.new_sequence() for _ in range(3)]
        assert seqs == [0, 1, 2]
        t.free_sequence(1)
        assert t.new_sequence() == 1  # the lowest free id comes back first
        prompts = [t.tokenize(p) for p in (PROMPT, *ADVERSARIAL[1:3])]
        alone = []
        for s, p in zip(seqs, prompts, strict=True):
            alone.append(t.evaluate_many([SeqRequest(s, p[:-2], p[-2:], probs=True)])[0])
            t.free_sequence(s)
            assert t.new_sequence() == s
        shuffled = [2, 0, 1]
        together = t.evaluate_many(
            [SeqRequest(s, prompts[s][:-2], prompts[s][-2:], probs=True) for s in shuffled]
        )
        for s, ev in zip(shuffled, together, strict=True):
            assert ev.argmax == alone[s].argmax
            assert ev.probs is not None and alone[s].probs is not None
            assert np.array_equal(ev.probs, alone[s].probs)


def test_gap_fillers_keep_rows_and_caches_bit_identical(model_family: PreparedFamily) -> None:
    """A pass over sequences 0, 2 and 4 is filled to one run (1: a live session, its last
    tokens re-decoded; 3: free, pads): the passing sequences' rows, the live gap's next
    round and the free one's first prefill are all bit-identical to alone."""
    from configspec.backends.llamacpp_batch import gap_fillers

    with LlamaCppBatchTarget(
        model_family.target_path, identity=model_family.target, n_seqs=5, n_ctx=256, n_threads=1
    ) as t:
        texts = [PROMPT, *ADVERSARIAL[1:], "Name three primes."]
        ctx = {s: t.tokenize(x) for s, x in enumerate(texts)}
        drafts = [5, 17, 99]

        def alone(s: int) -> np.ndarray:
            ev = t.evaluate_many([SeqRequest(s, ctx[s], drafts, probs=True)])[0]
            t.rollback(s, len(ctx[s]))
            assert ev.probs is not None
            return ev.probs

        seqs = [t.new_sequence() for _ in range(5)]
        want = {s: alone(s) for s in seqs}
        t.free_sequence(3)
        assert gap_fillers([0, 2, 4], len(drafts) + 1, t.n_batch) == [1, 3]
        held = t.cached_tokens(1)
        together = t.evaluate_many([SeqRequest(s, ctx[s], drafts, probs=True) for s in (0, 2, 4)])
        for s, ev in zip((0, 2, 4), together, strict=True):
            assert ev.probs is not None and np.array_equal(ev.probs, want[s]), s
        assert t.cached_tokens(1) == held
        assert np.array_equal(alone(1), want[1])  # the live gap: cache rewritten unchanged
        assert t.new_sequence() == 3
        assert np.array_equal(alone(3), want[3])  # the free gap: its pads are gone
