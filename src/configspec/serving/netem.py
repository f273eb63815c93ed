"""Kernel network emulation (``tc netem``) on loopback, where the kernel offers it.

The TCP delay proxy (:mod:`configspec.serving.proxy`) works everywhere; ``netem`` delays
packets in the kernel instead, with no user-space hop in the path. :class:`NetemLink`
shapes only the verifier's port on ``lo``: a ``prio`` root qdisc with one extra band, a
``netem`` qdisc on that band (delay, jitter, rate), and two ``u32`` filters sending packets
to or from the port into it. Both directions leave through ``lo``'s egress, so a one-way
delay of ``d`` adds ``2 d`` to the round trip, as the proxy's per-direction delay does.
Everything else on loopback keeps the default priority bands.

It needs ``tc`` (iproute2), the ``sch_prio`` and ``sch_netem`` kernel modules, and
``CAP_NET_ADMIN`` (root). :func:`open_link` with ``kind="auto"`` uses netem when all of
that holds and ``lo`` has no qdisc of its own, and otherwise falls back to the proxy,
saying why; ``kind="netem"`` makes a missing piece an error. The qdisc is removed when the
link closes (also after an error), and a root qdisc that is not ours is never touched.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Literal

from configspec.errors import BackendUnavailable, InvalidInput
from configspec.serving.proxy import DelayProxy, LinkSettings

log = logging.getLogger(__name__)

LinkKind = Literal["auto", "proxy", "netem"]
LINK_KINDS: tuple[str, ...] = ("auto", "proxy", "netem")

Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]
"""Runs one command (argv) and returns its completed process (never raises on failure)."""

DEVICE = "lo"
_HANDLE = "1:"
_BAND = "1:4"

NETEM_PREFIX = f"netem on {DEVICE}"
PROXY_PREFIX = "configspec delay proxy"
EMULATED_LINKS = (PROXY_PREFIX, NETEM_PREFIX)
"""How run records' ``link`` begins when the RTT was injected on loopback (the link is then
exactly the injected delay, see :func:`configspec.loop.validate.validate`)."""


def run_command(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` capturing text output; a missing binary is a failed process, not a raise."""
    try:
        return subprocess.run(list(argv), capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return subprocess.CompletedProcess(list(argv), 127, "", str(exc))


def _fmt_ms(ms: float) -> str:
    return f"{ms:.3f}ms"


def _cap_text(bandwidth_mbps: float | None) -> str:
    return f", {bandwidth_mbps:g} Mbit/s" if bandwidth_mbps else ", no bandwidth cap"


@dataclass
class NetemLink:
    """``tc netem`` shaping of one loopback port (see the module docstring).

    ``delay_ms``/``jitter_ms`` are one way (each direction); ``bandwidth_mbps`` caps each
    direction. ``runner`` executes commands (tests pass a recording fake).
    """

    port: int
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    bandwidth_mbps: float | None = None
    host: str = "127.0.0.1"
    runner: Runner = run_command
    _active: bool = False

    def __post_init__(self) -> None:
        LinkSettings(self.delay_ms, self.jitter_ms, self.bandwidth_mbps)  # range checks
        if not 0 < self.port < 65536:
            raise InvalidInput(f"port {self.port} is out of range (1..65535)")

    @property
    def url(self) -> str:
        """The verifier's own URL: netem shapes it in the kernel, no proxy in the path."""
        return f"http://{self.host}:{self.port}"

    @property
    def added_rtt_ms(self) -> float:
        """Round-trip time added on average (one-way delay, both directions), ms."""
        return 2.0 * self.delay_ms

    def describe(self) -> str:
        """One line for run records' provenance."""
        return (
            f"{NETEM_PREFIX} port {self.port}: {self.delay_ms:g} ms each way"
            f"{_cap_text(self.bandwidth_mbps)}"
        )

    def commands(self) -> list[list[str]]:
        """The ``tc`` commands that set the shaping up, in order."""
        netem = ["netem", "delay", _fmt_ms(self.delay_ms)]
        if self.jitter_ms:
            netem += [_fmt_ms(self.jitter_ms)]
        if self.bandwidth_mbps:
            netem += ["rate", f"{self.bandwidth_mbps:g}mbit"]
        base = ["tc", "filter", "add", "dev", DEVICE, "parent", _HANDLE, "protocol", "ip"]
        return [
            ["tc", "qdisc", "add", "dev", DEVICE, "root", "handle", _HANDLE, "prio", "bands", "4"],
            ["tc", "qdisc", "add", "dev", DEVICE, "parent", _BAND, "handle", "40:", *netem],
            [*base, "prio", "1", "u32", "match", "ip", "dport", str(self.port), "0xffff",
             "flowid", _BAND],
            [*base, "prio", "1", "u32", "match", "ip", "sport", str(self.port), "0xffff",
             "flowid", _BAND],
        ]  # fmt: skip

    def check(self) -> None:
        """Raise :class:`BackendUnavailable` (one line, what is missing) unless netem can
        be set up here without touching a qdisc that is not ours."""
        # a missing `tc` shows up here (exit 127), missing rights or modules when adding
        shown = self.runner(["tc", "qdisc", "show", "dev", DEVICE])
        if shown.returncode != 0:
            raise BackendUnavailable(f"netem: `tc qdisc show dev {DEVICE}` failed: "
                                     f"{(shown.stderr or shown.stdout).strip()}")  # fmt: skip
        root = next((ln for ln in shown.stdout.splitlines() if " root " in f" {ln} "), "")
        if root and not root.startswith(("qdisc noqueue", "qdisc pfifo_fast", "qdisc fq_codel")):
            raise BackendUnavailable(
                f"netem: {DEVICE} already has a root qdisc ({root.strip()}); refusing to replace "
                "it (remove it, or use the delay proxy: --link proxy)"
            )

    def start(self) -> NetemLink:
        """Set the shaping up (or raise :class:`BackendUnavailable`, leaving nothing behind)."""
        self.check()
        for i, argv in enumerate(self.commands()):
            done = self.runner(argv)
            if done.returncode != 0:
                self._active = i > 0  # our root qdisc exists only after the first command
                self.stop()
                msg = (done.stderr or done.stdout).strip().splitlines()
                raise BackendUnavailable(
                    f"netem: `{' '.join(argv[:4])} ...` failed: {msg[0] if msg else 'error'} "
                    "(netem needs root and the kernel's sch_prio and sch_netem; the delay proxy "
                    "works everywhere)"
                )
            self._active = True
        log.info("%s", self.describe())
        return self

    def stop(self) -> None:
        """Remove the root qdisc this link added (idempotent)."""
        if self._active:
            self.runner(["tc", "qdisc", "del", "dev", DEVICE, "root", "handle", _HANDLE])
            self._active = False

    def __enter__(self) -> NetemLink:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class _ProxyLink:
    """The delay proxy behind the same small interface as :class:`NetemLink`."""

    def __init__(self, upstream: tuple[str, int], delay_ms: float, jitter_ms: float,
                 bandwidth_mbps: float | None) -> None:  # fmt: skip
        self.proxy = DelayProxy(
            upstream, delay_ms=delay_ms, jitter_ms=jitter_ms, bandwidth_mbps=bandwidth_mbps
        )
        self.bandwidth_mbps = bandwidth_mbps

    @property
    def url(self) -> str:
        return self.proxy.url

    @property
    def added_rtt_ms(self) -> float:
        return self.proxy.added_rtt_ms

    def describe(self) -> str:
        return f"{PROXY_PREFIX}{_cap_text(self.bandwidth_mbps)}"

    def __enter__(self) -> _ProxyLink:
        self.proxy.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.proxy.stop()


EmulatedLink = NetemLink | _ProxyLink

_netem_unavailable: str | None = None
"""Why netem failed in this process (``auto`` then goes straight to the proxy)."""


@contextmanager
def open_link(
    kind: str,
    upstream: tuple[str, int],
    *,
    delay_ms: float,
    jitter_ms: float = 0.0,
    bandwidth_mbps: float | None = None,
    runner: Runner = run_command,
) -> Iterator[EmulatedLink]:
    """An emulated link to ``upstream`` adding ``delay_ms`` each way, set up for the
    ``with`` block: netem where the kernel offers it (``auto``, ``netem``), else (``auto``
    after netem failed once in this process, or ``proxy``) the TCP delay proxy. Yields an
    object with ``url``, ``added_rtt_ms`` and ``describe()``; ``netem`` raises
    :class:`BackendUnavailable` (one line) when netem cannot be used.
    """
    global _netem_unavailable
    if kind not in LINK_KINDS:
        raise InvalidInput(f"link {kind!r} is not one of {', '.join(LINK_KINDS)}")
    if kind == "netem" or (kind == "auto" and _netem_unavailable is None):
        link = NetemLink(upstream[1], delay_ms, jitter_ms, bandwidth_mbps, upstream[0], runner)
        try:
            link.start()
        except BackendUnavailable as exc:
            if kind == "netem":
                raise
            _netem_unavailable = str(exc)
            log.info("%s; using the delay proxy instead", exc)
        else:
            try:
                yield link
            finally:
                link.stop()
            return
    with _ProxyLink(upstream, delay_ms, jitter_ms, bandwidth_mbps) as proxy:
        yield proxy


def netem_unavailable_reason() -> str | None:
    """Why ``auto`` links fell back to the proxy in this process (None: not tried or fine)."""
    return _netem_unavailable
