"""What the profiled machine is: CPU model, memory, peak resident memory of this process."""

from __future__ import annotations

import os
import platform
from pathlib import Path

from configspec.errors import InvalidInput


def cpu_model(proc_root: Path = Path("/proc")) -> str | None:
    """The CPU model name from ``/proc/cpuinfo`` (``platform.processor()`` elsewhere)."""
    try:
        for line in (proc_root / "cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or None


def memory_total_bytes(proc_root: Path = Path("/proc")) -> int | None:
    """Total RAM in bytes from ``/proc/meminfo``, or None."""
    try:
        for line in (proc_root / "meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def allowed_cpus() -> list[int]:
    """CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def set_affinity(cpus: list[int] | None) -> list[int] | None:
    """Pin this thread (and threads it starts later) to ``cpus``; return the previous set."""
    if cpus is None:
        return None
    if not hasattr(os, "sched_setaffinity"):
        raise InvalidInput("CPU affinity is not supported on this platform; drop --cpus")
    previous = allowed_cpus()
    bad = [c for c in cpus if c not in previous]
    if bad or not cpus:
        raise InvalidInput(f"--cpus {cpus} is not a subset of the allowed CPUs {previous}")
    os.sched_setaffinity(0, cpus)
    return previous


class PeakRss:
    """Peak resident memory of this process over a region, in bytes.

    On Linux, writing ``5`` to ``/proc/self/clear_refs`` resets the peak (``VmHWM``) to the
    current RSS, so the peak of a region is ``VmHWM`` at its end minus ``VmRSS`` at its
    start. Where the reset is not allowed, the current RSS at the end is used instead
    (a lower bound of the peak).
    """

    def __init__(self, proc_root: Path = Path("/proc")) -> None:
        self.status = proc_root / "self" / "status"
        self.clear_refs = proc_root / "self" / "clear_refs"
        self._base = 0
        self._reset_ok = False

    def _field(self, name: str) -> int:
        try:
            for line in self.status.read_text().splitlines():
                if line.startswith(name + ":"):
                    return int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            pass
        return 0

    def start(self) -> None:
        """Mark the start of the region."""
        try:
            self.clear_refs.write_text("5")
            self._reset_ok = True
        except OSError:
            self._reset_ok = False
        self._base = self._field("VmRSS")

    def peak_bytes(self) -> int:
        """Peak RSS above the start of the region, bytes (≥ 0)."""
        end = self._field("VmHWM") if self._reset_ok else self._field("VmRSS")
        return max(0, end - self._base)
