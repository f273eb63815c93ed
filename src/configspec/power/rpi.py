"""Raspberry Pi 5 power from its PMIC ADCs, read with ``vcgencmd pmic_read_adc``.

``vcgencmd pmic_read_adc`` prints one line per ADC channel, currents then voltages::

       3V7_WL_SW_A current(0)=0.00390372A
       VDD_CORE_A current(7)=2.12000000A
       ...
       VDD_CORE_V volt(15)=0.80000000V
       EXT5V_V volt(24)=5.14670000V

A rail ``X`` is measured when both ``X_A`` (current) and ``X_V`` (voltage) lines exist; the
meter reports Σ V·I over those rails. This is the power delivered by the PMIC's regulators:
it leaves out the 5 V input stage's conversion losses and USB peripherals, so it reads
below a wall meter. ``rails`` restricts the sum.
The command is run through ``runner`` (a function taking argv and returning stdout) so
tests can feed recorded output.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable, Sequence

from configspec.errors import MeterError
from configspec.power.base import DEFAULT_SAMPLE_HZ, PowerMeter, Reading

Runner = Callable[[Sequence[str]], str]
COMMAND = ("vcgencmd", "pmic_read_adc")
_LINE = re.compile(
    r"^\s*(?P<rail>\S+?)_(?P<kind>[AV])\s+(?:current|volt)\(\d+\)=(?P<value>[-+0-9.eE]+)[AV]\s*$"
)


def run_command(argv: Sequence[str]) -> str:
    """Run ``argv`` and return its stdout; translate failures into :class:`MeterError`."""
    if shutil.which(argv[0]) is None:
        raise MeterError(
            f"`{argv[0]}` not found; it ships with Raspberry Pi OS (package raspi-utils)"
        )
    try:
        out = subprocess.run(list(argv), capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        raise MeterError(f"`{' '.join(argv)}` failed: {exc}") from None
    if out.returncode != 0:
        msg = (out.stderr or out.stdout).strip().splitlines()
        detail = msg[0] if msg else f"exit code {out.returncode}"
        hint = ""
        if "vcio" in detail or "ermission" in detail:
            hint = "; add your user to the video group (`sudo usermod -aG video $USER`)"
        raise MeterError(f"`{' '.join(argv)}` failed: {detail}{hint}")
    return out.stdout


def parse_pmic(text: str) -> dict[str, tuple[float, float]]:
    """Parse ``pmic_read_adc`` output into ``{rail: (volts, amps)}`` for rails having both."""
    amps: dict[str, float] = {}
    volts: dict[str, float] = {}
    for line in text.splitlines():
        m = _LINE.match(line)
        if m:
            (amps if m["kind"] == "A" else volts)[m["rail"]] = float(m["value"])
    return {rail: (volts[rail], amps[rail]) for rail in amps if rail in volts}


class RaspberryPiMeter(PowerMeter):
    """Raspberry Pi 5 board power (Σ V·I over the PMIC rails)."""

    name = "rpi"
    source = "measured"

    def __init__(
        self,
        runner: Runner = run_command,
        *,
        rails: Sequence[str] | None = None,
        sample_hz: float = DEFAULT_SAMPLE_HZ,
        clock: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(sample_hz=sample_hz, clock=clock)
        self.runner = runner
        self.rails = list(rails) if rails is not None else None
        self._seen: list[str] = []

    def _power(self) -> tuple[float, list[str]]:
        parsed = parse_pmic(self.runner(COMMAND))
        if self.rails is not None:
            missing = [r for r in self.rails if r not in parsed]
            if missing:
                raise MeterError(
                    f"PMIC rail(s) {', '.join(missing)} not in `vcgencmd pmic_read_adc` "
                    f"output; available: {', '.join(sorted(parsed)) or 'none'}"
                )
            parsed = {r: parsed[r] for r in self.rails}
        return sum(v * a for v, a in parsed.values()), sorted(parsed)

    def _probe(self) -> None:
        _, rails = self._power()
        if not rails:
            raise MeterError(
                "`vcgencmd pmic_read_adc` printed no rail with both current and voltage "
                "(the PMIC ADCs exist on Raspberry Pi 5 only)"
            )
        self._seen = rails

    def _read(self) -> Reading:
        return Reading(power_w=self._power()[0])

    def describe(self) -> str:
        """How many PMIC rails are summed."""
        return f"vcgencmd pmic_read_adc, Σ V·I over {len(self._seen)} rails"
