"""Wire protocol messages: round-trips and the validation that keeps bad requests out."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from configspec.serving.protocol import (
    OpenSessionRequest,
    SparseDistribution,
    VerifyRequest,
    VerifyResponse,
)


def test_verify_request_round_trips_exact_floats() -> None:
    probs = [0.1 + 1e-17, 1 / 3, 1 - (0.1 + 1e-17) - 1 / 3]
    req = VerifyRequest(
        round=3,
        session_tokens=10,
        draft_tokens=[5],
        draft_token_probs=[1 / 3],
        draft_distributions=[SparseDistribution(ids=[4, 5, 6], probs=probs)],
    )
    again = VerifyRequest.model_validate_json(req.model_dump_json())
    assert again == req
    assert again.draft_distributions is not None
    assert again.draft_distributions[0].probs == probs  # bit-exact through JSON


def test_zero_draft_tokens_allowed() -> None:
    assert VerifyRequest(round=0, session_tokens=1, draft_tokens=[]).draft_tokens == []


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"draft_tokens": [-1]}, "negative token id -1"),
        ({"draft_tokens": [1, 2], "draft_token_probs": [0.5]}, "1 entries for 2 draft"),
        ({"draft_tokens": [1], "draft_token_probs": [1.5]}, r"\[0, 1\]"),
        ({"draft_tokens": list(range(65))}, "at most 64"),
        (
            {
                "draft_tokens": [9],
                "draft_distributions": [{"ids": [1, 2], "probs": [0.5, 0.5]}],
            },
            "probability 0 in its own",
        ),
        ({"draft_tokens": [1], "extra": 1}, "Extra inputs"),
    ],
)
def test_verify_request_rejects(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        VerifyRequest.model_validate({"round": 0, "session_tokens": 1, **kwargs})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"ids": [1, 2], "probs": [1.0]}, "must pair up"),
        ({"ids": [1, 1], "probs": [0.5, 0.5]}, "duplicates"),
        ({"ids": [1, 2], "probs": [0.5, 0.2]}, "sum to 0.7"),
        ({"ids": [1], "probs": [float("nan")]}, "finite"),
    ],
)
def test_sparse_distribution_rejects(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        SparseDistribution.model_validate(kwargs)


def test_sparse_distribution_with_remainder() -> None:
    d = SparseDistribution(ids=[7], probs=[0.9], remainder=0.1)
    assert d.prob_of(7) == 0.9
    assert d.prob_of(8) is None


def test_open_request_limits() -> None:
    with pytest.raises(ValidationError):
        OpenSessionRequest(prompt_tokens=[])
    with pytest.raises(ValidationError):
        OpenSessionRequest(prompt_tokens=[1], temperature=-0.1)


def test_verify_response_new_tokens() -> None:
    r = VerifyResponse(
        round=0,
        accepted=2,
        next_token=5,
        bonus=False,
        session_tokens=13,
        verify_ms=1.0,
        server_ms=1.5,
        received_unix_s=1.0,
        sent_unix_s=1.0,
    )
    assert r.new_tokens == 3
