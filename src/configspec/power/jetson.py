"""NVIDIA Jetson on-module INA3221 power monitors through sysfs.

Two layouts, by JetPack version (``root`` defaults to ``/sys/bus/i2c/drivers``):

JetPack 4.x (L4T 32, ``ina3221x`` IIO driver)::

    ina3221x/6-0040/iio:device0/rail_name_0        "POM_5V_IN" / "VDD_IN"
    ina3221x/6-0040/iio:device0/in_power0_input    mW
    ina3221x/6-0040/iio:device0/in_current0_input  mA
    ina3221x/6-0040/iio:device0/in_voltage0_input  mV

JetPack 5.x / 6.x (L4T 35/36, upstream ``ina3221`` hwmon driver)::

    ina3221/1-0040/hwmon/hwmon3/in1_label          "VDD_IN"
    ina3221/1-0040/hwmon/hwmon3/in1_input          bus voltage, mV
    ina3221/1-0040/hwmon/hwmon3/curr1_input        current, mA

Power of a rail is ``in_power`` (JetPack 4) or voltage × current (JetPack 5/6). The
module-input rail (``VDD_IN``, ``POM_5V_IN``) already contains every other rail, so when
present it alone is the board's power; otherwise (e.g. AGX Xavier, whose monitors list
GPU, CPU, SOC, CV, VDDRQ and SYS5V) the rails are summed. ``rails`` selects rails by label.
INA3221 has no energy counter: energy is integrated from the sampled power.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from configspec.errors import MeterError
from configspec.power.base import DEFAULT_SAMPLE_HZ, PowerMeter, Reading, read_label, read_number

DEFAULT_ROOT = Path("/sys/bus/i2c/drivers")
TOTAL_RAILS = ("VDD_IN", "POM_5V_IN", "VIN_SYS_5V0")
_FIX = "run as root or `sudo chmod a+r` the file"
_JP4_POWER = re.compile(r"^in_power(\d+)_input$")
_JP5_LABEL = re.compile(r"^in(\d+)_label$")


@dataclass(frozen=True)
class Rail:
    """One INA3221 channel: its label and either a power file (mW) or volt/current files."""

    label: str
    power_mw: Path | None = None
    voltage_mv: Path | None = None
    current_ma: Path | None = None

    def read_w(self) -> float:
        """Power of the rail, watts."""
        if self.power_mw is not None:
            return read_number(self.power_mw, fix=_FIX) * 1e-3
        assert self.voltage_mv is not None and self.current_ma is not None
        volts = read_number(self.voltage_mv, fix=_FIX) * 1e-3
        return volts * read_number(self.current_ma, fix=_FIX) * 1e-3


def find_rails(root: Path) -> list[Rail]:
    """Every labelled INA3221 rail under ``root`` in either JetPack layout."""
    rails: list[Rail] = []
    for dev in sorted(root.glob("ina3221x/*/iio:device*")):  # JetPack 4
        for f in sorted(dev.iterdir()):
            m = _JP4_POWER.match(f.name)
            if m:
                label = read_label(dev / f"rail_name_{m.group(1)}") or f"{dev.name}/ch{m.group(1)}"
                rails.append(Rail(label=label, power_mw=f))
    for dev in sorted(root.glob("ina3221/*/hwmon/hwmon*")):  # JetPack 5/6
        for f in sorted(dev.iterdir()):
            m = _JP5_LABEL.match(f.name)
            if not m:
                continue
            label = read_label(f)
            volt, curr = dev / f"in{m.group(1)}_input", dev / f"curr{m.group(1)}_input"
            if label and label.upper() != "NC" and volt.exists() and curr.exists():
                rails.append(Rail(label=label, voltage_mv=volt, current_ma=curr))
    return rails


class JetsonMeter(PowerMeter):
    """Board power of a Jetson from its INA3221 rails (module input when available)."""

    name = "jetson"
    source = "measured"

    def __init__(
        self,
        root: Path = DEFAULT_ROOT,
        *,
        rails: Sequence[str] | None = None,
        sample_hz: float = DEFAULT_SAMPLE_HZ,
        clock: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(sample_hz=sample_hz, clock=clock)
        self.root = Path(root)
        self.rail_names = list(rails) if rails is not None else None
        self._rails: list[Rail] = []

    def _probe(self) -> None:
        found = find_rails(self.root)
        if not found:
            raise MeterError(
                f"no Jetson INA3221 rail under {self.root}/ina3221x/*/iio:device* (JetPack 4) "
                f"or {self.root}/ina3221/*/hwmon/hwmon* (JetPack 5/6)"
            )
        if self.rail_names is not None:
            chosen = [r for r in found if r.label in self.rail_names]
            missing = set(self.rail_names) - {r.label for r in chosen}
            if missing:
                raise MeterError(
                    f"Jetson rail(s) {', '.join(sorted(missing))} not found; available: "
                    + ", ".join(r.label for r in found)
                )
        else:
            total = [r for r in found if r.label.upper() in TOTAL_RAILS]
            chosen = total[:1] or found
        for rail in chosen:
            rail.read_w()
        self._rails = chosen

    def _read(self) -> Reading:
        return Reading(power_w=sum(r.read_w() for r in self._rails))

    def describe(self) -> str:
        """Which rails are summed."""
        return "INA3221 " + " + ".join(r.label for r in self._rails)
