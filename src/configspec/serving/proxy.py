"""A TCP delay proxy: one-way delay, jitter and a bandwidth cap in each direction.

The machines ConfigSpec is developed on have no ``netem`` qdisc, so the runtime ships
this user-space stand-in. It sits between the edge client and the verifier server
(``client -> proxy -> server``) and, per direction, models a link as

* a **bandwidth cap**: a chunk of ``n`` bytes occupies the link for ``8 n / (mbps·1e6)``
  seconds after the link is free (serialisation, so bursts queue). The link is shared:
  all connections through one proxy queue for the same transmitter in each direction;
* a **propagation delay** of ``delay_ms`` plus uniform **jitter** in
  ``[-jitter_ms, +jitter_ms]`` (clipped at 0) once it leaves the link.

TCP is a byte stream, so chunks are never reordered: a chunk is delivered no earlier than
the one before it (jitter can only delay, the way a real in-order link behaves).
Each direction buffers at most ``max_buffer_bytes``; beyond that the proxy stops reading,
so TCP flow control pushes back on the sender and memory stays bounded.

The proxy listens on loopback only. Use :class:`DelayProxy` as a context manager (it
runs its own event loop in a background thread), or ``await serve_proxy(...)`` from
``configspec serve proxy``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType

from configspec.errors import InvalidInput

log = logging.getLogger(__name__)

MAX_DELAY_MS = 10_000.0
MAX_BANDWIDTH_MBPS = 100_000.0
_CHUNK_BYTES = 64 * 1024


@dataclass(frozen=True)
class LinkSettings:
    """One direction of an emulated link. ``bandwidth_mbps`` None means uncapped."""

    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    bandwidth_mbps: float | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.delay_ms <= MAX_DELAY_MS:
            raise InvalidInput(f"delay {self.delay_ms} ms is out of range (0..{MAX_DELAY_MS:g})")
        if not 0.0 <= self.jitter_ms <= MAX_DELAY_MS:
            raise InvalidInput(f"jitter {self.jitter_ms} ms is out of range (0..{MAX_DELAY_MS:g})")
        if self.bandwidth_mbps is not None and not (
            0.0 < self.bandwidth_mbps <= MAX_BANDWIDTH_MBPS
        ):
            raise InvalidInput(
                f"bandwidth {self.bandwidth_mbps} Mbit/s is out of range "
                f"(>0..{MAX_BANDWIDTH_MBPS:g}); omit it for an uncapped link"
            )


class DelaySchedule:
    """A one-way delay that changes by phase, shared by every direction of a proxy.

    ``phases`` are ``(start_s, delay_ms)`` pairs: from ``start_s`` seconds after the proxy
    starts, each direction adds ``delay_ms`` (the first phase starts at 0). A controller
    (e.g. a benchmark switching phases after a number of tokens) calls
    :meth:`set_delay_ms` instead; from then on its value holds. Thread-safe by design:
    one float is read and written whole.
    """

    def __init__(self, phases: Sequence[tuple[float, float]] = ((0.0, 0.0),)) -> None:
        phases = [(float(t), float(d)) for t, d in phases]
        if not phases or phases[0][0] != 0.0:
            raise InvalidInput("a delay schedule starts with a phase at 0 s")
        if any(b[0] <= a[0] for a, b in itertools.pairwise(phases)):
            raise InvalidInput(f"delay schedule phases must start in increasing order: {phases}")
        for _, d in phases:
            LinkSettings(delay_ms=d)  # range check, one clear line
        self.phases = phases
        self._t0 = time.monotonic()
        self._override_ms: float | None = None

    @classmethod
    def parse(cls, text: str) -> DelaySchedule:
        """``"0:2.5,30:60,60:2.5"`` = 2.5 ms from 0 s, 60 ms from 30 s, 2.5 ms from 60 s."""
        try:
            phases = [tuple(float(x) for x in part.split(":")) for part in text.split(",")]
            pairs = [(p[0], p[1]) for p in phases if len(p) == 2]
        except ValueError:
            pairs = []
        if not pairs or len(pairs) != len(phases):
            raise InvalidInput(
                f"--schedule {text!r} is not START_S:DELAY_MS[,START_S:DELAY_MS...] "
                "(e.g. 0:2.5,30:60,60:2.5)"
            )
        return cls(pairs)

    def restart(self) -> None:
        """Count phase times from now (the proxy calls it when it starts listening)."""
        self._t0 = time.monotonic()

    def set_delay_ms(self, delay_ms: float) -> None:
        """Switch the one-way delay now (ms), overriding the timed phases."""
        LinkSettings(delay_ms=delay_ms)
        self._override_ms = float(delay_ms)

    def delay_ms(self, now: float) -> float:
        """The one-way delay (ms) at monotonic time ``now``."""
        if self._override_ms is not None:
            return self._override_ms
        elapsed = now - self._t0
        current = self.phases[0][1]
        for start_s, d in self.phases:
            if elapsed < start_s:
                break
            current = d
        return current


def check_loopback(host: str) -> str:
    """Return ``host`` if it is a loopback address, else raise :class:`InvalidInput`."""
    if host == "localhost":
        return host
    try:
        ok = ipaddress.ip_address(host).is_loopback
    except ValueError:
        ok = False
    if not ok:
        raise InvalidInput(
            f"the delay proxy only listens on loopback; {host!r} is not (use 127.0.0.1)"
        )
    return host


class _Link:
    """One direction of the emulated link, shared by every connection through the proxy.

    The bandwidth cap is a property of the link, not of a connection: chunks of all
    connections queue for the same transmitter (``free_at``), so N connections through
    an 8 Mbit/s link share 8 Mbit/s (a FIFO serialiser, i.e. a token bucket with no burst).
    """

    def __init__(self, settings: LinkSettings, rng: random.Random) -> None:
        self.settings = settings
        self.rng = rng
        self.free_at = 0.0

    def transmit(self, arrival: float, n_bytes: int) -> float:
        """Monotonic time the last bit of a chunk arriving at ``arrival`` leaves the link."""
        mbps = self.settings.bandwidth_mbps
        if mbps is None:
            return arrival
        start = max(arrival, self.free_at)
        self.free_at = start + n_bytes * 8.0 / (mbps * 1e6)
        return self.free_at


class _Direction:
    """Schedules one connection's chunks in one direction through a shared :class:`_Link`."""

    def __init__(
        self,
        link: LinkSettings | _Link,
        rng: random.Random,
        schedule: DelaySchedule | None = None,
    ) -> None:
        self.link = link if isinstance(link, _Link) else _Link(link, rng)
        self.rng = rng
        self.schedule = schedule
        self.last_delivery_at = 0.0

    @property
    def link_free_at(self) -> float:
        """When the shared link's transmitter is next free (monotonic s)."""
        return self.link.free_at

    def delivery_time(self, arrival: float, n_bytes: int) -> float:
        """Monotonic time at which a chunk of ``n_bytes`` arriving at ``arrival`` is delivered."""
        settings = self.link.settings
        tx_end = self.link.transmit(arrival, n_bytes)
        jitter_s = (
            self.rng.uniform(-settings.jitter_ms, settings.jitter_ms) / 1e3
            if settings.jitter_ms
            else 0.0
        )
        delay_ms = settings.delay_ms if self.schedule is None else self.schedule.delay_ms(arrival)
        at = tx_end + max(0.0, delay_ms / 1e3 + jitter_s)
        at = max(at, self.last_delivery_at)  # a byte stream never reorders
        self.last_delivery_at = at
        return at


async def _pump(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    direction: _Direction,
    max_buffer_bytes: int,
) -> None:
    """Copy ``reader`` to ``writer`` through ``direction``'s delay model until EOF."""
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
    budget = asyncio.Semaphore(max(1, max_buffer_bytes // _CHUNK_BYTES))

    async def read_side() -> None:
        try:
            while True:
                await budget.acquire()
                data = await reader.read(_CHUNK_BYTES)
                if not data:
                    break
                queue.put_nowait((direction.delivery_time(time.monotonic(), len(data)), data))
        except (ConnectionError, OSError):
            pass
        finally:
            queue.put_nowait((0.0, b""))

    async def write_side() -> None:
        try:
            while True:
                at, data = await queue.get()
                if not data:
                    break
                wait_s = at - time.monotonic()
                if wait_s > 0:
                    await asyncio.sleep(wait_s)
                writer.write(data)
                await writer.drain()
                budget.release()
            if writer.can_write_eof():
                writer.write_eof()
        except (ConnectionError, OSError):
            pass

    await asyncio.gather(read_side(), write_side())


class _ProxyServer:
    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        uplink: LinkSettings,
        downlink: LinkSettings,
        seed: int | None,
        max_buffer_bytes: int,
        schedule: DelaySchedule | None = None,
    ) -> None:
        self.schedule = schedule
        self.upstream = (upstream_host, upstream_port)
        self.rng = random.Random(seed)
        self.uplink = _Link(uplink, self.rng)  # shared by every connection
        self.downlink = _Link(downlink, self.rng)
        self.max_buffer_bytes = max_buffer_bytes
        self.connections = 0

    async def handle(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            u_reader, u_writer = await asyncio.open_connection(*self.upstream)
        except OSError as exc:
            log.warning("proxy cannot reach upstream %s:%d: %s", *self.upstream, exc)
            c_writer.close()
            return
        up = _Direction(self.uplink, self.rng, self.schedule)
        down = _Direction(self.downlink, self.rng, self.schedule)
        try:
            await asyncio.gather(
                _pump(c_reader, u_writer, up, self.max_buffer_bytes),
                _pump(u_reader, c_writer, down, self.max_buffer_bytes),
            )
        except asyncio.CancelledError:
            # proxy shutdown: end quietly (a cancelled handler makes asyncio's stream
            # callback log a CancelledError traceback)
            pass
        finally:
            for w in (u_writer, c_writer):
                w.close()
                # a shutdown can cancel this wait too; the handler is ending either way
                with contextlib.suppress(ConnectionError, OSError, asyncio.CancelledError):
                    await w.wait_closed()


async def start_proxy(
    listen_host: str,
    listen_port: int,
    upstream_host: str,
    upstream_port: int,
    uplink: LinkSettings,
    downlink: LinkSettings,
    *,
    seed: int | None = None,
    max_buffer_bytes: int = 4 * 1024 * 1024,
    require_upstream: bool = True,
    schedule: DelaySchedule | None = None,
) -> asyncio.Server:
    """Start a proxy on the running loop and return its (serving) :class:`asyncio.Server`.

    With ``require_upstream`` (the default) a proxy whose upstream is not listening is
    refused with :class:`InvalidInput` instead of starting and failing every connection.
    ``schedule`` (when given) sets the one-way delay of both directions instead of the
    links' ``delay_ms``; its phase clock starts now.
    """
    check_loopback(listen_host)
    if require_upstream:
        await check_upstream(upstream_host, upstream_port)
    proxy = _ProxyServer(
        upstream_host, upstream_port, uplink, downlink, seed, max_buffer_bytes, schedule
    )
    if schedule is not None:
        schedule.restart()
    try:
        return await asyncio.start_server(proxy.handle, listen_host, listen_port)
    except OSError as exc:
        raise InvalidInput(
            f"cannot listen on {listen_host}:{listen_port}: {exc.strerror}"
        ) from None


async def check_upstream(host: str, port: int, timeout_s: float = 5.0) -> None:
    """Raise :class:`InvalidInput` unless something accepts TCP connections at ``host:port``."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
    except (OSError, asyncio.TimeoutError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise InvalidInput(
            f"the proxy's upstream {host}:{port} is not listening ({reason}); start the "
            "verifier first or fix --upstream"
        ) from None
    writer.close()
    with contextlib.suppress(ConnectionError, OSError):
        await writer.wait_closed()


async def serve_proxy(
    listen_host: str,
    listen_port: int,
    upstream_host: str,
    upstream_port: int,
    uplink: LinkSettings,
    downlink: LinkSettings,
    *,
    seed: int | None = None,
    on_ready: Callable[[], None] | None = None,
    schedule: DelaySchedule | None = None,
) -> None:
    """Run a proxy until cancelled; ``on_ready()`` runs once it is listening."""
    server = await start_proxy(
        listen_host,
        listen_port,
        upstream_host,
        upstream_port,
        uplink,
        downlink,
        seed=seed,
        schedule=schedule,
    )
    if on_ready is not None:
        on_ready()
    async with server:
        await server.serve_forever()


class DelayProxy:
    """A delay proxy running in a background thread, for tests and benchmarks.

    ``with DelayProxy(("127.0.0.1", 8000), delay_ms=25) as proxy: url = proxy.url``
    adds 25 ms each way (50 ms round trip). ``uplink``/``downlink`` override the
    symmetric settings per direction. ``port`` 0 picks a free port. ``schedule`` makes
    the one-way delay change by phase (:class:`DelaySchedule`; the controller may call
    ``proxy.schedule.set_delay_ms(...)`` while it runs).
    """

    def __init__(
        self,
        upstream: tuple[str, int],
        *,
        delay_ms: float = 0.0,
        jitter_ms: float = 0.0,
        bandwidth_mbps: float | None = None,
        uplink: LinkSettings | None = None,
        downlink: LinkSettings | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int | None = None,
        require_upstream: bool = True,
        schedule: DelaySchedule | None = None,
    ) -> None:
        self.schedule = schedule
        symmetric = LinkSettings(delay_ms, jitter_ms, bandwidth_mbps)
        self._require_upstream = require_upstream
        self.uplink = uplink or symmetric
        self.downlink = downlink or symmetric
        self.upstream = upstream
        self.host = check_loopback(host)
        self._port = port
        self._seed = seed
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port the proxy listens on (valid once started)."""
        if self._server is None:
            raise RuntimeError("proxy not started")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        """``http://host:port`` of the proxy."""
        return f"http://{self.host}:{self.port}"

    @property
    def added_rtt_ms(self) -> float:
        """Round-trip time the proxy adds on average (uplink + downlink delay), ms."""
        return self.uplink.delay_ms + self.downlink.delay_ms

    def start(self) -> DelayProxy:
        """Start listening; returns self."""
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        error: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                self._server = loop.run_until_complete(
                    start_proxy(
                        self.host,
                        self._port,
                        *self.upstream,
                        self.uplink,
                        self.downlink,
                        seed=self._seed,
                        require_upstream=self._require_upstream,
                        schedule=self.schedule,
                    )
                )
            except BaseException as exc:
                error.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name="delay-proxy", daemon=True)
        self._thread.start()
        ready.wait()
        if error:
            raise error[0]
        return self

    def stop(self) -> None:
        """Close the listener and every proxied connection, and join the thread."""
        loop, server, thread = self._loop, self._server, self._thread
        if loop is None or thread is None:
            return

        async def shutdown() -> None:
            if server is not None:
                server.close()
            current = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not current]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if loop.is_running():
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(timeout=10)
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        self._loop = self._thread = None
        self._server = None

    def __enter__(self) -> DelayProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
