"""The real embedded family: preparation, idempotency, recovery from a killed run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from configspec.backends.models import ModelRegistry, PreparedFamily, prepare_family

pytestmark = pytest.mark.slow


def test_family_is_prepared_and_consistent(model_family: PreparedFamily) -> None:
    assert set(model_family.drafters) == {"Q4_0", "Q4_K_M", "Q8_0", "F16"}
    assert model_family.target.quantization == "F32"
    fingerprints = {d.tokenizer_fingerprint for d in model_family.drafters.values()}
    assert fingerprints == {model_family.target.tokenizer_fingerprint}
    for quant, ident in model_family.drafters.items():
        assert ident.quantization == quant
        assert ident.architecture == "gemma3"
        assert ident.vocab_size == 262144
        assert model_family.drafter_path(quant).is_file()
    # second call: nothing rebuilt, identities equal
    again = prepare_family(model_family.cache_dir)
    assert again.built == []
    assert again.target == model_family.target
    listed = {e.identity.name for e in ModelRegistry(model_family.cache_dir).entries()}
    assert {d.name for d in model_family.drafters.values()} <= listed


def test_killed_or_damaged_files_are_rebuilt(tmp_path: Path) -> None:
    fam = prepare_family(tmp_path, ["Q4_0"], target_quant="Q4_K_M")
    assert set(fam.built) == {"gemma-3-270m-q4_k_m", "gemma-3-270m-q4_0"}
    q4 = fam.drafter_path("Q4_0")
    good_sha = fam.drafters["Q4_0"].file_sha256
    # a killed run leaves only a temp file, which the next run removes
    stale = q4.with_name(f".{q4.name}.12345.tmp")
    stale.write_bytes(b"partial")
    # same size, flipped bytes: only the hash check can tell
    data = bytearray(q4.read_bytes())
    data[-1000:] = bytes(1000)
    q4.write_bytes(bytes(data))
    os.utime(q4, ns=(1, 1))
    fam2 = prepare_family(tmp_path, ["Q4_0"], target_quant="Q4_K_M")
    assert fam2.built == ["gemma-3-270m-q4_0"]
    assert fam2.drafters["Q4_0"].file_sha256 == good_sha
    assert not stale.exists()
    # same size AND the old mtime restored: only a full re-hash (--verify) notices
    st = q4.stat()
    data = bytearray(q4.read_bytes())
    data[-10:] = bytes(10)
    q4.write_bytes(bytes(data))
    os.utime(q4, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert prepare_family(tmp_path, ["Q4_0"], target_quant="Q4_K_M").built == []
    fam3 = prepare_family(tmp_path, ["Q4_0"], target_quant="Q4_K_M", verify=True)
    assert fam3.built == ["gemma-3-270m-q4_0"]
    assert fam3.drafters["Q4_0"].file_sha256 == good_sha
    # truncated file: rebuilt too
    q4.write_bytes(q4.read_bytes()[:1_000_000])
    assert prepare_family(tmp_path, ["Q4_0"], target_quant="Q4_K_M").built == ["gemma-3-270m-q4_0"]
