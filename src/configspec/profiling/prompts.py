"""Prompt sets for alignment profiling: the bundled set and users' own JSONL files.

A prompt file holds one JSON object per line with a required ``prompt`` (non-empty
string) and optional ``domain`` and ``id``. Errors name the file and the line.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from configspec.errors import InvalidInput

BUNDLED_DOMAINS = ("chat", "code", "math", "summarization")
"""Domains of the bundled prompt set (one ``<domain>.jsonl`` file each)."""

DEFAULT_DOMAIN = "custom"


@dataclass(frozen=True)
class Prompt:
    """One prompt: a unique ``id``, the ``domain`` it is reported under, and its ``text``."""

    id: str
    domain: str
    text: str


def _parse_line(line: str, lineno: int, where: str, default_id: str) -> Prompt:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InvalidInput(
            f"{where} line {lineno} is not valid JSON ({exc.msg} at column {exc.colno}); "
            'each line must be an object like {"prompt": "..."}'
        ) from None
    if not isinstance(obj, dict):
        raise InvalidInput(
            f"{where} line {lineno} is a JSON {type(obj).__name__}, expected an object "
            'like {"prompt": "..."}'
        )
    if "prompt" not in obj:
        raise InvalidInput(f'{where} line {lineno} has no "prompt" field; add the prompt text')
    text = obj["prompt"]
    if not isinstance(text, str) or not text.strip():
        raise InvalidInput(f'{where} line {lineno}: "prompt" must be a non-empty string')
    domain = obj.get("domain", DEFAULT_DOMAIN)
    if not isinstance(domain, str) or not domain.strip():
        raise InvalidInput(f'{where} line {lineno}: "domain" must be a non-empty string')
    pid = obj.get("id", default_id)
    if not isinstance(pid, (str, int)) or isinstance(pid, bool) or not str(pid).strip():
        raise InvalidInput(f'{where} line {lineno}: "id" must be a non-empty string or integer')
    return Prompt(id=str(pid), domain=domain.strip(), text=text)


def parse_prompts(lines: Iterable[str], where: str, stem: str = "prompt") -> list[Prompt]:
    """Parse JSONL ``lines`` into prompts; ``where`` names the source in error messages.

    Raises :class:`InvalidInput` naming the line for malformed JSON, a missing or empty
    ``prompt``, a duplicate ``id``, and for a source without any prompt.
    """
    prompts: list[Prompt] = []
    seen: dict[str, int] = {}
    for lineno, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line:
            continue
        prompt = _parse_line(line, lineno, where, f"{stem}-{lineno}")
        if prompt.id in seen:
            raise InvalidInput(
                f"{where} line {lineno} repeats id {prompt.id!r} (first on line "
                f"{seen[prompt.id]}); ids must be unique"
            )
        seen[prompt.id] = lineno
        prompts.append(prompt)
    if not prompts:
        raise InvalidInput(f'{where} holds no prompts; add lines like {{"prompt": "..."}}')
    return prompts


def load_prompts(path: Path) -> list[Prompt]:
    """Load a user's JSONL prompt file (see the module docstring for the format)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInput(f"prompt file {path} does not exist") from None
    except IsADirectoryError:
        raise InvalidInput(f"prompt file {path} is a directory; give a .jsonl file") from None
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"prompt file {path} is not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise InvalidInput(f"cannot read prompt file {path}: {exc.strerror}") from None
    return parse_prompts(text.splitlines(), f"prompt file {path}", stem=path.stem)


def bundled_prompts(domains: Sequence[str] | None = None) -> list[Prompt]:
    """The bundled prompt set (Apache-2.0, written for ConfigSpec), optionally some domains."""
    wanted = list(BUNDLED_DOMAINS if domains is None else domains)
    unknown = [d for d in wanted if d not in BUNDLED_DOMAINS]
    if unknown:
        raise InvalidInput(
            f"unknown bundled domain {unknown[0]!r}; choose from {', '.join(BUNDLED_DOMAINS)}"
        )
    root = resources.files("configspec") / "data" / "prompts"
    prompts: list[Prompt] = []
    for domain in wanted:
        text = (root / f"{domain}.jsonl").read_text(encoding="utf-8")
        prompts.extend(parse_prompts(text.splitlines(), f"bundled {domain}.jsonl", domain))
    return prompts


def select_prompts(prompts: Sequence[Prompt], per_domain: int | None) -> list[Prompt]:
    """At most ``per_domain`` prompts of each domain (in file order); all when None."""
    if per_domain is None:
        return list(prompts)
    if per_domain < 1:
        raise InvalidInput(f"prompts per domain {per_domain} is out of range (>= 1)")
    counts: dict[str, int] = {}
    chosen: list[Prompt] = []
    for p in prompts:
        if counts.get(p.domain, 0) < per_domain:
            counts[p.domain] = counts.get(p.domain, 0) + 1
            chosen.append(p)
    return chosen


def prompt_set(
    path: Path | None, domains: Sequence[str] = (), per_domain: int | None = None
) -> tuple[list[Prompt], str]:
    """The prompts of a profiling run and where they come from (recorded in provenance):
    the user's JSONL file at ``path``, else the bundled set (``domains``: some of its
    domains, all when empty); at most ``per_domain`` of each domain."""
    if path is not None:
        prompts, source = load_prompts(path), str(path)
    else:
        prompts = bundled_prompts(domains or None)
        source = "bundled" + (f":{','.join(domains)}" if domains else "")
    return select_prompts(prompts, per_domain), source
