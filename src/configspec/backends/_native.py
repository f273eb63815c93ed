"""Keep llama.cpp's native log chatter off the terminal.

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
