"""The target's reference trajectory per prompt, computed once and cached on disk.

For each prompt the target generates a continuation (greedy at temperature 0, sampled at
temperature T with a seed), then evaluates prompt + continuation in one batched pass to
record what a verifier sees at every position: its argmax, and at T > 0 its
temperature-scaled distribution as top-k ids/probabilities with the remainder mass.

The cache lives in the profile directory (the :class:`~configspec.store.ProfileStore`
owns the path) and is keyed by the target file's sha256, the prompt text and the
settings, so a second profiling run (other drafters, same target) never re-runs the
target.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt

from configspec.backends.base import FloatArray
from configspec.backends.llamacpp import LlamaCppDrafter
from configspec.errors import InvalidInput
from configspec.profiling.acceptance import TopK, check_temperature, softmax_temperature, top_k
from configspec.profiling.prompts import Prompt
from configspec.store import ProfileStore, atomic_write_bytes

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1
CACHE_KIND = "alignment-reference"


@dataclass(frozen=True)
class ReferenceSettings:
    """How the target's reference is produced.

    ``n_tokens`` continuation tokens at most (generation stops after the end-of-sequence
    token); ``temperature`` 0 is greedy, otherwise sampling seeded by ``seed``; ``top_k``
    ids are kept per position (with the remainder mass) at T > 0.
    """

    n_tokens: int = 128
    temperature: float = 0.0
    seed: int = 0
    top_k: int = 256

    def __post_init__(self) -> None:
        if self.n_tokens < 1:
            raise InvalidInput(f"tokens per prompt {self.n_tokens} is out of range (>= 1)")
        check_temperature(self.temperature)
        if self.top_k < 1:
            raise InvalidInput(f"top-k {self.top_k} is out of range (>= 1)")


@dataclass(frozen=True)
class TargetReference:
    """The target's trajectory for one prompt.

    ``tokens`` is the continuation y_0..y_{N-1}; ``argmax[i]`` the token the target picks
    after ``prompt + y_<i`` in the batched pass (what a greedy verifier accepts against);
    ``dist`` its temperature-scaled top-k distribution per position (None at T = 0).
    """

    prompt_id: str
    domain: str
    prompt_tokens: npt.NDArray[np.int64]
    tokens: npt.NDArray[np.int64]
    argmax: npt.NDArray[np.int64]
    dist: TopK | None
    temperature: float
    generate_s: float


class TeacherForcedModel(LlamaCppDrafter):
    """A llama.cpp model that can also return logits at every position of a block.

    Used both for the target (generate, then evaluate its own trajectory) and for model
    drafters (teacher-forced along the target's trajectory in one batched pass).
    """

    def logits_along(self, context: Sequence[int], tokens: Sequence[int]) -> FloatArray:
        """Logits (len(tokens), vocab) predicting each of ``tokens`` after ``context``.

        Row i is the model's logits after ``context + tokens[:i]``; one batched decode.
        """
        if not context or not tokens:
            raise InvalidInput("teacher forcing needs a non-empty context and continuation")
        self._check_tokens(context, "context")
        self._check_tokens(tokens, "continuation")
        full = [*context, *tokens]
        # Logits are needed from the last context token on; the prefix before it is
        # decoded without them (the vocabulary projection dominates small models' cost).
        keep = min(self._common_prefix(full), len(context) - 1)
        self._truncate(keep)
        if keep < len(context) - 1:
            self._decode(full[keep : len(context) - 1], all_logits=False)
        logits = self._decode(full[len(context) - 1 :], all_logits=True)
        return logits[: len(tokens)]

    def generate(
        self, context: Sequence[int], n_tokens: int, *, temperature: float, seed: int
    ) -> list[int]:
        """Up to ``n_tokens`` tokens after ``context``: greedy at 0, else sampled (seeded).

        Stops after emitting the end-of-sequence token.
        """
        rng = np.random.default_rng(seed)
        logits = self._prime(context)
        out: list[int] = []
        eos = self.eos_token
        for i in range(n_tokens):
            if temperature == 0.0:
                tok = int(np.argmax(logits))
            else:
                p = softmax_temperature(logits[None, :], temperature)[0]
                cdf = np.cumsum(p)
                tok = int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"))
                tok = min(tok, self.n_vocab - 1)
            out.append(tok)
            if tok == eos or i + 1 == n_tokens:
                break
            logits = self._decode([tok], all_logits=False)[-1]
        return out


def cache_key(target_sha256: str, prompt: Prompt, settings: ReferenceSettings) -> str:
    """Content key of a cached reference (target file hash + prompt text + settings)."""
    blob = json.dumps(
        {
            "format": CACHE_FORMAT,
            "target_sha256": target_sha256,
            "prompt": prompt.text,
            # top-k is not used at temperature 0 (no distributions are stored)
            "settings": {
                **asdict(settings),
                "top_k": settings.top_k if settings.temperature else None,
            },
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:32]


def save_reference(store: ProfileStore, key: str, ref: TargetReference) -> None:
    """Write ``ref`` to the reference cache under ``key`` (atomically)."""
    buf = io.BytesIO()
    arrays: dict[str, npt.NDArray[np.generic]] = {
        "prompt_tokens": ref.prompt_tokens.astype(np.int32),
        "tokens": ref.tokens.astype(np.int32),
        "argmax": ref.argmax.astype(np.int32),
    }
    if ref.dist is not None:
        arrays["top_ids"] = ref.dist.ids.astype(np.int32)
        arrays["top_probs"] = ref.dist.probs.astype(np.float32)
        arrays["remainder"] = ref.dist.remainder.astype(np.float32)
        if ref.dist.probs_low is not None:
            arrays["top_probs_low"] = ref.dist.probs_low.astype(np.float32)
    meta = {
        "prompt_id": ref.prompt_id,
        "domain": ref.domain,
        "temperature": ref.temperature,
        "generate_s": ref.generate_s,
    }
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez_compressed(buf, allow_pickle=False, **arrays)
    atomic_write_bytes(store.cache_path(CACHE_KIND, key, ".npz"), buf.getvalue())


def load_reference(store: ProfileStore, key: str, prompt: Prompt) -> TargetReference | None:
    """The cached reference under ``key``, or None (absent or unreadable: recompute)."""
    path = store.cache_path(CACHE_KIND, key, ".npz")
    if not path.exists():
        return None
    try:
        with np.load(path) as z:
            meta = json.loads(str(z["meta"]))
            dist = None
            if "top_ids" in z:
                dist = TopK(
                    ids=z["top_ids"].astype(np.int64),
                    probs=z["top_probs"].astype(np.float64),
                    remainder=z["remainder"].astype(np.float64),
                    probs_low=z["top_probs_low"].astype(np.float64)
                    if "top_probs_low" in z
                    else None,
                )
            return TargetReference(
                prompt_id=prompt.id,
                domain=prompt.domain,
                prompt_tokens=z["prompt_tokens"].astype(np.int64),
                tokens=z["tokens"].astype(np.int64),
                argmax=z["argmax"].astype(np.int64),
                dist=dist,
                temperature=float(meta["temperature"]),
                generate_s=float(meta["generate_s"]),
            )
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        logger.warning("ignoring unreadable reference cache %s (%s); recomputing", path, exc)
        return None


def compute_reference(
    target: TeacherForcedModel, prompt: Prompt, settings: ReferenceSettings
) -> TargetReference:
    """Generate the target's continuation for ``prompt`` and record its distributions."""
    start = time.perf_counter()
    ctx = target.tokenize(prompt.text, add_bos=True)
    if len(ctx) + settings.n_tokens > target.n_ctx:
        raise InvalidInput(
            f"prompt {prompt.id!r} has {len(ctx)} tokens; with {settings.n_tokens} more it "
            f"exceeds the context window n_ctx={target.n_ctx}; shorten it or raise n_ctx"
        )
    toks = target.generate(
        ctx, settings.n_tokens, temperature=settings.temperature, seed=settings.seed
    )
    logits = target.logits_along(ctx, toks)
    argmax = np.argmax(logits, axis=1).astype(np.int64)
    dist = None
    if settings.temperature > 0:
        dist = top_k(softmax_temperature(logits, settings.temperature), settings.top_k)
    return TargetReference(
        prompt_id=prompt.id,
        domain=prompt.domain,
        prompt_tokens=np.asarray(ctx, dtype=np.int64),
        tokens=np.asarray(toks, dtype=np.int64),
        argmax=argmax,
        dist=dist,
        temperature=settings.temperature,
        generate_s=time.perf_counter() - start,
    )


def reference_for(
    store: ProfileStore,
    target_sha256: str,
    prompt: Prompt,
    settings: ReferenceSettings,
    open_target: Callable[[], TeacherForcedModel],
) -> tuple[TargetReference, bool]:
    """The cached reference for ``prompt``, computing and caching it if absent.

    ``open_target`` is called only when the target must run (nothing cached).
    Returns ``(reference, was_cached)``.
    """
    key = cache_key(target_sha256, prompt, settings)
    cached = load_reference(store, key, prompt)
    if cached is not None:
        return cached, True
    ref = compute_reference(open_target(), prompt, settings)
    save_reference(store, key, ref)
    return ref, False
