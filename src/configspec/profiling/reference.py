"""The target's reference trajectory per prompt, computed once and cached on disk.

For each prompt the target generates a continuation (greedy at temperature 0, sampled at
temperature T with a seed), then evaluates prompt + continuation in one batched pass to
record what a verifier sees at every position: its argmax, and at T > 0 its
temperature-scaled distribution as top-k ids/probabilities with the remainder mass.

At T > 0 every prompt is sampled with its own seed (:func:`prompt_seed`, the run's seed
mixed with the prompt text), so prompts draw independent random numbers and the bootstrap
over prompts sees independent trajectories; the draw goes through llama.cpp's own sampler
chain (:class:`LlamaCppSampler`), so a ``llama_cpp.server`` asked for the same prompt with
the same seed and the filters off reproduces the local trajectory token for token.

The cache lives in the profile directory (the :class:`~configspec.store.ProfileStore`
owns the path) and is keyed by the target file's sha256, the prompt text and the
settings, so a second profiling run (other drafters, same target) never re-runs the
target.
"""

from __future__ import annotations

import ctypes
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
#: How a T > 0 trajectory is drawn: per-prompt seeds, llama.cpp's sampler chain. Part of
#: the cache key at T > 0 (references drawn with one seed for every prompt are not reused).
SAMPLING_SCHEME = "per-prompt-seed/llama.cpp-dist"
_SEED_MASK = 0x7FFFFFFF  # llama.cpp takes a uint32, vLLM a signed int: keep 31 bits


def prompt_seed(seed: int, prompt: Prompt) -> int:
    """The sampling seed of one prompt's reference: ``seed`` mixed with the prompt text.

    One seed for every prompt would give every prompt the same random numbers (the same
    quantile at each step), so the prompts' trajectories would be correlated and the
    bootstrap over prompts would understate the spread. Returns an int in [0, 2^31).
    """
    digest = hashlib.sha256(f"{int(seed)}\0{prompt.text}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & _SEED_MASK


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


class LlamaCppSampler:
    """llama.cpp's sampler chain at temperature T with every filter off, seeded.

    The chain ``llama_cpp.server`` builds for a completion with ``top_k`` 0, ``typical_p``
    1, ``top_p`` 1, ``min_p`` 0 and no penalties: the same no-op filters, then
    temperature, then ``dist`` (one draw of llama.cpp's seeded mt19937 per token), so the
    same logits and seed give the server's token. ``sample(logits)`` takes one row (vocab,)
    and returns the token id.
    """

    def __init__(self, n_vocab: int, temperature: float, seed: int) -> None:
        import llama_cpp
        from llama_cpp import _internals

        self._lib = llama_cpp
        self._chain = _internals.LlamaSampler()  # type: ignore[no-untyped-call]
        self._chain.add_top_k(0)
        self._chain.add_typical(1.0, 1)
        self._chain.add_top_p(1.0, 1)
        self._chain.add_min_p(0.0, 1)
        self._chain.add_temp(float(temperature))
        self._chain.add_dist(int(seed) & _SEED_MASK)
        self._cur = _internals.LlamaTokenDataArray(n_vocab=n_vocab)

    def sample(self, logits: npt.NDArray[np.floating]) -> int:
        """Draw one token from ``logits`` (vocab,) and advance the chain."""
        self._cur.copy_logits(np.asarray(logits, dtype=np.float32))
        self._lib.llama_sampler_apply(self._chain.sampler, ctypes.byref(self._cur.candidates))
        selected = int(self._cur.candidates.selected)
        if selected < 0:
            raise InvalidInput("llama.cpp's sampler selected no token")
        tok = int(self._cur.candidates_data.id[selected])
        self._lib.llama_sampler_accept(self._chain.sampler, tok)
        return tok

    def close(self) -> None:
        """Free the chain."""
        self._chain.close()  # type: ignore[no-untyped-call]


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
        """Up to ``n_tokens`` tokens after ``context``: greedy at 0, else sampled with
        llama.cpp's sampler chain seeded by ``seed`` (:class:`LlamaCppSampler`).

        Stops after emitting the end-of-sequence token.
        """
        sampler = LlamaCppSampler(self.n_vocab, temperature, seed) if temperature > 0 else None
        try:
            logits = self._prime(context)
            out: list[int] = []
            eos = self.eos_token
            for i in range(n_tokens):
                tok = int(np.argmax(logits)) if sampler is None else sampler.sample(logits)
                out.append(tok)
                if tok == eos or i + 1 == n_tokens:
                    break
                logits = self._decode([tok], all_logits=False)[-1]
            return out
        finally:
            if sampler is not None:
                sampler.close()


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
            **({"sampling": SAMPLING_SCHEME} if settings.temperature else {}),
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
        ctx,
        settings.n_tokens,
        temperature=settings.temperature,
        seed=prompt_seed(settings.seed, prompt),
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
