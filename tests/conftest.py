"""Shared test fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PAPER_DATA = REPO_ROOT.parent / "shared" / "paper-data"


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def paper_data() -> Path:
    """The paper's published measurements (read in place, never copied into the project)."""
    if not (PAPER_DATA / "draft_speed.csv").is_file():
        pytest.skip(f"paper data not found at {PAPER_DATA}")
    return PAPER_DATA
