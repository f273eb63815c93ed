"""llama.cpp's extra weight buffers are off where the CPU advertises AMX (SIGILL on VMs)."""

from __future__ import annotations

import pytest

from configspec.backends._native import EXTRA_BUFFERS_ENV, extra_buffers_enabled


def test_off_where_amx_is_advertised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(EXTRA_BUFFERS_ENV, raising=False)
    assert not extra_buffers_enabled("flags : fpu avx2 amx_bf16 amx_tile amx_int8\n")
    assert extra_buffers_enabled("flags : fpu avx2 avx512f\n")


def test_environment_forces_either_way(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(EXTRA_BUFFERS_ENV, "1")
    assert extra_buffers_enabled("flags : amx_tile\n")
    monkeypatch.setenv(EXTRA_BUFFERS_ENV, "0")
    assert not extra_buffers_enabled("flags : avx2\n")
