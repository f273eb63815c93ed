from __future__ import annotations

import pytest

from configspec.importers.names import (
    canonical_quant,
    device_names_match,
    drafter_id,
    family_of,
    model_key,
    parameter_billions,
    split_model_file,
)


@pytest.mark.parametrize(
    ("name", "base", "quant"),
    [
        ("llama-3.2-1b-instruct-q4_k_m.gguf", "llama-3.2-1b-instruct", "Q4_K_M"),
        ("Qwen3-8B-Q6_K.gguf", "Qwen3-8B", "Q6_K"),
        ("Qwen3-0.6B-Q8_0.gguf", "Qwen3-0.6B", "Q8_0"),
        ("model-F16.gguf", "model", "F16"),
        ("tiny-iq4_xs.gguf", "tiny", "IQ4_XS"),
        ("meta-llama/Llama-3.2-1B", "Llama-3.2-1B", None),
    ],
)
def test_split_model_file(name: str, base: str, quant: str | None) -> None:
    assert split_model_file(name) == (base, quant)


def test_quant_names_come_from_gguf() -> None:
    assert canonical_quant("q4_k_m") == "Q4_K_M"
    with pytest.raises(ValueError, match=r"'Q9_Z' is not a llama\.cpp quantisation"):
        canonical_quant("Q9_Z")


def test_ids_and_family() -> None:
    assert (
        drafter_id("meta-llama/Llama-3.2-1B-Instruct", "Q4_K_M") == "Llama-3.2-1B-Instruct-Q4_K_M"
    )
    assert model_key("meta-llama/Meta-Llama-3.1-8B-Instruct") == model_key(
        "Meta-Llama-3.1-8B-Instruct"
    )
    assert family_of("meta-llama/Meta-Llama-3.1-70B-Instruct") == "meta-llama-3.1"
    assert family_of("Qwen/Qwen3-32B") == "qwen3"
    assert family_of("mistralai/Mistral-7B-v0.1") == "mistral"


@pytest.mark.parametrize(
    ("short", "long", "ok"),
    [
        ("RPi 5", "raspberry_pi_5", True),
        ("RPi 4B", "raspberry_pi_5", False),
        ("RPi 5", "raspberry_pi_4b", False),
        ("Jetson", "jetson_agx_orin", True),
        ("Jetson", "raspberry_pi_5", False),
        ("Orin", "jetson_agx_orin", True),
        ("x", "jetson_agx_orin", False),
    ],
)
def test_device_names_match(short: str, long: str, ok: bool) -> None:
    assert device_names_match(short, long) is ok


@pytest.mark.parametrize(
    ("name", "size"),
    [
        ("Qwen3-0.6B-Q4_K_M", 0.6),
        ("Meta-Llama-3.1-8B-Instruct-Q4_K_M", 8.0),
        ("Llama-3.2-1B", 1.0),
        ("gemma-3-270m-it-Q4_0", 0.27),
        ("ngram", None),
    ],
)
def test_parameter_billions(name: str, size: float | None) -> None:
    assert parameter_billions(name) == size
