"""Estimate power from CPU time where the device has no power sensor.

Model (linear in CPU utilisation, the usual first-order server power model)::

    power_w  = idle_power_w + power_w_per_busy_core × busy_cores
    energy_j = idle_power_w × wall_s + power_w_per_busy_core × cpu_s

``busy_cores`` is the CPU seconds the measured process used per wall second (so 2.0 when
two threads draft flat out); ``cpu_s`` is that process's user + system CPU time. Because
the energy is a closed form of two counters, it is exact for the model whatever the
sampling rate.

The defaults (2.7 W idle, 1.1 W per busy core) are rough figures for a Raspberry Pi 5
class board (Cortex-A76, 4 cores) from public wall-meter reviews. Applied to any other
machine — a laptop, or the 2-core cloud VM ConfigSpec is developed on — they are an
**illustrative power model of a different machine**, not that machine's power. They are
deliberately not "fitted" to the host from its CPU model and a table of package power: a
virtual machine sees neither its package power nor its share of a shared socket, so such
a fit would only look more precise. Every figure this meter produces is labelled
``estimated`` and its profile records :meth:`CpuTimeEstimator.describe`, which says which
constants were applied (set your device's with ``--idle-power-w`` and
``--power-w-per-core``; they remain an estimate, not a measurement).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from configspec.errors import InvalidInput, MeterError
from configspec.power.base import DEFAULT_SAMPLE_HZ, PowerMeter, Reading

DEFAULT_IDLE_POWER_W = 2.7
DEFAULT_POWER_W_PER_BUSY_CORE = 1.1


def process_cpu_time_s(pid: int | None = None, proc_root: Path = Path("/proc")) -> float:
    """User + system CPU seconds of process ``pid`` (this process, all threads, when None)."""
    if pid is None:
        return time.process_time()  # ns resolution (os.times() ticks at 10 ms)
    stat = proc_root / str(pid) / "stat"
    try:
        text = stat.read_text()
    except OSError:
        raise MeterError(f"cannot read {stat}: is process {pid} running?") from None
    fields = text.rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime


class CpuTimeEstimator(PowerMeter):
    """Power estimated from a process's CPU time (``estimated``; see module docstring)."""

    name = "estimate"
    source = "estimated"

    def __init__(
        self,
        *,
        idle_power_w: float = DEFAULT_IDLE_POWER_W,
        power_w_per_busy_core: float = DEFAULT_POWER_W_PER_BUSY_CORE,
        pid: int | None = None,
        proc_root: Path = Path("/proc"),
        cpu_time_s: Callable[[], float] | None = None,
        sample_hz: float = DEFAULT_SAMPLE_HZ,
        clock: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(sample_hz=sample_hz, clock=clock)
        if idle_power_w < 0 or power_w_per_busy_core < 0:
            raise InvalidInput(
                f"estimator powers must be ≥ 0 W (idle {idle_power_w}, per core "
                f"{power_w_per_busy_core})"
            )
        self.idle_power_w = float(idle_power_w)
        self.power_w_per_busy_core = float(power_w_per_busy_core)
        self.pid = pid
        self._cpu = cpu_time_s or (lambda: process_cpu_time_s(pid, proc_root))

    def _probe(self) -> None:
        self._cpu()

    def _read(self) -> Reading:
        wall_s = self._clock()
        return Reading(
            energy_j=self.idle_power_w * wall_s + self.power_w_per_busy_core * self._cpu()
        )

    def describe(self) -> str:
        """The model, its parameters and where they come from (never this machine's power)."""
        who = "this process" if self.pid is None else f"pid {self.pid}"
        defaults = (self.idle_power_w, self.power_w_per_busy_core) == (
            DEFAULT_IDLE_POWER_W,
            DEFAULT_POWER_W_PER_BUSY_CORE,
        )
        origin = (
            "illustrative power model: Raspberry Pi 5-class constants applied to this "
            "machine, not its measured power"
            if defaults
            else "user-set constants, not a measurement"
        )
        return (
            f"estimated from CPU time of {who}: {self.idle_power_w:g} W idle + "
            f"{self.power_w_per_busy_core:g} W per busy core ({origin})"
        )
