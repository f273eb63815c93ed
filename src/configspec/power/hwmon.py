"""Generic Linux hwmon power and energy sensors.

Layout (``root`` defaults to ``/sys/class/hwmon``)::

    hwmon3/name              driver name, e.g. "amd_energy", "acpi_power_meter"
    hwmon3/power1_input      instantaneous power, µW
    hwmon3/power1_label      optional label
    hwmon3/energy1_input     cumulative energy, µJ
    hwmon3/energy1_label     e.g. "Ecore000", "Esocket0" (amd_energy)

Energy counters are preferred over power when a device has them. When labels include
``Esocket*`` (amd_energy), only the socket counters are summed, since the per-core counters
are already inside them. ``names`` restricts the meter to hwmon devices with those driver
names. Jetson INA3221 hwmon devices are left to :mod:`configspec.power.jetson`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path

from configspec.errors import MeterError
from configspec.power.base import (
    DEFAULT_SAMPLE_HZ,
    CounterUnwrapper,
    PowerMeter,
    Reading,
    read_energy_counters_uj,
    read_label,
    read_number,
)

DEFAULT_ROOT = Path("/sys/class/hwmon")
_FIX = "run as root or `sudo chmod a+r` the file (hwmon permissions reset at every boot)"
_SENSOR = re.compile(r"^(power|energy)(\d+)_input$")


class HwmonMeter(PowerMeter):
    """Sum of hwmon ``energy*_input`` counters (µJ), else of ``power*_input`` sensors (µW)."""

    name = "hwmon"
    source = "measured"

    def __init__(
        self,
        root: Path = DEFAULT_ROOT,
        *,
        names: Sequence[str] | None = None,
        sample_hz: float = DEFAULT_SAMPLE_HZ,
        clock: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(sample_hz=sample_hz, clock=clock)
        self.root = Path(root)
        self.names = list(names) if names is not None else None
        self._energy: list[tuple[Path, CounterUnwrapper]] = []
        self._power: list[Path] = []

    def _scan(self) -> tuple[list[tuple[Path, str]], list[tuple[Path, str]]]:
        energy: list[tuple[Path, str]] = []
        power: list[tuple[Path, str]] = []
        for dev in sorted(self.root.glob("hwmon*")):
            driver = read_label(dev / "name")
            if driver.startswith("ina3221") or (
                self.names is not None and driver not in self.names
            ):
                continue
            for f in sorted(dev.iterdir()):
                m = _SENSOR.match(f.name)
                if not m:
                    continue
                label = read_label(dev / f"{m.group(1)}{m.group(2)}_label")
                (energy if m.group(1) == "energy" else power).append((f, label))
        if any(label.startswith("Esocket") for _, label in energy):
            energy = [(f, label) for f, label in energy if label.startswith("Esocket")]
        return energy, power

    def _probe(self) -> None:
        if not self.root.is_dir():
            raise MeterError(f"hwmon is not available: {self.root} does not exist")
        energy, power = self._scan()
        if not energy and not power:
            raise MeterError(
                f"no hwmon power*_input or energy*_input sensor under {self.root}/hwmon*"
            )
        if energy:
            for f, _ in energy:
                read_number(f, fix=_FIX)
            self._energy = [(f, CounterUnwrapper(None)) for f, _ in energy]
        else:
            for f, _ in power:
                read_number(f, fix=_FIX)
            self._power = [f for f, _ in power]

    def _read(self) -> Reading:
        if self._energy:
            return read_energy_counters_uj(self._energy, fix=_FIX)
        return Reading(power_w=sum(read_number(f, fix=_FIX) for f in self._power) * 1e-6)

    def describe(self) -> str:
        """Which sensor files are summed."""
        files = [f for f, _ in self._energy] or self._power
        return "hwmon " + ", ".join(f"{f.parent.name}/{f.name}" for f in files)
