"""The prompt loader: bundled set and users' JSONL files, with one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from configspec.errors import InvalidInput
from configspec.profiling.prompts import (
    BUNDLED_DOMAINS,
    bundled_prompts,
    load_prompts,
    select_prompts,
)


def test_bundled_set_has_four_domains_of_25() -> None:
    prompts = bundled_prompts()
    by_domain: dict[str, int] = {}
    for p in prompts:
        by_domain[p.domain] = by_domain.get(p.domain, 0) + 1
    assert set(by_domain) == set(BUNDLED_DOMAINS)
    assert all(n >= 25 for n in by_domain.values())
    assert len({p.id for p in prompts}) == len(prompts)
    assert len({p.text for p in prompts}) == len(prompts)


def test_summarization_prompts_carry_source_text() -> None:
    for p in bundled_prompts(["summarization"]):
        assert len(p.text.split()) > 50, p.id


def test_user_file_defaults(tmp_path: Path) -> None:
    f = tmp_path / "mine.jsonl"
    f.write_text('{"prompt": "hi"}\n\n{"prompt": "yo", "domain": "d", "id": 7}\n')
    a, b = load_prompts(f)
    assert (a.id, a.domain, a.text) == ("mine-1", "custom", "hi")
    assert (b.id, b.domain) == ("7", "d")


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("", "holds no prompts"),
        ("\n  \n", "holds no prompts"),
        ('{"prompt": "a"}\n{"prompt": "b"\n', "line 2 is not valid JSON"),
        ('{"prompt": "a"}\n{"text": "b"}\n', 'line 2 has no "prompt" field'),
        ('{"prompt": ""}\n', 'line 1: "prompt" must be a non-empty string'),
        ('["a"]\n', "line 1 is a JSON list"),
        ('{"prompt": "a", "id": "x"}\n{"prompt": "b", "id": "x"}\n', "line 2 repeats id"),
    ],
)
def test_bad_files_name_the_line(tmp_path: Path, content: str, needle: str) -> None:
    f = tmp_path / "p.jsonl"
    f.write_text(content)
    with pytest.raises(InvalidInput, match=needle) as info:
        load_prompts(f)
    assert "\n" not in str(info.value)
    assert str(f) in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="does not exist"):
        load_prompts(tmp_path / "nope.jsonl")


def test_select_per_domain() -> None:
    chosen = select_prompts(bundled_prompts(), 3)
    assert len(chosen) == 3 * len(BUNDLED_DOMAINS)
    with pytest.raises(InvalidInput, match="out of range"):
        select_prompts(chosen, 0)


def test_unknown_bundled_domain() -> None:
    with pytest.raises(InvalidInput, match="unknown bundled domain 'poetry'"):
        bundled_prompts(["poetry"])
