"""Importing the paper's published CSVs (the copy shipped in configspec/data/paper)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from configspec.cli.main import main
from configspec.config import PerTokenPrice
from configspec.importers import (
    SHIPPED_PAPER_FILES,
    DataImportError,
    import_paper_data,
    shipped_paper_data,
    write_import,
)
from configspec.importers import paper as paper_module
from configspec.store import ProfileStore

JETSON_CSV = "jetson_agx_orin_llamacpp_profile_19models.csv"
PI5_CSV = "pi5_llamacpp_profile_19models.csv"
QWEN_SWEEP = "acceptance_qwen3-32b.csv"


@pytest.fixture
def data_copy(paper_data: Path, tmp_path: Path) -> Path:
    """A scratch copy of the data that a test may damage (in tmp, never in the project)."""
    dst = tmp_path / "data"
    dst.mkdir()
    for f in paper_data.glob("*.csv"):
        shutil.copy(f, dst / f.name)
    return dst


def test_imports_every_device_target_and_verification(paper_data: Path) -> None:
    result = import_paper_data(paper_data)
    speed = pd.read_csv(paper_data / "draft_speed.csv")
    assert {d.device.name for d in result.devices} == {
        "jetson_agx_orin",
        "raspberry_pi_5",
        "RPi 4B",
    }
    for dev in result.devices:
        assert len(dev.drafters) == (speed["device"] == dev.device.description.split("'")[1]).sum()
        assert dev.provenance.source == "imported"
    assert {a.target for a in result.alignments} == set(speed["target_model"])
    assert {v.target for v in result.verifications} == set(speed["target_model"])


def test_latency_power_and_method_come_from_the_files(paper_data: Path) -> None:
    result = import_paper_data(paper_data)
    speed = pd.read_csv(paper_data / "draft_speed.csv")
    runs = pd.read_csv(paper_data / JETSON_CSV)
    jetson = next(d for d in result.devices if d.device.name == "jetson_agx_orin")
    entry = next(d for d in jetson.drafters if d.drafter == "Qwen3-1.7B-Q8_0")
    row = speed[(speed.device == "Jetson") & (speed.draft_model == "Qwen/Qwen3-1.7B")]
    row = row[row.quant == "Q8_0"].iloc[0]
    assert entry.latency[0].per_token_ms.mean == pytest.approx(1000 / row.draft_tokens_per_s)
    assert entry.latency[0].per_token_ms.source == "imported"
    run = runs[runs.model_name == "Qwen3-1.7B-Q8_0.gguf"].iloc[0]
    assert entry.draft_power_w is not None
    assert entry.draft_power_w.mean == pytest.approx(run.power_avg_w)
    assert entry.draft_power_w.source == "imported"
    assert entry.family == "qwen3" and entry.quantization == "Q8_0"
    assert jetson.meter is not None and jetson.meter.name == "jtop"
    assert jetson.provenance.settings["power_method"] == "jtop"
    pi5 = next(d for d in result.devices if d.device.name == "raspberry_pi_5")
    assert pi5.meter is not None and pi5.meter.name == "pmic"


def test_acceptance_by_k_with_std_interval(paper_data: Path) -> None:
    result = import_paper_data(paper_data)
    sweep = pd.read_csv(paper_data / QWEN_SWEEP)
    qwen = next(a for a in result.alignments if a.target == "Qwen/Qwen3-32B")
    assert qwen.target_family == "qwen3"
    assert [e.drafter for e in qwen.entries] == ["Qwen3-0.6B", "Qwen3-1.7B", "Qwen3-4B", "Qwen3-8B"]
    entry = qwen.entries[0]
    assert entry.by_k is not None
    assert [p.k for p in entry.by_k] == list(range(2, 11))
    row = sweep[(sweep.draft_model == "Qwen/Qwen3-0.6B") & (sweep.spec_len == 4)].iloc[0]
    point = next(p for p in entry.by_k if p.k == 4)
    assert point.accepted_fraction.mean == pytest.approx(row.mean_acceptance_rate)
    assert point.accepted_fraction.low == pytest.approx(
        row.mean_acceptance_rate - row.std_acceptance_rate
    )
    assert point.accepted_fraction.source == "imported"


def test_verification_is_the_papers_documented_assumption(paper_data: Path) -> None:
    result = import_paper_data(paper_data)
    by_target = {v.target: v for v in result.verifications}
    llama = by_target["meta-llama/Meta-Llama-3.1-70B-Instruct"]
    assert isinstance(llama.price, PerTokenPrice)
    assert llama.price.price_usd_per_million_tokens == 0.90
    assert llama.price.billed == "draft_tokens"
    assert by_target["Qwen/Qwen3-32B"].price.price_usd_per_million_tokens == 0.59  # type: ignore[union-attr]
    assert {p.latency_ms.mean for p in llama.latency} == {500.0}
    assert {p.positions for p in llama.latency} == set(range(3, 12))
    assert llama.provenance.source == "modelled"
    assert llama.latency[0].latency_ms.source == "modelled"


def test_device_without_power_data_imports_with_no_power(paper_data: Path) -> None:
    result = import_paper_data(paper_data)
    rpi4 = next(d for d in result.devices if d.device.name == "RPi 4B")
    assert rpi4.meter is None
    assert all(d.draft_power_w is None for d in rpi4.drafters)
    assert any("RPi 4B: no power data" in w for w in result.warnings)


def test_power_column_blank_means_no_power_data(data_copy: Path) -> None:
    runs = pd.read_csv(data_copy / PI5_CSV)
    runs["power_avg_w"] = float("nan")
    runs.to_csv(data_copy / PI5_CSV, index=False)
    result = import_paper_data(data_copy)
    pi5 = next(d for d in result.devices if d.device.name == "raspberry_pi_5")
    assert pi5.meter is None
    assert all(d.draft_power_w is None for d in pi5.drafters)
    jetson = next(d for d in result.devices if d.device.name == "jetson_agx_orin")
    assert all(d.draft_power_w is not None for d in jetson.drafters)


def test_missing_column_is_named_and_nothing_written(
    data_copy: Path, tmp_path: Path, capsys
) -> None:  # type: ignore[no-untyped-def]
    runs = pd.read_csv(data_copy / JETSON_CSV).drop(columns=["tok_s_avg"])
    runs.to_csv(data_copy / JETSON_CSV, index=False)
    with pytest.raises(
        DataImportError, match=rf"{JETSON_CSV}.*missing required column 'tok_s_avg'"
    ):
        import_paper_data(data_copy)
    out = tmp_path / "profiles"
    assert main(["import", "paper-data", str(data_copy), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "missing required column 'tok_s_avg'" in err and "Traceback" not in err
    assert not out.exists()


def test_missing_acceptance_column_is_named(data_copy: Path) -> None:
    sweep = pd.read_csv(data_copy / QWEN_SWEEP).drop(columns=["mean_acceptance_rate"])
    sweep.to_csv(data_copy / QWEN_SWEEP, index=False)
    with pytest.raises(DataImportError, match="missing required column 'mean_acceptance_rate'"):
        import_paper_data(data_copy)


def test_drafter_without_sweep_is_skipped_with_a_warning(data_copy: Path) -> None:
    sweep = pd.read_csv(data_copy / QWEN_SWEEP)
    sweep[sweep.draft_model != "Qwen/Qwen3-8B"].to_csv(data_copy / QWEN_SWEEP, index=False)
    result = import_paper_data(data_copy)
    skipped = [w for w in result.warnings if "'Qwen/Qwen3-8B'" in w]
    assert len(skipped) == 6  # 2 quantisations x 3 devices
    assert all("no acceptance sweep against 'Qwen/Qwen3-32B'; skipped" in w for w in skipped)
    for dev in result.devices:
        assert not [d for d in dev.drafters if d.drafter.startswith("Qwen3-8B")]


def test_drafter_without_sweep_refused_in_strict_mode(data_copy: Path, tmp_path: Path) -> None:
    sweep = pd.read_csv(data_copy / QWEN_SWEEP)
    sweep[sweep.draft_model != "Qwen/Qwen3-8B"].to_csv(data_copy / QWEN_SWEEP, index=False)
    with pytest.raises(DataImportError, match=r"'Qwen/Qwen3-8B'.*has no acceptance sweep"):
        import_paper_data(data_copy, strict=True)
    out = tmp_path / "profiles"
    code = main(["import", "paper-data", str(data_copy), "--out", str(out), "--strict"])
    assert code == 2
    assert not out.exists()


def test_bad_value_names_row_and_column(data_copy: Path) -> None:
    speed = pd.read_csv(data_copy / "draft_speed.csv")
    speed["draft_tokens_per_s"] = speed["draft_tokens_per_s"].astype(object)
    speed.loc[3, "draft_tokens_per_s"] = "fast"
    speed.to_csv(data_copy / "draft_speed.csv", index=False)
    with pytest.raises(DataImportError, match="'draft_tokens_per_s' row 5 holds 'fast'"):
        import_paper_data(data_copy)


def test_unknown_target_price_asks_for_one(data_copy: Path) -> None:
    for name in ("draft_speed.csv", QWEN_SWEEP):
        frame = pd.read_csv(data_copy / name)
        frame["target_model"] = frame["target_model"].replace("Qwen/Qwen3-32B", "Qwen/Qwen3-14B")
        frame.to_csv(data_copy / name, index=False)
    with pytest.raises(DataImportError, match="no per-token price for target 'Qwen/Qwen3-14B'"):
        import_paper_data(data_copy)
    result = import_paper_data(data_copy, prices_usd_per_m={"Qwen3-14B": 0.3})
    assert {v.price.price_usd_per_million_tokens for v in result.verifications} == {0.9, 0.3}  # type: ignore[union-attr]


def test_device_csv_speeds(paper_data: Path) -> None:
    result = import_paper_data(paper_data, speeds="device-csv")
    assert {d.device.name for d in result.devices} == {"jetson_agx_orin", "raspberry_pi_5"}
    assert any("no acceptance sweep" in n and "qwen2.5-7b-instruct" in n for n in result.notes)
    jetson = next(d for d in result.devices if d.device.name == "jetson_agx_orin")
    entry = next(d for d in jetson.drafters if d.drafter == "Qwen3-0.6B-Q4_K_M")
    assert entry.latency[0].per_token_ms.mean == pytest.approx(1000 / 98.63)
    assert entry.latency[0].per_token_ms.low < entry.latency[0].per_token_ms.high


def test_cli_writes_loadable_profiles(paper_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "profiles"
    assert main(["import", "paper-data", str(paper_data), "--out", str(out)]) == 0
    store = ProfileStore(out)
    assert len(store.device_profiles()) == 3
    assert len(store.alignment_profiles()) == 2
    assert len(store.verification_profiles()) == 2


def test_shipped_copy_is_complete_and_carries_its_licence(paper_data: Path) -> None:
    assert sorted(f.name for f in paper_data.glob("*.csv")) == sorted(SHIPPED_PAPER_FILES)
    licence = (paper_data / "LICENSE").read_text(encoding="utf-8")
    assert "MIT License" in licence and "Copyright (c) 2025 leexcape" in licence
    readme = (paper_data / "README.md").read_text(encoding="utf-8")
    assert "MIT" in readme and all(name in readme for name in SHIPPED_PAPER_FILES)


def test_cli_without_a_folder_imports_the_shipped_copy(paper_data: Path, tmp_path: Path) -> None:
    shipped, given = tmp_path / "shipped", tmp_path / "given"
    assert main(["import", "paper-data", "--out", str(shipped)]) == 0
    assert main(["import", "paper-data", str(paper_data), "--out", str(given)]) == 0
    names = sorted(p.relative_to(shipped) for p in shipped.rglob("*.json"))
    assert names and names == sorted(p.relative_to(given) for p in given.rglob("*.json"))
    a, b = ProfileStore(shipped), ProfileStore(given)
    assert [d.drafters for d in a.device_profiles()] == [d.drafters for d in b.device_profiles()]
    assert [al.entries for al in a.alignment_profiles()] == [
        al.entries for al in b.alignment_profiles()
    ]


def test_incomplete_shipped_copy_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        paper_module, "SHIPPED_PAPER_FILES", (*SHIPPED_PAPER_FILES, "missing_sweep.csv")
    )
    with (
        pytest.raises(DataImportError, match=r"incomplete .*missing missing_sweep\.csv"),
        shipped_paper_data(),
    ):
        pass


def test_write_import_refuses_colliding_names(paper_data: Path, tmp_path: Path) -> None:
    result = import_paper_data(paper_data)
    result.devices.append(result.devices[0])
    with pytest.raises(DataImportError, match="would both be written"):
        write_import(result, tmp_path / "p")
    assert not (tmp_path / "p").exists()


def test_ambiguous_device_names_ask_for_a_map(data_copy: Path) -> None:
    runs = pd.read_csv(data_copy / JETSON_CSV)
    runs["device"] = "raspberry_pi_5_lab"
    runs.to_csv(data_copy / JETSON_CSV, index=False)
    with pytest.raises(DataImportError, match=r"--device-map 'RPi 5="):
        import_paper_data(data_copy)
    result = import_paper_data(data_copy, device_map={"RPi 5": "raspberry_pi_5"})
    assert "raspberry_pi_5" in {d.device.name for d in result.devices}
