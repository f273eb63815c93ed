"""Shared test fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PAPER_DATA = REPO_ROOT.parent / "shared" / "paper-data"


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT
