"""Write chunks to the store in bounded batches, crash-safe, as files stream in.

A ``FileJob`` is one file being (re)indexed; its chunks arrive one at a time (a big file
spans many batches) and it ends with ``finish``. Every ``flush_chunks`` chunks the batch
is written: (1) the manifest announces the ids about to be written for each file in the
batch (added to the file's pending ids, so a crash cannot orphan them), (2) ids already
in the store with the same metadata are skipped (a resumed file is not embedded again),
the rest are embedded ``embed_batch`` at a time (each with its context header before
its text; the stored text is the exact span) and upserted, checking the stop event
between embedding batches, (3) for each file whose chunks are now all written, stale ids
of earlier versions are deleted and (4) its final row is committed. kill -9 between any
two steps converges on re-run. A file that changed or vanished while it was read fails
with a reason and keeps no chunks. A store that refuses writes (a full disk) fails the
files of that batch and all later ones with the reason, without embedding them.

This module does not know about parsing, scanning, progress bars or the CLI.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Callable

from feldspar.retrieval import crashpoints
from feldspar.retrieval.chunking import Chunk
from feldspar.retrieval.context import embedded_text
from feldspar.retrieval.embeddings import Embedder
from feldspar.retrieval.manifest import FileRecord, Manifest
from feldspar.retrieval.store import ChunkCollection


@dataclass(eq=False)
class FileJob:
    """One file on its way into the store."""

    record: FileRecord  # the row to commit; ``chunk_ids`` grows as chunks arrive
    old_ids: set[str]  # ids the store may hold for this file from before (written or announced)
    old_pending: list[str]  # ids an earlier, killed run announced
    is_new: bool
    real_path: str = ""
    text_chars: int = 0  # length of the extracted text, for progress by bytes
    announced: list[str] = field(default_factory=list)
    finished: bool = False
    reported: bool = False  # counted as failed because the store refused writes
    written_bytes: int = 0

    def progress_bytes(self, chunk_end: int) -> int:
        """Bytes of the file done once text up to ``chunk_end`` is written (never goes back)."""
        if not self.text_chars:
            return 0
        done = min(self.record.size, self.record.size * chunk_end // self.text_chars)
        step, self.written_bytes = max(0, done - self.written_bytes), max(done, self.written_bytes)
        return step


@dataclass
class Written:
    """What a flush did, for the caller's counts and progress."""

    chunks_written: int = 0
    chunks_reused: int = 0
    bytes_done: int = 0
    committed: list[FileJob] = field(default_factory=list)
    uncommitted: list[FileJob] = field(default_factory=list)  # failed: the store refused the write
    complete: bool = True  # False: stopped between embedding batches; its chunks are stored, no file committed


def chunk_metadata(record: FileRecord, chunk: Chunk) -> dict:
    meta = {"path": record.path, "root": record.root, "start": chunk.start, "end": chunk.end,
            "heading": chunk.heading, "chunk": chunk.index, "content_hash": chunk.content_hash,
            "ext": os.path.splitext(record.path)[1].lower().lstrip(".")}
    if chunk.page is not None:
        meta["page"] = chunk.page
    if chunk.line_start is not None:
        meta["line_start"], meta["line_end"] = chunk.line_start, chunk.line_end
    if chunk.context:  # the header embedded before the text, and the title (a BM25 field)
        meta["context"], meta["title"] = chunk.context, chunk.title
    return meta


class BatchWriter:
    def __init__(self, manifest: Manifest, collection: ChunkCollection, embedder: Embedder, flush_chunks: int,
                 stop: threading.Event, on_written: Callable[[Written], None],
                 on_embedded: Callable[[int, int], None] | None = None) -> None:
        """``on_written(Written)`` after every flush (also one a stop cut short); ``on_embedded(chunks,
        bytes)`` after every embedding batch stored, and for chunks found already stored."""
        self.manifest = manifest
        self.collection = collection
        self.embedder = embedder
        self.flush_chunks = max(1, flush_chunks)
        self.stop = stop
        self.on_written = on_written
        self.on_embedded = on_embedded or (lambda chunks, bytes_done: None)
        self.buffer: list[tuple[FileJob, Chunk, str]] = []
        self.waiting: list[FileJob] = []  # jobs with chunks in the buffer or finished since the last flush
        self.store_failure: str | None = None

    # ---- feeding -----------------------------------------------------------------------
    def add(self, job: FileJob, chunk: Chunk, chunk_id: str) -> None:
        job.record.chunk_ids.append(chunk_id)
        self._wait_for(job)
        self.buffer.append((job, chunk, chunk_id))
        if len(self.buffer) >= self.flush_chunks:
            self.flush()

    def finish(self, job: FileJob) -> None:
        """All chunks of ``job`` were added; it commits with the flush that writes its last one."""
        if job.reported:
            return
        job.finished = True
        if job.record.status == "indexed" and job.real_path:
            self._check_unchanged(job)
        self._wait_for(job)

    def _wait_for(self, job: FileJob) -> None:
        if job.reported:
            return
        if not self.waiting or self.waiting[-1] is not job:
            if job not in self.waiting:
                self.waiting.append(job)

    def _check_unchanged(self, job: FileJob) -> None:
        try:
            stat = os.stat(job.real_path)
        except OSError:
            self._fail(job, "deleted while being read; nothing kept")
            return
        if (stat.st_size, stat.st_mtime_ns) != (job.record.size, job.record.mtime_ns):
            self._fail(job, "changed while being read; it is read again on the next run")

    def _fail(self, job: FileJob, reason: str) -> None:
        job.record.status, job.record.reason, job.record.chunk_ids = "failed", reason, []
        self.buffer = [item for item in self.buffer if item[0] is not job]

    # ---- writing -----------------------------------------------------------------------
    def flush(self) -> bool:
        """Write the batch; False when stopped before it was complete (nothing committed)."""
        batch, self.buffer = self.buffer, []
        jobs = self.waiting
        self.waiting = [job for job in jobs if not job.finished]
        if not jobs:
            return True
        done = Written()
        if not self.store_failure:
            self.manifest.announce(self.collection.name, [self._announcement(job, batch) for job in jobs])
            crashpoints.reached("announced")
            if batch and not self._write(batch, done):
                done.complete = False
                self.on_written(done)  # the chunks it stored count: the next run reuses them
                return False
        finished = [job for job in jobs if job.finished]
        if self.store_failure or not self._commit(finished):
            return self._report_unwritten(jobs, done)
        done.committed = finished
        done.bytes_done += sum(job.record.size - job.written_bytes for job in finished)
        self.on_written(done)
        return True

    def _report_unwritten(self, jobs: list[FileJob], done: Written) -> bool:
        """The store refused writes: these files fail; their rows stay as they were (or pending,
        to be repaired by the next run), so nothing committed before is lost."""
        jobs = [job for job in jobs if not job.reported]
        for job in jobs:
            job.record.status, job.record.reason = "failed", self.store_failure or ""
            job.finished = job.reported = True
        self.waiting = []
        done.committed, done.uncommitted = [], jobs
        self.on_written(done)
        return True

    def _announcement(self, job: FileJob, batch: list[tuple[FileJob, Chunk, str]]) -> FileRecord:
        job.announced += [chunk_id for owner, _, chunk_id in batch if owner is job]
        record = job.record
        pending = sorted(set(job.old_pending) | set(job.announced))
        return FileRecord(record.root, record.path, record.size, record.mtime_ns, record.sha256, "pending",
                          pending_ids=pending)

    def _write(self, batch: list[tuple[FileJob, Chunk, str]], done: Written) -> bool:
        metadatas = [chunk_metadata(job.record, chunk) for job, chunk, _ in batch]
        stored = self.collection.stored_metadata([chunk_id for _, _, chunk_id in batch])
        todo = [i for i, (_, _, chunk_id) in enumerate(batch) if stored.get(chunk_id) != metadatas[i]]
        done.chunks_reused = len(batch) - len(todo)
        if done.chunks_reused:
            reused = set(range(len(batch))) - set(todo)
            self.on_embedded(0, sum(batch[i][0].progress_bytes(batch[i][1].end) for i in sorted(reused)))
        step = max(1, self.embedder.batch_size)
        for at in range(0, len(todo), step):
            part = todo[at : at + step]
            texts = [batch[i][1].text for i in part]  # stored: the exact source span
            vectors = self.embedder.embed([embedded_text(batch[i][1].context, batch[i][1].text) for i in part])
            if not self._store(lambda: self.collection.upsert([batch[i][2] for i in part], vectors, texts,
                                                              [metadatas[i] for i in part])):
                return True
            done.chunks_written += len(part)
            self.on_embedded(len(part), sum(batch[i][0].progress_bytes(batch[i][1].end) for i in part))
            crashpoints.reached("part_upserted")
            if self.stop.is_set() and at + step < len(todo):
                return False
        crashpoints.reached("upserted")
        return True

    def _store(self, write: Callable[[], None]) -> bool:
        try:
            write()
        except Exception as exc:  # a full disk, a read-only store: later files fail with this reason
            self.store_failure = f"cannot write to the store: {type(exc).__name__}: {exc}"
            return False
        return True

    def _commit(self, jobs: list[FileJob]) -> bool:
        if not jobs:
            return True
        stale = sorted(set().union(*(job.old_ids | set(job.announced) for job in jobs))
                       - set().union(*(set(job.record.chunk_ids) for job in jobs)))
        if not self._store(lambda: self.collection.delete(stale)):
            return False
        crashpoints.reached("deleted")
        self.manifest.commit(self.collection.name, [job.record for job in jobs])
        crashpoints.reached("committed")
        return True
