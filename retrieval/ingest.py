"""Ingest folders into one collection: scan, diff with the manifest, parse, chunk, embed, write.

Hot path: an unchanged file costs one stat and a dict lookup (the manifest rows of a
root are read in one query); a file whose size/mtime moved is hashed and, if its bytes
are the same, only its stat is updated. New and changed files are parsed in limited
worker processes, smallest first (a small file never waits for a big one), and their
chunks stream into ``writer.BatchWriter`` as the chunker produces them: batches span
files, and a big file spans many batches, so memory stays bounded by the batch size.

A file that failed on a transient cause (a parse timeout on a busy machine, a parser
killed, a read error) is retried by the next ingests while unchanged, ``MAX_ATTEMPTS`` in
all (counted in the manifest), and the run says so in a notice and ``summary.retried``.

Crash safety (kill -9 anywhere converges on re-run) is the writer's announce / upsert /
delete-stale / commit protocol; rows with announced ids are always re-processed, and
chunks already in the store are not embedded again. ``--reindex`` builds beside the old
collection and switches when complete (``reindex``). Deleted files are pruned
store-first, manifest-second. One writer per store (a file lock); Ctrl-C (or the caller's
stop event, e.g. a UI's Cancel) stops after the embedding batch in flight, and does not
wait for a parse in flight (its worker is killed). What a run reports as it goes is
``progress.Progress``. ``crashpoints``
lets tests kill the run at named steps.

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
from typing import Iterator

from filelock import FileLock, Timeout

from feldspar.retrieval import crashpoints
from feldspar.retrieval import reindex as reindexing
from feldspar.retrieval.chunking import Chunk, Chunker
from feldspar.retrieval.embeddings import Embedder
from feldspar.retrieval.errors import InvalidSource, StoreBusy
from feldspar.retrieval.loaders import load_file
from feldspar.retrieval.manifest import FileRecord, Manifest
from feldspar.retrieval.progress import Progress, filled
from feldspar.retrieval.sandbox import ParserPool
from feldspar.retrieval.scan import ScannedFile, scan_entry, scan_root, sha256_file
from feldspar.retrieval.store import ChromaStore, ChunkCollection
from feldspar.retrieval.writer import BatchWriter, FileJob, Written


MAX_ATTEMPTS = 3  # a file failed on a transient cause is tried this many times in all, then left failed
TRANSIENT = ("parsing timed out", "parser process died", "cannot read:")  # causes a busy machine can make


def is_transient(reason: str) -> bool:
    return reason.startswith(TRANSIENT)


@dataclass
class IngestOptions:
    chunk_tokens: int = 256
    chunk_overlap: int = 32
    chunk_context: str = "title-heading"  # the header recipe (retrieval/context.py); recorded per collection
    max_file_bytes: int = 50 * 1024**2
    parse_timeout_s: float = 60.0
    parse_memory_bytes: int | None = 2 * 1024**3
    parse_workers: int = 2
    flush_chunks: int = 256
    big_file_bytes: int = 1024**2  # named up front with an estimate
    library_warnings: bool = False  # parser subprocesses log their libraries' warnings (pypdf…)


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
    retried: int = 0  # files retried because they failed on a transient cause last time
    seconds: float = 0.0
    embed_seconds: float = 0.0
    problems: list[dict] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in ("indexed", "unchanged", "updated", "removed", "skipped", "failed")}


def chunking_key(embedder: str, options: IngestOptions) -> str:
    """What a collection's chunks were made with; another key re-chunks every file."""
    key = f"{embedder}|{options.chunk_tokens}|{options.chunk_overlap}"
    if options.chunk_context != "none":  # collections from before recipes keep their key
        key += f"|context={options.chunk_context}"
    return key


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
        raise StoreBusy(f"another ingest is already writing to {label} (an embedded Chroma store takes one "
                        "writer at a time); wait for it to finish", fix="scale_out", lock=str(lock_path)) from None
    try:
        yield
    finally:
        lock.release()


@contextmanager
def stop_on_interrupt(stop: threading.Event | None = None) -> Iterator[threading.Event]:
    """The first Ctrl-C sets the event (stop after this batch); the second one interrupts.

    ``stop``: an event the caller sets to stop after the current batch (a UI's Cancel);
    off the main thread it is the only way to stop, since signals reach the main thread only.
    """
    stop = stop if stop is not None else threading.Event()
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
            self._chunker = Chunker(self.embedder.token_len, tokens, self.options.chunk_overlap,
                                    self.options.chunk_context)
        return self._chunker

    def ingest(self, paths: list[str | Path | tuple[str, str]], collection: str, prune: bool = True,
               reindex: bool = False,
               progress: Progress | None = None, stop: threading.Event | None = None) -> IngestSummary:
        targets = [p if isinstance(p, tuple) else resolve_target(p) for p in paths]  # or (root, file) pairs
        started, embed_before = time.perf_counter(), self.embedder.seconds
        with single_writer(self.lock_path, self.store.location.label):
            reindexing.finish_pending(self.store, self.manifest, collection)
            target = collection
            if reindex:  # built beside the old collection, which keeps answering until the switch
                target = reindexing.begin(self.store, self.manifest, collection, self.embedder.name,
                                          self.embedder.precision, chunking_key(self.embedder.name, self.options))
            elif self.store.recorded(collection) is None:  # a store without it: forget its rows
                self.manifest.drop_collection(collection)
            chunks = self.store.open(target, self.embedder.name, create=True, precision=self.embedder.precision)
            with stop_on_interrupt(stop) as stop, ParserPool(self.options.parse_workers, self.options.parse_timeout_s,
                                                         self.options.parse_memory_bytes,
                                                         self.options.library_warnings) as pool:
                run = _Run(self, chunks, filled(progress), stop)
                for root, only in targets:
                    if not run.sync_root(root, only, prune and only is None, pool):
                        break
            if not run.summary.interrupted:
                self.manifest.set_chunking(target, run.chunking_key)
                if reindex:
                    reindexing.switch(self.store, self.manifest, collection, target)
            run.remember_rate()
        run.summary.seconds = time.perf_counter() - started
        run.summary.embed_seconds = self.embedder.seconds - embed_before
        return run.summary


class _Run:
    """The state of one ingest into one collection."""

    def __init__(self, ingestor: Ingestor, collection: ChunkCollection, progress: Progress,
                 stop: threading.Event) -> None:
        self.ingestor = ingestor
        self.manifest = ingestor.manifest
        self.collection = collection
        self.name = collection.name
        self.progress = progress
        self.summary = IngestSummary()
        self.stop = stop
        options = ingestor.options
        self.chunking_key = chunking_key(ingestor.embedder.name, options)
        previous = self.manifest.chunking(self.name)
        self.force = bool(previous) and previous != self.chunking_key
        self.writer = BatchWriter(self.manifest, collection, ingestor.embedder, options.flush_chunks, self.stop,
                                  self._written, self._embedded)
        self.embedded = 0  # chunks embedded and stored so far, reported after every embedding batch
        self.rate_key = f"{ingestor.embedder.name}|{ingestor.embedder.precision}"
        self.embed_seconds_before = ingestor.embedder.seconds

    # ---- planning ----------------------------------------------------------------------
    def sync_root(self, root: str, only: str | None, prune: bool, pool: ParserPool) -> bool:
        """Bring ``root`` (or one file in it) up to date; False when interrupted."""
        max_bytes, label = self.ingestor.options.max_file_bytes, os.path.basename(root) or root
        self.progress.stage(f"scanning {label}")
        scanned = [scan_entry(root, only, max_bytes)] if only else scan_root(root, max_bytes)
        known = self.manifest.files_under(self.name, root)
        if prune:
            present = {f.key for f in scanned}
            self._remove([r for key, r in known.items() if key not in present])
        retried_before = self.summary.retried
        self.progress.stage(f"comparing {len(scanned):,} file{'' if len(scanned) == 1 else 's'} with the index")
        to_parse = [f for f in scanned if self._needs_work(root, f, known.get(f.key))]
        if self.summary.retried > retried_before:
            self.progress.notice(f"retrying {self.summary.retried - retried_before} file(s) that failed on a "
                                 f"transient cause last time (at most {MAX_ATTEMPTS} attempts each)")
        to_parse.sort(key=lambda f: (f.size, f.key))  # small files first: never held back by a big one
        self.progress.start(sum(f.size for f in to_parse) + sum(j.record.size for j in self.writer.waiting), label)
        self.progress.files(0, len(to_parse), 0)
        if to_parse and self.ingestor._chunker is None:  # the chunker counts tokens with the embedder's tokenizer
            self.progress.stage("loading the embedding model")
            self.ingestor.chunker  # noqa: B018 (loads it now, said, rather than inside the first file)
        self.progress.stage("parsing and embedding")
        self._announce_big_files(to_parse)
        parsed, read = 0, 0
        for scanned_file, outcome in _in_order(pool.run(((i, load_file, (f.path, root, max_bytes))
                                                         for i, f in enumerate(to_parse)), self.stop), to_parse):
            parsed, read = parsed + 1, read + scanned_file.size
            self.progress.files(parsed, len(to_parse), read)
            self._stream(root, scanned_file, known.get(scanned_file.key), outcome)
            if self.stop.is_set():
                break
        if not self.stop.is_set():
            self.writer.flush()
        self.summary.interrupted = self.stop.is_set()
        return not self.stop.is_set()

    def _needs_work(self, root: str, scanned: ScannedFile, known: FileRecord | None) -> bool:
        """Decide a file without parsing; queue skips directly. True means: parse it."""
        clean = known is not None and known.pending_ids is None and not self.force
        retry = clean and known.status == "failed" and is_transient(known.reason) and known.attempts < MAX_ATTEMPTS
        clean = clean and not retry
        if clean and known.size == scanned.size and known.mtime_ns == scanned.mtime_ns:
            self._unchanged()
            return False
        if scanned.skip_reason:
            self.writer.finish(self._job(root, scanned, known, "skipped", scanned.skip_reason, None))
            return False
        try:
            scanned_sha = sha256_file(scanned.path)
        except OSError as exc:
            self.writer.finish(self._job(root, scanned, known, "failed", f"cannot read: {exc.strerror}", None))
            return False
        if clean and known.sha256 == scanned_sha:
            self.manifest.touch(self.name, [FileRecord(root, scanned.key, scanned.size, scanned.mtime_ns,
                                                       scanned_sha, known.status, known.reason, known.chunk_ids)])
            self._unchanged()
            return False
        scanned.sha256 = scanned_sha
        self.summary.retried += retry
        return True

    def _announce_big_files(self, files: list[ScannedFile]) -> None:
        big = [f for f in files if f.size >= self.ingestor.options.big_file_bytes]
        rate = self.manifest.rate(self.rate_key)
        per_chunk = max(1, 3 * self.ingestor.options.chunk_tokens)  # about 3 bytes a token in prose
        for f in big:
            chunks = f.size // per_chunk + 1
            eta = f"about {_duration(chunks / rate)} at {rate:.1f} chunks/s" if rate else "time unknown yet"
            self.progress.notice(f"big file {f.key}: {f.size / 1024**2:.1f} MiB, about {chunks} chunks, {eta}")

    def _unchanged(self) -> None:
        self.summary.unchanged += 1

    # ---- streaming ---------------------------------------------------------------------
    def _stream(self, root: str, scanned: ScannedFile, known: FileRecord | None, outcome) -> None:
        """Feed one parsed file's chunks to the writer as they are produced."""
        if outcome.status != "ok":
            self.writer.finish(self._job(root, scanned, known, outcome.status, outcome.reason, scanned.sha256))
            return
        self.progress.working_on(scanned.key)
        job = self._job(root, scanned, known, "indexed", "", scanned.sha256)
        job.real_path, job.text_chars = scanned.path, len(outcome.value.text)
        for chunk in self.ingestor.chunker.iter_chunks(outcome.value, scanned.key):
            if self.stop.is_set() or self.writer.store_failure:
                break
            self.writer.add(job, chunk, chunk_id(root, scanned.key, chunk))
        if self.stop.is_set():
            return
        if not job.record.chunk_ids and not self.writer.store_failure:
            job.record.status, job.record.reason = "skipped", "no extractable text"
        self.writer.finish(job)

    def _job(self, root: str, scanned: ScannedFile, known: FileRecord | None, status: str, reason: str,
             sha: str | None) -> FileJob:
        record = FileRecord(root, scanned.key, scanned.size, scanned.mtime_ns, sha, status, reason, [])
        if status == "failed" and is_transient(reason):
            record.attempts = (known.attempts if known and known.status == "failed" and known.sha256 == sha else 0) + 1
            if record.attempts >= MAX_ATTEMPTS:
                record.reason += f" ({record.attempts} attempts; tried again once the file changes)"
        return FileJob(record, known.known_ids if known else set(), list(known.pending_ids or []) if known else [],
                       known is None or known.status == "pending")

    # ---- counting ----------------------------------------------------------------------
    def _embedded(self, chunks: int, bytes_done: int) -> None:
        self.embedded += chunks
        self.progress.advance(bytes_done)
        self.progress.embedded(self.embedded)

    def _written(self, done: Written) -> None:
        self.summary.chunks_written += done.chunks_written
        if done.complete:  # a batch stopped half-way by a Cancel counts its stored chunks, commits nothing
            self.progress.chunks(self.summary.chunks_written)
        for job in done.committed + done.uncommitted:
            record = job.record
            if record.status == "indexed":
                self.summary.indexed += job.is_new
                self.summary.updated += not job.is_new
            else:
                setattr(self.summary, record.status, getattr(self.summary, record.status) + 1)
                self.summary.problems.append({"path": record.path, "status": record.status, "reason": record.reason})
        self.progress.advance(done.bytes_done)

    def _remove(self, gone: list[FileRecord]) -> None:
        if not gone:
            return
        self.collection.delete(sorted(set().union(*(r.known_ids for r in gone))))
        crashpoints.reached("pruned")
        self.manifest.forget(self.name, gone)
        self.summary.removed += len(gone)

    def remember_rate(self) -> None:
        seconds = self.ingestor.embedder.seconds - self.embed_seconds_before
        if self.summary.chunks_written >= 32 and seconds > 0:
            self.manifest.set_rate(self.rate_key, self.summary.chunks_written / seconds)


def _in_order(finished: Iterator[tuple[int, object]], files: list[ScannedFile]) -> Iterator[tuple[ScannedFile, object]]:
    """Parser outcomes in the order the files were given (smallest first), whatever order they finish in."""
    ready: dict[int, object] = {}
    due = 0
    for index, outcome in finished:
        ready[index] = outcome
        while due in ready:
            yield files[due], ready.pop(due)
            due += 1


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
