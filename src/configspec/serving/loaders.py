"""Building the runtime's models from a user's model spec (registered name or GGUF path)."""

from __future__ import annotations

from pathlib import Path

from configspec.backends.base import Drafter
from configspec.backends.llamacpp import LlamaCppDrafter, LlamaCppTarget
from configspec.backends.models import ModelRegistry


def load_target(
    spec: str, *, n_ctx: int = 4096, n_threads: int = 2, cache_dir: Path | None = None
) -> LlamaCppTarget:
    """A llama.cpp target for ``spec`` (registered model name or GGUF path)."""
    identity = ModelRegistry(cache_dir).resolve(spec)
    return LlamaCppTarget(
        Path(str(identity.path)), identity=identity, n_ctx=n_ctx, n_threads=n_threads
    )


def load_drafter(
    spec: str, *, n_ctx: int = 4096, n_threads: int = 2, cache_dir: Path | None = None
) -> Drafter:
    """A drafter for ``spec``: a registered model name or a GGUF path (llama.cpp)."""
    identity = ModelRegistry(cache_dir).resolve(spec)
    return LlamaCppDrafter(
        Path(str(identity.path)), identity=identity, n_ctx=n_ctx, n_threads=n_threads
    )
