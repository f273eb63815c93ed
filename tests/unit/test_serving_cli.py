"""``configspec run edge`` / ``serve`` bad input: one clear line and a non-zero exit."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from _serving_fakes import FakeTarget, bigram_table
from _tiny_gguf import write_tiny_gguf

from configspec.cli.main import main
from configspec.serving.server import ServerThread, free_port
from configspec.serving.sessions import ServerLimits, VerifierService


@pytest.fixture
def fake_server() -> Iterator[str]:
    service = VerifierService([FakeTarget(bigram_table(8, 0))], ServerLimits(max_k=4))
    with ServerThread(service) as srv:
        yield srv.url


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error:")
    return lines[0]


def test_unreachable_server(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    rc = main(["run", "edge", "--server", url, "--drafter", "anything", "--k", "2"])
    assert rc == 8
    assert "cannot reach the verifier" in _one_error_line(capsys)


def test_incompatible_drafter(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, fake_server: str
) -> None:
    gguf = write_tiny_gguf(tmp_path / "other.gguf")
    rc = main(
        [
            "run",
            "edge",
            "--server",
            fake_server,
            "--drafter",
            str(gguf),
            "--k",
            "2",
            "--cache-dir",
            str(tmp_path / "cache"),
        ]
    )
    assert rc == 5
    assert "does not share the tokenizer" in _one_error_line(capsys)


def test_k_above_server_limit(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, fake_server: str
) -> None:
    rc = main(["run", "edge", "--server", fake_server, "--drafter", "x", "--k", "9"])
    assert rc == 2
    assert "K=9 is above the verifier's limit (4)" in _one_error_line(capsys)


def test_ngram_needs_tokenizer(capsys: pytest.CaptureFixture[str], fake_server: str) -> None:
    rc = main(["run", "edge", "--server", fake_server, "--drafter", "ngram", "--k", "2"])
    assert rc == 2
    assert "--tokenizer" in _one_error_line(capsys)


def test_not_a_verifier(capsys: pytest.CaptureFixture[str]) -> None:
    with ServerThread(VerifierService([FakeTarget(bigram_table(8, 0))])) as srv:
        url = srv.url + "/nothing-here"
        rc = main(["run", "edge", "--server", url, "--drafter", "x", "--k", "2"])
    assert rc == 8
    assert "not a ConfigSpec verifier" in _one_error_line(capsys)


def test_proxy_refuses_non_loopback(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["serve", "proxy", "--listen", "0.0.0.0:9999", "--upstream", "127.0.0.1:1"])
    assert rc == 2
    assert "only listens on loopback" in _one_error_line(capsys)


def test_proxy_bad_host_port(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["serve", "proxy", "--listen", "nonsense", "--upstream", "127.0.0.1:1"])
    assert rc == 2
    assert "is not HOST:PORT" in _one_error_line(capsys)


def test_proxy_refuses_a_dead_upstream_without_a_banner(
    capsys: pytest.CaptureFixture[str],
) -> None:
    dead = free_port()
    rc = main(["serve", "proxy", "--listen", f"127.0.0.1:{free_port()}", "--upstream",
               f"127.0.0.1:{dead}"])  # fmt: skip
    assert rc == 2
    out = capsys.readouterr()
    lines = [ln for ln in out.err.splitlines() if ln.strip()]
    assert len(lines) == 1 and f"upstream 127.0.0.1:{dead} is not listening" in lines[0]
    assert "proxy" not in out.out  # no banner


def test_proxy_bind_error_comes_without_a_banner(
    capsys: pytest.CaptureFixture[str], fake_server: str
) -> None:
    upstream = fake_server.removeprefix("http://")
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        rc = main(["serve", "proxy", "--listen", f"127.0.0.1:{port}", "--upstream", upstream])
    assert rc == 2
    out = capsys.readouterr()
    assert "cannot listen on 127.0.0.1" in out.err and "->" not in out.out


def test_verifier_port_taken_fails_before_loading(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        rc = main(["serve", "verifier", "--target", "no-such-model", "--port", str(port)])
    assert rc == 2
    assert f"cannot listen on 127.0.0.1:{port}" in _one_error_line(capsys)


def test_run_edge_sends_the_key_from_the_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    service = VerifierService([FakeTarget(bigram_table(8, 0))], ServerLimits(max_k=4))
    with ServerThread(service, api_key="k3y") as srv:
        monkeypatch.delenv("CONFIGSPEC_API_KEY", raising=False)
        argv = ["run", "edge", "--server", srv.url, "--drafter", "no-such-model", "--k", "2"]
        assert main(argv) == 8
        assert "wants an API key and none was given" in _one_error_line(capsys)
        monkeypatch.setenv("MY_KEY", "wrong")
        assert main([*argv, "--api-key-env", "MY_KEY"]) == 8
        assert "refused the one given" in _one_error_line(capsys)
        monkeypatch.setenv("MY_KEY", "k3y")  # accepted: it gets as far as the drafter
        assert main([*argv, "--api-key-env", "MY_KEY"]) != 8
        assert "no-such-model" in _one_error_line(capsys)


def test_verifier_rejects_bad_connection_limits(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["serve", "verifier", "--target", "x", "--max-connections", "0"])
    assert rc == 2
    assert "max-connections" in capsys.readouterr().err


def test_verifier_rejects_an_unknown_gather_mode(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["serve", "verifier", "--target", "x", "--gather", "eager"])
    assert rc != 0
    assert "--gather 'eager' is not one of sync, fixed" in _one_error_line(capsys)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--k", "auto"], "--k auto needs --profiles"),
        (["--k", "lots"], "--k 'lots' is neither a number nor auto"),
        (["--k", "65"], "K=65 is out of range (0..64)"),
    ],
)
def test_k_auto_bad_input(
    capsys: pytest.CaptureFixture[str], fake_server: str, args: list[str], message: str
) -> None:
    rc = main(["run", "edge", "--server", fake_server, "--drafter", "x", *args])
    assert rc == 2
    assert message in _one_error_line(capsys)
