"""The one drafter-spec parser (``backends/specs.py``) and the progress protocol."""

from __future__ import annotations

import pytest

from configspec.backends.specs import (
    SpecKind,
    is_ngram,
    ngram_range_of_name,
    parse_spec,
    spec_of_name,
)
from configspec.errors import InvalidInput
from configspec.progress import Phase, ProgressEvent, prefixed


@pytest.mark.parametrize(
    ("text", "kind", "rng"),
    [
        ("ngram", SpecKind.NGRAM, (1, 3)),
        ("ngram:2-5", SpecKind.NGRAM, (2, 5)),
        ("gemma-3-270m-q4_0", SpecKind.MODEL, None),
        ("/models/x.gguf", SpecKind.MODEL, None),
        ("ngramish-model", SpecKind.MODEL, None),
        ("http://h:8000/v1", SpecKind.URL, None),
        ("https://api.example.com", SpecKind.URL, None),
    ],
)
def test_parse_spec_kinds(text: str, kind: SpecKind, rng: tuple[int, int] | None) -> None:
    spec = parse_spec(text)
    assert spec.kind is kind and spec.ngram_range == rng
    assert spec.is_ngram == (kind is SpecKind.NGRAM) == is_ngram(text)


@pytest.mark.parametrize("bad", ["ngram:3", "ngram:a-b", "ngram:2-"])
def test_malformed_ngram_spec_names_the_text(bad: str) -> None:
    with pytest.raises(InvalidInput, match=bad):
        parse_spec(bad)


def test_profiled_names_round_trip() -> None:
    assert parse_spec("ngram").profiled_name == "ngram[1-3]"
    assert parse_spec("ngram:2-4").profiled_name == "ngram[2-4]"
    assert spec_of_name("ngram[2-4]") == "ngram:2-4"
    assert spec_of_name("ngram[1-3]") == "ngram"
    assert spec_of_name("gemma-3-270m-q8_0") == "gemma-3-270m-q8_0"
    assert ngram_range_of_name("ngram") is None


def test_matches_bare_ngram_any_range_explicit_only_its_own() -> None:
    assert parse_spec("ngram").matches("ngram[2-4]")
    assert parse_spec("ngram:2-4").matches("ngram[2-4]")
    assert not parse_spec("ngram:2-4").matches("ngram[1-3]")
    assert not parse_spec("gemma-3-270m-q4_0").matches("gemma-3-270m-q8_0")


def test_phase_and_prefix_emit_counted_events() -> None:
    events: list[ProgressEvent] = []
    phase = Phase(prefixed(events.append, "alignment: "), "drafters", total=3)
    phase.advance(2, detail="p1")
    assert [(e.label, e.done, e.total, e.detail) for e in events] == [
        ("alignment: drafters", 0, 3, ""),
        ("alignment: drafters", 2, 3, "p1"),
    ]
