from __future__ import annotations

import os
from pathlib import Path

import pytest
from _tiny_gguf import write_tiny_gguf

from configspec.backends.gguf_meta import (
    Sha256Cache,
    file_type_name,
    read_identity,
    sha256_file,
)
from configspec.errors import ModelFileError


def test_identity_from_metadata_not_file_name(tmp_path: Path) -> None:
    path = write_tiny_gguf(tmp_path / "misleading-name-Q8_0.gguf", file_type=15)
    ident = read_identity(path)
    assert ident.architecture == "llama"
    assert ident.quantization == "Q4_K_M"  # from general.file_type, not the name
    assert ident.vocab_size == 4
    assert ident.context_length == 128
    assert ident.parameter_count == 4 * 8
    assert ident.name == "tiny-test-q4_k_m"
    assert ident.file_sha256 == sha256_file(path)
    assert ident.family.startswith("llama-")
    assert ident.file_size_bytes == path.stat().st_size


def test_fingerprint_ignores_quantisation_but_not_tokens(tmp_path: Path) -> None:
    a = read_identity(write_tiny_gguf(tmp_path / "a.gguf", file_type=15), hash_file=False)
    b = read_identity(write_tiny_gguf(tmp_path / "b.gguf", file_type=7, n_embd=16))
    c = read_identity(write_tiny_gguf(tmp_path / "c.gguf", tokens=["<s>", "</s>", "a", "c"]))
    assert a.tokenizer_fingerprint == b.tokenizer_fingerprint
    assert a.family == b.family
    assert b.quantization == "Q8_0"
    assert c.tokenizer_fingerprint != a.tokenizer_fingerprint
    assert c.family != a.family


def test_file_type_names() -> None:
    assert file_type_name(0) == "F32"
    assert file_type_name(1) == "F16"
    assert file_type_name(2) == "Q4_0"
    assert file_type_name(9999) == "type9999"


def test_missing_file_is_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="does not exist") as err:
        read_identity(tmp_path / "nope.gguf")
    assert "\n" not in str(err.value)


def test_non_gguf_file(tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    path.write_bytes(b"PK\x03\x04 this is a zip, not a model")
    with pytest.raises(ModelFileError, match="not a GGUF file") as err:
        read_identity(path)
    assert "\n" not in str(err.value)


def test_truncated_gguf(tmp_path: Path) -> None:
    path = write_tiny_gguf(tmp_path / "t.gguf")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 40])  # tensor data cut short
    with pytest.raises(ModelFileError, match="truncated"):
        read_identity(path)
    path.write_bytes(data[:100])  # metadata cut short
    with pytest.raises(ModelFileError, match="corrupt or truncated") as err:
        read_identity(path)
    assert "\n" not in str(err.value)


def test_corrupt_header(tmp_path: Path) -> None:
    path = write_tiny_gguf(tmp_path / "t.gguf")
    data = bytearray(path.read_bytes())
    data[4:8] = (99).to_bytes(4, "little")  # unsupported version
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="version 99"):
        read_identity(path)


def test_directory_is_not_a_model(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="not a file"):
        read_identity(tmp_path)


def test_sha256_cache_reuses_and_invalidates(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"one")
    cache = Sha256Cache(tmp_path / "hashes.json")
    first = cache.sha256(path)
    # a fresh cache object reads the JSON: same digest without rehashing
    cache2 = Sha256Cache(tmp_path / "hashes.json")
    assert cache2.sha256(path) == first
    path.write_bytes(b"two!")  # size changes → rehash
    assert cache2.sha256(path) == sha256_file(path) != first
    # same size, new mtime → rehash too
    path.write_bytes(b"thre")
    os.utime(path, ns=(1, 1))
    assert cache2.sha256(path) == sha256_file(path)
