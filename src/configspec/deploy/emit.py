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
from dataclasses import dataclass, field

from configspec.backends.specs import NGRAM, is_ngram, spec_of_name
from configspec.errors import InvalidInput

ENGINES = ("llama-server", "llama-cpp-python", "vllm", "configspec")

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

MODEL_FREE_PREFIXES = ("ngram", "prompt-lookup")


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


def is_model_free(drafter: str) -> bool:
    """True for drafters without a model file (n-gram / prompt lookup)."""
    return drafter.lower().startswith(MODEL_FREE_PREFIXES)


def _gguf(model_dir: str, model_id: str) -> str:
    if model_id.endswith(".gguf"):
        return model_id
    return f"{model_dir.rstrip('/')}/{model_id.replace('/', '_')}.gguf"


def _base_id(drafter: str, quantization: str | None) -> str:
    if quantization and drafter.lower().endswith(quantization.lower()):
        return drafter[: -len(quantization)].rstrip("-._")
    return drafter


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
    if engine not in ENGINES:
        raise InvalidInput(f"--emit {engine!r} is unknown; use {' | '.join(ENGINES)}")
    if mode == "speculative" and (drafter is None or target is None or k < 1):
        raise InvalidInput("a speculative configuration needs a drafter, a target and K ≥ 1")
    version = ENGINE_VERSIONS[engine]
    notes: list[str] = []
    url = server_url or f"http://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}"
    colocated = (
        "this engine runs drafter and target on one server: the edge–cloud RTT and edge energy "
        "figures do not apply; the drafter and K were chosen for "
        + (f"an RTT of {rtt_ms:g} ms" if rtt_ms is not None else "the profiled link")
        + " — re-run select with --rtt-ms 0 for a co-located optimum"
    )
    model_free = drafter is not None and is_model_free(drafter)

    if engine == "configspec":
        if mode == "edge_only":
            raise EngineCannotExpress(
                "configspec serves speculative edge–cloud decoding; edge-only decoding needs no "
                "verifier: use --emit llama-server on the device"
            )
        assert target is not None
        verifier = [
            "configspec",
            "serve",
            "verifier",
            "--target",
            _gguf(model_dir, target),
            "--host",
            host,
            "--port",
            str(port),
        ]
        if mode == "cloud_only":
            notes.append("no speculation: run the verifier and send plain generation requests")
            return Deployment(engine, [verifier], version, notes)
        verifier += ["--max-k", str(max(k, 16))]
        if model_free:
            # The n-gram drafter drafts with the target's vocabulary.
            ngram_spec = spec_of_name(drafter) if drafter else NGRAM
            ngram_spec = ngram_spec if is_ngram(ngram_spec) else NGRAM
            draft_args = ["--drafter", ngram_spec, "--tokenizer", _gguf(model_dir, target)]
        else:
            draft_args = ["--drafter", _gguf(model_dir, drafter or "")]
        edge = ["configspec", "run", "edge", "--server", url, *draft_args, "--k", str(k)]
        notes.append("run the first command in the cloud and the second on the edge device")
        if server_url is None:
            notes.append("replace 127.0.0.1 with the verifier's address, or pass --server-url")
        return Deployment(engine, [verifier, edge], version, notes)

    if engine == "llama-server":
        if mode == "edge_only":
            assert drafter is not None
            cmd = [
                "llama-server",
                "-m",
                _gguf(model_dir, drafter),
                "--host",
                host,
                "--port",
                str(port),
            ]
            notes.append("edge-only: the drafter's own text, not the target's")
            return Deployment(engine, [cmd], version, notes)
        assert target is not None
        cmd = ["llama-server", "-m", _gguf(model_dir, target), "--host", host, "--port", str(port)]
        if mode == "cloud_only":
            notes.append("no speculation: plain decoding with the target")
            return Deployment(engine, [cmd], version, notes)
        if model_free:
            raise EngineCannotExpress(
                f"drafter {drafter!r} is model-free (n-gram) and the targeted llama-server flags "
                "need a draft model file (-md); use --emit llama-cpp-python or --emit vllm"
            )
        cmd += [
            "-md",
            _gguf(model_dir, drafter or ""),
            "--draft-max",
            str(k),
            "--draft-min",
            "0",
            "--draft-p-min",
            "0.0",
        ]
        notes.append("--draft-p-min 0.0 keeps K fixed (no confidence-based early stop)")
        notes.append(colocated)
        return Deployment(engine, [cmd], version, notes)

    if engine == "llama-cpp-python":
        base = ["python", "-m", "llama_cpp.server", "--host", host, "--port", str(port)]
        if mode == "edge_only":
            notes.append("edge-only: the drafter's own text, not the target's")
            return Deployment(
                engine, [[*base, "--model", _gguf(model_dir, drafter or "")]], version, notes
            )
        assert target is not None
        cmd = [*base, "--model", _gguf(model_dir, target)]
        if mode == "cloud_only":
            notes.append("no speculation: plain decoding with the target")
            return Deployment(engine, [cmd], version, notes)
        if not model_free:
            raise EngineCannotExpress(
                f"llama-cpp-python's server drafts only by prompt lookup, not with a draft model "
                f"file ({drafter!r}); use --emit llama-server or --emit configspec"
            )
        cmd += ["--draft_model", "prompt-lookup-decoding", "--draft_model_num_pred_tokens", str(k)]
        notes.append(colocated)
        return Deployment(engine, [cmd], version, notes)

    # vllm
    if mode == "edge_only":
        raise EngineCannotExpress(
            "vLLM serves GPU servers, not the edge device's GGUF drafter; edge-only decoding: use "
            "--emit llama-server"
        )
    assert target is not None
    cmd = ["vllm", "serve", target, "--host", host, "--port", str(port)]
    if mode == "cloud_only":
        notes.append("no speculation: plain decoding with the target")
        return Deployment(engine, [cmd], version, notes)
    if model_free:
        spec = {"method": "ngram", "num_speculative_tokens": k, "prompt_lookup_max": 4}
    else:
        hf_id = _base_id(drafter or "", quantization)
        spec = {"method": "draft_model", "model": hf_id, "num_speculative_tokens": k}
        if quantization:
            notes.append(
                f"vLLM loads the checkpoint {hf_id!r}, not the {quantization} GGUF: the profiled "
                f"{quantization} drafting speed and acceptance do not carry over exactly"
            )
    cmd += ["--speculative-config", json.dumps(spec, separators=(",", ":"))]
    notes.append(colocated)
    return Deployment(engine, [cmd], version, notes)
