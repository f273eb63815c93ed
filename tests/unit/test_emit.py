"""Emitted deploy commands parse with the engines' own parsers; refusals are one line."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from llama_cpp.server.cli import add_args_from_model, parse_model_from_args
from llama_cpp.server.settings import ModelSettings, ServerSettings, Settings

from configspec.cli.main import app
from configspec.deploy import EngineCannotExpress, emit

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "profiles"


def _llama_cpp_python_parse(argv: list[str]) -> tuple[ServerSettings, ModelSettings]:
    assert argv[:3] == ["python", "-m", "llama_cpp.server"]
    parser = argparse.ArgumentParser()
    add_args_from_model(parser, Settings)  # exactly what `python -m llama_cpp.server` does
    ns = parser.parse_args(argv[3:])
    return parse_model_from_args(ServerSettings, ns), parse_model_from_args(ModelSettings, ns)


def _configspec_parse(argv: list[str]) -> dict[str, object]:
    """Parse argv with the real configspec CLI without running it; return the params."""
    assert argv[0] == "configspec"
    # typer ships its own click: use the command's own context class, and duck typing.
    cmd: Any = typer.main.get_command(app)
    ctx = cmd.context_class(cmd, info_name="configspec")
    args = argv[1:]
    while hasattr(cmd, "list_commands"):  # a group; our emitted commands carry no group options
        name, args = args[0], args[1:]
        sub = cmd.get_command(ctx, name)
        assert sub is not None, f"no command {name!r}"
        cmd = sub
        ctx = cmd.context_class(cmd, info_name=name, parent=ctx)
    ctx = cmd.make_context(ctx.info_name, list(args), parent=ctx.parent)
    return dict(ctx.params)


def test_llama_cpp_python_prompt_lookup_parses() -> None:
    dep = emit("llama-cpp-python", "speculative", "qwen", "ngram", None, 6, model_dir="/m")
    server, model = _llama_cpp_python_parse(dep.commands[0])
    assert model.model == "/m/qwen.gguf"
    assert model.draft_model == "prompt-lookup-decoding"
    assert model.draft_model_num_pred_tokens == 6
    assert server.port == 8000
    for mode in ("cloud_only", "edge_only"):
        dep = emit("llama-cpp-python", mode, "qwen", "d-Q4_0", "Q4_0", 0, model_dir="/m")
        _, model = _llama_cpp_python_parse(dep.commands[0])
        assert model.draft_model is None


def test_llama_cpp_python_refuses_a_draft_model_file() -> None:
    with pytest.raises(EngineCannotExpress, match="prompt lookup"):
        emit("llama-cpp-python", "speculative", "t", "gemma-3-270m-it-Q4_0", "Q4_0", 4)


def test_llama_server_command_and_refusal() -> None:
    dep = emit("llama-server", "speculative", "t", "d-Q8_0", "Q8_0", 5, model_dir="m")
    cmd = dep.commands[0]
    assert cmd[:3] == ["llama-server", "-m", "m/t.gguf"]
    assert cmd[cmd.index("-md") + 1] == "m/d-Q8_0.gguf"
    assert cmd[cmd.index("--draft-max") + 1] == "5"
    assert "b4400" in dep.version and any("RTT" in n for n in dep.notes)
    with pytest.raises(EngineCannotExpress, match="model-free"):
        emit("llama-server", "speculative", "t", "ngram", None, 4)


def test_vllm_speculative_config_json() -> None:
    dep = emit("vllm", "speculative", "Qwen/Qwen3-32B", "Qwen/Qwen3-0.6B-Q4_K_M", "Q4_K_M", 3)
    cmd = dep.commands[0]
    cfg = json.loads(cmd[cmd.index("--speculative-config") + 1])
    assert cfg == {"method": "draft_model", "model": "Qwen/Qwen3-0.6B", "num_speculative_tokens": 3}
    assert any("Q4_K_M" in n for n in dep.notes)
    ngram = emit("vllm", "speculative", "t", "ngram", None, 7).commands[0]
    assert json.loads(ngram[-1])["method"] == "ngram"
    with pytest.raises(EngineCannotExpress, match="edge-only"):
        emit("vllm", "edge_only", None, "d", None, 0)


def test_configspec_commands_parse_with_the_real_cli() -> None:
    dep = emit(
        "configspec", "speculative", "tgt", "dr-Q4_0", "Q4_0", 6, model_dir="/models", port=8123
    )
    verifier, edge = dep.commands
    v = _configspec_parse(verifier)
    assert v["target"] == "/models/tgt.gguf" and v["port"] == 8123 and v["max_k"] == 16
    e = _configspec_parse(edge)
    assert e["drafter"] == "/models/dr-Q4_0.gguf" and str(e["k"]) == "6"
    assert e["server"] == "http://127.0.0.1:8123"
    ngram = emit("configspec", "speculative", "tgt", "ngram:2-4", None, 5, model_dir="/m")
    e = _configspec_parse(ngram.commands[1])
    assert e["drafter"] == "ngram:2-4" and e["tokenizer"] == "/m/tgt.gguf" and str(e["k"]) == "5"
    cloud = emit("configspec", "cloud_only", "tgt", None, None, 0)
    assert len(cloud.commands) == 1
    _configspec_parse(cloud.commands[0])


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run(
        [sys.executable, "-m", "configspec", "select", "--profiles", str(EXAMPLES), *args],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        cwd=ROOT,
    )


def test_select_emit_through_the_cli(tmp_path: Path) -> None:
    out = _cli("--emit", "llama-server", "--format", "json", "--output", str(tmp_path / "s.json"))
    assert out.returncode == 0, out.stderr
    doc = json.loads((tmp_path / "s.json").read_text())
    assert doc["deployment"]["commands"][0][0] == "llama-server"
    assert [b["objective"] for b in doc["breakeven"]] == ["goodput", "cost", "energy"]


def test_select_emit_refusal_is_one_line(tmp_path: Path) -> None:
    dest = tmp_path / "s.json"
    out = _cli("--emit", "llama-cpp-python", "--format", "json", "--output", str(dest))
    assert out.returncode != 0
    lines = [x for x in out.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "prompt lookup" in lines[0]
    assert "Traceback" not in out.stderr and not dest.exists()
