"""Which sequences a batched pass adds so that llama.cpp decodes it as one micro-batch."""

from __future__ import annotations

from configspec.backends.llamacpp_batch import FILL_GAP_POSITIONS, gap_fillers
from configspec.serving.batched import seq_run_lengths, seq_runs


def test_small_gaps_are_filled_large_ones_left_split() -> None:
    assert gap_fillers([0, 1, 2, 3], 5, 256) == []  # one run already
    assert gap_fillers([3, 0, 2], 5, 256) == [1]  # order does not matter
    assert gap_fillers(list(range(0, 16, 2)), 5, 256) == list(range(1, 15, 2))
    big = FILL_GAP_POSITIONS // 5 + 1  # a gap whose blocks cost more than a weight read
    assert gap_fillers([0, 1 + big, 2 + big, 3 + 2 * big], 5, 256) == []
    assert gap_fillers([0, 3], 2, 256) == [1, 2]  # narrow blocks: wider gaps pay
    assert gap_fillers([0, 3], 9, 256) == []


def test_fillers_keep_the_pass_within_n_batch() -> None:
    # 4 blocks + fillers of 5 positions: 2 gaps of one fit 30 positions, not 3
    assert gap_fillers([0, 2, 4, 6], 5, 30) == [1, 3]
    assert gap_fillers([0, 2, 4, 6], 5, 20) == []


def test_seq_runs_counts_runs_of_consecutive_ids() -> None:
    assert seq_runs([]) == 0
    assert seq_runs([4, 2, 3]) == 1
    assert seq_runs([0, 2, 3, 7]) == 3
    ids = [0, 2, 5, 6]
    assert seq_runs([*ids, *gap_fillers(ids, 4, 256)]) == 1


def test_seq_run_lengths_lowest_ids_first() -> None:
    assert seq_run_lengths([]) == []
    assert seq_run_lengths([7, 0, 3, 2, 2]) == [1, 2, 1]  # duplicates count once
    assert seq_run_lengths(range(5)) == [5]
