"""Replay a recorded power trace as if it were a live meter, and record traces to replay.

Trace format (CSV with a header row)::

    timestamp_s,power_w,energy_j
    0.000,4.812,0.0
    0.050,4.901,0.2428

``timestamp_s`` increases; ``power_w`` is required; ``energy_j`` (cumulative) is optional
and, when present, is used as the meter's energy counter. Any meter's trace can be written
with :func:`write_trace` (e.g. on a Jetson), copied to a laptop, and replayed there so the
profiling and model code run on a real power trace without the hardware. Time is replayed
from the first reading; past the end the trace loops (``loop=True``) or the meter fails.
Figures from a replayed trace are labelled ``imported``.
"""

from __future__ import annotations

import csv
import io
import itertools
from bisect import bisect_right
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from configspec.errors import MeterError
from configspec.power.base import DEFAULT_SAMPLE_HZ, PowerMeter, PowerSample, Reading
from configspec.store import atomic_write_text

COLUMNS = ("timestamp_s", "power_w", "energy_j")


def write_trace(path: Path, samples: Iterable[PowerSample]) -> None:
    """Atomically write samples (from :meth:`PowerMeter.trace`) as a replayable CSV."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for s in samples:
        writer.writerow([f"{s.timestamp_s:.6f}", f"{s.power_w:.6f}", f"{s.energy_j:.6f}"])
    atomic_write_text(Path(path), buf.getvalue())


def read_trace(path: Path) -> tuple[list[float], list[float], list[float] | None]:
    """Load a trace; return (timestamps_s rebased to 0, power_w, energy_j or None)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MeterError(f"power trace {path} does not exist") from None
    except OSError as exc:
        raise MeterError(f"cannot read power trace {path}: {exc.strerror or exc}") from None
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or [c.strip() for c in rows[0][:2]] != ["timestamp_s", "power_w"]:
        raise MeterError(
            f"power trace {path} must start with the header `timestamp_s,power_w[,energy_j]`"
        )
    has_energy = len(rows[0]) > 2 and rows[0][2].strip() == "energy_j"
    ts: list[float] = []
    pw: list[float] = []
    ej: list[float] = []
    for lineno, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        try:
            ts.append(float(row[0]))
            pw.append(float(row[1]))
            if has_energy:
                ej.append(float(row[2]))
        except (ValueError, IndexError):
            raise MeterError(f"power trace {path} line {lineno} is not numbers: {row}") from None
    if len(ts) < 2:
        raise MeterError(f"power trace {path} needs at least two samples, has {len(ts)}")
    if any(b <= a for a, b in itertools.pairwise(ts)):
        raise MeterError(f"power trace {path}: timestamp_s must strictly increase")
    t0 = ts[0]
    return [t - t0 for t in ts], pw, (ej if has_energy else None)


class ReplayMeter(PowerMeter):
    """A meter that plays back a recorded trace in real time (``imported`` figures)."""

    name = "replay"
    source = "imported"

    def __init__(
        self,
        path: Path,
        *,
        loop: bool = True,
        sample_hz: float = DEFAULT_SAMPLE_HZ,
        clock: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(sample_hz=sample_hz, clock=clock)
        self.path = Path(path)
        self.loop = loop
        self._t: list[float] = []
        self._p: list[float] = []
        self._e: list[float] = []
        self._start: float | None = None

    def _probe(self) -> None:
        t, p, e = read_trace(self.path)
        self._t, self._p = t, p
        if e is None:  # integrate once so the counter and the samples agree
            steps = np.diff(t) * (np.asarray(p[1:]) + np.asarray(p[:-1])) / 2
            e = [0.0, *np.cumsum(steps).tolist()]
        self._e = [x - e[0] for x in e]

    def _at(self, elapsed_s: float) -> tuple[float, float]:
        span = self._t[-1]
        laps = 0.0
        if elapsed_s > span:
            if not self.loop:
                raise MeterError(f"power trace {self.path} ended after {span:.3f} s")
            laps, elapsed_s = divmod(elapsed_s, span)
        i = min(max(bisect_right(self._t, elapsed_s) - 1, 0), len(self._t) - 2)
        frac = (elapsed_s - self._t[i]) / (self._t[i + 1] - self._t[i])
        power = self._p[i] + frac * (self._p[i + 1] - self._p[i])
        energy = self._e[i] + frac * (self._e[i + 1] - self._e[i])
        return power, laps * self._e[-1] + energy

    def _read(self) -> Reading:
        now = self._clock()
        if self._start is None:
            self._start = now
        power, energy = self._at(now - self._start)
        return Reading(power_w=power, energy_j=energy)

    def describe(self) -> str:
        """The replayed file."""
        return f"replay of {self.path}"
