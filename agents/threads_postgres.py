"""Threads in PostgreSQL: LangGraph's PostgresSaver plus a connection for Feldspar's thread index.

``connect_postgres(url)`` opens two psycopg connections to the server at ``url`` (a
``postgresql://`` URL or a libpq conninfo string): one for the checkpointer, which needs
autocommit and dict rows, and one for the ``feldspar_threads`` index, so the two never
share a cursor. Both sides run their schema setup (idempotent). Several Feldspar
processes on several machines may share one database; each step is written when it
completes, as with SQLite. A server that cannot be reached is one ``AgentError`` with
the address (password removed). Knows psycopg and LangGraph's saver; nothing of the app.
"""

from __future__ import annotations

import re
from typing import Any

from feldspar.agents.errors import AgentError


def redact(url: str) -> str:
    """``url`` without its password (URL form ``user:secret@`` or conninfo ``password=…``)."""
    url = re.sub(r"(//[^:/@]*):[^@/]*@", r"\1:***@", url)
    return re.sub(r"(password\s*=\s*)\S+", r"\1***", url)


class ThreadDatabaseError(AgentError):
    """The PostgreSQL server holding the threads cannot be reached or used."""


def connect_postgres(url: str) -> tuple[Any, Any, Any]:
    """(index connection, saver connection, PostgresSaver), schema ready."""
    import psycopg
    from langgraph.checkpoint.postgres import PostgresSaver
    from psycopg.rows import dict_row

    try:
        saver_conn = psycopg.connect(url, autocommit=True, prepare_threshold=0, row_factory=dict_row, connect_timeout=10)
        index_conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        reason = " ".join(str(exc).split())[:200]
        raise ThreadDatabaseError(f"cannot connect to the thread database {redact(url)} ({reason})",
                                  fix="postgres_url", url=redact(url)) from None
    saver = PostgresSaver(saver_conn)
    saver.setup()
    return index_conn, saver_conn, saver
