"""Shared test fixtures."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from configspec.backends.models import PreparedFamily

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def paper_data() -> Iterator[Path]:
    """The paper's published measurements, as shipped inside the package (never skipped:
    a missing file is a broken package and fails the test)."""
    from configspec.importers import shipped_paper_data

    with shipped_paper_data() as folder:
        yield folder


def _test_models_dir() -> Path:
    """Where the test model family lives: $CONFIGSPEC_TEST_MODELS, the shared machine cache,
    or (in CI / elsewhere) ``.cache/`` inside the repository (gitignored)."""
    env = os.environ.get("CONFIGSPEC_TEST_MODELS")
    if env:
        return Path(env)
    shared = Path("/work/.cache/configspec-test-models")
    if not os.environ.get("CI") and os.access(shared.parent.parent, os.W_OK):
        return shared
    return REPO_ROOT / ".cache" / "configspec-test-models"


@pytest.fixture(scope="session")
def model_family() -> PreparedFamily:
    """The prepared Gemma 3 270M family (Q4_0, Q4_K_M, Q8_0, F16 drafters; F32 target).

    Prepared once (idempotent, ~15 s the first time, < 1 s after) and shared by every test
    session on the machine; use ``.drafter_path("Q8_0")``, ``.target_path``,
    ``.drafters[q]``/``.target`` (ModelIdentity).
    """
    from configspec.backends.models import prepare_family

    return prepare_family(_test_models_dir())
