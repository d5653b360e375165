"""Lanes: one worker thread per engine runs the server's requests in arrival order.

A ``Lane`` admits at most ``1 + waiting`` requests at once (one running, the rest waiting in
order); one more is refused with ``LaneFull`` (the server answers 429 with Retry-After, the
expected wait). An admitted request becomes a ``Job``: the worker thread pulls items from
the job's iterator (text deltas, events) and hands each to the event loop; between items
it checks the job's cancel flag, so a client that went away stops its generation at the
next token (the iterator is closed: a generator sees ``GeneratorExit``). A job cancelled
while waiting never starts. ``Lane.call`` runs a setup function on the worker, in order
with the jobs (building an agent that may touch the engine). Knows threads, asyncio and
iterators; nothing of models, HTTP or OpenAI.
"""

from __future__ import annotations

import asyncio
import math
import queue
import threading
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Iterator

END = object()
IDLE = object()  # what ``Job.items(idle_s=…)`` yields when nothing came for that long


class LaneFull(Exception):
    def __init__(self, retry_after: int) -> None:
        super().__init__(f"the request queue is full; retry in {retry_after} s")
        self.retry_after = retry_after


@dataclass
class LaneStats:
    completed: int = 0
    cancelled: int = 0
    failed: int = 0
    rejected: int = 0
    abandoned: int = 0  # callers that left while their job still waited in the queue
    left_running: int = 0  # callers that left while their job ran (it stops at its next item)


@dataclass
class Job:
    """One admitted request: ``items()`` yields what its iterator produced, in order."""

    lane: "Lane"
    work: Callable[[], Iterator[Any]] | None
    loop: asyncio.AbstractEventLoop
    cancel: threading.Event = field(default_factory=threading.Event)
    out: asyncio.Queue = field(default_factory=asyncio.Queue)
    started: threading.Event = field(default_factory=threading.Event)

    def leave(self) -> None:
        """The caller stopped listening: a waiting job never starts, a running one stops at its next item."""
        if not self.cancel.is_set():
            self.lane.note_left(running=self.started.is_set())
        self.cancel.set()

    def post(self, kind: str, value: Any = None) -> None:
        try:
            self.loop.call_soon_threadsafe(self.out.put_nowait, (kind, value))
        except RuntimeError:  # the event loop is gone (server shutting down): nobody is listening
            self.cancel.set()

    async def items(self, idle_s: float | None = None) -> AsyncIterator[Any]:
        """The iterator's items; its exception is raised here; cancelled when the caller stops.

        With ``idle_s``, ``IDLE`` comes whenever no item arrived for that many seconds (while
        the job waits in the queue or computes a long prompt), so a stream can keep its
        connection alive.
        """
        ended = False
        try:
            while True:
                try:
                    kind, value = await asyncio.wait_for(self.out.get(), idle_s)
                except TimeoutError:
                    yield IDLE
                    continue
                if kind == "item":
                    yield value
                else:
                    ended = True
                    if kind == "error":
                        raise value
                    return
        finally:
            if not ended:
                self.leave()  # the caller left early: stop the worker


class Lane:
    def __init__(self, name: str, waiting: int) -> None:
        self.name = name
        self.limit = 1 + max(0, waiting)
        self.stats = LaneStats()
        self._admitted = 0
        self._running = False
        self._mean_s = 1.0
        self._guard = threading.Lock()
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._changed = threading.Condition(self._guard)

    def note_left(self, running: bool) -> None:
        with self._changed:
            if running:
                self.stats.left_running += 1
            else:
                self.stats.abandoned += 1
            self._changed.notify_all()

    def wait_for(self, condition: Callable[[LaneStats], bool], timeout_s: float) -> bool:
        """Block until ``condition(stats)`` holds after a caller left (tests, monitoring); False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: condition(self.stats), timeout_s)

    # ---- admission ------------------------------------------------------------------------
    def admit(self) -> "Ticket":
        with self._guard:
            if self._admitted >= self.limit:
                self.stats.rejected += 1
                raise LaneFull(self.retry_after())
            self._admitted += 1
        return Ticket(self)

    def retry_after(self) -> int:
        """Seconds until a slot frees up, from the mean duration of recent requests."""
        return max(1, math.ceil(self._mean_s * max(self._admitted, 1)))

    def _leave(self) -> None:
        with self._guard:
            self._admitted -= 1

    def snapshot(self) -> dict[str, Any]:
        with self._guard:
            admitted, running = self._admitted, self._running
        return {"running": int(running), "waiting": max(0, admitted - int(running)), "limit": self.limit,
                **self.stats.__dict__}

    # ---- the worker -----------------------------------------------------------------------
    def _ensure_worker(self) -> None:
        with self._guard:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name=f"feldspar-lane-{self.name}", daemon=True)
                self._thread.start()

    def _loop(self) -> None:
        while True:
            task = self._queue.get()
            if task is END:
                return
            task()

    def close(self) -> None:
        self._queue.put(END)

    async def call(self, function: Callable[[], Any]) -> Any:
        """Run ``function`` on the worker, after the jobs already queued; return its result."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()

        def task() -> None:
            try:
                value, error = function(), None
            except BaseException as exc:  # handed to the caller
                value, error = None, exc
            loop.call_soon_threadsafe(_settle, future, value, error)

        self._ensure_worker()
        self._queue.put(task)
        return await future

    def _run(self, job: Job, ticket: "Ticket") -> None:
        import time

        started = time.perf_counter()
        iterator = None
        try:
            if job.cancel.is_set():
                self.stats.cancelled += 1
                return
            with self._guard:
                self._running = True
            job.started.set()
            iterator = job.work()
            for item in iterator:
                job.post("item", item)
                if job.cancel.is_set():
                    self.stats.cancelled += 1
                    return
            self.stats.completed += 1
        except BaseException as exc:  # handed to the request; the lane keeps serving
            self.stats.failed += 1
            job.post("error", exc)
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()  # a generator stops here: GeneratorExit at its current token
            with self._guard:
                self._running = False
            self._mean_s = 0.8 * self._mean_s + 0.2 * (time.perf_counter() - started)
            ticket.release()
            job.post("end")


def _settle(future: asyncio.Future, value: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)


class Ticket:
    """An admitted slot in a lane: ``submit`` it as a job, or ``release`` it unused."""

    def __init__(self, lane: Lane) -> None:
        self.lane = lane
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self.lane._leave()

    def submit(self, work: Callable[[], Iterator[Any]]) -> Job:
        job = Job(self.lane, work, asyncio.get_running_loop())
        self.lane._ensure_worker()
        self.lane._queue.put(lambda: self.lane._run(job, self))
        return job
