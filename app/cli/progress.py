"""A transient prefill progress bar for CLI commands that run long prompts.

Gives a ``(done, total)`` callback for the engine; draws on stderr so JSON on stdout stays
clean. Knows nothing of models.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

from feldspar.cli.root import err_console

PROGRESS_MIN_TOKENS = 1024  # shorter prefills finish before a bar is worth drawing


@contextmanager
def prefill_progress(enabled: bool = True) -> Iterator[Any]:
    """A (done, total) callback drawing a transient progress bar on stderr for long prefills."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("prefill"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   console=err_console, transient=True, disable=not enabled,
                   redirect_stdout=False, redirect_stderr=False)  # streamed answers stay on stdout
    task: list[int] = []

    def report(done: int, total: int) -> None:
        if total < PROGRESS_MIN_TOKENS:
            return
        if not task:
            bar.start()  # only now: a bar that never starts leaves nothing behind on stderr
            task.append(bar.add_task("prefill", total=total))
        bar.update(task[0], completed=done, total=total)
        if done >= total:
            bar.stop()  # prefill is over: clear the bar before the answer streams

    try:
        yield report
    finally:
        if task:
            bar.stop()
