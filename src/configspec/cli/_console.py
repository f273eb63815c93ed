"""Terminal output shared by every command: one console, progress bars, error mapping."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from configspec.progress import ProgressEvent, ProgressFn

console = Console()
err_console = Console(stderr=True)


def setup_logging(verbose: int) -> None:
    """Route library logging to stderr through rich; ``-v`` shows INFO, ``-vv`` DEBUG."""
    level = logging.WARNING if verbose <= 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(
        level=level,
        format="%(message)s",
        handlers=[RichHandler(console=err_console, show_path=False)],
        force=True,
    )


def make_progress(transient: bool = False) -> Progress:
    """A progress bar with count, elapsed and remaining time, drawn on stderr."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=transient,
        disable=not sys.stderr.isatty() and False,
    )


@contextmanager
def progress_bar(description: str, total: int | None) -> Iterator[Progress]:
    """Context manager yielding a started progress bar with one task named ``description``."""
    with make_progress() as progress:
        progress.add_task(description, total=total)
        yield progress


def rich_progress(bar: Progress) -> ProgressFn:
    """A :data:`~configspec.progress.ProgressFn` drawing one task of ``bar`` per label."""
    tasks: dict[str, TaskID] = {}

    def on_event(event: ProgressEvent) -> None:
        if event.label not in tasks:
            tasks[event.label] = bar.add_task(event.label, total=max(event.total, 1))
        desc = f"{event.label} [dim]{event.detail}[/]" if event.detail else event.label
        bar.update(
            tasks[event.label], completed=event.done, total=max(event.total, 1), description=desc
        )

    return on_event


@contextmanager
def progress_events() -> Iterator[ProgressFn]:
    """Context manager yielding a :data:`ProgressFn` drawn as progress bars on stderr."""
    with make_progress() as bar:
        yield rich_progress(bar)
