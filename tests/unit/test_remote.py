"""Remote target protocol handling: real sockets for down/non-OpenAI servers, an httpx
MockTransport (test fake) for the reply shapes of vLLM and llama-cpp-python."""

from __future__ import annotations

import http.server
import json
import socket
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import httpx
import numpy as np
import pytest

from configspec.backends.base import ModelIdentity, Target
from configspec.backends.openai_http import PROBE_TEXT
from configspec.backends.remote import RemoteTarget
from configspec.errors import BackendUnavailable, InvalidInput

WORDS = ["<s>", "a", "b", "c", "d"]


class WordTokenizer:
    """Test fake: ids are indexes into WORDS; pieces are ' word'."""

    identity = ModelIdentity(
        name="words",
        family="fake-abc",
        architecture="fake",
        quantization=None,
        parameter_count=None,
        context_length=None,
        vocab_size=len(WORDS),
        tokenizer_fingerprint="abc",
        file_sha256=None,
    )

    def tokenize(self, text: str, *, add_bos: bool = True) -> list[int]:
        return ([0] if add_bos else []) + [WORDS.index(w) for w in text.split()]

    def detokenize(self, tokens: Sequence[int]) -> str:
        return "".join(f" {WORDS[t]}" for t in tokens if t != 0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def html_server() -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"<html>not an API</html>"
            code = 404 if "models" in self.path else 200
            self.send_response(code)
            self.send_header("content-type", "text/html")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_server_down_is_one_clear_line() -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(BackendUnavailable, match="cannot connect to") as err:
        RemoteTarget(url, WordTokenizer())
    assert "\n" not in str(err.value) and "start the server" in str(err.value)


def test_non_openai_server_is_one_clear_line(html_server: str) -> None:
    with pytest.raises(BackendUnavailable, match="not an OpenAI-compatible server") as err:
        RemoteTarget(html_server, WordTokenizer())
    assert "HTTP 404" in str(err.value) and "\n" not in str(err.value)


def test_bad_url_and_settings() -> None:
    with pytest.raises(InvalidInput, match="must start with http"):
        RemoteTarget("localhost:8000", WordTokenizer())
    with pytest.raises(InvalidInput, match="top_k=0"):
        RemoteTarget("http://x", WordTokenizer(), top_k=0)


def _models(request: httpx.Request) -> httpx.Response | None:
    if request.url.path == "/v1/models":
        return httpx.Response(200, json={"object": "list", "data": [{"id": "served"}]})
    if request.url.path in ("/tokenize", "/extras/tokenize"):
        return httpx.Response(404, json={"detail": "Not Found"})
    if request.content and json.loads(request.content).get("prompt") == PROBE_TEXT:
        # the echo fallback of the tokenizer check: this fake cannot tokenize the probe
        return httpx.Response(400, json={"detail": "cannot tokenize"})
    return None


def test_vllm_style_token_id_reply() -> None:
    sent: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if (r := _models(request)) is not None:
            return r
        body = json.loads(request.content)
        sent.append(body)
        prompt = body["prompt"]
        assert prompt == [0, 1, 2, 3]
        # vLLM echoes every prompt token (BOS first, null) and the generated one
        top = [
            None,
            {"token_id:1": -0.1, "token_id:2": -2.5},
            {"token_id:2": -0.2, "token_id:3": -1.9},
            {"token_id:4": -0.3, "token_id:3": -1.5},
            {"token_id:1": -0.05},
        ]
        toks = ["token_id:0", "token_id:1", "token_id:2", "token_id:3", "token_id:1"]
        return httpx.Response(
            200, json={"choices": [{"logprobs": {"tokens": toks, "top_logprobs": top}}]}
        )

    rt = RemoteTarget(
        "http://vllm:8000/v1", WordTokenizer(), transport=httpx.MockTransport(handler)
    )
    assert isinstance(rt, Target)
    assert rt.model == "served" and rt.identity.tokenizer_fingerprint == "abc"
    ev = rt.evaluate([0, 1], [2, 3])
    assert sent[0]["echo"] is True and sent[0]["max_tokens"] == 1 and sent[0]["logprobs"] == 10
    assert ev.argmax == [2, 4, 1]  # positions after [0,1], [0,1,2], [0,1,2,3]
    assert ev.top_ids is not None and ev.top_probs is not None
    assert ev.top_ids.shape == (3, 2)
    assert ev.top_ids[2].tolist() == [1, -1]  # padded
    assert ev.top_probs[0, 0] == pytest.approx(0.8187, abs=1e-4)
    assert ev.probs is None
    rt.rollback(3)
    assert rt.cached_tokens == [0, 1, 2]
    with pytest.raises(InvalidInput, match="rollback to 9"):
        rt.rollback(9)
    with pytest.raises(InvalidInput, match="at least 2"):
        rt.evaluate([0], [1])


def test_text_only_server_gets_text_and_pieces_are_mapped_back() -> None:
    prompts: list[Any] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if (r := _models(request)) is not None:
            return r
        body = json.loads(request.content)
        prompts.append(body["prompt"])
        if not isinstance(body["prompt"], str):
            return httpx.Response(422, json={"detail": "prompt: Input should be a string"})
        # llama-cpp-python: BOS dropped from the echo, first entry null, text keys
        toks = [" a", " b", " c", " d"]
        top = [None, {" b": -0.1, " c": -2.4}, {" d": -0.7, " c": -0.9}, {" a": -0.2}]
        return httpx.Response(
            200, json={"choices": [{"logprobs": {"tokens": toks, "top_logprobs": top}}]}
        )

    rt = RemoteTarget("http://llama:8000", WordTokenizer(), transport=httpx.MockTransport(handler))
    ev = rt.evaluate([0, 1, 2], [3])
    assert prompts == [[0, 1, 2, 3], " a b c"]
    assert ev.argmax == [4, 1]
    assert ev.extra["token_id_prompt"] == 0.0
    rt.evaluate([0, 1, 2], [3])
    assert prompts[-1] == " a b c"  # remembered: no second token-id attempt


def test_retokenised_prompt_is_refused() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if (r := _models(request)) is not None:
            return r
        if not isinstance(json.loads(request.content)["prompt"], str):
            return httpx.Response(422, json={"detail": "prompt must be a string"})
        toks = [" a", " bc", " d"]  # the server merged two tokens
        top = [None, {" bc": -0.1}, {" d": -0.1}]
        return httpx.Response(
            200, json={"choices": [{"logprobs": {"tokens": toks, "top_logprobs": top}}]}
        )

    rt = RemoteTarget("http://llama:8000", WordTokenizer(), transport=httpx.MockTransport(handler))
    with pytest.raises(BackendUnavailable, match="re-tokenised"):
        rt.evaluate([0, 1, 2], [3])


@pytest.mark.parametrize(
    ("reply", "needle"),
    [
        (httpx.Response(200, json={"choices": [{"text": "x"}]}), "no choices\\[0\\].logprobs"),
        (httpx.Response(200, text="<html/>"), "not JSON"),
        (httpx.Response(503, json={"error": {"message": "overloaded"}}), "HTTP 503: overloaded"),
    ],
)
def test_bad_completion_replies(reply: httpx.Response, needle: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return _models(request) or reply

    rt = RemoteTarget("http://x:1", WordTokenizer(), transport=httpx.MockTransport(handler))
    with pytest.raises(BackendUnavailable, match=needle) as err:
        rt.evaluate([0, 1], [2])
    assert "\n" not in str(err.value)


def test_timeout_is_clear() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if (r := _models(request)) is not None:
            return r
        raise httpx.ReadTimeout("slow", request=request)

    rt = RemoteTarget(
        "http://x:1", WordTokenizer(), timeout_s=2, transport=httpx.MockTransport(handler)
    )
    with pytest.raises(BackendUnavailable, match="within 2 s"):
        rt.evaluate([0, 1], [2])


def test_cli_check_non_openai_server(
    html_server: str, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from _tiny_gguf import write_tiny_gguf

    from configspec.cli.main import main

    model = write_tiny_gguf(tmp_path / "m.gguf")
    args = ["models", "check", str(model), html_server, "--tokenizer", str(model)]
    assert main([*args, "--cache-dir", str(tmp_path / "c")]) == 8
    err = capsys.readouterr().err.strip()
    assert "not an OpenAI-compatible server" in err and len(err.splitlines()) == 1


def test_server_stopping_at_eos_gives_an_eos_row() -> None:
    class WithEos(WordTokenizer):
        eos_token = 4

    def handler(request: httpx.Request) -> httpx.Response:
        if (r := _models(request)) is not None:
            return r
        if not isinstance(json.loads(request.content)["prompt"], str):
            return httpx.Response(422, json={"detail": "prompt must be a string"})
        # llama-cpp-python stops at EOS without echoing it: no row past the block
        toks = [" a", " b", " c"]
        top = [None, {" b": -0.1}, {" c": -0.2, " a": -2.0}]
        return httpx.Response(
            200,
            json={
                "choices": [{"logprobs": {"tokens": toks, "top_logprobs": top}}],
                "usage": {"prompt_tokens": 4, "completion_tokens": 0},
            },
        )

    rt = RemoteTarget("http://llama:8000", WithEos(), transport=httpx.MockTransport(handler))
    ev = rt.evaluate([0, 1, 2], [3])
    assert ev.argmax == [3, 4]
    assert ev.extra["stopped_at_eos"] == 1.0
    assert ev.top_probs is not None and np.isnan(ev.top_probs[1, 0])


@pytest.mark.parametrize("path", ["/tokenize", "/extras/tokenize"])
def test_server_tokenizer_is_cross_checked(path: str) -> None:
    from configspec.errors import IncompatibleModels

    def handler_for(tokens: list[int]) -> httpx.MockTransport:
        def handler(request: httpx.Request) -> httpx.Response:
            if request.url.path == "/v1/models":
                return _models(request)  # type: ignore[return-value]
            if request.url.path == path:
                return httpx.Response(200, json={"tokens": tokens})
            return httpx.Response(404)

        return httpx.MockTransport(handler)

    class Probe(WordTokenizer):
        def tokenize(self, text: str, *, add_bos: bool = True) -> list[int]:
            return ([0] if add_bos else []) + [len(w) for w in text.split()]

    mine = Probe().tokenize(PROBE_TEXT, add_bos=False)
    # same split (the server adds BOS): accepted
    RemoteTarget("http://x:1", Probe(), transport=handler_for([0, *mine]))
    with pytest.raises(IncompatibleModels, match="tokenizes differently") as err:
        RemoteTarget("http://x:1", Probe(), transport=handler_for([0, *mine[:-1], 99]))
    assert "words" in str(err.value) and "served" in str(err.value)
