"""Run the agent over many questions: read a JSONL file, answer each line, append durable answers.

``read_questions(path)`` turns ``{"id", "question"}`` lines (optional ``collection``,
``pack``, ``thread``) into ``BatchItem``s and lists the malformed ones with their line
numbers. ``AnswerLog`` is the output file: opened (and locked) before any work, a torn last
line left by a ``kill -9`` truncated away, every answer appended as one JSON line, flushed and
fsynced, so a crash loses at most the lines in flight; ``done`` holds the ids already answered
so a re-run skips them, while a line whose last record is an error (``failed``) is asked again
and its new record appended (the latest record of an id is the one that counts). ``run_batch`` asks each question with the very ``Agent`` the CLI and
the UI use (same graph, tools, citations, trace, thread state) through ``agent_for(collection,
pack)``; questions that share a ``thread`` label run in input order in one thread, and with
``workers > 1`` independent chains run concurrently (only for a backend that serves several
requests at once: the caller decides). Records are written as they finish.

Knows JSON lines, files and the Agent's answer dict; nothing of models, stores or the CLI.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from feldspar.agents.errors import AgentError

OPTIONAL_KEYS = ("collection", "pack", "thread")


class BatchError(AgentError):
    """A questions file or an output file that cannot be used."""


@dataclass(frozen=True)
class BatchItem:
    id: str
    question: str
    line: int = 0
    collection: str | None = None
    pack: str | None = None
    thread: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class BadLine:
    line: int
    reason: str


# ---- input ---------------------------------------------------------------------------------
def parse_item(data: Any, line: int, extra_keys: tuple[str, ...] = ()) -> BatchItem:
    """One question object as a BatchItem; ValueError says what is wrong with it."""
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object")
    question = data.get("question")
    if not isinstance(question, str) or not question.strip():
        raise ValueError('"question" must be a non-empty string')
    raw_id = data.get("id", str(line))
    if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)) or not str(raw_id).strip():
        raise ValueError('"id" must be a non-empty string or an integer')
    options = {}
    for key in OPTIONAL_KEYS:
        value = data.get(key)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise ValueError(f'"{key}" must be a non-empty string')
        options[key] = value
    if options["collection"] and options["pack"]:
        raise ValueError('give "collection" or "pack", not both')
    return BatchItem(str(raw_id), question, line, **options, extra={k: data[k] for k in extra_keys if k in data})


def parse_lines(lines: Iterable[str], extra_keys: tuple[str, ...] = ()) -> tuple[list[BatchItem], list[BadLine]]:
    items, bad, first_line = [], [], {}
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            data = json.loads(text)
        except ValueError as exc:
            bad.append(BadLine(number, f"not valid JSON ({exc})"))
            continue
        try:
            item = parse_item(data, number, extra_keys)
        except ValueError as exc:
            bad.append(BadLine(number, str(exc)))
            continue
        if item.id in first_line:
            bad.append(BadLine(number, f"duplicate id {item.id!r} (first on line {first_line[item.id]})"))
            continue
        first_line[item.id] = number
        items.append(item)
    return items, bad


def read_questions(path: Path, extra_keys: tuple[str, ...] = ()) -> tuple[list[BatchItem], list[BadLine]]:
    """The valid questions of a JSONL file and its malformed lines (with line numbers)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise BatchError(f"cannot read questions file {path}: {reason}") from None
    return parse_lines(text.splitlines(), extra_keys)


def items_from(questions: Iterable[Any]) -> tuple[list[BatchItem], list[BadLine]]:
    """Questions given in Python: strings, dicts like the JSONL lines, or BatchItems."""
    items, bad = [], []
    for number, question in enumerate(questions, start=1):
        if isinstance(question, BatchItem):
            items.append(question)
            continue
        try:
            data = {"id": str(number), "question": question} if isinstance(question, str) else question
            items.append(parse_item(data, number))
        except ValueError as exc:
            bad.append(BadLine(number, str(exc)))
    return items, bad


# ---- output --------------------------------------------------------------------------------
class AnswerLog:
    """An append-only JSONL answer file (its folder made if needed): locked, repaired after a crash,
    one fsync per answer."""

    def __init__(self, path: Path, keep_records: bool = False) -> None:
        """``keep_records``: keep every earlier record whole in ``records`` (else only id, thread, thread_id)."""
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as exc:
            raise BatchError(f"cannot write the output file {self.path}: {(exc.strerror or str(exc)).lower()}",
                             fix="output_path", path=str(self.path)) from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self.fd)
            raise BatchError(f"another batch is writing {self.path}", fix="output_path", path=str(self.path)) from None
        self.torn_bytes = self._repair()
        self.records = self._read(keep_records)
        latest = {str(r["id"]): r for r in self.records if "id" in r}  # a retried line's last record wins
        self.done = {key for key, r in latest.items() if not r.get("error")}
        self.failed = {key for key, r in latest.items() if r.get("error")}  # retried by the next run

    def _last_line_start(self, size: int) -> int:
        """Offset just after the last newline before ``size`` (0 when there is none), reading from the end."""
        end = size
        while end > 0:
            start = max(0, end - 65536)
            os.lseek(self.fd, start, os.SEEK_SET)
            found = os.read(self.fd, end - start).rfind(b"\n")
            if found >= 0:
                return start + found + 1
            end = start
        return 0

    def _repair(self) -> int:
        """Truncate a last line cut short by a crash (no newline, not a JSON object); return the bytes removed."""
        size = os.fstat(self.fd).st_size
        if size == 0:
            return 0
        os.lseek(self.fd, size - 1, os.SEEK_SET)
        if os.read(self.fd, 1) == b"\n":
            return 0
        keep = self._last_line_start(size)
        os.lseek(self.fd, keep, os.SEEK_SET)
        if _is_object(os.read(self.fd, size - keep)):  # a whole line that only lacks its newline (hand-made)
            os.write(self.fd, b"\n")
            return 0
        os.ftruncate(self.fd, keep)
        os.fsync(self.fd)
        return size - keep

    def _read(self, whole: bool) -> list[dict[str, Any]]:
        records = []
        with open(self.path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue  # kept in the file as it is; its id (if any) is simply not skipped
                if isinstance(record, dict):
                    records.append(record if whole else {k: record.get(k) for k in ("id", "thread", "thread_id", "error")})
        return records

    def append(self, record: dict[str, Any]) -> None:
        data = (json.dumps(record, ensure_ascii=False, default=str) + "\n").encode("utf-8")
        with self._lock:
            crash_point("batch_before_write")
            half = len(data) // 2
            os.write(self.fd, data[:half])
            crash_point("batch_torn_write")  # a test's kill -9 here leaves a torn line behind
            view = memoryview(data)[half:]
            while view:
                view = view[os.write(self.fd, view):]
            os.fsync(self.fd)
            if not record.get("error"):
                self.done.add(str(record.get("id")))
            crash_point("batch_written")

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # releases the lock
            self.fd = -1


def _is_object(data: bytes) -> bool:
    try:
        return isinstance(json.loads(data), dict)
    except ValueError:
        return False


def crash_point(point: str) -> None:
    """Let a test kill this process with SIGKILL at a named point (``FELDSPAR_CRASH_AT=point:n``)."""
    if os.environ.get("FELDSPAR_CRASH_AT"):
        from feldspar.retrieval.crashpoints import reached

        reached(point)


# ---- running -------------------------------------------------------------------------------
@dataclass
class BatchSummary:
    answered: int = 0
    failed: int = 0
    skipped: int = 0
    bad_lines: int = 0
    prompt_tokens: int = 0
    reused_tokens: int = 0
    computed_tokens: int = 0
    model_calls: int = 0
    elapsed_s: float = 0.0
    workers: int = 1

    def add(self, record: dict[str, Any]) -> None:
        if record.get("error"):
            self.failed += 1
        else:
            self.answered += 1
        usage = record.get("usage") or {}
        for key in ("prompt_tokens", "reused_tokens", "computed_tokens", "model_calls"):
            setattr(self, key, getattr(self, key) + int(usage.get(key) or 0))

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


RETRIES = 2  # more tries for an answer the server interrupted


def retryable(exc: BaseException) -> bool:
    """An error that says the answer was cut off by the server, not refused: worth asking again."""
    return bool(getattr(exc, "details", {}).get("retryable"))


def describe(exc: BaseException) -> str:
    """An error as one line for the answer file: a user error's message, else its type and message."""
    return str(exc) if isinstance(exc, AgentError) else f"{type(exc).__name__}: {exc}"


def answer_record(item: BatchItem, answer: dict[str, Any], random_weights: bool) -> dict[str, Any]:
    sources = answer.get("sources") or []
    record = {"id": item.id, "question": item.question, "line": item.line, "collection": item.collection,
              "pack": item.pack, "thread": item.thread, "thread_id": answer.get("thread_id"),
              "answer": answer.get("text", ""), "citations": [s.get("doc_id") for s in sources], "sources": sources,
              "unknown_citations": answer.get("unknown_citations") or [], "stop_reason": answer.get("stop_reason"),
              "usage": answer.get("usage") or {}, "random_weights": random_weights, "trace": answer.get("trace") or [],
              "error": None}
    if answer.get("pending_approval"):
        record["pending_approval"] = answer["pending_approval"]
    return {**item.extra, **record}


def error_record(item: BatchItem, message: str, thread_id: str | None = None) -> dict[str, Any]:
    return {**item.extra, "id": item.id, "question": item.question, "line": item.line, "collection": item.collection,
            "pack": item.pack, "thread": item.thread, "thread_id": thread_id, "answer": None, "citations": [],
            "sources": [], "usage": {}, "trace": [], "error": message}


def chains(items: list[BatchItem]) -> list[list[BatchItem]]:
    """Work units: questions sharing a thread label, in input order; every other question alone."""
    grouped: dict[str, list[BatchItem]] = {}
    units: list[list[BatchItem]] = []
    for item in items:
        if item.thread is None:
            units.append([item])
        elif item.thread in grouped:
            grouped[item.thread].append(item)
        else:
            grouped[item.thread] = [item]
            units.append(grouped[item.thread])
    return units


class BatchRunner:
    """Answers BatchItems with agents from ``agent_for(collection, pack)`` and hands each record to ``write``."""

    def __init__(self, agent_for: Callable[[str | None, str | None], Any], write: Callable[[dict[str, Any]], None],
                 *, approve: Callable[[dict[str, Any]], bool] | None = None,
                 describe_error: Callable[[BaseException], str] | None = None,
                 known_threads: dict[str, str] | None = None,
                 error_types: tuple[type[BaseException], ...] = (Exception,)):
        self.agent_for, self.write, self.approve = agent_for, write, approve
        self.describe_error, self.error_types = describe_error or describe, error_types
        self.threads: dict[str, str] = dict(known_threads or {})  # thread label -> thread id
        self._lock = threading.Lock()

    def thread_id(self, agent: Any, label: str | None) -> str | None:
        if label is None:
            return None
        if label in self.threads:
            return self.threads[label]
        store = getattr(agent, "threads", None)
        return label if store is not None and store.exists(label) else None

    def answer(self, item: BatchItem) -> dict[str, Any]:
        thread_id = None
        for attempt in range(1, RETRIES + 2):
            try:
                agent = self.agent_for(item.collection, item.pack)
                thread_id = self.thread_id(agent, item.thread)
                answer = agent.ask(item.question, thread_id, approve=self.approve)
                random = bool(getattr(agent.deps.chat_model.backend, "random_weights", False))
                record = answer_record(item, answer, random)
            except self.error_types as exc:
                if retryable(exc) and attempt <= RETRIES:
                    continue  # an interrupted answer (no finish reason): ask again
                record = error_record(item, self.describe_error(exc), thread_id)
            break
        if item.thread is not None and record.get("thread_id"):
            self.threads.setdefault(item.thread, record["thread_id"])
        with self._lock:
            self.write(record)
        return record

    def run_chain(self, chain: list[BatchItem]) -> list[dict[str, Any]]:
        return [self.answer(item) for item in chain]

    def run(self, items: list[BatchItem], workers: int = 1) -> list[dict[str, Any]]:
        units = chains(items)
        if workers <= 1 or len(units) <= 1:
            return [record for unit in units for record in self.run_chain(unit)]
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="feldspar-batch") as pool:
            return [record for records in pool.map(self.run_chain, units) for record in records]


def known_threads(records: Iterable[dict[str, Any]]) -> dict[str, str]:
    """Thread labels already given ids by an earlier (interrupted) run of the same batch."""
    return {r["thread"]: r["thread_id"] for r in records if r.get("thread") and r.get("thread_id")}


def run_batch(items: list[BatchItem], agent_for: Callable[[str | None, str | None], Any],
              write: Callable[[dict[str, Any]], None], *, done: set[str] | None = None, workers: int = 1,
              previous: Iterable[dict[str, Any]] = (), on_record: Callable[[dict[str, Any]], None] | None = None,
              **runner_options: Any) -> tuple[list[dict[str, Any]], BatchSummary]:
    """Answer every item whose id is not in ``done``; returns the new records (input order) and a summary."""
    started = time.perf_counter()
    pending = [item for item in items if item.id not in (done or set())]
    summary = BatchSummary(skipped=len(items) - len(pending), workers=max(1, workers))

    def write_and_count(record: dict[str, Any]) -> None:
        write(record)
        summary.add(record)
        if on_record is not None:
            on_record(record)

    runner = BatchRunner(agent_for, write_and_count, known_threads=known_threads(previous), **runner_options)
    records = runner.run(pending, workers)
    order = {item.id: i for i, item in enumerate(pending)}
    records.sort(key=lambda r: order[r["id"]])
    summary.elapsed_s = round(time.perf_counter() - started, 3)
    return records, summary
