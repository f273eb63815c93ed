"""Alignment profiler pieces that need no model: matrices, entries, CLI error paths."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from _tiny_gguf import write_tiny_gguf

from configspec.backends.base import DraftResult
from configspec.cli.main import main
from configspec.config import AlignmentProfile
from configspec.errors import IncompatibleModels, InvalidInput
from configspec.profiling.acceptance import prompt_stats, summarize, top_k
from configspec.profiling.alignment import (
    AlignmentSettings,
    _Candidate,
    acceptance_matrix,
    entry_from_summary,
    profile_alignment,
)
from configspec.profiling.prompts import Prompt
from configspec.profiling.reference import TargetReference
from configspec.store import ProfileStore


class _FakeModel:
    """Teacher-forced 'model' whose logits prefer a fixed token per position."""

    def __init__(self, prefer: list[int], vocab: int = 6) -> None:
        self.prefer, self.vocab = prefer, vocab

    def logits_along(self, context: Sequence[int], tokens: Sequence[int]) -> np.ndarray:
        out = np.zeros((len(tokens), self.vocab), dtype=np.float32)
        out[np.arange(len(tokens)), self.prefer[: len(tokens)]] = 5.0
        return out


class _FakeProposer:
    def __init__(self, blocks: dict[int, list[int]]) -> None:
        self.blocks = blocks

    def draft(self, context: Sequence[int], k: int, **_: object) -> DraftResult:
        toks = self.blocks.get(len(context), [])[:k]
        return DraftResult(tokens=toks, token_probs=[1.0] * len(toks))


def _ref(tokens: list[int], temperature: float = 0.0, vocab: int = 6) -> TargetReference:
    dist = None
    if temperature > 0:
        p = np.full((len(tokens), vocab), 0.02)
        p[np.arange(len(tokens)), tokens] = 1 - 0.02 * (vocab - 1)
        dist = top_k(p, 3)
    return TargetReference(
        prompt_id="p",
        domain="d",
        prompt_tokens=np.array([0, 1]),
        tokens=np.array(tokens),
        argmax=np.array(tokens),
        dist=dist,
        temperature=temperature,
        generate_s=0.0,
    )


def _cand(model: object = None, proposer: object = None) -> _Candidate:
    return _Candidate(name="x", identity=None, model=model, proposer=proposer)  # type: ignore[arg-type]


def test_model_drafter_greedy_matrix() -> None:
    ref = _ref([2, 3, 4, 5])
    b, width, _ = acceptance_matrix(ref, _cand(model=_FakeModel([2, 3, 0, 5])), 0.0, 2)
    assert np.nan_to_num(b[:, 0]).tolist() == [1, 1, 0, 1]
    assert width == 0.0


def test_identical_model_drafter_at_temperature_is_one() -> None:
    ref = _ref([2, 3, 4, 5], temperature=1.0)

    class _Same(_FakeModel):
        def logits_along(self, context: Sequence[int], tokens: Sequence[int]) -> np.ndarray:
            p = np.full((len(tokens), 6), 0.02)
            p[np.arange(len(tokens)), list(tokens)] = 0.9
            return np.log(p).astype(np.float32)

    b, width, _ = acceptance_matrix(ref, _cand(model=_Same([])), 1.0, 1)
    assert b[:, 0] == pytest.approx([1.0] * 4, abs=1e-6)
    assert width > 0  # top-3 of 6 ids: the tail is bounded, not known


def test_proposer_block_matrix() -> None:
    ref = _ref([2, 3, 4, 5])
    # context length = 2 (prompt) + s
    prop = _FakeProposer({2: [2, 3, 9], 3: [3], 5: [5, 1]})
    b, _, _ = acceptance_matrix(ref, _cand(proposer=prop), 0.0, 3)
    assert np.nan_to_num(b, nan=-1).tolist() == [
        [1, 1, 0],
        [1, 0, 0],
        [0, 0, -1],
        [1, -1, -1],
    ]
    bt, _, _ = acceptance_matrix(_ref([2, 3, 4, 5], 1.0), _cand(proposer=prop), 1.0, 3)
    assert bt[0, 0] == pytest.approx(0.9)
    assert bt[2, 0] == 0.0  # no proposal


def test_entry_round_trips_through_schema() -> None:
    st = prompt_stats(np.nan_to_num(np.array([[1.0, 1.0], [1.0, 0.0], [0.0, 0.0]])), 2)
    entry = entry_from_summary("d", "all", 0.0, summarize([st, st], n_boot=20))
    assert entry.by_k is not None and entry.by_k[0].tokens_per_round_iid is not None
    assert entry.by_k[0].tokens_per_round_iid.source == "fitted"
    assert entry.alpha is not None and entry.alpha.source == "measured"
    prof = AlignmentProfile.model_validate(
        {
            "target": "t",
            "target_family": "f",
            "entries": [entry.model_dump()],
            "provenance": {"source": "measured"},
        }
    )
    assert prof.entries[0] == entry


def test_settings_validation() -> None:
    with pytest.raises(InvalidInput, match=r"temperature -0\.5 is out of range"):
        AlignmentSettings(temperatures=(0.0, -0.5))
    with pytest.raises(InvalidInput, match="K_max=0"):
        AlignmentSettings(k_max=0)


def test_incompatible_drafter_refused_before_loading(tmp_path: Path) -> None:
    target = write_tiny_gguf(tmp_path / "t.gguf")
    other = write_tiny_gguf(tmp_path / "o.gguf", tokens=["<s>", "</s>", "x", "y"])
    with pytest.raises(IncompatibleModels, match="use different tokenizers"):
        profile_alignment(
            str(target),
            [str(other)],
            [Prompt(id="1", domain="d", text="hi")],
            ProfileStore(tmp_path / "p"),
            cache_dir=tmp_path / "cache",
        )


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["profile", "alignment", *args])
    err = capsys.readouterr().err
    return code, err


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = write_tiny_gguf(tmp_path / "t.gguf")
    other = write_tiny_gguf(tmp_path / "o.gguf", tokens=["<s>", "</s>", "x", "y"])
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"prompt": \n')
    base = ["--target", str(target), "--cache-dir", str(tmp_path / "c")]
    cases = [
        ([*base, "-d", str(target), "-T", "-1"], "temperature -1.0 is out of range"),
        ([*base, "-d", str(target), "--prompts", str(empty)], "holds no prompts"),
        ([*base, "-d", str(target), "--prompts", str(bad)], "line 2 is not valid JSON"),
        ([*base, "-d", str(other)], "use different tokenizers"),
    ]
    for args, needle in cases:
        code, err = _cli(capsys, *args, "--profiles", str(tmp_path / "p"))
        assert code != 0
        lines = [ln for ln in err.strip().splitlines() if ln.strip()]
        assert len(lines) == 1 and needle in lines[0], err
        assert "Traceback" not in err
    assert not (tmp_path / "p" / "alignment").exists()
