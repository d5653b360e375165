"""The SQLite manifest: one row per source file and collection, plus collection records.

A file row holds path (relative to its root), size, mtime, sha256, status
(indexed/skipped/failed) with a reason and failed ``attempts``, the chunk ids written for it, and ``pending``
ids announced before a write (so a crash never leaves unknown chunks behind). Each
collection keeps its chunking settings and a ``generation`` number bumped around every
write, which keys the on-disk BM25 cache. ``rates`` remembers each embedder's last
measured chunks/s, for estimates before a big file starts.

This module does not know about Chroma, files on disk or embeddings; it only stores
what ``ingest`` tells it, one short transaction at a time (WAL, durable across kill -9).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Literal, get_args

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    collection TEXT NOT NULL, root TEXT NOT NULL, path TEXT NOT NULL,
    size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, sha256 TEXT,
    status TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '',
    chunk_ids TEXT NOT NULL DEFAULT '[]', pending_ids TEXT,
    updated_at REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (collection, root, path)
);
CREATE TABLE IF NOT EXISTS collections (
    name TEXT PRIMARY KEY, chunking TEXT NOT NULL DEFAULT '', generation INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS rates (embedder TEXT PRIMARY KEY, chunks_per_s REAL NOT NULL);
CREATE TABLE IF NOT EXISTS swaps (name TEXT PRIMARY KEY, staging TEXT NOT NULL);
"""
FileStatus = Literal["indexed", "skipped", "failed", "pending"]
FILE_STATUSES: tuple[str, ...] = get_args(FileStatus)


@dataclass
class FileRecord:
    root: str
    path: str
    size: int
    mtime_ns: int
    sha256: str | None
    status: str
    reason: str = ""
    chunk_ids: list[str] = field(default_factory=list)
    pending_ids: list[str] | None = None
    attempts: int = 0  # failed runs in a row on a transient cause (a parse timeout), for retries

    @property
    def known_ids(self) -> set[str]:
        """Every chunk id this file may have in the store (written or announced)."""
        return set(self.chunk_ids) | set(self.pending_ids or ())


class Manifest:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # One connection shared by the service's threads (concurrent searches read the generation);
        # SQLite is built serialized here, and writes run in one transaction at a time under the lock.
        self._db = sqlite3.connect(str(path), timeout=30, isolation_level=None, check_same_thread=False)
        self._lock = threading.RLock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(files)")}
        if "attempts" not in columns:  # a manifest from before retries
            self._db.execute("ALTER TABLE files ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0")

    def close(self) -> None:
        self._db.close()

    def _transaction(self):
        return _Transaction(self._db, self._lock)

    def _rows(self, query: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(query, args).fetchall()

    # ---- collections -------------------------------------------------------------------
    def generation(self, collection: str) -> int:
        rows = self._rows("SELECT generation FROM collections WHERE name=?", (collection,))
        return int(rows[0][0]) if rows else 0

    def chunking(self, collection: str) -> str | None:
        rows = self._rows("SELECT chunking FROM collections WHERE name=?", (collection,))
        return rows[0][0] if rows else None

    def set_chunking(self, collection: str, chunking: str) -> None:
        with self._transaction():
            self._ensure(collection)
            self._db.execute("UPDATE collections SET chunking=? WHERE name=?", (chunking, collection))

    def _ensure(self, collection: str) -> None:
        self._db.execute("INSERT OR IGNORE INTO collections(name) VALUES (?)", (collection,))

    def _bump(self, collection: str) -> None:
        self._ensure(collection)
        self._db.execute("UPDATE collections SET generation=generation+1 WHERE name=?", (collection,))

    def mark_changed(self, collection: str) -> None:
        """Invalidate caches of a collection written outside ``announce``/``commit``."""
        with self._transaction():
            self._bump(collection)

    def drop_collection(self, collection: str) -> None:
        with self._transaction():
            self._db.execute("DELETE FROM files WHERE collection=?", (collection,))
            self._bump(collection)
            self._db.execute("UPDATE collections SET chunking='' WHERE name=?", (collection,))

    # ---- reindex swaps (see retrieval/reindex.py) ----------------------------------------
    def mark_swap(self, name: str, staging: str) -> None:
        """``staging`` is complete: it replaces ``name`` (durably recorded before the store moves)."""
        with self._transaction():
            self._db.execute("INSERT OR REPLACE INTO swaps VALUES (?, ?)", (name, staging))

    def swap_of(self, name: str) -> str | None:
        rows = self._rows("SELECT staging FROM swaps WHERE name=?", (name,))
        return rows[0][0] if rows else None

    def finish_swap(self, name: str, staging: str) -> None:
        """In one transaction: ``staging``'s rows and chunking become ``name``'s; the swap is done."""
        with self._transaction():
            self._db.execute("DELETE FROM files WHERE collection=?", (name,))
            self._db.execute("UPDATE files SET collection=? WHERE collection=?", (name, staging))
            chunking = self._db.execute("SELECT chunking FROM collections WHERE name=?", (staging,)).fetchall()
            self._bump(name)
            self._db.execute("UPDATE collections SET chunking=? WHERE name=?",
                             (chunking[0][0] if chunking else "", name))
            self._db.execute("DELETE FROM collections WHERE name=?", (staging,))
            self._db.execute("DELETE FROM swaps WHERE name=?", (name,))

    def pending_swaps(self) -> list[tuple[str, str]]:
        return [(name, staging) for name, staging in self._rows("SELECT name, staging FROM swaps")]

    def sources_by_collection(self) -> dict[str, list[tuple[str, str]]]:
        """``collection -> [(root, path)]`` of every file row: what a rebuilt store must index again."""
        found: dict[str, list[tuple[str, str]]] = {}
        query = "SELECT collection, root, path FROM files ORDER BY collection, root, path"
        for collection, root, path in self._rows(query):
            found.setdefault(collection, []).append((root, path))
        return found

    def rate(self, embedder: str) -> float | None:
        rows = self._rows("SELECT chunks_per_s FROM rates WHERE embedder=?", (embedder,))
        return float(rows[0][0]) if rows else None

    def set_rate(self, embedder: str, chunks_per_s: float) -> None:
        with self._transaction():
            self._db.execute("INSERT OR REPLACE INTO rates VALUES (?, ?)", (embedder, chunks_per_s))

    # ---- files -------------------------------------------------------------------------
    def files_under(self, collection: str, root: str) -> dict[str, FileRecord]:
        """All rows of ``root`` in ``collection`` keyed by path: one query."""
        rows = self._rows("SELECT root, path, size, mtime_ns, sha256, status, reason, chunk_ids, pending_ids, "
                          "attempts FROM files WHERE collection=? AND root=?", (collection, root))
        return {row[1]: _record(row) for row in rows}

    def announce(self, collection: str, records: Iterable[FileRecord]) -> None:
        """Write-ahead: remember ids about to be written, so a crash cannot orphan them."""
        with self._transaction():
            self._bump(collection)
            for record in records:
                self._db.execute(
                    "INSERT INTO files(collection, root, path, size, mtime_ns, sha256, status, chunk_ids, "
                    "pending_ids, updated_at) VALUES (?,?,?,-1,-1,NULL,'pending','[]',?,?) "
                    "ON CONFLICT(collection, root, path) DO UPDATE SET pending_ids=excluded.pending_ids",
                    (collection, record.root, record.path, json.dumps(record.pending_ids or []), time.time()))

    def commit(self, collection: str, records: Iterable[FileRecord]) -> None:
        """Final state of files whose chunks are written and stale chunks deleted."""
        with self._transaction():
            self._bump(collection)
            for r in records:
                self._db.execute(
                    "INSERT OR REPLACE INTO files(collection, root, path, size, mtime_ns, sha256, status, reason, "
                    "chunk_ids, pending_ids, updated_at, attempts) VALUES (?,?,?,?,?,?,?,?,?,NULL,?,?)",
                    (collection, r.root, r.path, r.size, r.mtime_ns, r.sha256, r.status, r.reason,
                     json.dumps(r.chunk_ids), time.time(), r.attempts))

    def touch(self, collection: str, records: Iterable[FileRecord]) -> None:
        """Content unchanged, only size/mtime moved: update the stat fields."""
        with self._transaction():
            for r in records:
                self._db.execute("UPDATE files SET size=?, mtime_ns=? WHERE collection=? AND root=? AND path=?",
                                 (r.size, r.mtime_ns, collection, r.root, r.path))

    def forget(self, collection: str, records: Iterable[FileRecord]) -> None:
        with self._transaction():
            self._bump(collection)
            for r in records:
                self._db.execute("DELETE FROM files WHERE collection=? AND root=? AND path=?",
                                 (collection, r.root, r.path))

    def sources(self, collection: str, status: str | None = None) -> list[dict]:
        query = ("SELECT root, path, size, status, reason, chunk_ids, updated_at FROM files "
                 "WHERE collection=?" + (" AND status=?" if status else "") + " ORDER BY root, path")
        args = (collection, status) if status else (collection,)
        return [{"root": root, "path": path, "size": size, "status": st, "reason": reason,
                 "chunks": len(json.loads(ids)), "updated_at": updated}
                for root, path, size, st, reason, ids, updated in self._rows(query, args)]

    def status_counts(self) -> dict[str, dict[str, int]]:
        counts: dict[str, dict[str, int]] = {}
        for collection, status, n in self._rows(
                "SELECT collection, status, COUNT(*) FROM files GROUP BY collection, status"):
            counts.setdefault(collection, {})[status] = n
        return counts


def _record(row: tuple) -> FileRecord:
    root, path, size, mtime_ns, sha, status, reason, ids, pending, attempts = row
    return FileRecord(root, path, size, mtime_ns, sha, status, reason, json.loads(ids),
                      None if pending is None else json.loads(pending), attempts)


class _Transaction:
    def __init__(self, db: sqlite3.Connection, lock: threading.RLock) -> None:
        self._db = db
        self._lock = lock

    def __enter__(self) -> None:
        self._lock.acquire()
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._lock.release()
            raise

    def __exit__(self, exc_type, *rest: object) -> None:
        try:
            self._db.execute("ROLLBACK" if exc_type else "COMMIT")
        finally:
            self._lock.release()
