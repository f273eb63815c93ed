"""Parse model and device names found in imported files.

Nothing here lists known models: quantisation names come from the ``gguf`` library's
file-type enumeration (the names llama.cpp writes into GGUF files and file names), the
model's base id is whatever is left of the file or hub name, and a model's tokenizer
family is derived from the target it was paired with in an acceptance sweep.
"""

from __future__ import annotations

import re
from functools import lru_cache

import gguf


@lru_cache(maxsize=1)
def quant_names() -> tuple[str, ...]:
    """llama.cpp quantisation names (``Q4_K_M``, ``Q8_0``, ``F16`` …), longest first.

    Taken from :class:`gguf.LlamaFileType` so new llama.cpp types are recognised
    without editing this module.
    """
    names: set[str] = set()
    for member in gguf.LlamaFileType:
        name = member.name
        for prefix in ("MOSTLY_", "ALL_"):
            if name.startswith(prefix):
                names.add(name[len(prefix) :])
    names.discard("GUESSED")
    return tuple(sorted(names, key=len, reverse=True))


def _quant_pattern() -> re.Pattern[str]:
    alternatives = "|".join(re.escape(q) for q in quant_names())
    return re.compile(rf"[-_.](?P<quant>{alternatives})$", re.IGNORECASE)


def canonical_quant(text: str) -> str:
    """The canonical spelling of a quantisation name (``q4_k_m`` → ``Q4_K_M``).

    Raises ``ValueError`` naming the value when it is not a llama.cpp quantisation.
    """
    wanted = text.strip().upper()
    for name in quant_names():
        if name == wanted:
            return name
    raise ValueError(f"{text!r} is not a llama.cpp quantisation name")


def split_model_file(name: str) -> tuple[str, str | None]:
    """Split a GGUF file name into (base model name, quantisation or None).

    ``llama-3.2-1b-instruct-q4_k_m.gguf`` → (``llama-3.2-1b-instruct``, ``Q4_K_M``);
    a hub id's organisation prefix (``meta-llama/``) is dropped.
    """
    stem = name.strip().rsplit("/", 1)[-1]
    if stem.lower().endswith(".gguf"):
        stem = stem[: -len(".gguf")]
    match = _quant_pattern().search(stem)
    if match is None:
        return stem, None
    return stem[: match.start()], canonical_quant(match.group("quant"))


def model_key(name: str) -> str:
    """A case- and separator-insensitive key for matching one model across files."""
    base = name.strip().rsplit("/", 1)[-1]
    return re.sub(r"[^a-z0-9.]+", "-", base.lower()).strip("-")


def drafter_id(model: str, quant: str | None) -> str:
    """The project's drafter id: published base name plus quantisation (``Qwen3-0.6B-Q4_K_M``)."""
    base, file_quant = split_model_file(model)
    quant = quant or file_quant
    return f"{base}-{quant}" if quant else base


_SIZE = re.compile(r"-\d+(?:\.\d+)?[bm](?:-.*)?$", re.IGNORECASE)


def family_of(target: str) -> str:
    """The tokenizer family named after a target: its base name without size and variant.

    ``meta-llama/Meta-Llama-3.1-70B-Instruct`` → ``meta-llama-3.1``;
    ``Qwen/Qwen3-32B`` → ``qwen3``. Drafters inherit the family of the target they
    were swept against (a drafter can only be swept against a target whose tokenizer
    it shares).
    """
    base = model_key(target)
    stripped = _SIZE.sub("", base)
    return stripped or base


def _tokens(name: str) -> list[str]:
    return [t for t in re.split(r"[^a-z0-9]+", name.lower()) if t]


def _abbreviates(short: str, words: list[str]) -> bool:
    """True when ``short`` is a concatenation of prefixes of consecutive ``words``."""
    if not short:
        return True
    if not words:
        return False
    first = words[0]
    for cut in range(min(len(first), len(short)), 0, -1):
        if short[:cut] == first[:cut] and _abbreviates(short[cut:], words[1:]):
            return True
    return False


def device_names_match(short: str, long: str) -> bool:
    """Whether device name ``short`` (``RPi 5``, ``Jetson``) names device ``long``
    (``raspberry_pi_5``, ``jetson_agx_orin``).

    Each word of ``short`` must abbreviate consecutive words of ``long`` (``rpi`` =
    ``r``\\ aspberry + ``pi``), in order; numbers must match exactly.
    """
    short_t, long_t = _tokens(short), _tokens(long)
    if not short_t:
        return False
    pos = 0
    for word in short_t:
        found = False
        for start in range(pos, len(long_t)):
            for end in range(start + 1, len(long_t) + 1):
                span = long_t[start:end]
                if word.isdigit() or any(c.isdigit() for c in word):
                    ok = word == "".join(span)
                else:
                    ok = _abbreviates(word, span) and word[0] == span[0][0]
                if ok:
                    pos, found = end, True
                    break
            if found:
                break
        if not found:
            return False
    return True


_PARAMS = re.compile(r"^(?P<n>\d+(?:\.\d+)?)(?P<unit>[bm])$", re.IGNORECASE)


def parameter_billions(name: str) -> float | None:
    """Parameter count in billions read from a model name (``Qwen3-0.6B`` → 0.6,
    ``gemma-3-270m-it`` → 0.27); None when the name carries no size."""
    base = split_model_file(name)[0]
    for token in re.split(r"[-_/]", base):
        match = _PARAMS.match(token)
        if match:
            value = float(match.group("n"))
            return value / 1000.0 if match.group("unit").lower() == "m" else value
    return None
