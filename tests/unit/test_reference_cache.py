"""Target-reference cache: key sensitivity and lossless round trip (no model needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from configspec.errors import InvalidInput
from configspec.profiling.acceptance import top_k
from configspec.profiling.prompts import Prompt
from configspec.profiling.reference import (
    ReferenceSettings,
    TargetReference,
    cache_key,
    load_reference,
    reference_for,
    save_reference,
)
from configspec.store import ProfileStore

PROMPT = Prompt(id="a", domain="chat", text="Hello there")


def test_key_depends_on_target_prompt_and_settings() -> None:
    base = cache_key("sha1", PROMPT, ReferenceSettings())
    assert base == cache_key("sha1", PROMPT, ReferenceSettings())
    assert base != cache_key("sha2", PROMPT, ReferenceSettings())
    assert base != cache_key("sha1", Prompt("a", "chat", "Hello"), ReferenceSettings())
    assert base != cache_key("sha1", PROMPT, ReferenceSettings(n_tokens=64))
    assert base != cache_key("sha1", PROMPT, ReferenceSettings(temperature=0.7))
    # top-k only matters when distributions are stored (T > 0)
    assert base == cache_key("sha1", PROMPT, ReferenceSettings(top_k=8))
    hot = ReferenceSettings(temperature=0.7)
    assert cache_key("s", PROMPT, hot) != cache_key(
        "s", PROMPT, ReferenceSettings(temperature=0.7, top_k=8)
    )


def test_round_trip_and_reuse(tmp_path: Path) -> None:
    store = ProfileStore(tmp_path)
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(50), size=6)
    ref = TargetReference(
        prompt_id="a",
        domain="chat",
        prompt_tokens=np.array([2, 7, 9]),
        tokens=np.array([1, 4, 4, 3, 8, 1]),
        argmax=np.array([1, 4, 4, 3, 8, 1]),
        dist=top_k(p, 5),
        temperature=0.7,
        generate_s=1.5,
    )
    settings = ReferenceSettings(temperature=0.7, top_k=5)
    key = cache_key("sha", PROMPT, settings)
    save_reference(store, key, ref)
    back = load_reference(store, key, PROMPT)
    assert back is not None and back.dist is not None and ref.dist is not None
    assert back.tokens.tolist() == ref.tokens.tolist()
    assert back.dist.ids.tolist() == ref.dist.ids.tolist()
    np.testing.assert_allclose(back.dist.probs, ref.dist.probs, rtol=1e-6)

    def never() -> None:
        raise AssertionError("the target must not run when the reference is cached")

    got, cached = reference_for(store, "sha", PROMPT, settings, never)  # type: ignore[arg-type]
    assert cached and got.tokens.tolist() == ref.tokens.tolist()


def test_corrupt_cache_entry_is_recomputed(tmp_path: Path) -> None:
    store = ProfileStore(tmp_path)
    key = cache_key("sha", PROMPT, ReferenceSettings())
    path = store.cache_path("alignment-reference", key, ".npz")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a zip")
    assert load_reference(store, key, PROMPT) is None


def test_bad_settings() -> None:
    with pytest.raises(InvalidInput, match="out of range"):
        ReferenceSettings(temperature=-1)
    with pytest.raises(InvalidInput, match="tokens per prompt 0"):
        ReferenceSettings(n_tokens=0)
