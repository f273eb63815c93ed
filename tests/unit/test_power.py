"""Power meters against recorded sysfs trees and command outputs in the real formats."""

from __future__ import annotations

from pathlib import Path

import pynvml
import pytest
from tests.unit._perm import make_unreadable

from configspec.errors import InvalidInput, MeterError
from configspec.power import (
    CpuTimeEstimator,
    HwmonMeter,
    JetsonMeter,
    NvmlMeter,
    PowerMeter,
    RaplMeter,
    RaspberryPiMeter,
    ReplayMeter,
    detect_meter,
    make_meter,
    parse_pmic,
    write_trace,
)


@pytest.fixture(autouse=True)
def _no_background_sampling(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tests driving a fake clock sample by hand; a sampling thread reading the same fake
    clock would race them. Tests named *thread* keep the real thread."""
    if "thread" not in request.node.name:
        monkeypatch.setattr(PowerMeter, "_ensure_thread", lambda self: None)


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")
    return path


# ------------------------------------------------------------------ RAPL


def rapl_tree(root: Path, energy_uj: int = 262_143_000_000 - 1_000_000) -> Path:
    pkg = root / "intel-rapl:0"
    write(pkg / "name", "package-0")
    write(pkg / "energy_uj", str(energy_uj))
    write(pkg / "max_energy_range_uj", "262143328850")
    write(root / "intel-rapl:0:0" / "name", "core")
    write(root / "intel-rapl:0:0" / "energy_uj", "5")
    write(root / "intel-rapl:0:0" / "max_energy_range_uj", "262143328850")
    write(root / "intel-rapl:0:1" / "name", "dram")
    write(root / "intel-rapl:0:1" / "energy_uj", "1000")
    write(root / "intel-rapl:0:1" / "max_energy_range_uj", "65712999613")
    write(root / "intel-rapl:1" / "name", "psys")
    write(root / "intel-rapl:1" / "energy_uj", "777")
    write(root / "intel-rapl:1" / "max_energy_range_uj", "262143328850")
    return pkg


def test_rapl_sums_package_and_dram_and_unwraps(tmp_path: Path) -> None:
    pkg = rapl_tree(tmp_path)
    clock = Clock()
    meter = RaplMeter(tmp_path, clock=clock)
    assert meter.available()
    assert "package-0" in meter.describe() and "dram" in meter.describe()
    assert "psys" not in meter.describe() and "core" not in meter.describe()
    meter.sample()
    # package counter wraps: from max-1e6 µJ to 2e6 µJ = 3 J (+ 0.328850 J of range tail)
    clock.t += 1.0
    write(pkg / "energy_uj", "2000000")
    write(tmp_path / "intel-rapl:0:1" / "energy_uj", str(1000 + 500_000))  # dram +0.5 J
    s = meter.sample()
    expected_j = (262143328850 - (262_143_000_000 - 1_000_000) + 2_000_000) * 1e-6 + 0.5
    assert s.energy_j == pytest.approx(expected_j)
    assert s.power_w == pytest.approx(expected_j / 1.0)
    first, second = meter.trace()
    assert first.power_w == second.power_w  # first sample back-filled, not a false 0 W


def test_rapl_window_energy_and_mean_power(tmp_path: Path) -> None:
    pkg = rapl_tree(tmp_path, energy_uj=1_000_000)
    clock = Clock()
    meter = RaplMeter(tmp_path, clock=clock, domains=["package-0"])
    meter.begin_window("w")
    clock.t += 2.0
    write(pkg / "energy_uj", str(1_000_000 + 10_000_000))
    m = meter.end_window("w")
    assert m.energy_j == pytest.approx(10.0)
    assert m.duration_s == pytest.approx(2.0)
    assert m.mean_power_w == pytest.approx(5.0)
    assert m.source == "measured" and m.meter == "rapl"


def test_rapl_missing_root_and_zone(tmp_path: Path) -> None:
    with pytest.raises(MeterError, match="does not exist"):
        RaplMeter(tmp_path / "nope").probe()
    write(tmp_path / "intel-rapl:0" / "name", "package-0")
    with pytest.raises(MeterError, match=r"intel-rapl:0/max_energy_range_uj does not exist"):
        RaplMeter(tmp_path).probe()


def test_rapl_permission_denied_names_file_and_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pkg = rapl_tree(tmp_path)
    make_unreadable(pkg / "energy_uj", monkeypatch)
    with pytest.raises(MeterError) as err:
        RaplMeter(tmp_path).probe()
    msg = str(err.value)
    assert str(pkg / "energy_uj") in msg and "permission denied" in msg and "chmod" in msg
    assert "\n" not in msg


# ------------------------------------------------------------------ hwmon


def test_hwmon_power_inputs_integrated(tmp_path: Path) -> None:
    write(tmp_path / "hwmon0" / "name", "acpi_power_meter")
    f = write(tmp_path / "hwmon0" / "power1_input", "12500000")  # µW
    write(tmp_path / "hwmon1" / "name", "k10temp")
    write(tmp_path / "hwmon1" / "temp1_input", "41000")
    clock = Clock()
    meter = HwmonMeter(tmp_path, clock=clock)
    meter.begin_window("w")
    clock.t += 1.0
    write(f, "7500000")
    clock.t += 0.0
    m = meter.end_window("w")
    assert m.energy_j == pytest.approx(0.5 * (12.5 + 7.5) * 1.0)
    assert m.peak_power_w == pytest.approx(7.5)


def test_hwmon_prefers_socket_energy_counters(tmp_path: Path) -> None:
    dev = tmp_path / "hwmon2"
    write(dev / "name", "amd_energy")
    write(dev / "energy1_label", "Ecore000")
    write(dev / "energy1_input", "100")
    write(dev / "energy17_label", "Esocket0")
    sock = write(dev / "energy17_input", "5000000")
    clock = Clock()
    meter = HwmonMeter(tmp_path, clock=clock)
    meter.sample()
    clock.t += 0.5
    write(sock, str(5_000_000 + 20_000_000))
    assert meter.sample().energy_j == pytest.approx(20.0)
    assert "energy17_input" in meter.describe() and "energy1_input" not in meter.describe()


def test_hwmon_absent(tmp_path: Path) -> None:
    write(tmp_path / "hwmon0" / "name", "k10temp")
    with pytest.raises(MeterError, match="no hwmon power"):
        HwmonMeter(tmp_path).probe()


# ------------------------------------------------------------------ Jetson


def jetpack4_tree(root: Path) -> Path:
    dev = root / "ina3221x" / "6-0040" / "iio:device0"
    for i, (name, mw) in enumerate([("POM_5V_IN", 3500), ("POM_5V_GPU", 400), ("POM_5V_CPU", 900)]):
        write(dev / f"rail_name_{i}", name)
        write(dev / f"in_power{i}_input", str(mw))
        write(dev / f"in_current{i}_input", str(mw // 5))
        write(dev / f"in_voltage{i}_input", "5000")
    return dev


def jetpack5_tree(root: Path) -> Path:
    dev = root / "ina3221" / "1-0040" / "hwmon" / "hwmon3"
    for i, (name, mv, ma) in enumerate(
        [("VDD_IN", 5072, 1184), ("VDD_CPU_GPU_CV", 5064, 384), ("VDD_SOC", 5064, 320)], start=1
    ):
        write(dev / f"in{i}_label", name)
        write(dev / f"in{i}_input", str(mv))
        write(dev / f"curr{i}_input", str(ma))
        write(dev / f"in{i + 3}_input", "40")  # shunt voltages, unlabelled
    write(dev / "name", "ina3221")
    return dev


def test_jetson_jetpack4_uses_module_input_rail(tmp_path: Path) -> None:
    jetpack4_tree(tmp_path)
    meter = JetsonMeter(tmp_path, clock=Clock())
    assert meter.sample().power_w == pytest.approx(3.5)
    assert meter.describe() == "INA3221 POM_5V_IN"


def test_jetson_jetpack5_volt_times_current(tmp_path: Path) -> None:
    jetpack5_tree(tmp_path)
    meter = JetsonMeter(tmp_path, clock=Clock())
    assert meter.sample().power_w == pytest.approx(5.072 * 1.184)
    sub = JetsonMeter(tmp_path, rails=["VDD_CPU_GPU_CV", "VDD_SOC"], clock=Clock())
    assert sub.sample().power_w == pytest.approx(5.064 * 0.384 + 5.064 * 0.320)


def test_jetson_sums_rails_without_module_input(tmp_path: Path) -> None:
    dev = tmp_path / "ina3221x" / "1-0040" / "iio:device0"
    for i, (name, mw) in enumerate([("GPU", 1000), ("CPU", 2000), ("SOC", 1500)]):
        write(dev / f"rail_name_{i}", name)
        write(dev / f"in_power{i}_input", str(mw))
    assert JetsonMeter(tmp_path, clock=Clock()).sample().power_w == pytest.approx(4.5)


def test_jetson_missing_and_unknown_rail(tmp_path: Path) -> None:
    with pytest.raises(MeterError, match="no Jetson INA3221 rail"):
        JetsonMeter(tmp_path).probe()
    jetpack5_tree(tmp_path)
    with pytest.raises(MeterError, match="VDD_GPU not found; available: VDD_IN"):
        JetsonMeter(tmp_path, rails=["VDD_GPU"]).probe()


def test_jetson_unreadable_rail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dev = jetpack5_tree(tmp_path)
    make_unreadable(dev / "curr1_input", monkeypatch)
    with pytest.raises(MeterError, match=r"curr1_input: permission denied; run as root"):
        JetsonMeter(tmp_path).probe()


# ------------------------------------------------------------------ Raspberry Pi 5

PMIC_OUTPUT = """\
 3V7_WL_SW_A current(0)=0.00390372A
   3V3_SYS_A current(1)=0.05172144A
   1V8_SYS_A current(2)=0.16937240A
  DDR_VDD2_A current(3)=0.02049453A
  DDR_VDDQ_A current(4)=0.00000000A
   1V1_SYS_A current(5)=0.17664960A
   0V8_SW_A current(6)=0.32595750A
   VDD_CORE_A current(7)=2.12000000A
  3V3_DAC_A current(17)=0.00048840A
  3V3_ADC_A current(18)=0.00018315A
  0V8_AON_A current(16)=0.00474840A
    HDMI_A current(22)=0.00000000A
 3V7_WL_SW_V volt(8)=3.71216800V
   3V3_SYS_V volt(9)=3.31505400V
   1V8_SYS_V volt(10)=1.79963000V
  DDR_VDD2_V volt(11)=1.10476200V
  DDR_VDDQ_V volt(12)=0.60402960V
   1V1_SYS_V volt(13)=1.10476200V
   0V8_SW_V volt(14)=0.80219490V
   VDD_CORE_V volt(15)=0.80000000V
  3V3_DAC_V volt(20)=3.30769200V
  3V3_ADC_V volt(21)=3.30952400V
  0V8_AON_V volt(19)=0.79633710V
    HDMI_V volt(23)=5.14798800V
    EXT5V_V volt(24)=5.14670000V
    BATT_V volt(25)=0.00000000V
"""


def test_parse_pmic_pairs_rails() -> None:
    rails = parse_pmic(PMIC_OUTPUT)
    assert rails["VDD_CORE"] == (0.8, 2.12)
    assert "EXT5V" not in rails and "BATT" not in rails  # voltage only
    assert len(rails) == 12


def test_rpi_power_is_sum_of_v_times_i() -> None:
    calls: list[list[str]] = []

    def runner(argv):  # type: ignore[no-untyped-def]
        calls.append(list(argv))
        return PMIC_OUTPUT

    meter = RaspberryPiMeter(runner, clock=Clock())
    expected = sum(v * a for v, a in parse_pmic(PMIC_OUTPUT).values())
    assert meter.sample().power_w == pytest.approx(expected)
    assert 2.6 < expected < 2.7
    assert calls[0] == ["vcgencmd", "pmic_read_adc"]
    core = RaspberryPiMeter(lambda argv: PMIC_OUTPUT, rails=["VDD_CORE"], clock=Clock())
    assert core.sample().power_w == pytest.approx(1.696)


def test_rpi_not_a_pi5() -> None:
    with pytest.raises(MeterError, match="no rail"):
        RaspberryPiMeter(lambda argv: 'error=1 error_msg="Command not registered"\n').probe()


def test_rpi_missing_vcgencmd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(MeterError, match="vcgencmd` not found"):
        RaspberryPiMeter().probe()


# ------------------------------------------------------------------ NVML


class FakeNvml:
    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, counter: bool) -> None:
        self.energy_mj = [1_000_000, 2_000_000]
        self.power_mw = [150_000, 60_000]
        self.inits = 0
        monkeypatch.setattr(pynvml, "nvmlInit", self.init)
        monkeypatch.setattr(pynvml, "nvmlShutdown", lambda: None)
        monkeypatch.setattr(pynvml, "nvmlDeviceGetCount", lambda: 2)
        monkeypatch.setattr(pynvml, "nvmlDeviceGetHandleByIndex", lambda i: i)
        monkeypatch.setattr(pynvml, "nvmlDeviceGetName", lambda h: f"NVIDIA A10G #{h}")
        monkeypatch.setattr(pynvml, "nvmlDeviceGetPowerUsage", lambda h: self.power_mw[h])

        def energy(h: int) -> int:
            if not counter:
                raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
            return self.energy_mj[h]

        monkeypatch.setattr(pynvml, "nvmlDeviceGetTotalEnergyConsumption", energy)

    def init(self) -> None:
        self.inits += 1


def test_nvml_total_energy_counter(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNvml(monkeypatch, counter=True)
    clock = Clock()
    meter = NvmlMeter(clock=clock)
    meter.begin_window("w")
    clock.t += 2.0
    fake.energy_mj = [1_000_000 + 300_000, 2_000_000 + 100_000]
    m = meter.end_window("w")
    assert m.energy_j == pytest.approx(400.0)
    assert m.mean_power_w == pytest.approx(200.0)
    assert "total-energy counter" in meter.describe() and fake.inits == 1


def test_nvml_falls_back_to_power_usage(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeNvml(monkeypatch, counter=False)
    meter = NvmlMeter(devices=[1], clock=Clock())
    assert meter.sample().power_w == pytest.approx(60.0)
    assert "integrated power" in meter.describe()


def test_nvml_errors_translated(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_lib() -> None:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)

    monkeypatch.setattr(pynvml, "nvmlInit", no_lib)
    with pytest.raises(MeterError, match=r"NVML initialisation failed: .*install the NVIDIA"):
        NvmlMeter().probe()
    FakeNvml(monkeypatch, counter=True)
    with pytest.raises(MeterError, match="GPU index 5 is out of range"):
        NvmlMeter(devices=[5]).probe()


# ------------------------------------------------------------------ replay and estimate


def test_replay_round_trip_of_a_recorded_trace(tmp_path: Path) -> None:
    pkg = rapl_tree(tmp_path / "sys", energy_uj=0)
    clock = Clock()
    rapl = RaplMeter(tmp_path / "sys", domains=["package-0"], clock=clock)
    for i in range(1, 11):
        rapl.sample()
        clock.t += 0.1
        write(pkg / "energy_uj", str(i * 400_000))  # 4 W
    write_trace(tmp_path / "trace.csv", rapl.trace())
    replay_clock = Clock()
    replay = ReplayMeter(tmp_path / "trace.csv", clock=replay_clock)
    replay.begin_window("w")
    replay_clock.t += 0.5
    m = replay.end_window("w")
    assert m.source == "imported"
    assert m.energy_j == pytest.approx(2.0, rel=1e-6)


def test_replay_without_energy_column_integrates(tmp_path: Path) -> None:
    trace = write(tmp_path / "t.csv", "timestamp_s,power_w\n0,2\n1,4\n2,4")
    clock = Clock()
    meter = ReplayMeter(trace, clock=clock, loop=False)
    meter.begin_window("w")
    clock.t += 2.0
    assert meter.end_window("w").energy_j == pytest.approx(3.0 + 4.0)
    clock.t += 1.0
    with pytest.raises(MeterError, match=r"ended after 2\.000 s"):
        meter.sample()


def test_replay_rejects_bad_files(tmp_path: Path) -> None:
    with pytest.raises(MeterError, match="does not exist"):
        ReplayMeter(tmp_path / "missing.csv").probe()
    bad = write(tmp_path / "b.csv", "time,watts\n0,1\n1,2")
    with pytest.raises(MeterError, match="must start with the header"):
        ReplayMeter(bad).probe()
    bad2 = write(tmp_path / "c.csv", "timestamp_s,power_w\n0,1\n1,x")
    with pytest.raises(MeterError, match="line 3"):
        ReplayMeter(bad2).probe()


def test_estimator_is_labelled_estimated_and_follows_its_model() -> None:
    clock = Clock()
    cpu = [10.0]
    meter = CpuTimeEstimator(
        idle_power_w=3.0, power_w_per_busy_core=2.0, cpu_time_s=lambda: cpu[0], clock=clock
    )
    meter.begin_window("w")
    clock.t += 4.0
    cpu[0] += 6.0  # 1.5 busy cores
    m = meter.end_window("w")
    assert m.source == "estimated" and meter.info().source == "estimated"
    assert m.energy_j == pytest.approx(3.0 * 4 + 2.0 * 6)
    assert m.mean_power_w == pytest.approx(6.0)
    assert "3 W idle + 2 W per busy core" in meter.describe()
    assert "user-set constants, not a measurement" in meter.describe()
    # the defaults are another machine's figures: said so wherever the meter is described
    default = CpuTimeEstimator(cpu_time_s=lambda: 0.0, clock=clock).describe()
    assert "illustrative power model" in default and "not its measured power" in default


def test_estimator_real_cpu_time_with_thread() -> None:
    meter = CpuTimeEstimator(idle_power_w=1.0, power_w_per_busy_core=10.0, sample_hz=50)
    with meter.window("busy") as out:
        x = 0
        for i in range(3_000_000):
            x += i
    m = out[0]
    assert m.duration_s > 0 and m.energy_j > m.duration_s * 1.0
    assert len(m.sample_power_w) >= 1
    with pytest.raises(InvalidInput, match="must be ≥ 0 W"):
        CpuTimeEstimator(idle_power_w=-1)


def test_background_thread_samples_while_a_window_is_open(tmp_path: Path) -> None:
    """The sampler runs on its own while a window is open, and never faster than asked.
    No wall-clock upper bound: a starved thread on a loaded host is late, not wrong (the
    achieved rate is a benchmark figure, not a unit-test one)."""
    import itertools
    import time

    meter = CpuTimeEstimator(sample_hz=20)
    meter.begin_window("w")
    deadline = time.monotonic() + 30.0
    while len(meter.trace()) < 6 and time.monotonic() < deadline:
        time.sleep(0.05)
    m = meter.end_window("w")
    assert len(m.sample_power_w) >= 5
    stamps = [s.timestamp_s for s in meter.trace()]
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert sorted(gaps)[len(gaps) // 2] >= 0.5 / 20  # median gap: not a busy loop
    with pytest.raises(InvalidInput, match="sample_hz=2 is out of range"):
        CpuTimeEstimator(sample_hz=2)


# ------------------------------------------------------------------ registry


def test_unknown_meter_name_lists_choices() -> None:
    with pytest.raises(MeterError, match="unknown meter 'wattmeter'; choose one of: auto, jetson"):
        make_meter("wattmeter")


def test_detection_falls_back_to_estimator_and_prefers_hardware(tmp_path: Path) -> None:
    none = {
        "jetson": {"root": tmp_path / "i2c"},
        "rpi": {"runner": lambda argv: ""},
        "rapl": {"root": tmp_path / "powercap"},
        "hwmon": {"root": tmp_path / "hwmon"},
    }
    order = ("jetson", "rpi", "rapl", "hwmon", "estimate")
    assert detect_meter(order=order, options=none).name == "estimate"
    rapl_tree(tmp_path / "powercap")
    jetpack5_tree(tmp_path / "i2c")
    assert detect_meter(order=order, options=none).name == "jetson"
    with pytest.raises(MeterError, match="no power meter available"):
        detect_meter(order=("hwmon",), options=none)
