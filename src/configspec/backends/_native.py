"""Keep llama.cpp's native log chatter off the terminal; load models safely on this CPU.

llama.cpp writes some messages straight to file descriptor 2 (bypassing the Python log
callback that ``verbose=False`` configures), so model loading and quantisation run with
fd 2 pointed at ``/dev/null``. The rest goes through llama-cpp-python's log callback,
which maps llama.cpp's current level numbers one step off (warnings arrive as ERROR), so
its ``llama-cpp-python`` logger is raised above CRITICAL and left there, as
``Llama(verbose=False)`` itself leaves it at ERROR; lower it again to debug llama.cpp.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Silence native writes to fd 2 inside the block (and llama-cpp-python's logger)."""
    llama_log = logging.getLogger("llama-cpp-python")
    llama_log.setLevel(max(llama_log.level, logging.CRITICAL + 1))
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        # Llama() resets the logger to ERROR on entry, so also catch the callback's prints
        with contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


EXTRA_BUFFERS_ENV = "CONFIGSPEC_LLAMA_EXTRA_BUFFERS"
"""``1`` forces llama.cpp's extra weight buffers (AMX, repacked layouts) on, ``0`` off;
unset means on unless the CPU advertises AMX (see :func:`extra_buffers_enabled`)."""


def extra_buffers_enabled(cpuinfo: str | None = None) -> bool:
    """Whether llama.cpp may put weights in its extra buffer types (AMX tiles, repacked
    quantised layouts).

    Some virtual machines advertise AMX (``amx_tile`` in ``/proc/cpuinfo``) without
    supporting its tile state: llama.cpp then dies with SIGILL (``tilezero``) on the first
    quantised matrix product. So the extra buffers are off where AMX is advertised, unless
    :data:`EXTRA_BUFFERS_ENV` says otherwise. ``cpuinfo`` is the text to inspect (tests).
    """
    forced = os.environ.get(EXTRA_BUFFERS_ENV, "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                cpuinfo = f.read()
        except OSError:
            return True
    return "amx_tile" not in cpuinfo.split()


@contextlib.contextmanager
def model_params() -> Iterator[None]:
    """Inside the block, ``llama_cpp.Llama`` loads models with the extra buffer types
    :func:`extra_buffers_enabled` allows (llama-cpp-python has no argument for it)."""
    if extra_buffers_enabled():
        yield
        return
    import llama_cpp.llama_cpp as native

    default = native.llama_model_default_params

    def without_extra() -> Any:
        params = default()
        params.use_extra_bufts = False
        return params

    native.llama_model_default_params = without_extra
    try:
        yield
    finally:
        native.llama_model_default_params = default
