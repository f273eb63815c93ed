from __future__ import annotations

from pathlib import Path

import pytest
from _tiny_gguf import write_tiny_gguf

from configspec.backends.factory import (
    check_compatible,
    open_drafter,
    open_pair,
    open_target,
    resolve_identity,
)
from configspec.cli.main import main
from configspec.errors import IncompatibleModels, InvalidInput, ModelFileError


@pytest.fixture
def two_families(tmp_path: Path) -> tuple[Path, Path]:
    a = write_tiny_gguf(tmp_path / "a.gguf", name="Alpha Small")
    b = write_tiny_gguf(tmp_path / "b.gguf", name="Beta Large", tokens=["<s>", "</s>", "x", "y"])
    return a, b


def test_incompatible_pair_names_both_models(two_families: tuple[Path, Path]) -> None:
    a, b = two_families
    with pytest.raises(IncompatibleModels) as err:
        check_compatible(resolve_identity(str(a)), resolve_identity(str(b)))
    msg = str(err.value)
    assert "alpha-small-q4_k_m" in msg and "beta-large-q4_k_m" in msg and "\n" not in msg


def test_open_pair_refuses_before_loading_weights(two_families: tuple[Path, Path]) -> None:
    # the tiny files have no real weights: reaching llama.cpp would fail differently
    a, b = two_families
    with pytest.raises(IncompatibleModels, match="different tokenizers"):
        open_pair(str(a), str(b))


def test_spec_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="can only be targets"):
        open_drafter("http://localhost:8000")
    with pytest.raises(InvalidInput, match="ngram is a drafter"):
        open_target("ngram")
    with pytest.raises(InvalidInput, match="needs the target's tokenizer"):
        open_drafter("ngram:1-2")
    with pytest.raises(InvalidInput, match="needs a local tokenizer"):
        open_target("http://localhost:8000")
    with pytest.raises(ModelFileError, match="neither a registered model"):
        open_target("nonexistent-model", cache_dir=tmp_path)
    with pytest.raises(ModelFileError, match="does not exist"):
        open_target(str(tmp_path / "gone.gguf"), cache_dir=tmp_path)


def test_cli_check_incompatible_is_one_line(
    two_families: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = two_families
    code = main(["models", "check", str(a), str(b), "--cache-dir", str(tmp_path / "c")])
    err = capsys.readouterr().err.strip()
    assert code == 5
    assert err.startswith("error:") and len(err.splitlines()) == 1
    assert "alpha-small" in err and "beta-large" in err


def test_cli_check_server_down(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = write_tiny_gguf(tmp_path / "m.gguf")
    args = ["models", "check", str(model), "http://127.0.0.1:9", "--tokenizer", str(model)]
    code = main([*args, "--cache-dir", str(tmp_path / "c")])
    err = capsys.readouterr().err.strip()
    assert code == 8 and "cannot connect" in err and len(err.splitlines()) == 1
