"""NVIDIA GPU power through NVML (the ``nvidia-ml-py`` package, module ``pynvml``).

Energy comes from ``nvmlDeviceGetTotalEnergyConsumption`` (mJ since the driver loaded;
Volta and newer) when every selected GPU supports it, else from integrating
``nvmlDeviceGetPowerUsage`` (mW). NVML errors are translated into
:class:`~configspec.errors.MeterError` here, at the boundary. Tests patch the ``pynvml``
module functions (the seam); nothing else in ConfigSpec imports ``pynvml``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import pynvml

from configspec.errors import MeterError
from configspec.power.base import DEFAULT_SAMPLE_HZ, PowerMeter, Reading


def _nvml_error(exc: Exception, what: str) -> MeterError:
    text = str(exc) or type(exc).__name__
    hint = ""
    if isinstance(exc, pynvml.NVMLError):
        code = getattr(exc, "value", None)
        if code in (pynvml.NVML_ERROR_LIBRARY_NOT_FOUND, pynvml.NVML_ERROR_DRIVER_NOT_LOADED):
            hint = "; install the NVIDIA driver (libnvidia-ml.so) or pick another meter"
        elif code == pynvml.NVML_ERROR_NO_PERMISSION:
            hint = "; run as root or ask the administrator for access to /dev/nvidia*"
    return MeterError(f"NVML {what} failed: {text}{hint}")


class NvmlMeter(PowerMeter):
    """Sum of the power of the selected NVIDIA GPUs (all by default)."""

    name = "nvml"
    source = "measured"

    def __init__(
        self,
        devices: Sequence[int] | None = None,
        *,
        sample_hz: float = DEFAULT_SAMPLE_HZ,
        clock: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(sample_hz=sample_hz, clock=clock)
        self.devices = list(devices) if devices is not None else None
        self._handles: list[Any] = []
        self._use_counter = False
        self._names: list[str] = []

    def _probe(self) -> None:
        try:
            pynvml.nvmlInit()
        except Exception as exc:
            raise _nvml_error(exc, "initialisation") from None
        try:
            count = int(pynvml.nvmlDeviceGetCount())
        except pynvml.NVMLError as exc:
            raise _nvml_error(exc, "device count") from None
        indices = self.devices if self.devices is not None else list(range(count))
        if not indices:
            raise MeterError("NVML found no NVIDIA GPU")
        bad = [i for i in indices if not 0 <= i < count]
        if bad:
            raise MeterError(f"GPU index {bad[0]} is out of range (this host has {count} GPUs)")
        handles = []
        for i in indices:
            try:
                handle = pynvml.nvmlDeviceGetHandleByIndex(i)
                name = pynvml.nvmlDeviceGetName(handle)
            except pynvml.NVMLError as exc:
                raise _nvml_error(exc, f"opening GPU {i}") from None
            handles.append(handle)
            self._names.append(name.decode() if isinstance(name, bytes) else str(name))
        self._handles = handles
        self._use_counter = True
        for handle in handles:
            try:
                pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
            except pynvml.NVMLError:
                self._use_counter = False  # pre-Volta: integrate power instead
                break
        if not self._use_counter:
            for i, handle in zip(indices, handles, strict=True):
                try:
                    pynvml.nvmlDeviceGetPowerUsage(handle)
                except pynvml.NVMLError as exc:
                    raise _nvml_error(exc, f"power reading of GPU {i}") from None

    def _read(self) -> Reading:
        try:
            if self._use_counter:
                total_mj = sum(
                    float(pynvml.nvmlDeviceGetTotalEnergyConsumption(h)) for h in self._handles
                )
                return Reading(energy_j=total_mj * 1e-3)
            total_mw = sum(float(pynvml.nvmlDeviceGetPowerUsage(h)) for h in self._handles)
        except pynvml.NVMLError as exc:
            raise _nvml_error(exc, "reading") from None
        return Reading(power_w=total_mw * 1e-3)

    def describe(self) -> str:
        """Which GPUs, and whether the energy counter is used."""
        how = "total-energy counter" if self._use_counter else "integrated power"
        return f"NVML {', '.join(self._names)} ({how})"

    def close(self) -> None:
        """Stop sampling and release NVML."""
        super().close()
        if self._handles:
            with contextlib.suppress(pynvml.NVMLError):
                pynvml.nvmlShutdown()
            self._handles = []
