"""Model specs, parsed once: the one place that knows what ``ngram:2-4`` means.

A spec names a model the way users type it:

* ``ngram`` or ``ngram:MIN-MAX`` — the model-free n-gram drafter (default 1-3); it drafts
  with the target's vocabulary, and its profiles and runs are named ``ngram[MIN-MAX]``;
* ``http://...`` or ``https://...`` — an OpenAI-compatible server (targets only);
* anything else — a registered model name or a GGUF path (:class:`ModelRegistry` resolves
  it).

>>> parse_spec("ngram:2-4").ngram_range
(2, 4)
>>> parse_spec("ngram").profiled_name
'ngram[1-3]'
>>> parse_spec("gemma-3-270m-q4_0").kind
<SpecKind.MODEL: 'model'>
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from configspec.errors import InvalidInput

NGRAM = "ngram"
DEFAULT_NGRAM_RANGE = (1, 3)
_NGRAM_SPEC = re.compile(r"^ngram(?::(\d+)-(\d+))?$")
_NGRAM_NAME = re.compile(r"^ngram\[(\d+)-(\d+)\]$")


class SpecKind(str, Enum):
    """What a spec refers to."""

    NGRAM = "ngram"
    MODEL = "model"
    URL = "url"


@dataclass(frozen=True)
class ModelSpec:
    """A parsed spec: its text, its kind and, for ``ngram``, the n-gram range."""

    text: str
    kind: SpecKind
    ngram_range: tuple[int, int] | None = None
    """(MIN, MAX) n-gram orders of an ``ngram`` spec (default 1-3); None otherwise."""
    explicit_range: bool = False
    """True when the spec wrote ``:MIN-MAX`` itself."""

    @property
    def is_ngram(self) -> bool:
        """True for the model-free n-gram drafter."""
        return self.kind is SpecKind.NGRAM

    @property
    def is_url(self) -> bool:
        """True for an OpenAI-compatible server URL."""
        return self.kind is SpecKind.URL

    @property
    def profiled_name(self) -> str:
        """The name profiles and run records give this drafter (``ngram[1-3]`` for
        ``ngram``; the spec itself for models and URLs)."""
        if self.ngram_range is None:
            return self.text
        return ngram_name(*self.ngram_range)

    def matches(self, name: str) -> bool:
        """True when a drafter profiled or run under ``name`` came from this spec.

        A bare ``ngram`` matches every n-gram range; ``ngram:2-4`` only ``ngram[2-4]``.
        """
        if name == self.text:
            return True
        if self.is_ngram:
            other = ngram_range_of_name(name)
            return other is not None and (not self.explicit_range or other == self.ngram_range)
        return False


def ngram_name(min_n: int, max_n: int) -> str:
    """The name of the n-gram drafter of orders ``min_n``..``max_n`` (``ngram[1-3]``)."""
    return f"{NGRAM}[{min_n}-{max_n}]"


def ngram_range_of_name(name: str) -> tuple[int, int] | None:
    """(MIN, MAX) of a profiled n-gram name ``ngram[MIN-MAX]``; None for other names."""
    m = _NGRAM_NAME.match(name)
    return (int(m[1]), int(m[2])) if m else None


def parse_spec(text: str) -> ModelSpec:
    """Parse a model spec (module docstring).

    Raises :class:`InvalidInput` for a spec that starts like ``ngram`` but is not
    ``ngram[:MIN-MAX]`` (e.g. ``ngram:3``), with the bad text in the message.
    """
    if text.startswith(("http://", "https://")):
        return ModelSpec(text, SpecKind.URL)
    m = _NGRAM_SPEC.match(text)
    if m:
        rng = (int(m[1]), int(m[2])) if m[1] else DEFAULT_NGRAM_RANGE
        return ModelSpec(text, SpecKind.NGRAM, rng, explicit_range=m[1] is not None)
    if text.startswith(NGRAM + ":"):
        raise InvalidInput(f"drafter spec {text!r} is not ngram[:MIN-MAX] (e.g. ngram:1-3)")
    return ModelSpec(text, SpecKind.MODEL)


def is_ngram(text: str) -> bool:
    """True when ``text`` is an ``ngram[:MIN-MAX]`` spec."""
    return _NGRAM_SPEC.match(text) is not None


def is_url(text: str) -> bool:
    """True for an ``http://`` or ``https://`` spec."""
    return parse_spec(text).is_url


MODEL_FREE_PREFIXES = (NGRAM, "prompt-lookup")
"""Names of drafters without a model file: the n-gram drafter and prompt lookup."""


def is_model_free(name: str) -> bool:
    """True for a drafter spec or profiled name without a model file (``ngram``,
    ``ngram:2-4``, ``ngram[1-3]``, ``prompt-lookup...``; any case)."""
    return name.lower().startswith(MODEL_FREE_PREFIXES)


def spec_of_name(name: str) -> str:
    """The spec that opens the drafter profiled as ``name`` (``ngram[2-4]`` →
    ``ngram:2-4``, ``ngram[1-3]`` → ``ngram``); other names are their own spec."""
    rng = ngram_range_of_name(name)
    if rng is None:
        return name
    return NGRAM if rng == DEFAULT_NGRAM_RANGE else f"{NGRAM}:{rng[0]}-{rng[1]}"
