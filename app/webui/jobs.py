"""Background jobs for the web UI: one thread per long task, a snapshot the pages poll, a Cancel.

A ``Job`` runs ``work(job)`` in a daemon thread it owns; the work reports through
``job.update(...)`` / ``job.notice(...)`` and reads ``job.stop`` (set by ``cancel``). Pages
never touch the thread: they read ``job.view()``, an immutable ``JobView``. User errors
(the layers' error bases, ``Refused``) end the job as ``failed`` with their one-line message;
anything else is a bug and is kept with its traceback in the log and the message.

``hook(job, event)``, when given, is called from the job's thread at named points (an ingest's
``parsed``, ``embedded`` and ``batch``: see ingest_progress.py; ``prefill`` before a pack's
prefill): tests use it to hold a job at a known point without sleeping. Knows threads and
error words; nothing of Streamlit, retrieval or models.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from feldspar.errors import user_error_types
from feldspar.webui.remedies import web_message

log = logging.getLogger("feldspar.ui")
ACTIVE = ("running", "cancelling")


class Refused(Exception):
    """A request the UI turns down with one clear line (bad upload, folder outside the roots…)."""


@dataclass(frozen=True)
class JobView:
    """What a page shows of a job at one moment."""

    kind: str  # ingest or pack
    label: str  # what it works on (collection, pack name)
    state: str = "running"  # running, cancelling, done, cancelled, failed
    phase: str = ""
    done: int = 0  # an ingest: bytes indexed; a pack: tokens prefilled
    total: int = 0
    current: str = ""
    chunks: int = 0  # an ingest: chunks embedded and stored so far (what its summary ends at)
    files_done: int = 0  # an ingest: files parsed of files_total to (re)index, bytes_read their size
    files_total: int = 0
    bytes_read: int = 0
    message: str = ""
    notices: tuple[str, ...] = ()
    result: dict[str, Any] = field(default_factory=dict)
    started: float = 0.0
    finished: float | None = None

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    @property
    def fraction(self) -> float:
        if self.state in ("done",):
            return 1.0
        return min(1.0, self.done / self.total) if self.total > 0 else 0.0


class Job:
    def __init__(self, kind: str, label: str, work: Callable[["Job"], tuple[str, dict]],
                 hook: Callable[["Job", str], None] | None = None) -> None:
        self.stop = threading.Event()
        self._work = work
        self._hook = hook
        self._lock = threading.Lock()
        self._view = JobView(kind, label, started=time.time())
        self._thread = threading.Thread(target=self._run, name=f"feldspar-ui-{kind}", daemon=True)

    def start(self) -> "Job":
        self._thread.start()
        return self

    # ---- reporting (from the job's thread) ---------------------------------------------
    def update(self, **fields: Any) -> None:
        with self._lock:
            self._view = replace(self._view, **fields)

    def advance(self, n: int) -> None:
        with self._lock:
            self._view = replace(self._view, done=self._view.done + n)

    def notice(self, message: str) -> None:
        with self._lock:
            self._view = replace(self._view, notices=self._view.notices + (message,))

    def checkpoint(self, event: str) -> None:
        if self._hook is not None:
            self._hook(self, event)

    # ---- control (from the pages) ------------------------------------------------------
    def view(self) -> JobView:
        with self._lock:
            return self._view

    def cancel(self) -> None:
        with self._lock:
            if self._view.state == "running":
                self._view = replace(self._view, state="cancelling")
        self.stop.set()

    def wait(self, timeout: float | None = None) -> bool:
        """True once the job's thread has ended."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        try:
            message, result = self._work(self)
            state = "cancelled" if self.stop.is_set() and result.get("interrupted") else "done"
        except (Refused, *user_error_types()) as exc:
            state, message, result = "failed", web_message(exc), {}
        except Exception as exc:  # a bug: keep it visible, the server goes on
            log.exception("UI %s job failed", self._view.kind)
            state, message, result = "failed", f"unexpected error ({type(exc).__name__}: {exc}); see the server log", {}
        with self._lock:
            self._view = replace(self._view, state=state, message=message,
                                 result={**self._view.result, **result}, finished=time.time())
