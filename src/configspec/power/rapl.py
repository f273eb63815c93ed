"""Intel and AMD RAPL energy counters through the Linux powercap sysfs interface.

Layout (``root`` defaults to ``/sys/class/powercap``)::

    intel-rapl:0/name                  "package-0"
    intel-rapl:0/energy_uj             cumulative energy, µJ, wraps at max_energy_range_uj
    intel-rapl:0/max_energy_range_uj
    intel-rapl:0:0/name                "core" / "uncore" / "dram" (sub-zones)
    intel-rapl:1/name                  "psys" on some laptops (whole platform)

AMD Zen CPUs expose the same ``intel-rapl:*`` zones through the same driver
(``intel_rapl_msr`` handles AMD's RAPL MSRs since Linux 5.11).

By default the meter sums the package zones and any ``dram`` sub-zones (DRAM is not part
of the package domain); ``psys`` is left out because it already contains the packages.
Pass ``domains`` (zone names) to choose others. Since Linux 5.10 ``energy_uj`` is readable
by root only; the error says how to grant access.
"""

from __future__ import annotations

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

DEFAULT_ROOT = Path("/sys/class/powercap")
_FIX = (
    "run as root, or grant read access with "
    "`sudo chmod a+r /sys/class/powercap/intel-rapl:*/energy_uj` (reset at every boot)"
)


class RaplMeter(PowerMeter):
    """CPU package (+ DRAM) energy from RAPL counters, with wrap-around correction."""

    name = "rapl"
    source = "measured"

    def __init__(
        self,
        root: Path = DEFAULT_ROOT,
        *,
        domains: Sequence[str] | None = None,
        sample_hz: float = DEFAULT_SAMPLE_HZ,
        clock: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(sample_hz=sample_hz, clock=clock)
        self.root = Path(root)
        self.domains = list(domains) if domains is not None else None
        self._zones: list[tuple[str, Path, CounterUnwrapper]] = []

    def _select(self) -> list[tuple[str, Path]]:
        zones = sorted(self.root.glob("intel-rapl:*"))
        picked: list[tuple[str, Path]] = []
        for zone in zones:
            label = read_label(zone / "name")
            top_level = zone.name.count(":") == 1
            if self.domains is not None:
                if label in self.domains:
                    picked.append((label, zone))
            elif (top_level and label.startswith("package")) or label == "dram":
                picked.append((label, zone))
        return picked

    def _probe(self) -> None:
        if not self.root.is_dir():
            raise MeterError(
                f"RAPL is not available: {self.root} does not exist (needs Linux with the "
                "intel_rapl_msr or intel_rapl_common module: `sudo modprobe intel_rapl_msr`)"
            )
        picked = self._select()
        if not picked:
            wanted = ", ".join(self.domains) if self.domains else "package-*"
            raise MeterError(f"no RAPL zone named {wanted} under {self.root}/intel-rapl:*")
        zones = []
        for label, zone in picked:
            max_range = read_number(zone / "max_energy_range_uj", fix=_FIX)
            read_number(zone / "energy_uj", fix=_FIX)
            zones.append((label, zone, CounterUnwrapper(max_range)))
        self._zones = zones

    def _read(self) -> Reading:
        counters = ((zone / "energy_uj", unwrap) for _label, zone, unwrap in self._zones)
        return read_energy_counters_uj(counters, fix=_FIX)

    def describe(self) -> str:
        """Which zones are summed."""
        return "RAPL " + ", ".join(f"{z.name} ({label})" for label, z, _ in self._zones)
