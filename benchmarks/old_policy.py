"""Load another source tree's adaptive-K policy next to this checkout's (benchmarks only).

Used by ``bench_adaptive_live_cost.py`` and ``bench_adaptive_policy.py --old-src`` to time
two revisions of the policy side by side in one process.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def load_old(src: Path) -> ModuleType:
    """The adaptive module of another source tree (its estimators with it), under other
    names, next to this checkout's."""

    def load(name: str, path: Path, text: str | None = None) -> ModuleType:
        spec = importlib.util.spec_from_loader(name, loader=None)
        assert spec is not None
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        exec(compile(text or path.read_text(), str(path), "exec"), mod.__dict__)
        return mod

    serving = src / "configspec" / "serving"

    def own(path: Path) -> str:
        return (
            path.read_text()
            .replace("configspec.serving.estimators", "_old_estimators")
            .replace("configspec.serving.prior", "_old_prior")
        )

    load("_old_estimators", serving / "estimators.py")
    if (serving / "prior.py").exists():  # split out of adaptive.py later
        load("_old_prior", serving / "prior.py", own(serving / "prior.py"))
    return load("_old_adaptive", serving / "adaptive.py", own(serving / "adaptive.py"))
