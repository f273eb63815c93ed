"""Open drafters and targets from one-word specs, and refuse incompatible pairs.

A spec is one of:

* a registered model name (``configspec models list``), e.g. ``gemma-3-270m-q4_0``;
* a path to a GGUF file;
* ``ngram`` or ``ngram:MIN-MAX`` (drafter only; uses the target's tokenizer);
* an ``http(s)://`` URL of an OpenAI-compatible server (target only; needs a local
  tokenizer: a spec of a GGUF file with the served model's vocabulary).

Pairing checks tokenizer fingerprints from GGUF metadata before any weights are loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from configspec.backends.base import Drafter, ModelIdentity, Target, Tokenizing, same_tokenizer
from configspec.backends.llamacpp import (
    LlamaCppDrafter,
    LlamaCppModel,
    LlamaCppTarget,
    LlamaCppTokenizer,
)
from configspec.backends.llamacpp_batch import LlamaCppBatchTarget
from configspec.backends.models import ModelRegistry
from configspec.backends.ngram import NgramDrafter
from configspec.backends.remote import RemoteTarget
from configspec.backends.specs import SpecKind, is_url, parse_spec
from configspec.errors import IncompatibleModels, InvalidInput

_LocalModel = TypeVar("_LocalModel", bound=LlamaCppModel)


@dataclass(frozen=True)
class LlamaSettings:
    """llama.cpp settings shared by local drafters and targets (threads, tokens)."""

    n_threads: int = 2
    n_ctx: int = 512
    n_batch: int = 512


CTX_ALIGN = 256
"""Profilers size llama.cpp's context window in multiples of this. Some window sizes decode
markedly slower on CPU (F32 Gemma 3 270M, 9 positions, 1 thread: 101-111 ms at n_ctx 216
and 264 against 79-85 ms at 128, 250, 256, 300, 512, 1000, 1024, 2048 and 4096); every
multiple of 256 (llama.cpp's KV-cache padding) was fast, like the 1024/4096 the runtime
serves at, so a profile taken in a multiple-of-256 window matches the runtime."""


def profiling_n_ctx(tokens_needed: int) -> int:
    """The context window a profiler opens for ``tokens_needed`` tokens (a multiple of
    :data:`CTX_ALIGN`, so the profile sees the same decode speed as the runtime)."""
    return max(CTX_ALIGN, -(-tokens_needed // CTX_ALIGN) * CTX_ALIGN)


def check_compatible(drafter: ModelIdentity, target: ModelIdentity) -> None:
    """Raise :class:`IncompatibleModels` unless both use the same tokenizer."""
    if not same_tokenizer(drafter, target):
        raise IncompatibleModels(
            f"drafter {drafter.name} (family {drafter.family}, vocab {drafter.vocab_size}) "
            f"and target {target.name} (family {target.family}, vocab {target.vocab_size}) "
            "use different tokenizers; pick a drafter from the target's family"
        )


def resolve_identity(spec: str, *, cache_dir: Path | None = None) -> ModelIdentity:
    """Identity of a registered name or GGUF path, from metadata (no weights loaded)."""
    return ModelRegistry(cache_dir).resolve(spec)


def open_tokenizer(spec: str | Tokenizing, *, cache_dir: Path | None = None) -> Tokenizing:
    """A tokenizer: an object that already tokenizes, or the vocabulary of a GGUF spec."""
    if not isinstance(spec, str):
        return spec
    if parse_spec(spec).kind is not SpecKind.MODEL:
        raise InvalidInput(f"{spec!r} has no vocabulary; give a registered model or GGUF path")
    identity = resolve_identity(spec, cache_dir=cache_dir)
    return LlamaCppTokenizer(str(identity.path), identity=identity)


def _open_local(
    cls: type[_LocalModel], spec: str, *, cache_dir: Path | None, settings: LlamaSettings
) -> _LocalModel:
    """Load the registered name or GGUF path ``spec`` as ``cls`` with ``settings``."""
    identity = resolve_identity(spec, cache_dir=cache_dir)
    return cls(
        str(identity.path),
        identity=identity,
        n_threads=settings.n_threads,
        n_ctx=settings.n_ctx,
        n_batch=settings.n_batch,
    )


def open_target(
    spec: str,
    *,
    tokenizer: str | Tokenizing | None = None,
    cache_dir: Path | None = None,
    settings: LlamaSettings | None = None,
    top_k: int = 10,
    timeout_s: float = 60.0,
) -> Target:
    """Open the target named by ``spec`` (registered name, GGUF path or server URL).

    A URL needs ``tokenizer`` (a spec or object with the served model's vocabulary).
    """
    settings = settings or LlamaSettings()
    parsed = parse_spec(spec)
    if parsed.is_ngram:
        raise InvalidInput("ngram is a drafter, not a target; give a model or server URL")
    if parsed.is_url:
        return open_remote_target(
            spec, tokenizer=tokenizer, cache_dir=cache_dir, top_k=top_k, timeout_s=timeout_s
        )
    return _open_local(LlamaCppTarget, spec, cache_dir=cache_dir, settings=settings)


_Tok = TypeVar("_Tok", bound=str | Tokenizing)


def remote_tokenizer(url: str, tokenizer: _Tok | None) -> _Tok:
    """``tokenizer``, which the remote target at ``url`` needs (the served model's
    vocabulary, held locally); raises :class:`InvalidInput` when it is missing."""
    if tokenizer is None:
        raise InvalidInput(
            f"remote target {url} needs a local tokenizer: pass --tokenizer with a GGUF "
            "file or registered model of the served model's family"
        )
    return tokenizer


def open_remote_target(
    url: str,
    *,
    tokenizer: str | Tokenizing | None,
    cache_dir: Path | None = None,
    top_k: int = 10,
    timeout_s: float = 60.0,
) -> RemoteTarget:
    """The target served by the OpenAI-compatible server at ``url``, with ``tokenizer``
    (a spec or object with the served model's vocabulary); ``top_k`` log-probs asked per
    position, ``timeout_s`` per request (seconds)."""
    tok = open_tokenizer(remote_tokenizer(url, tokenizer), cache_dir=cache_dir)
    return RemoteTarget(url, tok, top_k=top_k, timeout_s=timeout_s)


def open_batch_target(
    spec: str,
    *,
    n_seqs: int,
    max_positions_per_pass: int,
    cache_dir: Path | None = None,
    settings: LlamaSettings | None = None,
) -> LlamaCppBatchTarget:
    """A local target serving ``n_seqs`` sessions in shared passes (batched verifier).

    Raises :class:`InvalidInput` for a URL or n-gram spec (only local GGUF targets batch).
    """
    settings = settings or LlamaSettings()
    parsed = parse_spec(spec)
    if parsed.is_ngram or parsed.is_url:
        raise InvalidInput(f"{spec!r} is not a local model; only GGUF targets are batched here")
    identity = resolve_identity(spec, cache_dir=cache_dir)
    return LlamaCppBatchTarget(
        str(identity.path),
        identity=identity,
        n_seqs=n_seqs,
        n_threads=settings.n_threads,
        n_ctx=settings.n_ctx,
        n_batch=max_positions_per_pass,
    )


def open_drafter(
    spec: str,
    *,
    tokenizer: str | Tokenizing | None = None,
    cache_dir: Path | None = None,
    settings: LlamaSettings | None = None,
) -> Drafter:
    """Open the drafter named by ``spec`` (registered name, GGUF path, or ``ngram[:MIN-MAX]``).

    ``ngram`` needs ``tokenizer`` (normally the target object).
    """
    settings = settings or LlamaSettings()
    parsed = parse_spec(spec)
    if parsed.is_url:
        raise InvalidInput(f"{spec} is a server URL; remote models can only be targets")
    if parsed.ngram_range is not None:
        if tokenizer is None:
            raise InvalidInput("the ngram drafter needs the target's tokenizer")
        min_n, max_n = parsed.ngram_range
        return NgramDrafter(
            open_tokenizer(tokenizer, cache_dir=cache_dir), min_n=min_n, max_n=max_n
        )
    return _open_local(LlamaCppDrafter, spec, cache_dir=cache_dir, settings=settings)


def open_pair(
    drafter_spec: str,
    target_spec: str,
    *,
    tokenizer: str | Tokenizing | None = None,
    cache_dir: Path | None = None,
    settings: LlamaSettings | None = None,
    top_k: int = 10,
    timeout_s: float = 60.0,
) -> tuple[Drafter, Target]:
    """Open a drafter and a target and check they share a tokenizer.

    GGUF identities are compared before loading any weights; :class:`IncompatibleModels`
    names both models otherwise. ``tokenizer`` is needed only for a URL target.
    """
    if not is_url(target_spec) and parse_spec(drafter_spec).kind is SpecKind.MODEL:
        check_compatible(
            resolve_identity(drafter_spec, cache_dir=cache_dir),
            resolve_identity(target_spec, cache_dir=cache_dir),
        )
    target = open_target(
        target_spec,
        tokenizer=tokenizer,
        cache_dir=cache_dir,
        settings=settings,
        top_k=top_k,
        timeout_s=timeout_s,
    )
    try:
        drafter = open_drafter(
            drafter_spec, tokenizer=target, cache_dir=cache_dir, settings=settings
        )
        check_compatible(drafter.identity, target.identity)
    except BaseException:
        close = getattr(target, "close", None)
        if callable(close):
            close()
        raise
    return drafter, target
