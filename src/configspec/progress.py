"""The one progress protocol: a callback that receives :class:`ProgressEvent`.

Long-running library calls (profiling sweeps, alignment, the runtime, the report) take a
``progress: ProgressFn`` argument and never print; ``cli/`` turns the events into progress
bars. A task is identified by its ``label``; each event says how much of it is done.

>>> events = []
>>> step = Phase(events.append, "alignment", total=2)
>>> step.advance()
>>> [(e.label, e.done, e.total) for e in events]
[('alignment', 0, 2), ('alignment', 1, 2)]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class ProgressEvent:
    """One step of a task: ``done`` of ``total`` units of task ``label`` finished.

    ``detail`` describes the unit just finished (e.g. ``K=4 ctx=128: 10.7 ms ±1.2%``).
    """

    label: str
    done: int
    total: int
    detail: str = ""


ProgressFn = Callable[[ProgressEvent], None]
"""Receives progress events; must return quickly and never raise."""


def _no_progress(event: ProgressEvent) -> None:
    del event


NO_PROGRESS: ProgressFn = _no_progress
"""The callback that ignores every event (the default everywhere)."""


class Phase:
    """A counted task on a :data:`ProgressFn`: announces itself (0 of ``total``) when
    created, then one event per :meth:`advance`."""

    def __init__(self, progress: ProgressFn, label: str, total: int) -> None:
        self.progress = progress
        self.label = label
        self.total = total
        self.done = 0
        progress(ProgressEvent(label, 0, total))

    def advance(self, n: int = 1, detail: str = "") -> None:
        """``n`` more units done."""
        self.done += n
        self.progress(ProgressEvent(self.label, self.done, self.total, detail))


def prefixed(progress: ProgressFn, prefix: str) -> ProgressFn:
    """``progress`` with ``prefix`` put before every event's label."""

    def on_event(event: ProgressEvent) -> None:
        progress(ProgressEvent(prefix + event.label, event.done, event.total, event.detail))

    return on_event
