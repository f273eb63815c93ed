from __future__ import annotations

import numpy as np


def test_softmax_matches_float64_reference() -> None:
    from configspec.backends.llamacpp import softmax

    rng = np.random.default_rng(1)
    logits = (rng.standard_normal((3, 1000)) * 8).astype(np.float32)
    for temperature in (1.0, 0.7):
        z = logits.astype(np.float64) / temperature
        ref = np.exp(z - z.max(axis=1, keepdims=True))
        ref /= ref.sum(axis=1, keepdims=True)
        out = softmax(logits, temperature)
        assert out.dtype == np.float32
        assert np.abs(out - ref).max() < 1e-6
    assert logits.dtype == np.float32  # input untouched
