"""Ingest folders into one collection: scan, diff with the manifest, parse, chunk, embed, write.

Hot path: an unchanged file costs one stat and a dict lookup (the manifest rows of a
root are read in one query); a file whose size/mtime moved is hashed and, if its bytes
are the same, only its stat is updated. New and changed files are parsed in limited
worker processes, chunked, and embedded in batches that span files.

Crash safety (kill -9 anywhere converges on re-run): for each batch the manifest first
announces the chunk ids about to be written, then chunks are upserted (deterministic
ids), then stale ids of the same files are deleted, and only then are the rows
committed. Rows with announced ids are always re-processed, and their announced ids
count as stale. Deleted files are pruned store-first, manifest-second. One writer per
store (a file lock); Ctrl-C finishes the current batch and stops.

This module does not know how text is extracted, how search works, or about the CLI.
"""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Protocol

from filelock import FileLock, Timeout

from feldspar.retrieval.chunking import Chunk, Chunker
from feldspar.retrieval.embeddings import Embedder
from feldspar.retrieval.errors import InvalidSource, StoreBusy
from feldspar.retrieval.loaders import load_file
from feldspar.retrieval.manifest import FileRecord, Manifest
from feldspar.retrieval.sandbox import ParserPool
from feldspar.retrieval.scan import ScannedFile, scan_entry, scan_root, sha256_file
from feldspar.retrieval.store import ChromaStore, ChunkCollection


@dataclass
class IngestOptions:
    chunk_tokens: int = 256
    chunk_overlap: int = 32
    max_file_bytes: int = 50 * 1024**2
    parse_timeout_s: float = 60.0
    parse_memory_bytes: int | None = 2 * 1024**3
    parse_workers: int = 2
    flush_chunks: int = 256
    library_warnings: bool = False  # parser subprocesses log their libraries' warnings (pypdf…)


class Progress(Protocol):
    def start(self, total: int, label: str) -> None: ...
    def advance(self, n: int = 1) -> None: ...


class _NoProgress:
    def start(self, total: int, label: str) -> None:
        pass

    def advance(self, n: int = 1) -> None:
        pass


@dataclass
class IngestSummary:
    indexed: int = 0
    unchanged: int = 0
    updated: int = 0
    removed: int = 0
    skipped: int = 0
    failed: int = 0
    chunks_written: int = 0
    interrupted: bool = False
    seconds: float = 0.0
    embed_seconds: float = 0.0
    problems: list[dict] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in ("indexed", "unchanged", "updated", "removed", "skipped", "failed")}


@dataclass
class _Work:
    """One file's outcome, waiting in the write batch."""

    record: FileRecord
    chunks: list[Chunk]
    old_ids: set[str]
    is_new: bool


def chunk_id(root: str, key: str, chunk: Chunk) -> str:
    raw = f"{root}\x00{key}\x00{chunk.index}\x00{chunk.content_hash}".encode("utf-8", "surrogatepass")
    return hashlib.sha256(raw).hexdigest()[:32]


def resolve_target(path: str | Path) -> tuple[str, str | None]:
    """``(real root directory, single file or None)`` for an ingest argument."""
    given = Path(path).expanduser()
    if not given.exists():
        raise InvalidSource(f"no such file or directory: {given}")
    real = os.path.realpath(given)
    if os.path.isdir(real):
        return real, None
    return os.path.dirname(real), real


@contextmanager
def single_writer(lock_path: Path, label: str) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_path), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise StoreBusy(f"another ingest is already writing to {label}; wait for it to finish "
                        f"(lock: {lock_path})") from None
    try:
        yield
    finally:
        lock.release()


@contextmanager
def stop_on_interrupt() -> Iterator[threading.Event]:
    """The first Ctrl-C sets the event (stop after this batch); the second one interrupts."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum, frame):  # noqa: ARG001
        stop.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


class Ingestor:
    def __init__(self, store: ChromaStore, manifest: Manifest, embedder: Embedder,
                 options: IngestOptions, lock_path: Path) -> None:
        self.store = store
        self.manifest = manifest
        self.embedder = embedder
        self.options = options
        self.lock_path = lock_path
        self._chunker: Chunker | None = None

    @property
    def chunker(self) -> Chunker:
        if self._chunker is None:
            tokens = min(self.options.chunk_tokens, self.embedder.max_tokens)
            self._chunker = Chunker(self.embedder.token_len, tokens, self.options.chunk_overlap)
        return self._chunker

    def ingest(self, paths: list[str | Path], collection: str, prune: bool = True, reindex: bool = False,
               progress: Progress | None = None) -> IngestSummary:
        targets = [resolve_target(p) for p in paths]
        started, embed_before = time.perf_counter(), self.embedder.seconds
        with single_writer(self.lock_path, self.store.location.label):
            if reindex:
                self.store.drop(collection)
                self.manifest.drop_collection(collection)
            run = _Run(self, self.store.open(collection, self.embedder.name, create=True), progress or _NoProgress())
            with stop_on_interrupt() as stop, ParserPool(self.options.parse_workers, self.options.parse_timeout_s,
                                                         self.options.parse_memory_bytes,
                                                         self.options.library_warnings) as pool:
                for root, only in targets:
                    if not run.sync_root(root, only, prune and only is None, pool, stop):
                        break
            if not run.summary.interrupted:
                self.manifest.set_chunking(collection, run.chunking_key)
        run.summary.seconds = time.perf_counter() - started
        run.summary.embed_seconds = self.embedder.seconds - embed_before
        return run.summary


class _Run:
    """The state of one ingest into one collection."""

    def __init__(self, ingestor: Ingestor, collection: ChunkCollection, progress: Progress) -> None:
        self.ingestor = ingestor
        self.manifest = ingestor.manifest
        self.collection = collection
        self.name = collection.name
        self.progress = progress
        self.summary = IngestSummary()
        options = ingestor.options
        self.chunking_key = f"{ingestor.embedder.name}|{options.chunk_tokens}|{options.chunk_overlap}"
        previous = self.manifest.chunking(self.name)
        self.force = bool(previous) and previous != self.chunking_key
        self.batch: list[_Work] = []

    # ---- planning ----------------------------------------------------------------------
    def sync_root(self, root: str, only: str | None, prune: bool, pool: ParserPool,
                  stop: threading.Event) -> bool:
        """Bring ``root`` (or one file in it) up to date; False when interrupted."""
        max_bytes = self.ingestor.options.max_file_bytes
        scanned = [scan_entry(root, only, max_bytes)] if only else scan_root(root, max_bytes)
        known = self.manifest.files_under(self.name, root)
        if prune:
            present = {f.key for f in scanned}
            self._remove([r for key, r in known.items() if key not in present])
        self.progress.start(len(scanned), os.path.basename(root) or root)
        to_parse = [f for f in scanned if self._needs_work(root, f, known.get(f.key))]
        tasks = ((f, load_file, (f.path, root, max_bytes)) for f in to_parse)
        for scanned_file, outcome in pool.run(tasks):
            self._add(self._parsed(root, scanned_file, known.get(scanned_file.key), outcome))
            if stop.is_set():
                break
        self._flush()
        self.summary.interrupted = stop.is_set()
        return not stop.is_set()

    def _needs_work(self, root: str, scanned: ScannedFile, known: FileRecord | None) -> bool:
        """Decide a file without parsing; queue skips directly. True means: parse it."""
        clean = known is not None and known.pending_ids is None and not self.force
        if clean and known.size == scanned.size and known.mtime_ns == scanned.mtime_ns:
            self._unchanged()
            return False
        if scanned.skip_reason:
            self._add(self._final(root, scanned, known, "skipped", scanned.skip_reason, None, []))
            return False
        try:
            scanned_sha = sha256_file(scanned.path)
        except OSError as exc:
            self._add(self._final(root, scanned, known, "failed", f"cannot read: {exc.strerror}", None, []))
            return False
        if clean and known.sha256 == scanned_sha:
            self.manifest.touch(self.name, [self._record(root, scanned, known.status, known.reason,
                                                         scanned_sha, known.chunk_ids)])
            self._unchanged()
            return False
        scanned.sha256 = scanned_sha
        return True

    def _unchanged(self) -> None:
        self.summary.unchanged += 1
        self.progress.advance(1)

    def _parsed(self, root: str, scanned: ScannedFile, known: FileRecord | None, outcome) -> _Work:
        sha = scanned.sha256
        if outcome.status != "ok":
            return self._final(root, scanned, known, outcome.status, outcome.reason, sha, [])
        chunks = self.ingestor.chunker.chunk(outcome.value)
        if not chunks:
            return self._final(root, scanned, known, "skipped", "no extractable text", sha, [])
        return self._final(root, scanned, known, "indexed", "", sha, chunks)

    def _final(self, root: str, scanned: ScannedFile, known: FileRecord | None, status: str, reason: str,
               sha: str | None, chunks: list[Chunk]) -> _Work:
        ids = [chunk_id(root, scanned.key, c) for c in chunks]
        record = self._record(root, scanned, status, reason, sha, ids)
        return _Work(record, chunks, known.known_ids if known else set(), known is None or known.status == "pending")

    @staticmethod
    def _record(root: str, scanned: ScannedFile, status: str, reason: str, sha: str | None,
                ids: list[str]) -> FileRecord:
        return FileRecord(root, scanned.key, scanned.size, scanned.mtime_ns, sha, status, reason, ids)

    # ---- writing -----------------------------------------------------------------------
    def _add(self, work: _Work) -> None:
        self.batch.append(work)
        if sum(len(w.chunks) for w in self.batch) >= self.ingestor.options.flush_chunks:
            self._flush()

    def _flush(self) -> None:
        """Announce, embed + upsert, delete stale, commit: safe to kill between any two."""
        batch, self.batch = self.batch, []
        if not batch:
            return
        self.manifest.announce(self.name, [_announced(w) for w in batch])
        chunks = [(w, c, i) for w in batch for c, i in zip(w.chunks, w.record.chunk_ids)]
        if chunks:
            texts = [c.text for _, c, _ in chunks]
            vectors = self.ingestor.embedder.embed(texts)
            metadatas = [_metadata(w.record, c) for w, c, _ in chunks]
            self.collection.upsert([i for _, _, i in chunks], vectors, texts, metadatas)
        stale = [i for w in batch for i in sorted(w.old_ids - set(w.record.chunk_ids))]
        self.collection.delete(stale)
        self.manifest.commit(self.name, [w.record for w in batch])
        self._count(batch, len(chunks))

    def _count(self, batch: list[_Work], chunks_written: int) -> None:
        self.summary.chunks_written += chunks_written
        for work in batch:
            record = work.record
            if record.status == "indexed":
                self.summary.indexed += work.is_new
                self.summary.updated += not work.is_new
            else:
                setattr(self.summary, record.status, getattr(self.summary, record.status) + 1)
                self.summary.problems.append({"path": record.path, "status": record.status, "reason": record.reason})
        self.progress.advance(len(batch))

    def _remove(self, gone: list[FileRecord]) -> None:
        if not gone:
            return
        self.collection.delete(sorted(set().union(*(r.known_ids for r in gone))))
        self.manifest.forget(self.name, gone)
        self.summary.removed += len(gone)


def _announced(work: _Work) -> FileRecord:
    record = work.record
    return FileRecord(record.root, record.path, record.size, record.mtime_ns, record.sha256, "pending",
                      pending_ids=list(record.chunk_ids))


def _metadata(record: FileRecord, chunk: Chunk) -> dict:
    meta = {"path": record.path, "root": record.root, "start": chunk.start, "end": chunk.end,
            "heading": chunk.heading, "chunk": chunk.index, "content_hash": chunk.content_hash,
            "ext": os.path.splitext(record.path)[1].lower().lstrip(".")}
    if chunk.page is not None:
        meta["page"] = chunk.page
    return meta
