from __future__ import annotations

from pathlib import Path

import pytest
from _tiny_gguf import write_tiny_gguf

from configspec.backends.models import (
    ModelRegistry,
    default_cache_dir,
    prepare_family,
    quant_ftype,
    quant_names,
    validate_model_name,
)
from configspec.cli.main import main
from configspec.errors import InvalidInput, ModelFileError


def test_cache_dir_resolution(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CONFIGSPEC_CACHE_DIR", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("CONFIGSPEC_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "configspec"


def test_quant_names_and_unknown() -> None:
    assert {"Q4_0", "Q4_K_M", "Q8_0", "F16", "F32"} <= set(quant_names())
    assert quant_ftype("q8_0") == quant_ftype("Q8_0")
    with pytest.raises(InvalidInput, match="unknown quantisation 'Q4_X'"):
        quant_ftype("Q4_X")


def test_unknown_quant_fails_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="Q9_9"):
        prepare_family(tmp_path, ["Q4_0", "Q9_9"])
    assert not (tmp_path / "models").exists()


def test_register_list_resolve(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path / "cache")
    model = write_tiny_gguf(tmp_path / "mine.gguf")
    ident = reg.register(model, name="my-model")
    assert ident.name == "my-model"
    assert [e.identity.name for e in reg.entries()] == ["my-model"]
    assert reg.entries()[0].source == "registered"
    # a new registry object reads the same file
    again = ModelRegistry(tmp_path / "cache")
    assert again.get("my-model") == ident
    assert again.resolve("my-model") == ident
    assert again.resolve(str(model)).tokenizer_fingerprint == ident.tokenizer_fingerprint
    with pytest.raises(ModelFileError, match="neither a registered model"):
        again.resolve("no-such-model")
    with pytest.raises(ModelFileError, match="no model named"):
        again.get("no-such-model")


def test_corrupt_registry_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "models.json").write_text("{not json")
    with pytest.raises(ModelFileError, match="unreadable") as err:
        ModelRegistry(tmp_path).entries()
    assert "\n" not in str(err.value)


def test_cli_register_and_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = write_tiny_gguf(tmp_path / "mine.gguf")
    cache = str(tmp_path / "cache")
    assert main(["models", "register", str(model), "--cache-dir", cache]) == 0
    assert main(["models", "list", "--cache-dir", cache]) == 0
    out = capsys.readouterr().out
    assert "tiny-test-q4_k_m" in out and "Q4_K_M" in out


@pytest.mark.parametrize(
    ("argv", "code", "needle"),
    [
        (["models", "register", "{tmp}/missing.gguf"], 7, "does not exist"),
        (["models", "register", "{tmp}/junk.gguf"], 7, "not a GGUF file"),
        (["models", "prepare", "-q", "Q4_X"], 2, "unknown quantisation 'Q4_X'"),
        (["models", "register", "{tmp}/ok.gguf", "--name", "../../etc/evil"], 2, "not allowed"),
        (["models", "register", "{tmp}/ok.gguf", "--name", ""], 2, "model name '' is not"),
        (["models", "register", "{tmp}/ok.gguf", "--name", "/abs/x"], 2, "not allowed"),
        (["models", "register", "{tmp}/ok.gguf", "--name", "a/b"], 2, "not allowed"),
        (["models", "register", "{tmp}/ok.gguf", "--name", ".hidden"], 2, "not allowed"),
    ],
)
def test_cli_bad_input_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], code: int, needle: str
) -> None:
    (tmp_path / "junk.gguf").write_text("hello")
    write_tiny_gguf(tmp_path / "ok.gguf")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    args = [a.format(tmp=tmp_path) for a in argv] + ["--cache-dir", str(tmp_path / "c")]
    assert main(args) == code
    err = capsys.readouterr().err.strip()
    assert needle in err
    assert err.startswith("error:") and len(err.splitlines()) == 1
    if "--name" in argv:  # refused before anything was written, in the cache or elsewhere
        assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_names_are_validated_wherever_they_are_recorded(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path / "cache")
    model = write_tiny_gguf(tmp_path / "mine.gguf")
    for bad in ("../x", "", "..", "a/../b", "x" * 129, "a\\b", "a b"):
        with pytest.raises(InvalidInput, match="is not allowed"):
            reg.register(model, name=bad)
    assert reg.entries() == []
    for good in ("mine", "Llama-3.1-8B.Q4_K_M", "x+y_z"):
        assert reg.register(model, name=good).name == good
    assert validate_model_name("gemma-3-270m-f32") == "gemma-3-270m-f32"


def test_registered_file_changed_or_gone(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path / "cache")
    model = write_tiny_gguf(tmp_path / "mine.gguf")
    first = reg.register(model, name="mine")
    write_tiny_gguf(model, file_type=7)  # replaced in place with a Q8_0 file
    again = reg.get("mine")
    assert again.quantization == "Q8_0" and again.file_sha256 != first.file_sha256
    assert reg.entries()[0].identity == again  # the registry was updated
    model.unlink()
    with pytest.raises(ModelFileError, match="is gone"):
        reg.resolve("mine")


def test_cli_list_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    model = write_tiny_gguf(tmp_path / "mine.gguf")
    cache = str(tmp_path / "cache")
    assert main(["models", "register", str(model), "--name", "x", "--cache-dir", cache]) == 0
    capsys.readouterr()
    assert main(["models", "list", "--json", "--cache-dir", cache]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["identity"]["name"] == "x" and rows[0]["source"] == "registered"
    assert rows[0]["identity"]["vocab_size"] == 4


def test_quiet_native_stderr_hides_fd2_and_restores(capfd: pytest.CaptureFixture[str]) -> None:
    import os

    from configspec.backends._native import quiet_native_stderr

    with quiet_native_stderr():
        os.write(2, b"native chatter\n")
    os.write(2, b"after\n")
    err = capfd.readouterr().err
    assert "native chatter" not in err and "after" in err
