"""Remote target against a real ``python -m llama_cpp.server`` started by the test.

llama-cpp-python's server only takes text prompts and keys top log-probs by token text,
so this exercises the text fallback; it computes log-probs in Python over the whole
262k vocabulary per echoed position (~0.4 s each), hence the short prompts.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from _llama_server import LlamaServer, free_port

from configspec.backends.factory import open_pair, open_target
from configspec.backends.llamacpp import LlamaCppDrafter, LlamaCppTarget, LlamaCppTokenizer
from configspec.backends.models import PreparedFamily
from configspec.backends.remote import RemoteTarget
from configspec.errors import BackendUnavailable

pytestmark = pytest.mark.slow

PROB_TOLERANCE = 2e-3


def _free_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def server_url(
    model_family: PreparedFamily, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    log = tmp_path_factory.mktemp("server") / "server.log"
    server = LlamaServer(model_family.target_path, log, n_ctx=128)
    try:
        server.start()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="module")
def tokenizer(model_family: PreparedFamily) -> LlamaCppTokenizer:
    return LlamaCppTokenizer(model_family.target_path, identity=model_family.target)


def _decisions(draft: list[int], argmax: list[int]) -> tuple[int, int]:
    """Greedy verification: (accepted count, bonus token)."""
    n = 0
    while n < len(draft) and draft[n] == argmax[n]:
        n += 1
    return n, argmax[n]


def test_remote_decisions_equal_local(
    model_family: PreparedFamily, server_url: str, tokenizer: LlamaCppTokenizer
) -> None:
    drafter = LlamaCppDrafter(
        model_family.drafter_path("Q4_0"), identity=model_family.drafters["Q4_0"], n_ctx=128
    )
    local = LlamaCppTarget(model_family.target_path, identity=model_family.target, n_ctx=128)
    remote = RemoteTarget(server_url, tokenizer, top_k=4)
    context = tokenizer.tokenize("Water boils at")
    seen_accept_counts = []
    try:
        for _ in range(2):
            draft = drafter.draft(context, 3).tokens
            ev_local = local.evaluate(context, draft)
            ev_remote = remote.evaluate(context, draft)
            assert ev_remote.extra["token_id_prompt"] == 0.0  # text fallback was used
            assert ev_remote.argmax == ev_local.argmax
            decision = _decisions(draft, ev_remote.argmax)
            assert decision == _decisions(draft, ev_local.argmax)
            # the remote top-k probabilities are the local distribution's
            assert ev_local.probs is not None
            assert ev_remote.top_ids is not None and ev_remote.top_probs is not None
            for row in range(len(draft) + 1):
                ids = ev_remote.top_ids[row]
                keep = ids >= 0
                diff = ev_local.probs[row, ids[keep]] - ev_remote.top_probs[row, keep]
                assert np.abs(diff).max() < PROB_TOLERANCE
            n, bonus = decision
            seen_accept_counts.append(n)
            local.rollback(len(context) + n)
            remote.rollback(len(context) + n)
            context = context + draft[:n] + [bonus]
    finally:
        remote.close()
        local.close()
        drafter.close()
    assert len(seen_accept_counts) == 2


def test_factory_opens_remote_and_ngram_pair(
    model_family: PreparedFamily, server_url: str, tokenizer: LlamaCppTokenizer
) -> None:
    drafter, target = open_pair("ngram:1-2", server_url, tokenizer=tokenizer)
    assert isinstance(target, RemoteTarget)
    assert drafter.identity.tokenizer_fingerprint == model_family.target.tokenizer_fingerprint
    target.close()


def test_remote_down_and_wrong_path(tokenizer: LlamaCppTokenizer, server_url: str) -> None:
    with pytest.raises(BackendUnavailable, match="cannot connect"):
        open_target(f"http://127.0.0.1:{_free_port()}", tokenizer=tokenizer)
    # a real server, but the URL points at a path that is not the API root
    with pytest.raises(BackendUnavailable, match="not an OpenAI-compatible server"):
        RemoteTarget(f"{server_url}/docs", tokenizer)


def test_missing_model_file_through_factory(tmp_path: Path) -> None:
    from configspec.errors import ModelFileError

    bad = tmp_path / "corrupt.gguf"
    bad.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 8)
    with pytest.raises(ModelFileError, match="corrupt or truncated"):
        open_target(str(bad))


def test_server_tokenizer_cross_check(
    server_url: str, tokenizer: LlamaCppTokenizer, tmp_path: Path
) -> None:
    from _tokenizer_doubles import other_vocab_tokenizer

    from configspec.errors import IncompatibleModels

    # the real server tokenizes the probe like the local Gemma tokenizer: accepted above;
    # a tokenizer with another vocabulary is refused, naming both
    with pytest.raises(IncompatibleModels, match="tokenizes differently"):
        RemoteTarget(server_url, other_vocab_tokenizer(tokenizer))


def test_verification_profile_of_a_real_remote_server(
    model_family: PreparedFamily, server_url: str, tmp_path: Path
) -> None:
    """`profile verify` against a real OpenAI-compatible server: latency per position count
    over HTTP, stored with the endpoint and the price (short context: the server computes
    log-probs in Python over the whole vocabulary per echoed position)."""
    from configspec.profiling.verification import (
        VerificationProfiler,
        VerifySweepSettings,
        parse_price,
    )
    from configspec.store import ProfileStore

    settings = VerifySweepSettings(
        k_max=1, context_tokens=(2,), warmup=0, min_repeats=2, max_repeats=2, point_budget_s=30
    )
    store = ProfileStore(tmp_path)
    profile, path, report = VerificationProfiler(
        server_url,
        store,
        price=parse_price(2.0, None),
        settings=settings,
        tokenizer=str(model_family.target_path),
        target_name="gemma-3-270m-f32-remote",
    ).run()
    assert path == store.verification_path("gemma-3-270m-f32-remote")
    assert profile.endpoint == server_url
    assert [p.positions for p in profile.latency] == [1, 2]
    assert all(p.latency_ms.mean > 0 and p.latency_ms.n == 2 for p in profile.latency)
    assert profile.price.kind == "gpu_time"
    assert profile.provenance.settings["threads"] is None  # not ours to set remotely
    assert len(report.points) == 2


def test_concurrent_verifier_in_front_of_llama_cpp_server(
    model_family: PreparedFamily, server_url: str, tokenizer: LlamaCppTokenizer
) -> None:
    """The verifier for URL targets (async, no lock) is correct against a real text-only
    server: two concurrent sessions each get exactly target-only greedy decoding."""
    import threading

    from configspec.backends.ngram import NgramDrafter
    from configspec.serving.client import EdgeClient
    from configspec.serving.concurrent import ConcurrentVerifierService
    from configspec.serving.server import ServerThread
    from configspec.serving.sessions import ServerLimits

    local = LlamaCppTarget(model_family.target_path, identity=model_family.target, n_ctx=128)
    prompts = [tokenizer.tokenize("Water boils at"), tokenizer.tokenize("The sky is")]
    expected = []
    for p in prompts:  # target-only greedy, locally
        ctx = list(p)
        for _ in range(2):
            ctx.append(local.evaluate(ctx, []).argmax[0])
        expected.append(ctx[len(p) :])
    local.close()
    service = ConcurrentVerifierService(
        RemoteTarget(server_url, tokenizer, top_k=4), ServerLimits(max_sessions=4, max_k=4)
    )
    got: list[list[int]] = [[], []]

    def run(i: int) -> None:
        with EdgeClient(srv.url, NgramDrafter(tokenizer), k=2, timeout_s=300) as c:
            got[i] = c.generate(prompts[i], 2).tokens

    with ServerThread(service) as srv:
        threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert got == expected
