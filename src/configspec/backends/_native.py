"""Keep llama.cpp's native log chatter off the terminal.

llama.cpp writes some messages straight to file descriptor 2 (bypassing the Python log
callback that ``verbose=False`` configures), so model loading and quantisation run with
fd 2 pointed at ``/dev/null`` and the llama-cpp-python logger raised to ERROR.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Silence native writes to fd 2 and llama-cpp-python's logger inside the block."""
    llama_log = logging.getLogger("llama-cpp-python")
    old_level = llama_log.level
    llama_log.setLevel(logging.ERROR)
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
        llama_log.setLevel(old_level)
