"""Choose a power meter by name, or detect the best one available on this host.

Auto-detection tries whole-board meters first, then CPU and GPU counters, and falls back
to the CPU-time estimator only when nothing else exists:

    jetson → rpi → rapl → nvml → hwmon → estimate

``options`` maps a meter name to its constructor arguments (sysfs roots, command runners,
rails, estimator parameters), so tests and unusual hosts point meters at other paths.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from configspec.errors import InvalidInput, MeterError
from configspec.power.base import PowerMeter
from configspec.power.estimate import CpuTimeEstimator
from configspec.power.hwmon import HwmonMeter
from configspec.power.jetson import JetsonMeter
from configspec.power.nvml import NvmlMeter
from configspec.power.rapl import RaplMeter
from configspec.power.replay import ReplayMeter
from configspec.power.rpi import RaspberryPiMeter

log = logging.getLogger(__name__)

METERS: dict[str, type[PowerMeter]] = {
    cls.name: cls
    for cls in (
        JetsonMeter,
        RaspberryPiMeter,
        RaplMeter,
        NvmlMeter,
        HwmonMeter,
        ReplayMeter,
        CpuTimeEstimator,
    )
}
AUTO_ORDER: tuple[str, ...] = ("jetson", "rpi", "rapl", "nvml", "hwmon", "estimate")
METER_NAMES: tuple[str, ...] = ("auto", *METERS)
ROOTED_METERS: tuple[str, ...] = ("rapl", "hwmon", "jetson")
"""Meters whose sysfs root can be moved (``--meter-root``)."""


def make_meter(name: str, **kwargs: Any) -> PowerMeter:
    """Construct the meter called ``name`` (not yet probed); ``auto`` detects one.

    Raises :class:`MeterError` for an unknown name, listing the valid ones.
    """
    if name == "auto":
        return detect_meter(sample_hz=kwargs.pop("sample_hz", None), options={})
    cls = METERS.get(name)
    if cls is None:
        raise MeterError(f"unknown meter {name!r}; choose one of: {', '.join(METER_NAMES)}")
    if name == "replay" and "path" not in kwargs:
        raise MeterError("the replay meter needs a trace file (--meter-trace PATH)")
    return cls(**kwargs)


def detect_meter(
    *,
    order: Sequence[str] = AUTO_ORDER,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    sample_hz: float | None = None,
) -> PowerMeter:
    """The first meter in ``order`` whose sensors are present and readable (probed).

    The estimator at the end of the default order always succeeds; with another order,
    :class:`MeterError` lists why each candidate was rejected.
    """
    reasons: list[str] = []
    for name in order:
        kwargs = dict((options or {}).get(name, {}))
        if sample_hz is not None:
            kwargs.setdefault("sample_hz", sample_hz)
        meter = make_meter(name, **kwargs)
        try:
            meter.probe()
        except MeterError as exc:
            log.debug("meter %s unavailable: %s", name, exc)
            reasons.append(f"{name}: {exc}")
            continue
        log.info("using power meter %s (%s)", name, meter.describe())
        return meter
    raise MeterError("no power meter available (" + "; ".join(reasons) + ")")


def open_meter(
    name: str,
    *,
    root: Path | None = None,
    trace: Path | None = None,
    idle_power_w: float | None = None,
    power_w_per_core: float | None = None,
) -> PowerMeter | None:
    """The meter a ``--meter NAME`` flag asks for, probed; None for ``none``.

    ``root`` moves the sysfs root of rapl, hwmon and jetson (:class:`InvalidInput` for
    another meter); ``trace`` is the replay meter's CSV; ``idle_power_w`` (W) and
    ``power_w_per_core`` (W per busy core) parameterise the estimator. Raises
    :class:`MeterError` when the meter is unknown or unavailable.
    """
    if name == "none":
        return None
    kwargs: dict[str, object] = {}
    if root is not None:
        if name not in ROOTED_METERS:
            raise InvalidInput(
                f"--meter-root applies to {', '.join(ROOTED_METERS[:-1])} and "
                f"{ROOTED_METERS[-1]}, not {name}"
            )
        kwargs["root"] = root
    if name == "replay" and trace is not None:
        kwargs["path"] = trace
    if name == "estimate":
        if idle_power_w is not None:
            kwargs["idle_power_w"] = idle_power_w
        if power_w_per_core is not None:
            kwargs["power_w_per_busy_core"] = power_w_per_core
    meter = make_meter(name, **kwargs)
    meter.probe()
    return meter
