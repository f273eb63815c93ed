"""Slow clients against a real ``configspec serve verifier``: are they cut off, and is it clean?

Starts the verifier in its own process (the prepared Gemma 3 270M F32 target) with short
deadlines, records its open files, then opens ``--connections`` sockets: a third send
nothing, a third half a request line and headers, a third full headers and part of a
body. It reports, before the attack, while it is held and after the deadline: the
connections the server still holds open (client sockets not yet closed by the server),
the server's open files (``/proc/PID/fd``), and whether ``/health`` answered meanwhile.
Writes ``benchmarks/results/bench_slow_clients.json``.

    PYTHONPATH=src python benchmarks/bench_slow_clients.py [--connections 300] [--timeout-s 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from configspec._version import __version__, git_revision
from configspec.serving.server import free_port

KINDS = ("idle", "partial-header", "partial-body")
PAYLOAD = {
    "idle": b"",
    "partial-header": b"POST /v1/sessions HTTP/1.1\r\nhost: x\r\ncontent-ty",
    "partial-body": b"POST /v1/sessions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json"
    b'\r\ncontent-length: 100\r\n\r\n{"prompt_tok',
}


def fds(pid: int) -> int:
    """Open files of process ``pid``."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def still_open(sock: socket.socket) -> bool:
    """True while the server has not closed ``sock`` (no EOF, no reset)."""
    sock.setblocking(False)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return False
    except BlockingIOError:
        return True
    except OSError:
        return False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--connections", type=int, default=300)
    ap.add_argument("--timeout-s", type=float, default=2.0, help="header/body/keep-alive")
    ap.add_argument("--target", default="gemma-3-270m-f32")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args()
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    env.pop("CONFIGSPEC_API_KEY", None)
    t = f"{args.timeout_s:g}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "configspec", "serve", "verifier", "--target", args.target,
         "--port", str(port), "--n-ctx", "512", "--header-timeout-s", t,
         "--body-timeout-s", t, "--keep-alive-s", t,
         "--max-connections", str(args.connections + 50)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(url + "/health", timeout=1, trust_env=False).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the verifier did not start")
            time.sleep(0.2)
        time.sleep(args.timeout_s + 0.5)  # let the probe's keep-alive connection go
        before = fds(proc.pid)
        socks: list[tuple[str, socket.socket]] = []
        t0 = time.monotonic()
        for i in range(args.connections):
            kind = KINDS[i % 3]
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            if PAYLOAD[kind]:
                s.sendall(PAYLOAD[kind])
            socks.append((kind, s))
        opened_s = time.monotonic() - t0
        time.sleep(0.3)
        during = fds(proc.pid)
        held_during = sum(still_open(s) for _, s in socks)
        h0 = time.perf_counter()
        health_ok = httpx.get(url + "/health", timeout=10, trust_env=False).status_code == 200
        health_ms = (time.perf_counter() - h0) * 1e3
        time.sleep(max(0.0, args.timeout_s - (time.monotonic() - t0)) + 1.0)
        held_after = {k: sum(still_open(s) for kind, s in socks if kind == k) for k in KINDS}
        after_server = fds(proc.pid)
        for _, s in socks:
            s.close()
        time.sleep(0.3)
        after_closed = fds(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    load = os.getloadavg()
    result = {
        "connections": args.connections,
        "timeout_s": args.timeout_s,
        "open_files_before": before,
        "open_files_while_held": during,
        "open_files_after_timeout": after_server,
        "open_files_after_clients_closed": after_closed,
        "held_while_attacking": held_during,
        "held_after_timeout": held_after,
        "health_ok_during_attack": health_ok,
        "health_ms_during_attack": health_ms,
        "seconds_to_open_all": opened_s,
        "load_average": load,
        "host": platform.node(),
        "tool_version": __version__,
        "git_revision": git_revision(),
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    table = Table(title=f"{args.connections} slow clients, deadlines {t} s (load {load[0]:.1f})")
    table.add_column("moment")
    table.add_column("connections held", justify="right")
    table.add_column("server open files", justify="right")
    table.add_row("before", "0", str(before))
    table.add_row("while held", str(held_during), str(during))
    table.add_row(
        f"{t} s + 1 s later",
        f"{sum(held_after.values())} ({', '.join(f'{k} {v}' for k, v in held_after.items())})",
        str(after_server),
    )
    table.add_row("clients closed too", "0", str(after_closed))
    Console().print(table)
    Console().print(
        f"/health during the attack: {'ok' if health_ok else 'FAILED'} ({health_ms:.1f} ms)"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_slow_clients.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
