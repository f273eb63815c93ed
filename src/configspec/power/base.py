"""The power-meter base class: lazy probe, measurement windows, background sampling.

One base class for every meter kind (the Zeus pattern). A vendor module implements two
things: :meth:`PowerMeter._probe` (raise :class:`~configspec.errors.MeterError` naming
the file or command that is missing or unreadable, and what to do) and
:meth:`PowerMeter._read` (one reading: instantaneous power in watts and/or a cumulative,
already wrap-corrected energy counter in joules).

The base class then gives every meter the same behaviour:

* availability is probed lazily, on first use, and cached;
* :meth:`begin_window` / :meth:`end_window` (or :meth:`window`) bracket a region and return
  a :class:`Measurement`; windows may nest and overlap;
* while any window is open a daemon thread samples the meter at ``sample_hz`` (≥ 10 Hz),
  which keeps wrap-around counters from wrapping twice unseen and gives power-only meters
  the points their energy is integrated from (trapezoid rule);
* energy comes from the hardware counter when the meter has one, else from integrated power.

Every figure carries the meter's :attr:`source` (``measured`` for hardware sensors,
``estimated`` for the CPU-time estimator, ``imported`` for replayed traces).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from configspec.config import MeterInfo, Source
from configspec.errors import InvalidInput, MeterError

log = logging.getLogger(__name__)

MIN_SAMPLE_HZ = 10.0
DEFAULT_SAMPLE_HZ = 20.0
_MAX_TRACE_SAMPLES = 1_000_000


@dataclass(frozen=True)
class Reading:
    """One raw reading: ``power_w`` (instantaneous) and/or ``energy_j`` (cumulative counter,
    monotonic, already corrected for wrap-around). At least one is not None."""

    power_w: float | None = None
    energy_j: float | None = None


@dataclass(frozen=True)
class PowerSample:
    """One point of a meter's trace: time (s, meter clock), power (W), cumulative energy (J)
    since the meter started."""

    timestamp_s: float
    power_w: float
    energy_j: float


@dataclass(frozen=True)
class Measurement:
    """Energy and power over one window.

    ``energy_j`` is from the hardware counter where the meter has one, else from integrated
    power; ``sample_power_w`` are the power samples taken inside the window (for spread and
    peak); ``source`` says whether the figures are measured, estimated or imported.
    """

    name: str
    meter: str
    source: Source
    start_s: float
    duration_s: float
    energy_j: float
    sample_power_w: tuple[float, ...]

    @property
    def mean_power_w(self) -> float:
        """Average power over the window (energy / duration), watts; 0 for an empty window."""
        return self.energy_j / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def peak_power_w(self) -> float:
        """Highest power sample in the window, watts (the mean when there are no samples)."""
        return max(self.sample_power_w) if self.sample_power_w else self.mean_power_w


def read_number(path: Path, *, fix: str) -> float:
    """Read one number from a sysfs-style file; translate failures into :class:`MeterError`.

    ``fix`` is appended to the permission-denied message (e.g. how to grant read access).
    """
    try:
        text = Path(path).read_text(encoding="ascii").strip()
    except FileNotFoundError:
        raise MeterError(f"power sensor file {path} does not exist") from None
    except PermissionError:
        raise MeterError(f"cannot read {path}: permission denied; {fix}") from None
    except OSError as exc:
        raise MeterError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return float(text)
    except ValueError:
        raise MeterError(f"{path} holds {text[:40]!r}, not a number") from None


def read_label(path: Path) -> str:
    """Read a short label file (``name``, ``*_label``, ``rail_name_*``); '' when absent."""
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return ""


class CounterUnwrapper:
    """Turns a raw counter that wraps at ``max_range`` into a monotonic total.

    Correct as long as the counter wraps at most once between two calls, which the ≥ 10 Hz
    sampling thread guarantees for every counter in use (RAPL wraps after minutes).
    """

    def __init__(self, max_range: float | None) -> None:
        self.max_range = max_range
        self._last: float | None = None
        self.total = 0.0

    def update(self, raw: float) -> float:
        """Feed a raw counter value; return the accumulated (unwrapped) total."""
        if self._last is not None:
            delta = raw - self._last
            if delta < 0:
                if self.max_range:
                    delta += self.max_range
                else:
                    log.warning(
                        "energy counter went backwards (%s → %s); treated as reset", self._last, raw
                    )
                    delta = raw
            self.total += delta
        self._last = raw
        return self.total


def read_energy_counters_uj(
    counters: Iterable[tuple[Path, CounterUnwrapper]], *, fix: str
) -> Reading:
    """Sum cumulative µJ counter files, each wrap-corrected by its unwrapper.

    Returns one :class:`Reading` with the total in joules; ``fix`` is as for
    :func:`read_number`.
    """
    total_uj = sum(unwrap.update(read_number(path, fix=fix)) for path, unwrap in counters)
    return Reading(energy_j=total_uj * 1e-6)


class PowerMeter(ABC):
    """Base class of every power meter (see the module docstring for the contract)."""

    name: ClassVar[str] = "base"
    source: ClassVar[Source] = "measured"

    def __init__(
        self,
        *,
        sample_hz: float = DEFAULT_SAMPLE_HZ,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if not MIN_SAMPLE_HZ <= sample_hz <= 1000:
            raise InvalidInput(
                f"sample_hz={sample_hz} is out of range ({MIN_SAMPLE_HZ:g}..1000 Hz)"
            )
        self.sample_hz = float(sample_hz)
        self._clock = clock or time.monotonic
        self._lock = threading.RLock()
        self._probed: MeterError | bool | None = False  # False: not yet probed
        self._trace: deque[PowerSample] = deque(maxlen=_MAX_TRACE_SAMPLES)
        self._energy_j = 0.0
        self._counter0_j: float | None = None
        self._last: PowerSample | None = None
        self._last_power_w: float | None = None
        self._windows: dict[str, tuple[float, float]] = {}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    # -- vendor hooks ---------------------------------------------------------
    @abstractmethod
    def _probe(self) -> None:
        """Check the sensor exists and is readable; raise MeterError saying what to do."""

    @abstractmethod
    def _read(self) -> Reading:
        """One reading (power in W and/or cumulative energy in J)."""

    def describe(self) -> str:
        """A short description of what the meter reads (files, rails, devices)."""
        return ""

    # -- availability ---------------------------------------------------------
    def probe(self) -> None:
        """Raise :class:`MeterError` (cached) when the meter cannot be used here."""
        with self._lock:
            if self._probed is False:
                try:
                    self._probe()
                    self._probed = None
                except MeterError as exc:
                    self._probed = exc
            if isinstance(self._probed, MeterError):
                raise self._probed

    def available(self) -> bool:
        """True when the meter's sensors exist and are readable (probed once, lazily)."""
        try:
            self.probe()
        except MeterError:
            return False
        return True

    def info(self) -> MeterInfo:
        """The meter as recorded in a profile (name, source, sampling rate, detail)."""
        return MeterInfo(
            name=self.name, source=self.source, sample_hz=self.sample_hz, detail=self.describe()
        )

    # -- sampling -------------------------------------------------------------
    def sample(self) -> PowerSample:
        """Take one reading now and append it to the trace; return it."""
        self.probe()
        with self._lock:
            reading = self._read()
            now = self._clock()
            last = self._last
            if reading.energy_j is not None:
                if self._counter0_j is None:
                    self._counter0_j = reading.energy_j
                energy_j = reading.energy_j - self._counter0_j
                if reading.power_w is not None:
                    power_w = reading.power_w
                elif last is not None and now > last.timestamp_s:
                    power_w = (energy_j - last.energy_j) / (now - last.timestamp_s)
                else:
                    power_w = self._last_power_w if self._last_power_w is not None else 0.0
            else:
                if reading.power_w is None:
                    raise MeterError(f"meter {self.name} returned neither power nor energy")
                power_w = reading.power_w
                energy_j = self._energy_j
                if last is not None:
                    energy_j += 0.5 * (power_w + last.power_w) * (now - last.timestamp_s)
            if not math.isfinite(power_w):
                raise MeterError(f"meter {self.name} returned a non-finite power {power_w}")
            self._energy_j = energy_j
            self._last_power_w = power_w
            sample = PowerSample(now, power_w, energy_j)
            if (
                reading.energy_j is not None
                and reading.power_w is None
                and len(self._trace) == 1
                and self._trace[0].power_w == 0.0
            ):
                # a counter meter's first sample has no interval to derive power from:
                # back-fill it with the first interval's power instead of a false 0 W
                self._trace[0] = dataclasses.replace(self._trace[0], power_w=power_w)
            self._trace.append(sample)
            self._last = sample
            return sample

    def trace(self) -> list[PowerSample]:
        """A copy of every sample taken so far (at most the last million)."""
        with self._lock:
            return list(self._trace)

    def _run(self) -> None:
        period_s = 1.0 / self.sample_hz
        next_t = time.monotonic()
        while not self._stop.is_set():
            try:
                self.sample()
            except MeterError as exc:  # sensor vanished mid-run: stop sampling, keep windows
                log.warning("power meter %s stopped sampling: %s", self.name, exc)
                return
            next_t += period_s
            self._stop.wait(max(0.0, next_t - time.monotonic()))

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._run, name=f"configspec-meter-{self.name}", daemon=True
            )
            self._thread.start()

    def _stop_thread(self) -> None:
        thread = self._thread
        if thread is not None:
            self._stop.set()
            thread.join(timeout=5)
            self._thread = None

    # -- windows --------------------------------------------------------------
    def begin_window(self, name: str) -> None:
        """Open a measurement window called ``name`` (starts the sampling thread)."""
        with self._lock:
            if name in self._windows:
                raise InvalidInput(f"measurement window {name!r} is already open")
            sample = self.sample()
            self._windows[name] = (sample.timestamp_s, sample.energy_j)
            self._ensure_thread()

    def end_window(self, name: str) -> Measurement:
        """Close window ``name`` and return its energy, duration and power samples."""
        with self._lock:
            if name not in self._windows:
                raise InvalidInput(f"measurement window {name!r} was never opened")
            sample = self.sample()
            start_s, start_j = self._windows.pop(name)
            inside_rev: list[float] = []
            for point in reversed(self._trace):  # newest first; stop at the window start
                if point.timestamp_s <= start_s:
                    break
                inside_rev.append(point.power_w)
            inside = tuple(reversed(inside_rev))
            last_window = not self._windows
        if last_window:
            self._stop_thread()
        return Measurement(
            name=name,
            meter=self.name,
            source=self.source,
            start_s=start_s,
            duration_s=sample.timestamp_s - start_s,
            energy_j=max(0.0, sample.energy_j - start_j),
            sample_power_w=inside,
        )

    @contextmanager
    def window(self, name: str) -> Iterator[list[Measurement]]:
        """``with meter.window("draft") as out: ...`` — ``out[0]`` is the Measurement after."""
        out: list[Measurement] = []
        self.begin_window(name)
        try:
            yield out
        finally:
            out.append(self.end_window(name))

    def measure_idle(self, duration_s: float) -> Measurement:
        """Measure for ``duration_s`` seconds while the caller does nothing (idle power)."""
        if duration_s <= 0:
            raise InvalidInput(f"idle duration {duration_s} s must be positive")
        self.begin_window("idle")
        time.sleep(duration_s)
        return self.end_window("idle")

    def close(self) -> None:
        """Stop sampling (open windows are discarded)."""
        with self._lock:
            self._windows.clear()
        self._stop_thread()

    def __enter__(self) -> PowerMeter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
