"""A process-wide "stop now" flag that generation honours between tokens and prefill chunks.

A front end sets ``STOP`` (the CLI does on Ctrl-C); ``check_stop()`` then raises
``Stopped``, a ``KeyboardInterrupt``, in whichever thread is generating, so a model call
running in a worker thread (LangGraph runs graph nodes in one) ends at its next token
instead of running to ``max_new_tokens`` while the main thread waits for it. Nothing that
catches ``Exception`` (a batch, a tool) mistakes it for an ordinary error.
"""

from __future__ import annotations

import threading

STOP = threading.Event()


class Stopped(KeyboardInterrupt):
    """Generation stopped because ``STOP`` was set."""


def check_stop() -> None:
    if STOP.is_set():
        raise Stopped("stopped between tokens")
