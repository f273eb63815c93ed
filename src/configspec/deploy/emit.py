"""Deployable commands for a chosen configuration: llama.cpp, llama-cpp-python, vLLM, ConfigSpec.

Flags follow the engine versions in :data:`ENGINE_VERSIONS`, which the output states. A
configuration an engine cannot express is refused with the reason
(:class:`EngineCannotExpress`), never approximated silently.

Only ConfigSpec's own commands run the edge–cloud split the model describes (drafter on the
edge device, verifier in the cloud). ``llama-server``, ``llama-cpp-python`` and ``vllm`` run
drafter and target on one server; their commands carry a note saying the RTT and edge
energy figures do not apply there.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field

from configspec.backends.specs import NGRAM, is_model_free, is_ngram, spec_of_name
from configspec.errors import InvalidInput

ENGINE_VERSIONS = {
    "llama-server": (
        "llama.cpp llama-server, flags -m/-md/--draft-max/--draft-min/--draft-p-min as in builds "
        "since b4400 (Dec 2024; server speculative decoding, ggml-org/llama.cpp#10455)"
    ),
    "llama-cpp-python": (
        "llama-cpp-python 0.3.x server (python -m llama_cpp.server); its only drafter is "
        "prompt-lookup-decoding (--draft_model, --draft_model_num_pred_tokens)"
    ),
    "vllm": (
        "vLLM `vllm serve` --speculative-config JSON (method draft_model | ngram); a draft model "
        "needs vLLM <= 0.9.2 (V0 engine) or a release with vllm-project/vllm#24322 - 0.10.0 to "
        "0.13.0 refuse draft models (ngram works there)"
    ),
    "configspec": "configspec (this version): `serve verifier` and `run edge`",
}


class EngineCannotExpress(InvalidInput):
    """The chosen configuration cannot be run by the requested engine."""


@dataclass(frozen=True)
class Deployment:
    """Commands (argv lists) to deploy one configuration, with notes and the flag version."""

    engine: str
    commands: list[list[str]]
    version: str
    notes: list[str] = field(default_factory=list)

    def shell(self) -> str:
        """The commands as shell lines (quoted with :func:`shlex.join`)."""
        return "\n".join(shlex.join(c) for c in self.commands)


def _gguf(model_dir: str, model_id: str) -> str:
    if model_id.endswith(".gguf"):
        return model_id
    return f"{model_dir.rstrip('/')}/{model_id.replace('/', '_')}.gguf"


def _base_id(drafter: str, quantization: str | None) -> str:
    if quantization and drafter.lower().endswith(quantization.lower()):
        return drafter[: -len(quantization)].rstrip("-._")
    return drafter


@dataclass(frozen=True)
class _Request:
    """One configuration to deploy, as every emitter sees it (see :func:`emit`)."""

    engine: str
    mode: str
    target: str | None
    drafter: str | None
    quantization: str | None
    k: int
    model_dir: str
    host: str
    port: int
    server_url: str | None
    rtt_ms: float | None

    @property
    def version(self) -> str:
        return ENGINE_VERSIONS[self.engine]

    @property
    def url(self) -> str:
        """The verifier's URL as the edge reaches it."""
        host = "127.0.0.1" if self.host == "0.0.0.0" else self.host
        return self.server_url or f"http://{host}:{self.port}"

    @property
    def model_free(self) -> bool:
        return self.drafter is not None and is_model_free(self.drafter)

    @property
    def colocated(self) -> str:
        """The note for engines that run drafter and target on one server."""
        link = f"an RTT of {self.rtt_ms:g} ms" if self.rtt_ms is not None else "the profiled link"
        return (
            "this engine runs drafter and target on one server: the edge–cloud RTT and edge "
            f"energy figures do not apply; the drafter and K were chosen for {link} — re-run "
            "select with --rtt-ms 0 for a co-located optimum"
        )

    def gguf(self, model_id: str | None) -> str:
        return _gguf(self.model_dir, model_id or "")

    def deployment(self, commands: list[list[str]], *notes: str) -> Deployment:
        return Deployment(self.engine, commands, self.version, list(notes))


def emit(
    engine: str,
    mode: str,
    target: str | None,
    drafter: str | None = None,
    quantization: str | None = None,
    k: int = 0,
    *,
    model_dir: str = "models",
    host: str = "0.0.0.0",
    port: int = 8000,
    server_url: str | None = None,
    rtt_ms: float | None = None,
) -> Deployment:
    """Commands for ``engine`` to run one configuration.

    ``mode`` is ``speculative``, ``cloud_only`` or ``edge_only`` (see
    :mod:`configspec.records`); model files are assumed at ``model_dir/<id>.gguf``.
    Raises :class:`EngineCannotExpress` with the reason when the engine cannot run it.
    """
    emitter = EMITTERS.get(engine)
    if emitter is None:
        raise InvalidInput(f"--emit {engine!r} is unknown; use {' | '.join(ENGINES)}")
    if mode == "speculative" and (drafter is None or target is None or k < 1):
        raise InvalidInput("a speculative configuration needs a drafter, a target and K ≥ 1")
    if mode != "edge_only" and target is None:
        raise InvalidInput(f"a {mode} configuration needs a target")
    req = _Request(
        engine, mode, target, drafter, quantization, k, model_dir, host, port, server_url, rtt_ms
    )
    return emitter(req)


def _configspec(r: _Request) -> Deployment:
    """ConfigSpec's own split: ``serve verifier`` in the cloud, ``run edge`` on the device."""
    if r.mode == "edge_only":
        raise EngineCannotExpress(
            "configspec serves speculative edge–cloud decoding; edge-only decoding needs no "
            "verifier: use --emit llama-server on the device"
        )
    verifier = ["configspec", "serve", "verifier", "--target", r.gguf(r.target),
                "--host", r.host, "--port", str(r.port)]  # fmt: skip
    if r.mode == "cloud_only":
        return r.deployment(
            [verifier], "no speculation: run the verifier and send plain generation requests"
        )
    verifier += ["--max-k", str(max(r.k, 16))]
    if r.model_free:
        # The n-gram drafter drafts with the target's vocabulary.
        ngram_spec = spec_of_name(r.drafter) if r.drafter else NGRAM
        ngram_spec = ngram_spec if is_ngram(ngram_spec) else NGRAM
        draft_args = ["--drafter", ngram_spec, "--tokenizer", r.gguf(r.target)]
    else:
        draft_args = ["--drafter", r.gguf(r.drafter)]
    edge = ["configspec", "run", "edge", "--server", r.url, *draft_args, "--k", str(r.k)]
    notes = ["run the first command in the cloud and the second on the edge device"]
    if r.server_url is None:
        notes.append("replace 127.0.0.1 with the verifier's address, or pass --server-url")
    return r.deployment([verifier, edge], *notes)


def _llama_server(r: _Request) -> Deployment:
    """llama.cpp's ``llama-server`` with a draft model file (-md)."""
    serve = ["--host", r.host, "--port", str(r.port)]
    if r.mode == "edge_only":
        if r.drafter is None:
            raise InvalidInput("an edge_only configuration needs a drafter")
        return r.deployment(
            [["llama-server", "-m", r.gguf(r.drafter), *serve]],
            "edge-only: the drafter's own text, not the target's",
        )
    cmd = ["llama-server", "-m", r.gguf(r.target), *serve]
    if r.mode == "cloud_only":
        return r.deployment([cmd], "no speculation: plain decoding with the target")
    if r.model_free:
        raise EngineCannotExpress(
            f"drafter {r.drafter!r} is model-free (n-gram) and the targeted llama-server flags "
            "need a draft model file (-md); use --emit llama-cpp-python or --emit vllm"
        )
    cmd += ["-md", r.gguf(r.drafter), "--draft-max", str(r.k), "--draft-min", "0",
            "--draft-p-min", "0.0"]  # fmt: skip
    return r.deployment(
        [cmd], "--draft-p-min 0.0 keeps K fixed (no confidence-based early stop)", r.colocated
    )


def _llama_cpp_python(r: _Request) -> Deployment:
    """llama-cpp-python's server: prompt-lookup drafting only."""
    base = ["python", "-m", "llama_cpp.server", "--host", r.host, "--port", str(r.port)]
    if r.mode == "edge_only":
        return r.deployment(
            [[*base, "--model", r.gguf(r.drafter)]],
            "edge-only: the drafter's own text, not the target's",
        )
    cmd = [*base, "--model", r.gguf(r.target)]
    if r.mode == "cloud_only":
        return r.deployment([cmd], "no speculation: plain decoding with the target")
    if not r.model_free:
        raise EngineCannotExpress(
            f"llama-cpp-python's server drafts only by prompt lookup, not with a draft model "
            f"file ({r.drafter!r}); use --emit llama-server or --emit configspec"
        )
    cmd += ["--draft_model", "prompt-lookup-decoding", "--draft_model_num_pred_tokens", str(r.k)]
    return r.deployment([cmd], r.colocated)


def _vllm(r: _Request) -> Deployment:
    """vLLM's ``vllm serve`` with a ``--speculative-config``."""
    if r.mode == "edge_only":
        raise EngineCannotExpress(
            "vLLM serves GPU servers, not the edge device's GGUF drafter; edge-only decoding: use "
            "--emit llama-server"
        )
    cmd = ["vllm", "serve", r.target or "", "--host", r.host, "--port", str(r.port)]
    if r.mode == "cloud_only":
        return r.deployment([cmd], "no speculation: plain decoding with the target")
    notes = []
    spec: dict[str, object]
    if r.model_free:
        spec = {"method": "ngram", "num_speculative_tokens": r.k, "prompt_lookup_max": 4}
    else:
        hf_id = _base_id(r.drafter or "", r.quantization)
        spec = {"method": "draft_model", "model": hf_id, "num_speculative_tokens": r.k}
        if r.quantization:
            notes.append(
                f"vLLM loads the checkpoint {hf_id!r}, not the {r.quantization} GGUF: the "
                f"profiled {r.quantization} drafting speed and acceptance do not carry over "
                "exactly"
            )
    cmd += ["--speculative-config", json.dumps(spec, separators=(",", ":"))]
    return r.deployment([cmd], *notes, r.colocated)


EMITTERS: dict[str, Callable[[_Request], Deployment]] = {
    "llama-server": _llama_server,
    "llama-cpp-python": _llama_cpp_python,
    "vllm": _vllm,
    "configspec": _configspec,
}
"""Engine name → its emitter; add an engine by adding one function here (and its
:data:`ENGINE_VERSIONS` line)."""
ENGINES = tuple(EMITTERS)
