"""Persistent threads: LangGraph's SqliteSaver in ``threads.sqlite`` plus a small index table.

``ThreadStore(path)`` keeps them in SQLite; ``ThreadStore.postgres(url)`` keeps the same
checkpoints and index in PostgreSQL (LangGraph's PostgresSaver, agents/threads_postgres.py),
for several processes or machines at once. Both answer the same methods.

The checkpointer holds every step of every thread (messages, trace, answers), written
after each completed step, so a process killed mid-turn leaves its thread at the last
completed step. The index (``feldspar_threads``) names each thread: title (first
question), created/updated times, turns, model, collection or pack. Knows SQLite and
LangGraph checkpoints; nothing of models or retrieval.
"""

from __future__ import annotations

import sqlite3
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from langchain_core.messages import AIMessage, AnyMessage, ToolMessage
from langgraph.checkpoint.sqlite import SqliteSaver

from feldspar.agents.errors import UnknownThread
from feldspar.agents.steps import current_steps

INDEX = """CREATE TABLE IF NOT EXISTS feldspar_threads (
    thread_id TEXT PRIMARY KEY, title TEXT, created TEXT, updated TEXT, turns INTEGER DEFAULT 0,
    model TEXT, collection TEXT, pack TEXT)"""


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def new_thread_id() -> str:
    return uuid.uuid4().hex[:12]


def message_dict(message: AnyMessage) -> dict[str, Any]:
    role = {"human": "user", "ai": "assistant", "tool": "tool", "system": "system"}.get(message.type, message.type)
    data: dict[str, Any] = {"role": role, "content": message.content}
    if isinstance(message, AIMessage) and message.tool_calls:
        data["tool_calls"] = [{"id": c.get("id"), "name": c["name"], "args": c.get("args")} for c in message.tool_calls]
    if isinstance(message, ToolMessage):
        data.update(tool_call_id=message.tool_call_id, name=message.name)
    return data


class ThreadStore:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.where = str(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(str(self.path), check_same_thread=False)
        self.saver = SqliteSaver(self.conn)
        self.saver.setup()
        self._connections = [self.conn]
        self._placeholder = "?"
        self._execute(INDEX)

    @classmethod
    def postgres(cls, url: str) -> "ThreadStore":
        """The same store in PostgreSQL at ``url`` (checkpoints by LangGraph's PostgresSaver)."""
        from feldspar.agents.threads_postgres import connect_postgres, redact

        store = cls.__new__(cls)
        store.path, store.where = None, redact(url)
        store.conn, saver_conn, store.saver = connect_postgres(url)
        store._connections = [store.conn, saver_conn]
        store._placeholder = "%s"
        store._execute(INDEX)
        return store

    def close(self) -> None:
        for conn in self._connections:
            conn.close()

    def _execute(self, sql: str, params: tuple = ()):
        """Run one statement on the index connection and commit it (PostgreSQL: autocommit)."""
        cursor = self.conn.execute(sql.replace("?", self._placeholder), params)
        if isinstance(self.conn, sqlite3.Connection):
            self.conn.commit()
        return cursor

    # ---- index -------------------------------------------------------------------------
    def exists(self, thread_id: str) -> bool:
        return self._execute("SELECT 1 FROM feldspar_threads WHERE thread_id = ?", (thread_id,)).fetchone() is not None

    def require(self, thread_id: str) -> None:
        if not self.exists(thread_id):
            raise UnknownThread(f"no thread {thread_id!r} in {self.where}", fix="list_threads")

    def resolve(self, thread_id: str) -> str:
        """The full id of ``thread_id`` or of the one thread whose id starts with it."""
        if self.exists(thread_id):
            return thread_id
        matches = [row["thread_id"] for row in self.list() if row["thread_id"].startswith(thread_id)] if thread_id else []
        if len(matches) > 1:
            raise UnknownThread(f"{thread_id!r} starts {len(matches)} thread ids ({', '.join(matches[:4])}); "
                                "give more of the id", fix="list_threads")
        if not matches:
            self.require(thread_id)
        return matches[0]

    def touch(self, thread_id: str, title: str, **meta: Any) -> None:
        """Create or update the index row after a turn (title is kept from the first question)."""
        self._execute(
            "INSERT INTO feldspar_threads (thread_id, title, created, updated, turns, model, collection, pack) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(thread_id) DO UPDATE SET updated = excluded.updated, "
            "turns = excluded.turns, model = excluded.model, collection = excluded.collection, pack = excluded.pack",
            (thread_id, title[:200], now(), now(), meta.get("turns", 0), meta.get("model"),
             meta.get("collection"), meta.get("pack")))

    def rename(self, thread_id: str, title: str) -> None:
        self.require(thread_id)
        self._execute("UPDATE feldspar_threads SET title = ? WHERE thread_id = ?", (title[:200], thread_id))

    def list(self) -> list[dict[str, Any]]:
        cursor = self._execute("SELECT thread_id, title, created, updated, turns, model, collection, pack "
                               "FROM feldspar_threads ORDER BY updated DESC, thread_id")
        columns = [getattr(c, "name", None) or c[0] for c in cursor.description]
        return [dict(zip(columns, row)) for row in cursor.fetchall()]

    def meta(self, thread_id: str) -> dict[str, Any]:
        self.require(thread_id)
        return next(row for row in self.list() if row["thread_id"] == thread_id)

    # ---- content ---------------------------------------------------------------------
    def values(self, thread_id: str) -> dict[str, Any]:
        """The thread's latest checkpointed state (messages, trace, answer …); the trace's steps under
        today's names (agents/steps.py), whichever version saved them."""
        self.require(thread_id)
        saved = self.saver.get_tuple({"configurable": {"thread_id": thread_id}})
        values = dict(saved.checkpoint.get("channel_values", {})) if saved else {}
        if "trace" in values:
            values["trace"] = current_steps(values["trace"])
        return values

    def export(self, thread_id: str) -> dict[str, Any]:
        values = self.values(thread_id)
        return {"thread": self.meta(thread_id), "messages": [message_dict(m) for m in values.get("messages", [])],
                "summary": values.get("summary"), "summary_upto": values.get("summary_upto", 0),
                "last_answer": values.get("answer"), "passages": values.get("passages", {}),
                "trace": values.get("trace", [])}

    def remove(self, thread_id: str) -> None:
        self.require(thread_id)
        self.saver.delete_thread(thread_id)
        self._execute("DELETE FROM feldspar_threads WHERE thread_id = ?", (thread_id,))
