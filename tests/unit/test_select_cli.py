"""``configspec select`` end to end on the illustrative example profiles and on bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from configspec import records as R
from configspec.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "profiles"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run(
        [sys.executable, "-m", "configspec", "select", *args],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        cwd=ROOT,
    )


def test_readme_command_selects_on_the_examples() -> None:
    out = _run("--profiles", str(EXAMPLES))
    assert out.returncode == 0, out.stderr
    assert "Chosen (goodput)" in out.stdout
    assert "Illustrative profiles" in out.stdout
    assert "modelled" in out.stdout and "Pareto" not in out.stdout


def test_json_output_is_complete_and_labelled(tmp_path: Path) -> None:
    dest = tmp_path / "sel.json"
    assert (
        main(
            [
                "select",
                "--profiles",
                str(EXAMPLES),
                "--objective",
                "pareto",
                "--format",
                "json",
                "--output",
                str(dest),
            ]
        )
        == 0
    )
    doc = json.loads(dest.read_text())
    assert doc["model"] == "configspec" and doc["objective"] == "pareto"
    assert doc["profile_sources"]["device"] == ["illustrative"]
    assert doc["pareto"] and doc["chosen"]["provenance"] == "modelled"
    assert set(doc["best"]) == {"goodput", "cost", "energy"}
    front = doc["pareto"]
    for p in front:  # no front point dominates another
        for q in front:
            better = [q[c] > p[c] for c in R.PARETO_COLUMNS if isinstance(p[c], float)]
            assert not (
                all(q[c] >= p[c] for c in R.PARETO_COLUMNS if isinstance(p[c], float))
                and any(better)
            )


def test_csv_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["select", "--profiles", str(EXAMPLES), "--format", "csv", "--rows", "all"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split(",")[:3] == [R.MODE, R.DEVICE, R.DRAFTER]
    assert len(lines) > 100


def test_paper_model_is_selectable(tmp_path: Path) -> None:
    # The examples have no per-K acceptance for gemma and a GPU-time price, so the paper
    # preset must say why it cannot apply rather than guess.
    out = _run("--profiles", str(EXAMPLES), "--model", "paper")
    assert out.returncode != 0
    assert "per_token price" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--constraint", "min_goodput_tok_s=100000"], "min_goodput_tok_s=1e+05"),
        (["--k-max", "40"], "K=40 is beyond the profiled range"),
        (["--drafter", "ghost-model"], "drafter 'ghost-model' has no device profile"),
        (["--objective", "speed"], "--objective 'speed' is unknown"),
        (["--rtt-ms", "-5"], "--rtt-ms -5.0 must be"),
        (["--constraint", "cheap"], "not KEY=VALUE"),
    ],
)
def test_bad_input_is_one_line_without_traceback(
    args: list[str], needle: str, tmp_path: Path
) -> None:
    dest = tmp_path / "out.json"
    out = _run("--profiles", str(EXAMPLES), "--format", "json", "--output", str(dest), *args)
    assert out.returncode != 0
    err = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(err) == 1, out.stderr
    assert needle in err[0]
    assert "Traceback" not in out.stderr
    assert not dest.exists()  # nothing written half-way


def test_bad_profile_values_are_one_line(tmp_path: Path) -> None:
    profiles = tmp_path / "profiles"
    shutil.copytree(EXAMPLES, profiles)
    align = profiles / "alignment" / "qwen2.5-7b-instruct.json"
    doc = json.loads(align.read_text())
    doc["entries"][0]["alpha"] = {"mean": 1.3, "source": "illustrative"}
    align.write_text(json.dumps(doc))
    out = _run("--profiles", str(profiles))
    assert out.returncode != 0 and "outside [0, 1]" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    shutil.rmtree(profiles)
    shutil.copytree(EXAMPLES, profiles)
    dev = profiles / "device" / "rpi5-8gb.json"
    doc = json.loads(dev.read_text())
    doc["drafters"][0]["latency"][0]["per_token_ms"] = {"mean": -3.0}
    dev.write_text(json.dumps(doc))
    out = _run("--profiles", str(profiles))
    assert out.returncode != 0 and "negative drafting latency -3.0 ms" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def _estimated_copy(tmp_path: Path) -> Path:
    """The examples with every device power figure relabelled as the estimator's."""
    dest = tmp_path / "profiles"
    shutil.copytree(EXAMPLES, dest)
    for path in (dest / "device").glob("*.json"):
        doc = json.loads(path.read_text())
        if doc.get("idle_power_w"):
            doc["idle_power_w"]["source"] = "estimated"
        for d in doc["drafters"]:
            if d.get("draft_power_w"):
                d["draft_power_w"]["source"] = "estimated"
        path.write_text(json.dumps(doc))
    return dest


def test_estimated_energy_is_labelled_in_json_and_table(tmp_path: Path) -> None:
    profiles = _estimated_copy(tmp_path)
    dest = tmp_path / "sel.json"
    args = ["select", "--profiles", str(profiles), "--objective", "energy", "--no-sensitivity"]
    assert main([*args, "--format", "json", "--output", str(dest)]) == 0
    doc = json.loads(dest.read_text())
    assert doc["power_sources"] == ["estimated"]
    for rec in [doc["chosen"], doc["best"]["energy"], *doc["top"]]:
        assert rec[R.POWER_SOURCE] == "estimated"
        assert "estimated" in rec["energy_provenance"]
        assert "illustrative power model" in rec["energy_provenance"]
    out = _run("--profiles", str(profiles), "--objective", "energy", "--no-sensitivity")
    assert out.returncode == 0, out.stderr
    assert "J/tok estimated" in out.stdout  # the chosen line
    assert "tok/J" in out.stdout and "estimated [CI]" in out.stdout  # the column header
    assert "tok/J estimated" in out.stdout  # best per objective
    # the measured examples say nothing of the kind
    plain = _run("--profiles", str(EXAMPLES), "--objective", "energy", "--no-sensitivity")
    assert "estimated" not in plain.stdout


def test_optimum_at_the_largest_k_searched_says_so(tmp_path: Path) -> None:
    dest = tmp_path / "sel.json"
    args = ["select", "--profiles", str(EXAMPLES), "--k-max", "3", "--no-sensitivity"]
    assert main([*args, "--format", "json", "--output", str(dest)]) == 0
    doc = json.loads(dest.read_text())
    assert doc["chosen"]["k"] == 3 and doc["chosen"]["k_is_largest_searched"] is True
    assert any(r["k_is_largest_searched"] is False for r in doc["top"])
    out = _run("--profiles", str(EXAMPLES), "--k-max", "3", "--no-sensitivity")
    assert "K=3 is the largest K searched" in out.stdout and "3†" in out.stdout
    wide = _run("--profiles", str(EXAMPLES), "--no-sensitivity")
    assert "largest K searched" not in wide.stdout.split("Top")[0]


def test_quickstart_optima_table_labels_estimates_and_the_k_edge(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from configspec.cli.loop import _render_optima
    from configspec.loop.quickstart import QuickstartResult
    from configspec.model.presets import get_preset
    from configspec.search import SearchSettings, pick
    from configspec.search.space import read_profiles, space_from_profiles
    from configspec.store import ProfileStore

    store = ProfileStore(_estimated_copy(tmp_path))
    loaded = read_profiles(store)
    preset = get_preset("configspec")
    space = space_from_profiles(loaded, preset, SearchSettings(k_max=2))
    sel = pick(space, loaded.network, "goodput", preset)
    result = QuickstartResult(
        store=store, selection=sel, validation=None,  # type: ignore[arg-type]
        report_path=None, overhead_ms=0.0, price_note="illustrative price",
    )  # fmt: skip
    _render_optima(result)
    out = capsys.readouterr().out
    assert "tokens/J estimated" in out and "illustrative power model" in out
    assert "K=2†" in out and "K=2 is the largest K searched" in out


def test_select_table_reads_at_80_columns() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "COLUMNS": "80"}
    out = subprocess.run(
        [sys.executable, "-m", "configspec", "select", "--profiles", str(EXAMPLES),
         "--no-sensitivity", "--top", "3"],
        capture_output=True, text=True, check=False, env=env, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert max(map(len, lines)) <= 80
    assert "configuration" in out.stdout and "Narrow layout" in out.stdout
    # every configuration reads whole: drafter on device, then target and K
    assert any(" on rpi5-8gb" in line or " on jetson-orin-nano" in line for line in lines)
    assert any(line.strip("│ ").startswith("→ ") for line in lines)
