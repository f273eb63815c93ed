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
