"""Ctrl-C in the CLI: stop at once, between tokens, and say in one line what was kept.

``ctrl_c_stops_generation()`` (installed by the entry point for the whole run) makes
SIGINT set the model layer's stop flag (model/stop_flag.py) before raising
``KeyboardInterrupt`` as usual: a model call running in a worker thread, where Python's
own interrupt never reaches it, ends at its next token instead of running to its token
limit. A command states what survives an interrupt with ``on_interrupt("…")``; the entry
point prints that line and exits 130 (a command that registered none prints its own, or
nothing). After a real Ctrl-C the exit is immediate (``leave``): what the command wrote is
already committed or closed by then, so the interpreter's teardown (freeing the model and the
libraries' native state, ~2.5 s) is skipped; atexit handlers still run and output is flushed.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
from contextlib import contextmanager
from typing import Callable, Iterator

_note: list[Callable[[], str] | str] = []
_signalled: list[bool] = []  # a real SIGINT arrived (not a KeyboardInterrupt raised in-process)


def on_interrupt(note: Callable[[], str] | str) -> None:
    """The line printed if Ctrl-C ends this command (a callable is asked at that moment)."""
    _note[:] = [note]


def interrupted_line() -> str:
    """The command's line for an interrupt, or "" when it said nothing (it may print its own)."""
    if not _note:
        return ""
    note = _note[0]
    return note() if callable(note) else note


def _stop_now(signum, frame) -> None:
    from feldspar.model.stop_flag import STOP

    STOP.set()
    _signalled[:] = [True]
    raise KeyboardInterrupt


def leave(code: int) -> None:
    """Exit with ``code``: at once after a real Ctrl-C (atexit handlers run, output flushed,
    the slow interpreter teardown skipped), else as usual with ``sys.exit``."""
    if not _signalled:
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


@contextmanager
def ctrl_c_stops_generation() -> Iterator[None]:
    """SIGINT sets the stop flag, then interrupts as Python would; both are undone on exit."""
    from feldspar.model.stop_flag import STOP

    try:
        previous = signal.signal(signal.SIGINT, _stop_now)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    _note.clear()
    _signalled.clear()
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        STOP.clear()
