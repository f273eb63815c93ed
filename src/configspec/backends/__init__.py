"""Inference engines behind one small Protocol: llama.cpp, n-gram, OpenAI-compatible remote.

Public surface (imported lazily, so ``import configspec.backends.base`` stays cheap):

* :func:`open_drafter`, :func:`open_target`, :func:`open_pair`, :func:`check_compatible`
  — from specs (registered name, GGUF path, ``ngram``, server URL);
* :class:`LlamaCppDrafter`, :class:`LlamaCppTarget`, :class:`LlamaCppTokenizer`,
  :class:`NgramDrafter`, :class:`RemoteTarget` — the implementations;
* :func:`prepare_family`, :func:`register`, :class:`ModelRegistry`, :func:`read_identity`
  — the model cache and GGUF identities.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from configspec.backends.base import (
        Drafter,
        DraftResult,
        Evaluation,
        ModelIdentity,
        Target,
        Tokenizing,
    )
    from configspec.backends.factory import (
        LlamaSettings,
        check_compatible,
        open_drafter,
        open_pair,
        open_target,
    )
    from configspec.backends.gguf_meta import read_identity
    from configspec.backends.llamacpp import LlamaCppDrafter, LlamaCppTarget, LlamaCppTokenizer
    from configspec.backends.models import (
        ModelRegistry,
        PreparedFamily,
        default_cache_dir,
        prepare_family,
        register,
    )
    from configspec.backends.ngram import NgramDrafter
    from configspec.backends.remote import RemoteTarget

_LAZY = {
    "Drafter": "base",
    "DraftResult": "base",
    "Evaluation": "base",
    "ModelIdentity": "base",
    "Target": "base",
    "Tokenizing": "base",
    "LlamaSettings": "factory",
    "check_compatible": "factory",
    "open_drafter": "factory",
    "open_pair": "factory",
    "open_target": "factory",
    "read_identity": "gguf_meta",
    "LlamaCppDrafter": "llamacpp",
    "LlamaCppTarget": "llamacpp",
    "LlamaCppTokenizer": "llamacpp",
    "ModelRegistry": "models",
    "PreparedFamily": "models",
    "default_cache_dir": "models",
    "prepare_family": "models",
    "register": "models",
    "NgramDrafter": "ngram",
    "RemoteTarget": "remote",
}

__all__ = [
    "DraftResult",
    "Drafter",
    "Evaluation",
    "LlamaCppDrafter",
    "LlamaCppTarget",
    "LlamaCppTokenizer",
    "LlamaSettings",
    "ModelIdentity",
    "ModelRegistry",
    "NgramDrafter",
    "PreparedFamily",
    "RemoteTarget",
    "Target",
    "Tokenizing",
    "check_compatible",
    "default_cache_dir",
    "open_drafter",
    "open_pair",
    "open_target",
    "prepare_family",
    "read_identity",
    "register",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'configspec.backends' has no attribute {name!r}")
    return getattr(importlib.import_module(f"configspec.backends.{module}"), name)
