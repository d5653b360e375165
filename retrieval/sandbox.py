"""Run file parsers in worker subprocesses, each bounded in time and memory.

``ParserPool.run`` takes ``(key, function, args)`` tasks and yields ``(key, outcome)``
as they finish, in any order. A worker that exceeds the timeout is killed and replaced;
one that dies (segfault, OOM kill) is replaced too; the task gets a ``failed`` outcome
with a reason, so a hostile file can never hang or take down the run; a caller's stop
event (a UI's Cancel) ends ``run`` without waiting for the parses in flight. Workers are
forked from a clean ``forkserver`` (no inherited model memory) and limit their address space with
``resource.setrlimit``. Workers ignore SIGINT: the parent decides when to stop. Unless
asked for ``library_warnings``, workers drop log records below ERROR: a parser library's
warnings (e.g. pypdf's "EOF marker not found") would land on the user's terminal, and the
file's outcome already says what went wrong. Workers never re-run the host's ``__main__``
script: inside an embedding host such as a Streamlit server, ``__main__`` is the app's page
script, which must not run again in every parser process.

This module does not know what the functions do; it only needs them importable.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import sys
import threading
import time
import types
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, Callable, Iterable, Iterator


@dataclass
class Outcome:
    """``status`` is ``ok`` (``value`` holds the result), ``skipped`` or ``failed``."""

    status: str
    value: Any = None
    reason: str = ""


def _limit_memory(memory_bytes: int | None) -> None:
    if not memory_bytes:
        return
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = memory_bytes if hard == resource.RLIM_INFINITY else min(memory_bytes, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _worker_main(conn: Connection, memory_bytes: int | None, library_warnings: bool = False) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if not library_warnings:
        logging.disable(logging.WARNING)
    _limit_memory(memory_bytes)
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        try:
            conn.send(_call(*task))
        except OSError:  # the parent is gone (killed): nobody to answer
            return


def _call(function: Callable[..., Any], args: tuple) -> Outcome:
    try:
        return Outcome("ok", function(*args))
    except MemoryError:
        return Outcome("failed", reason="parser ran out of memory")
    except RecursionError:
        return Outcome("failed", reason="parser recursion too deep")
    except Exception as exc:  # a per-file failure, never fatal to the run
        status = getattr(exc, "status", "failed")
        reason = getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"
        return Outcome(status, reason=reason)


def _context():
    """``forkserver``: workers fork from a small clean server (no model memory), fast to start."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["feldspar.retrieval.loaders", "feldspar.retrieval.sandbox"])
    return context


_MAIN_SWAP = threading.Lock()


@contextmanager
def _plain_main() -> Iterator[None]:
    """While a worker starts, ``__main__`` is an empty module, so the child imports no host script."""
    with _MAIN_SWAP:
        previous = sys.modules.get("__main__")
        placeholder = types.ModuleType("__main__")
        sys.modules["__main__"] = placeholder
        try:
            yield
        finally:
            if sys.modules.get("__main__") is placeholder:  # a host may have installed its own meanwhile
                sys.modules["__main__"] = previous


class _Worker:
    def __init__(self, context, memory_bytes: int | None, library_warnings: bool = False) -> None:
        self.conn, child_conn = context.Pipe()
        self.process = context.Process(target=_worker_main, args=(child_conn, memory_bytes, library_warnings),
                                       daemon=True)
        with _plain_main():
            self.process.start()
        child_conn.close()
        self.key: Any = None
        self.deadline = 0.0

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)
        self.conn.close()

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.process.join(2)
        self.kill()


STOP_POLL_S = 0.25  # how often a stoppable run looks at its stop event while parses are in flight


class ParserPool:
    """A small pool of limited parser processes; use as a context manager."""

    def __init__(self, workers: int, timeout_s: float, memory_bytes: int | None = None,
                 library_warnings: bool = False) -> None:
        self.size = max(1, workers)
        self.timeout_s = timeout_s
        self.memory_bytes = memory_bytes
        self.library_warnings = library_warnings
        self._context = _context()
        self._idle: list[_Worker] = []
        self._busy: dict[Connection, _Worker] = {}

    def __enter__(self) -> "ParserPool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for worker in self._idle:
            worker.stop()
        for worker in self._busy.values():
            worker.kill()
        self._idle.clear()
        self._busy.clear()

    def run(self, tasks: Iterable[tuple[Any, Callable[..., Any], tuple]],
            stop: threading.Event | None = None) -> Iterator[tuple[Any, Outcome]]:
        """Yield ``(key, Outcome)`` for every task, in completion order. Once ``stop`` is set it yields
        no more (within ``STOP_POLL_S``): parses in flight are not waited for; ``close`` kills them."""
        pending = iter(tasks)
        exhausted = False
        while stop is None or not stop.is_set():
            while not exhausted and self._has_capacity():
                task = next(pending, None)
                if task is None:
                    exhausted = True
                    break
                self._dispatch(*task)
            if not self._busy:
                return
            yield from self._collect(stop is not None)

    def _has_capacity(self) -> bool:
        return len(self._busy) < self.size

    def _dispatch(self, key: Any, function: Callable[..., Any], args: tuple) -> None:
        worker = self._idle.pop() if self._idle else _Worker(self._context, self.memory_bytes, self.library_warnings)
        worker.key = key
        worker.deadline = time.monotonic() + self.timeout_s
        worker.conn.send((function, args))
        self._busy[worker.conn] = worker

    def _collect(self, stoppable: bool = False) -> Iterator[tuple[Any, Outcome]]:
        next_deadline = min(w.deadline for w in self._busy.values())
        timeout = max(0.0, next_deadline - time.monotonic())
        ready = wait(list(self._busy), timeout=min(timeout, STOP_POLL_S) if stoppable else timeout)
        for conn in ready:
            worker = self._busy.pop(conn)
            try:
                outcome = conn.recv()
            except (EOFError, OSError):
                yield worker.key, self._replace_dead(worker)
                continue
            self._idle.append(worker)
            # the limit is strict: an answer read after its deadline counts as timed out, like one
            # that has not come (the worker answered, so it stays in the pool)
            yield worker.key, outcome if time.monotonic() < worker.deadline else self._timed_out()
        yield from self._expire_overdue()

    def _expire_overdue(self) -> Iterator[tuple[Any, Outcome]]:
        now = time.monotonic()
        for conn, worker in list(self._busy.items()):
            if worker.deadline <= now:
                del self._busy[conn]
                worker.kill()
                yield worker.key, self._timed_out()

    def _timed_out(self) -> Outcome:
        return Outcome("failed", reason=f"parsing timed out after {self.timeout_s:g}s")

    def _replace_dead(self, worker: _Worker) -> Outcome:
        worker.process.join(5)
        code = worker.process.exitcode
        worker.kill()
        how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        return Outcome("failed", reason=f"parser process died ({how})")
