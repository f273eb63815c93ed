"""Make a sensor file unreadable, also when the tests run as root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT_CAN_READ_ANYTHING = os.geteuid() == 0


def make_unreadable(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """chmod the file unreadable; as root (which ignores modes) also fail reads at the seam."""
    path.chmod(0o000)
    if ROOT_CAN_READ_ANYTHING:
        real = Path.read_text

        def read_text(self: Path, *args: object, **kwargs: object) -> str:
            if self == path:
                raise PermissionError(13, "Permission denied", str(path))
            return real(self, *args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(Path, "read_text", read_text)
