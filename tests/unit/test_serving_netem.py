"""Kernel netem link: the tc commands, clean-up on failure, refusal to touch a foreign
qdisc, and the fall-back to the delay proxy (a recording fake stands in for ``tc``)."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence

import pytest

from configspec.errors import BackendUnavailable, InvalidInput
from configspec.serving import netem
from configspec.serving.netem import NetemLink, open_link

NOQUEUE = "qdisc noqueue 0: root refcnt 2 \n"


class FakeTc:
    """Records every command; fails the first command that contains ``fail_on``."""

    def __init__(self, show: str = NOQUEUE, fail_on: str | None = None) -> None:
        self.calls: list[list[str]] = []
        self.show = show
        self.fail_on = fail_on

    def __call__(self, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        argv = list(argv)
        self.calls.append(argv)
        if argv[:3] == ["tc", "qdisc", "show"]:
            return subprocess.CompletedProcess(argv, 0, self.show, "")
        if self.fail_on is not None and self.fail_on in argv:
            return subprocess.CompletedProcess(
                argv, 2, "", "Error: Specified qdisc kind is unknown."
            )
        return subprocess.CompletedProcess(argv, 0, "", "")


@pytest.fixture(autouse=True)
def _fresh_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(netem, "_netem_unavailable", None)


def test_commands_shape_only_the_port_in_both_directions() -> None:
    tc = FakeTc()
    with NetemLink(8123, delay_ms=15.0, jitter_ms=2.0, bandwidth_mbps=40.0, runner=tc) as link:
        assert link.url == "http://127.0.0.1:8123" and link.added_rtt_ms == 30.0
        assert link.describe().startswith("netem on lo port 8123: 15 ms each way, 40 Mbit/s")
    cmds = [" ".join(c) for c in tc.calls]
    assert cmds[0] == "tc qdisc show dev lo"
    assert cmds[1] == "tc qdisc add dev lo root handle 1: prio bands 4"
    assert cmds[2] == (
        "tc qdisc add dev lo parent 1:4 handle 40: netem delay 15.000ms 2.000ms rate 40mbit"
    )
    assert "match ip dport 8123 0xffff flowid 1:4" in cmds[3]
    assert "match ip sport 8123 0xffff flowid 1:4" in cmds[4]
    assert cmds[-1] == "tc qdisc del dev lo root handle 1:"  # removed on exit


def test_failure_midway_removes_what_was_added_and_says_why() -> None:
    tc = FakeTc(fail_on="netem")
    with pytest.raises(BackendUnavailable, match=r"qdisc kind is unknown.*delay proxy"):
        NetemLink(8123, delay_ms=5.0, runner=tc).start()
    assert tc.calls[-1][:4] == ["tc", "qdisc", "del", "dev"]
    # a failure on the very first qdisc leaves nothing to remove
    tc = FakeTc(fail_on="prio")
    with pytest.raises(BackendUnavailable):
        NetemLink(8123, delay_ms=5.0, runner=tc).start()
    assert not any(c[:3] == ["tc", "qdisc", "del"] for c in tc.calls)


def test_never_replaces_a_root_qdisc_that_is_not_ours() -> None:
    tc = FakeTc(show="qdisc htb 1: root refcnt 2 r2q 10 default 0\n")
    with pytest.raises(BackendUnavailable, match=r"already has a root qdisc.*--link proxy"):
        NetemLink(8123, delay_ms=5.0, runner=tc).start()
    assert tc.calls == [["tc", "qdisc", "show", "dev", "lo"]]


def test_bad_settings_are_one_clear_line() -> None:
    with pytest.raises(InvalidInput, match="delay -1"):
        NetemLink(8123, delay_ms=-1.0, runner=FakeTc())
    with pytest.raises(InvalidInput, match="port 0"):
        NetemLink(0, runner=FakeTc())
    with (
        pytest.raises(InvalidInput, match="not one of auto, proxy, netem"),
        open_link("carrier-pigeon", ("127.0.0.1", 1), delay_ms=0.0),
    ):
        pass


@pytest.fixture
def echo_port() -> Iterator[int]:
    srv = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                while data := conn.recv(65536):
                    conn.sendall(data)

    threading.Thread(target=serve, daemon=True).start()
    yield int(srv.getsockname()[1])
    srv.close()


def _rtt_ms(url: str) -> float:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as s:
        t = time.perf_counter()
        s.sendall(b"ping")
        s.recv(16)
        return (time.perf_counter() - t) * 1e3


def test_auto_falls_back_to_the_proxy_and_remembers_why(echo_port: int) -> None:
    tc = FakeTc(fail_on="netem")
    with open_link("auto", ("127.0.0.1", echo_port), delay_ms=10.0, runner=tc) as link:
        assert link.describe() == "configspec delay proxy, no bandwidth cap"
        assert _rtt_ms(link.url) >= 20.0
    assert netem.netem_unavailable_reason() is not None
    calls = len(tc.calls)
    with open_link("auto", ("127.0.0.1", echo_port), delay_ms=0.0, runner=tc):
        pass
    assert len(tc.calls) == calls  # not retried in this process
    with (
        pytest.raises(BackendUnavailable, match="netem"),
        open_link("netem", ("127.0.0.1", echo_port), delay_ms=10.0, runner=tc),
    ):
        pass


def test_auto_uses_netem_when_it_works(echo_port: int) -> None:
    tc = FakeTc()
    with open_link("auto", ("127.0.0.1", echo_port), delay_ms=10.0, runner=tc) as link:
        assert isinstance(link, NetemLink) and link.url.endswith(f":{echo_port}")
    assert tc.calls[-1][:3] == ["tc", "qdisc", "del"]


def test_auto_on_this_machine_gives_a_working_link(echo_port: int) -> None:
    """Real ``tc``: netem where the kernel has it, the proxy otherwise; either way the
    round trip carries the injected delay."""
    with open_link("auto", ("127.0.0.1", echo_port), delay_ms=10.0) as link:
        assert min(_rtt_ms(link.url) for _ in range(3)) >= 20.0
