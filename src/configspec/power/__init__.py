"""Power meters behind one interface: RAPL, NVML, Jetson, Raspberry Pi, hwmon, replay, estimate.

>>> meter = detect_meter()                 # best available, the estimator as last resort
>>> with meter.window("draft") as out:
...     run_something()
>>> out[0].energy_j, out[0].mean_power_w, out[0].source

See :mod:`configspec.power.base` for the contract every meter follows.
"""

from configspec.power.base import Measurement, PowerMeter, PowerSample, Reading
from configspec.power.detect import (
    AUTO_ORDER,
    METER_NAMES,
    METERS,
    detect_meter,
    make_meter,
    open_meter,
)
from configspec.power.estimate import CpuTimeEstimator
from configspec.power.hwmon import HwmonMeter
from configspec.power.jetson import JetsonMeter
from configspec.power.nvml import NvmlMeter
from configspec.power.rapl import RaplMeter
from configspec.power.replay import ReplayMeter, read_trace, write_trace
from configspec.power.rpi import RaspberryPiMeter, parse_pmic

__all__ = [
    "AUTO_ORDER",
    "METERS",
    "METER_NAMES",
    "CpuTimeEstimator",
    "HwmonMeter",
    "JetsonMeter",
    "Measurement",
    "NvmlMeter",
    "PowerMeter",
    "PowerSample",
    "RaplMeter",
    "RaspberryPiMeter",
    "Reading",
    "ReplayMeter",
    "detect_meter",
    "make_meter",
    "open_meter",
    "parse_pmic",
    "read_trace",
    "write_trace",
]
