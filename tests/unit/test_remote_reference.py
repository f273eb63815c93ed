"""Remote references against vLLM-shaped response bodies (tests/fixtures/vllm, written from
vLLM's documented schema) served by an httpx MockTransport (a test fake), plus the
llama-cpp-python text shape, retries, resume after a dead server, and the top-k bounds."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from configspec.backends.base import ModelIdentity
from configspec.backends.openai_http import PROBE_TEXT, OpenAIServer, RetryPolicy
from configspec.errors import BackendUnavailable, IncompatibleModels
from configspec.profiling.acceptance import (
    overlap_topk_full,
    overlap_topk_onehot,
    softmax_temperature,
    temper_topk,
)
from configspec.profiling.prompts import Prompt
from configspec.profiling.reference import ReferenceSettings, prompt_seed
from configspec.profiling.remote_reference import RemoteReferenceSource, fetch_references
from configspec.store import ProfileStore

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "vllm"
WORDS = ["<s>", "</s>", "a", "b", "c", "d", "e", "f"]
PROMPTS = [Prompt("p1", "chat", "a b"), Prompt("p2", "code", "b a"), Prompt("p3", "chat", "a a")]


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


class Words:
    """Test fake tokenizer: ids index WORDS; pieces are ' word'; the probe text is 'a b c'."""

    identity = ModelIdentity(
        name="words",
        family="fake",
        architecture="fake",
        quantization=None,
        parameter_count=None,
        context_length=None,
        vocab_size=len(WORDS),
        tokenizer_fingerprint="fp-words",
        file_sha256=None,
    )
    eos_token = 1

    def tokenize(self, text: str, *, add_bos: bool = True) -> list[int]:
        text = "a b c" if text == PROBE_TEXT else text
        return ([0] if add_bos else []) + [WORDS.index(w) for w in text.split()]

    def detokenize(self, tokens: Sequence[int]) -> str:
        return "".join(f" {WORDS[t]}" for t in tokens if t > 1)


def vllm(
    completions: Callable[[dict[str, Any]], Any],
    *,
    tokenize: bool = True,
    log: list[dict[str, Any]] | None = None,
) -> httpx.MockTransport:
    """A fake vLLM: /v1/models and /tokenize from fixtures, completions from a function."""

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else {}
        if log is not None:
            log.append({"path": request.url.path, **body})
        if request.url.path == "/v1/models":
            return httpx.Response(200, json=fixture("models.json"))
        if request.url.path == "/tokenize":
            if tokenize:
                return httpx.Response(200, json=fixture("tokenize.json"))
            return httpx.Response(404, json={"detail": "Not Found"})
        if request.url.path == "/extras/tokenize":
            return httpx.Response(404, json={"detail": "Not Found"})
        reply = completions(body)
        return reply if isinstance(reply, httpx.Response) else httpx.Response(200, json=reply)

    return httpx.MockTransport(handler)


def source(
    transport: httpx.MockTransport, waits: list[float] | None = None
) -> RemoteReferenceSource:
    return RemoteReferenceSource(
        "http://vllm:8000/v1",
        Words(),
        transport=transport,
        retry=RetryPolicy(attempts=3, backoff_s=0.25),
        sleep=(waits.append if waits is not None else lambda s: None),
    )


def test_greedy_reference_from_vllm_token_ids(tmp_path: Path) -> None:
    log: list[dict[str, Any]] = []
    src = source(vllm(lambda body: fixture("greedy.json"), log=log))
    assert src.model == "meta-llama/Llama-3.1-70B-Instruct" and src.tokenizer_checked
    ref = src.fetch(PROMPTS[0], ReferenceSettings(n_tokens=4))
    sent = next(e for e in log if e["path"] == "/v1/completions")
    assert sent["prompt"] == [0, 2, 3] and sent["temperature"] == 0.0
    assert sent["return_tokens_as_token_ids"] is True and sent["logprobs"] == 1
    assert sent["top_p"] == 1.0 and sent["top_k"] == 0 and sent["repetition_penalty"] == 1.0
    assert ref.tokens.tolist() == [4, 5, 6, 7] and ref.argmax.tolist() == [4, 5, 6, 7]
    assert ref.prompt_tokens.tolist() == [0, 2, 3] and ref.dist is None
    # vLLM returns the EOS token it stopped at: kept once, not appended twice
    src2 = source(vllm(lambda body: fixture("greedy_eos.json")))
    assert src2.fetch(PROMPTS[0], ReferenceSettings(n_tokens=4)).tokens.tolist() == [4, 1]


def test_tokenizer_check_through_echo_prompt_logprobs() -> None:
    def completions(body: dict[str, Any]) -> Any:
        assert body["prompt"] == PROBE_TEXT and body["echo"] and body["prompt_logprobs"] == 0
        return fixture("echo_prompt_logprobs.json")

    src = source(vllm(completions, tokenize=False))
    assert src.tokenizer_checked

    class Other(Words):
        def tokenize(self, text: str, *, add_bos: bool = True) -> list[int]:
            return [*super().tokenize(text, add_bos=add_bos)[:-1], 7]

    with pytest.raises(IncompatibleModels, match="tokenizes differently"):
        RemoteReferenceSource(
            "http://vllm:8000", Other(), transport=vllm(completions, tokenize=False)
        )


def test_sampled_reference_with_raw_logprobs_is_tempered_with_bounds() -> None:
    log: list[dict[str, Any]] = []

    def completions(body: dict[str, Any]) -> Any:
        if body["max_tokens"] == 1:  # the raw-or-processed probe
            return fixture(
                "sampled_t1.json" if body["temperature"] == 1.0 else "sampled_t07_raw.json"
            )
        return fixture("sampled.json")

    src = source(vllm(completions, log=log))
    settings = ReferenceSettings(n_tokens=3, temperature=0.7, top_k=3, seed=5)
    ref = src.fetch(PROMPTS[0], settings)
    assert src.scales == {0.7: "raw"}
    sent = [e for e in log if e["path"] == "/v1/completions"][-1]
    assert sent["seed"] == prompt_seed(5, PROMPTS[0])
    assert sent["logprobs"] == 3 and sent["temperature"] == 0.7
    assert ref.tokens.tolist() == [4, 6, 5]
    assert ref.dist is not None and ref.dist.probs_low is not None
    # the sampled token the server added to the last top-k dict (k+1 entries) is dropped:
    # it is no bound on the ids outside the top-k
    assert ref.dist.ids.shape == (3, 3) and ref.dist.ids[2].tolist() == [3, 4, 7]
    assert ref.argmax.tolist() == [4, 6, 3]
    # row 0: p = (.7, .2, .05) + .05 over 5 other ids; at T=0.7 the exact value lies inside
    p = np.array([0.7, 0.2, 0.05])
    exact_lo = p ** (1 / 0.7) / (np.sum(p ** (1 / 0.7)) + 0.05 ** (1 / 0.7))  # tail piled
    assert np.all(ref.dist.probs_low[0, :3] <= exact_lo + 1e-9)
    assert np.all(exact_lo <= ref.dist.probs[0, :3] + 1e-9)


def test_each_prompt_is_sampled_with_its_own_seed_as_on_the_local_path() -> None:
    """One seed for every prompt gave every prompt the same random numbers: correlated
    trajectories (and a bootstrap CI over prompts that was far too narrow)."""
    log: list[dict[str, Any]] = []

    def completions(body: dict[str, Any]) -> Any:
        if body["max_tokens"] == 1:
            return fixture("sampled_t1.json")
        return fixture("sampled.json")

    src = source(vllm(completions, log=log))
    settings = ReferenceSettings(n_tokens=3, temperature=0.7, top_k=3, seed=5)
    for p in PROMPTS[:2]:
        src.fetch(p, settings)
    sent = [e["seed"] for e in log if e["path"] == "/v1/completions" and e["max_tokens"] == 3]
    assert sent == [prompt_seed(5, p) for p in PROMPTS[:2]]
    assert sent[0] != sent[1]


def test_sampled_token_outside_the_top_k_does_not_tighten_the_tail_bound() -> None:
    """Σ min(p, q) bounds hold when the server adds the sampled token to a top-k dict.

    Raw p over the 8 ids: the top-2 (.4, .3) are returned, plus the sampled id 7 (.03);
    the ids outside (.1, .1, .05, .01, .01) are above .03. Taking .03 as the cap on every
    unreturned id put the lower bound of p(2) at T = 0.5 above its true value."""
    raw = np.array([0.01, 0.01, 0.4, 0.3, 0.1, 0.1, 0.05, 0.03])  # index = token id
    top = {f"token_id:{i}": float(np.log(raw[i])) for i in (2, 3, 7)}
    reply = {
        "model": "meta-llama/Llama-3.1-70B-Instruct",
        "choices": [
            {
                "index": 0,
                "text": " f",
                "logprobs": {
                    "text_offset": [3],
                    "token_logprobs": [float(np.log(0.03))],
                    "tokens": ["token_id:7"],
                    "top_logprobs": [top],
                },
                "finish_reason": "length",
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }
    ref = source(vllm(lambda body: reply)).fetch(
        PROMPTS[0], ReferenceSettings(n_tokens=1, temperature=0.5, top_k=2)
    )
    truth = softmax_temperature(np.log(raw)[None, :], 0.5)[0]
    assert ref.tokens.tolist() == [7] and ref.dist is not None
    low, high = ref.dist.lower[0], ref.dist.probs[0]
    for j, tid in enumerate(ref.dist.ids[0]):
        assert low[j] - 1e-12 <= truth[tid] <= high[j] + 1e-12, (tid, low[j], truth[tid])
    # the n-gram's one-hot overlap p(d) for d = 2 and d = 6 (outside) is bounded too
    ov = overlap_topk_onehot(ref.dist, np.array([2]))
    assert ov.low[0] <= truth[2] <= ov.high[0]
    ov = overlap_topk_onehot(ref.dist, np.array([6]))
    assert ov.low[0] <= truth[6] <= ov.high[0]


def test_processed_logprobs_are_used_as_they_are() -> None:
    def completions(body: dict[str, Any]) -> Any:
        if body["max_tokens"] == 1 and body["temperature"] != 1.0:
            reply = fixture("sampled_t1.json")  # V0 / processed: differs from T=1
            top = reply["choices"][0]["logprobs"]["top_logprobs"][0]
            for k in top:
                top[k] = top[k] / 0.7
            return reply
        return fixture("sampled_t1.json" if body["max_tokens"] == 1 else "sampled.json")

    ref = source(vllm(completions)).fetch(PROMPTS[0], ReferenceSettings(3, 0.7, 0, 3))
    assert ref.dist is not None and ref.dist.probs_low is None
    assert ref.dist.probs[0, 0] == pytest.approx(0.7)
    assert ref.dist.remainder[0] == pytest.approx(0.05)


def test_raw_logprobs_that_round_differently_are_still_raw() -> None:
    """A server that re-evaluates a cached prompt in a batch of another size returns raw
    log-probs a few 1e-3 apart between the two probes; they were taken for tempered ones
    (seen against llama_cpp.server with concurrent requests), so α used the T = 1
    distribution as if it were the T = 0.8 one."""

    def completions(body: dict[str, Any]) -> Any:
        reply = fixture("sampled_t1.json" if body["max_tokens"] == 1 else "sampled.json")
        if body["max_tokens"] == 1 and body["temperature"] != 1.0:
            top = reply["choices"][0]["logprobs"]["top_logprobs"][0]
            for i, k in enumerate(top):
                top[k] += (0.004, -0.003, 0.002)[i % 3]  # rounding, not tempering
        return reply

    src = source(vllm(completions))
    ref = src.fetch(PROMPTS[0], ReferenceSettings(3, 0.7, 0, 3))
    assert src.scales == {0.7: "raw"}
    assert ref.dist is not None and ref.dist.probs_low is not None


def test_retries_back_off_on_429_and_503_then_succeed() -> None:
    replies = [
        httpx.Response(429, headers={"retry-after": "2"}, json={"message": "slow down"}),
        httpx.Response(503, json={"message": "overloaded"}),
    ]

    def completions(body: dict[str, Any]) -> Any:
        return replies.pop(0) if replies else fixture("greedy.json")

    waits: list[float] = []
    src = source(vllm(completions), waits)
    assert src.fetch(PROMPTS[0], ReferenceSettings(n_tokens=4)).tokens.tolist() == [4, 5, 6, 7]
    assert waits == [2.0, 0.5] and src.server.retries == 2


def test_max_logprobs_refusal_is_one_line() -> None:
    def completions(body: dict[str, Any]) -> Any:
        return httpx.Response(400, json=fixture("error_max_logprobs.json"))

    with pytest.raises(BackendUnavailable, match="pass a smaller --top-k") as err:
        source(vllm(completions)).fetch(PROMPTS[0], ReferenceSettings(4, 0.7, 0, 256))
    assert "max allowed: 20" in str(err.value) and "\n" not in str(err.value)


def test_dead_server_mid_profile_resumes_where_it_stopped(tmp_path: Path) -> None:
    store = ProfileStore(tmp_path)
    settings = ReferenceSettings(n_tokens=4)
    calls = {"n": 0}

    def dying(body: dict[str, Any]) -> Any:
        calls["n"] += 1
        if calls["n"] > 1:
            raise httpx.ConnectError("connection refused")
        return fixture("greedy.json")

    with pytest.raises(BackendUnavailable) as err:
        fetch_references(store, source(vllm(dying)), PROMPTS, settings, concurrency=1)
    msg = str(err.value)
    assert "cannot connect" in msg and "(after 3 tries)" in msg
    assert "1 of 3 references are cached; rerun the same command to resume" in msg
    assert "\n" not in msg

    fetched: list[Any] = []
    on_disk: list[int] = []

    def alive(body: dict[str, Any]) -> Any:
        fetched.append(body["prompt"])
        deadline = time.monotonic() + 5  # the earlier reference reaches the disk meanwhile
        while len(list(tmp_path.rglob("*.npz"))) < len(fetched) and time.monotonic() < deadline:
            time.sleep(0.01)
        on_disk.append(len(list(tmp_path.rglob("*.npz"))))
        return fixture("greedy.json")

    starts: list[tuple[int, int]] = []
    result = fetch_references(
        store, source(vllm(alive)), PROMPTS, settings, concurrency=1,
        on_start=lambda c, t: starts.append((c, t)),
    )  # fmt: skip
    assert starts == [(1, 2)] and result.n_cached == 1 and result.n_fetched == 2
    assert sorted(map(tuple, fetched)) == [(0, 2, 2), (0, 3, 2)]  # only the missing ones
    assert on_disk[:2] == [1, 2]  # each reference is saved as soon as it arrives
    assert [r.prompt_id for r in result.references] == ["p1", "p2", "p3"]
    # the same model elsewhere (another URL) shares the cache; other settings do not
    again = fetch_references(store, source(vllm(alive)), PROMPTS, settings)
    assert again.n_cached == 3
    other = fetch_references(store, source(vllm(alive)), PROMPTS[:1], ReferenceSettings(3))
    assert other.n_fetched == 1


def test_llama_cpp_text_shape_maps_pieces_and_appends_eos() -> None:
    """llama-cpp-python takes text prompts only, keys by token text, and stops at EOS
    without returning it."""
    prompts: list[Any] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"object": "list", "data": [{"id": "/m/t.gguf"}]})
        body = json.loads(request.content)
        if request.url.path == "/extras/tokenize":
            return httpx.Response(200, json={"tokens": [0, 2, 3, 4]})
        if request.url.path != "/v1/completions":
            return httpx.Response(404, json={"detail": "Not Found"})
        prompts.append(body["prompt"])
        if not isinstance(body["prompt"], str):
            return httpx.Response(422, json={"detail": "prompt: Input should be a valid string"})
        lp = {"tokens": [" c", " d"], "top_logprobs": [{" c": -0.1}, {" d": -0.2}]}
        return httpx.Response(
            200,
            json={
                "choices": [{"text": " c d", "logprobs": lp, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 2},
            },
        )

    src = RemoteReferenceSource("http://llama:1", Words(), transport=httpx.MockTransport(handler))
    ref = src.fetch(PROMPTS[0], ReferenceSettings(n_tokens=8))
    assert prompts == [[0, 2, 3], "a b"] and src.token_id_prompts is False
    assert ref.tokens.tolist() == [4, 5, 1]  # EOS appended at T=0


@pytest.mark.parametrize("temperature", [0.5, 0.7, 1.0, 1.5])
def test_tempered_topk_bounds_contain_the_truth(temperature: float) -> None:
    rng = np.random.default_rng(3)
    vocab, k = 200, 20
    logits = rng.normal(0, 2.5, size=(16, vocab))
    raw = softmax_temperature(logits, 1.0)
    truth = softmax_temperature(logits, temperature)
    ids = np.argsort(-raw, axis=1)[:, :k]
    est = temper_topk(ids, np.log(np.take_along_axis(raw, ids, 1)), temperature, vocab)
    true_top = np.take_along_axis(truth, ids, 1)
    assert est.probs_low is not None
    assert np.all(est.probs_low <= true_top + 1e-12) and np.all(true_top <= est.probs + 1e-12)
    assert np.all(1 - true_top.sum(axis=1) <= est.remainder + 1e-12)
    q = softmax_temperature(logits + rng.normal(0, 0.7, size=logits.shape), temperature)
    exact = np.minimum(truth, q).sum(axis=1)
    ov = overlap_topk_full(est, q)
    assert np.all(ov.low <= exact + 1e-12) and np.all(exact <= ov.high + 1e-12)
    if temperature == 1.0:
        assert np.allclose(est.probs, est.probs_low)


def test_server_client_gives_up_with_one_line() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, json={"error": {"message": "no capacity"}})

    waits: list[float] = []
    server = OpenAIServer(
        "http://x:1", transport=httpx.MockTransport(handler),
        retry=RetryPolicy(attempts=4, backoff_s=1.0, max_backoff_s=3.0), sleep=waits.append,
    )  # fmt: skip
    with pytest.raises(BackendUnavailable, match="HTTP 503: no capacity \\(after 4 tries\\)"):
        server.request("GET", "/v1/models")
    assert waits == [1.0, 2.0, 3.0]


def test_bounded_reference_survives_the_cache(tmp_path: Path) -> None:
    from configspec.profiling.reference import cache_key, load_reference, save_reference

    def completions(body: dict[str, Any]) -> Any:
        if body["max_tokens"] == 1:
            return fixture(
                "sampled_t1.json" if body["temperature"] == 1.0 else "sampled_t07_raw.json"
            )
        return fixture("sampled.json")

    ref = source(vllm(completions)).fetch(PROMPTS[0], ReferenceSettings(3, 0.7, 0, 3))
    store = ProfileStore(tmp_path)
    key = cache_key("remote:x", PROMPTS[0], ReferenceSettings(3, 0.7, 0, 3))
    save_reference(store, key, ref)
    back = load_reference(store, key, PROMPTS[0])
    assert back is not None and back.dist is not None and ref.dist is not None
    assert back.dist.probs_low is not None and ref.dist.probs_low is not None
    assert np.allclose(back.dist.probs_low, ref.dist.probs_low, atol=1e-6)


def test_text_keys_spelled_by_several_ids_map_to_the_tokenizers_own() -> None:
    """Gemma has user-defined single-character tokens spelling the same text as normal
    ones; a text-keyed server's piece maps to the id the tokenizer itself produces."""

    class Dup(Words):
        identity = dataclasses.replace(Words.identity, vocab_size=len(WORDS) + 1)

        def tokenize(self, text: str, *, add_bos: bool = True) -> list[int]:
            if text.strip() == "c" and not add_bos:
                return [8]
            return super().tokenize(text, add_bos=add_bos)

        def detokenize(self, tokens: Sequence[int]) -> str:
            return "".join(" c" if t == 8 else Words.detokenize(self, [t]) for t in tokens)

    src = object.__new__(RemoteReferenceSource)
    src.tokenizer, src._pieces, src._pieces_lock = Dup(), None, threading.Lock()
    assert src._id_of(" c") == 8 and src._id_of(" d") == 5 and src._id_of("token_id:4") == 4
