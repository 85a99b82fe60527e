"""Holding off Ctrl-C and SIGTERM while something must not be cut in two."""

from __future__ import annotations

import contextlib
import signal
import threading

#: The signals that stop a run: Ctrl-C, and SIGTERM (which the command line turns into
#: KeyboardInterrupt).
STOPPING = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def signals_held():
    """Block SIGINT and SIGTERM for the calling thread; one that arrives meanwhile is
    delivered (and its handler raises) when the block ends. Only the main thread runs
    Python's signal handlers, so elsewhere this holds nothing back and changes nothing."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, set(STOPPING))
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
