"""The header a benchmark's result JSON starts with: tool, code revision, host, time, load."""

from __future__ import annotations

import argparse
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from configspec._version import __version__, git_revision


def result_header(
    tool: str,
    args: argparse.Namespace,
    cache_dir: Path | str | None,
    load_before: tuple[float, float, float],
    load_after: tuple[float, float, float],
) -> dict[str, Any]:
    """Where and when ``tool`` ran with ``args`` (which must hold ``out``), and the 1-, 5-
    and 15-minute load averages before and after it."""
    return {
        "tool": tool,
        "version": __version__,
        "git_revision": git_revision(),
        "when": datetime.now(timezone.utc).isoformat(),
        "host": platform.node(),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "settings": vars(args) | {"cache_dir": str(cache_dir), "out": str(args.out)},
    }
