"""SIGTERM handled like Ctrl-C: one exception type for both, so that every `except KeyboardInterrupt` that finishes or
abandons a write cleanly (atomic writes remove their temp file) also runs for a `kill` or a scheduler's stop.

Exit codes follow the shell's convention, 128 + signal number: 130 for SIGINT, 143 for SIGTERM.
"""

import contextlib
import os
import signal
import sys
import threading


class Terminated(KeyboardInterrupt):
    """Raised in the main thread when the process receives SIGTERM (a KeyboardInterrupt, so handled alike)."""


def _raise_terminated(signum, frame):
    raise Terminated()


@contextlib.contextmanager
def sigterm_as_interrupt():
    """While active, SIGTERM raises Terminated in the main thread; the previous handler is restored on exit."""
    if threading.current_thread() is not threading.main_thread():  # Handlers can only be set from the main thread.
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def signal_name(err: BaseException) -> str:
    """'SIGTERM' for Terminated, else 'SIGINT' (Ctrl-C)."""
    return 'SIGTERM' if isinstance(err, Terminated) else 'SIGINT'


def exit_code(err: BaseException) -> int:
    """The exit status of a run stopped by `err`: 143 for SIGTERM, 130 for SIGINT."""
    return 143 if isinstance(err, Terminated) else 130


def _interrupt_hook(exc_type, exc, tb, previous=sys.excepthook):
    if not issubclass(exc_type, KeyboardInterrupt):
        return previous(exc_type, exc, tb)
    sys.stderr.write(f'Interrupted ({signal_name(exc)}) while starting; nothing written\n')
    sys.stderr.flush()
    os._exit(exit_code(exc))  # No traceback, no clean-up: nothing has been set up yet.


def quiet_interrupts() -> None:
    """An uncaught KeyboardInterrupt (Ctrl-C while a CLI still imports torch and the rest) prints one line and exits
    130 instead of a traceback; other uncaught exceptions are reported as before. The CLIs handle Ctrl-C themselves
    once main runs, so this only shows before that."""
    if sys.excepthook is not _interrupt_hook:
        sys.excepthook = _interrupt_hook
