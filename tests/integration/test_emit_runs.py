"""The emitted ConfigSpec commands run: verifier in one process, edge client in another."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from configspec.deploy import emit

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_emitted_configspec_commands_run(model_family, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    port = _free_port()
    dep = emit(
        "configspec",
        "speculative",
        str(model_family.drafter_path("Q8_0")),  # a small target keeps the test fast
        str(model_family.drafter_path("Q4_0")),
        "Q4_0",
        3,
        host="127.0.0.1",
        port=port,
    )
    verifier, edge = dep.commands
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    python = [sys.executable, "-m", "configspec"]
    server = subprocess.Popen(
        [*python, *verifier[1:], "--threads", "1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert server.poll() is None, server.stderr.read() if server.stderr else ""
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        else:
            pytest.fail("verifier did not become healthy")
        out = subprocess.run(
            [
                *python,
                *edge[1:],
                "--max-tokens",
                "8",
                "--prompt",
                "The capital of France is",
                "--threads",
                "1",
                "--quiet",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert out.returncode == 0, out.stderr
    finally:
        server.terminate()
        server.wait(timeout=20)
