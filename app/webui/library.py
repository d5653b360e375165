"""The web UI's documents and packs: what the Documents and Packs pages act on.

``LibraryServices`` (built by ``build_library(settings)`` below, shared by every
browser session of one server) lists collections and their files, creates and deletes collections, removes a
source, and runs ingests (a server folder inside ``ui_allowed_roots``, checked uploads
stored under ``<home>/uploads/<collection>/``, or a re-sync of a collection's roots) and
pack creation as background ``Job``s with live progress; an ingest's Cancel sets the
retrieval layer's own stop event, so it ends after the embedding batch in flight (a parse
in flight is not waited for) and the next run resumes; a pack's Cancel stops its prefill between chunks and saves nothing. One ingest and
one pack job at a time. Every action returns an ``Outcome`` (a
user error is ``ok=False`` with its one-line message); only bugs raise. Knows Settings
and the lower layers' public calls; is handed its retrieval service and engine; renders nothing.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from feldspar.errors import user_error_types
from feldspar.webui.remedies import web_message
from feldspar.retrieval.manifest import FILE_STATUSES
from feldspar.settings import Settings
from feldspar.webui.ingest_progress import IngestProgress, ingest_words
from feldspar.webui.jobs import Job, JobView, Refused
from feldspar.webui.uploads import UploadedFile, allowed_folder, check_upload, store_uploads



class _PackCancelled(Exception):
    """Raised between prefill chunks once a pack job's Cancel was pressed."""


@dataclass
class Outcome:
    ok: bool
    message: str
    value: Any = None
    problems: tuple[str, ...] = ()  # one refusal per item (an upload…), shown in red beside the message


def _cancel(job: Job | None, idle: str, stopping: str) -> Outcome:
    if job is None or not job.view().active:
        return Outcome(False, idle)
    job.cancel()
    return Outcome(True, stopping)


def _labelled(meta: dict[str, Any]) -> dict[str, Any]:
    """A pack's record with its model marked RANDOM WEIGHTS when it was made by a random checkpoint."""
    from feldspar.model.checkpoint_random import is_random_checkpoint

    source = meta.get("model_source")
    if source and meta.get("model") and is_random_checkpoint(str(source)):
        return {**meta, "model": f"{meta['model']} (RANDOM WEIGHTS)"}
    return meta


def _attempt(action: Callable[[], tuple[str, Any]]) -> Outcome:
    try:
        message, value = action()
    except (Refused, *user_error_types()) as exc:
        return Outcome(False, web_message(exc))
    return Outcome(True, message, value)


class LibraryServices:
    def __init__(self, settings: Settings, *, retrieval: Callable[[], Any], engine: Callable[[], Any],
                 hook: Callable[[Job, str], None] | None = None,
                 tools: Callable[[], list[dict]] | None = None) -> None:
        """``retrieval`` and ``engine`` build (or hand over) the retrieval service and the Granite engine
        on first use (app/compose.py passes them); ``hook`` goes to every job (tests hold a job with it)."""
        self.settings = settings
        self._retrieval_factory = retrieval
        self._engine_factory = engine
        self._engine = None
        self._hook = hook
        self._tools = tools or (lambda: [])  # the tool schemas a chat on a pack offers: packs are made with them
        self._retrieval = None
        self._lock = threading.RLock()
        self._ingest: Job | None = None
        self._pack: Job | None = None

    # ---- parts -------------------------------------------------------------------------
    @property
    def retrieval(self):
        with self._lock:
            if self._retrieval is None:
                from feldspar.home import require_writable

                require_writable(self.settings.home)
                self._retrieval = self._retrieval_factory()
            return self._retrieval

    def engine(self):
        with self._lock:
            if self._engine is None:
                self._engine = self._engine_factory()
            return self._engine

    @property
    def allowed_roots(self) -> list[Path]:
        return list(self.settings.ui_allowed_roots)

    def uploads_folder(self, collection: str) -> Path:
        from feldspar.retrieval.store import check_collection_name

        return self.settings.uploads_dir / check_collection_name(collection)

    @staticmethod
    def attempt(read: Callable[[], Any]) -> Outcome:
        """``read()`` as an Outcome: its value, or ``ok=False`` with a user error's one line."""
        return _attempt(lambda: ("", read()))

    def default_collection(self) -> str:
        return self.settings.collection

    # ---- collections -------------------------------------------------------------------
    def collections(self) -> list[dict[str, Any]]:
        rows = []
        for row in self.retrieval.collections():
            files = row.get("files", {})
            rows.append({"name": row["name"], "chunks": row.get("chunks", 0),
                         **{status: files.get(status, 0) for status in FILE_STATUSES},
                         "embedding_model": row.get("embedding_model"), "precision": row.get("embedding_precision")})
        return rows

    def create_collection(self, name: str) -> Outcome:
        def create():
            clean = (name or "").strip()
            if clean in {row["name"] for row in self.retrieval.collections()}:
                raise Refused(f"collection {clean!r} already exists")
            self.retrieval.create_collection(clean)
            return f"created collection {clean!r}", clean
        return _attempt(create)

    def delete_collection(self, name: str) -> Outcome:
        def delete():
            self._refuse_while_ingesting(name, "delete it")
            self.retrieval.drop_collection(name)
            return f"deleted collection {name!r} (the files on disk are untouched; uploads stay in "\
                   f"{self.uploads_folder(name)})", name
        return _attempt(delete)

    # ---- sources -----------------------------------------------------------------------
    def sources(self, collection: str, statuses: Sequence[str] = (), contains: str = "") -> list[dict[str, Any]]:
        """The collection's files (path, status, reason, chunks, size, root), filtered by status and text."""
        wanted = set(statuses)
        needle = contains.strip().lower()
        rows = []
        for row in self.retrieval.sources(collection):
            if wanted and row["status"] not in wanted:
                continue
            if needle and needle not in row["path"].lower() and needle not in row["reason"].lower():
                continue
            rows.append({key: row[key] for key in ("path", "status", "reason", "chunks", "size", "root")})
        return rows

    def remove_source(self, collection: str, root: str, path: str) -> Outcome:
        """Forget one file; an uploaded file is deleted too (else the next sync would bring it back)."""
        def remove():
            self._refuse_while_ingesting(collection, "remove a source")
            removed = self.retrieval.remove_source(root, path, collection)
            upload = Path(root) / path
            note = ""
            if Path(root) == self.uploads_folder(collection).resolve() and upload.is_file():
                upload.unlink()
                note = "; the uploaded file was deleted"
            else:
                note = "; the file stays on disk and comes back if you re-sync its folder"
            return f"removed {path} ({removed} chunks) from {collection!r}{note}", removed
        return _attempt(remove)

    # ---- ingest ------------------------------------------------------------------------
    def ingest_job(self) -> JobView | None:
        return self._ingest.view() if self._ingest is not None else None

    def ingest_folder(self, collection: str, folder: str) -> Outcome:
        def start():
            real = allowed_folder(folder, self.allowed_roots)
            self._start_ingest(collection, [real], f"{real}")
            return f"ingesting {real} into {collection!r}", real
        return _attempt(start)

    def ingest_uploads(self, collection: str, uploads: Sequence[UploadedFile]) -> Outcome:
        """Check every upload first (refused ones are named, nothing of theirs is written), store the
        rest and ingest the collection's uploads folder. ``value``: names stored, refusals."""
        checked, refused = [], []
        for upload in uploads:
            try:
                checked.append(check_upload(upload, self.settings.ui_max_upload_bytes))
            except Refused as exc:
                refused.append(str(exc))
        if not checked:
            return Outcome(False, "No upload was stored: every file was refused." if refused else (
                "Choose files to upload first. A file over the upload box's size limit is turned down by the "
                "browser and never reaches Feldspar."), problems=tuple(refused))

        def start():
            self._check_free(collection)
            store_uploads(self.uploads_folder(collection), checked)
            self._start_ingest(collection, [self.uploads_folder(collection)], "uploads")
            names = [c.name for c in checked]
            return (f"Stored {len(names):,} upload{'' if len(names) == 1 else 's'} and started ingesting "
                    f"{'it' if len(names) == 1 else 'them'}."), {"stored": names, "refused": refused}
        return replace(_attempt(start), problems=tuple(refused))

    def resync(self, collection: str) -> Outcome:
        """Sync every folder the collection was built from that the UI may read (uploads included)."""
        def start():
            roots = sorted({row["root"] for row in self.retrieval.sources(collection)})
            readable, left = [], []
            uploads = self.uploads_folder(collection).resolve()
            for root in roots:
                try:
                    readable.append(Path(root) if Path(root) == uploads else allowed_folder(root, self.allowed_roots))
                except Refused:
                    left.append(root)
            if not readable:
                raise Refused(f"collection {collection!r} has no folder the UI may re-sync"
                              + (f" ({', '.join(left)} are outside ui_allowed_roots or gone)" if left else ""))
            self._start_ingest(collection, readable, "re-sync")
            return (f"re-syncing {len(readable)} folder(s)"
                    + (f"; not re-synced: {', '.join(left)}" if left else "")), [str(r) for r in readable]
        return _attempt(start)

    def cancel_ingest(self) -> Outcome:
        return _cancel(self._ingest, "no ingest is running", "stopping after the embedding batch in flight (a second or two); "
                       "ingest again to resume")

    def _collection_chunks(self, collection: str) -> int | None:
        rows = [row for row in self.retrieval.collections() if row["name"] == collection]
        return rows[0].get("chunks") if rows else None

    def _refuse_while_ingesting(self, collection: str, what: str) -> None:
        view = self.ingest_job()
        if view is not None and view.active and view.label == collection:
            raise Refused(f"an ingest into {collection!r} is running; cancel it or wait before you {what}")

    def _check_free(self, collection: str) -> None:
        from feldspar.retrieval.store import check_collection_name

        check_collection_name(collection)
        view = self.ingest_job()
        if view is not None and view.active:
            raise Refused(f"an ingest into {view.label!r} is already running; wait for it or cancel it")

    def _start_ingest(self, collection: str, paths: list[Path], what: str) -> None:
        with self._lock:
            self._check_free(collection)
            service = self.retrieval

            def work(job: Job) -> tuple[str, dict]:
                service.announce = job.notice  # "building the int8 embedder …" on first use
                job.update(phase="opening the index and the embedding model")
                try:
                    summary = service.ingest(paths, collection, progress=IngestProgress(job), stop=job.stop)
                finally:
                    service.announce = None
                return ingest_words(what, summary, self._collection_chunks(collection)), {
                    **summary.counts(), "chunks_written": summary.chunks_written,
                    "interrupted": summary.interrupted, "problems": summary.problems}

            self._ingest = Job("ingest", collection, work, self._hook).start()

    # ---- packs -------------------------------------------------------------------------
    def packs(self) -> list[dict[str, Any]]:
        from feldspar.model.packs import list_packs

        from feldspar.model.packs import read_meta

        rows = list_packs(self.settings.packs_dir)
        return [row if row.get("error") else {**row, "model": _labelled(read_meta(self.settings.packs_dir,
                                                                                  row["name"]))["model"]}
                for row in rows]

    def pack_details(self, name: str) -> Outcome:
        from feldspar.model.packs import read_meta

        return _attempt(lambda: ("", _labelled(read_meta(self.settings.packs_dir, name))))

    def delete_pack(self, name: str) -> Outcome:
        from feldspar.model.packs import remove_pack

        def delete():
            view = self.pack_job()
            if view is not None and view.active and view.label == name:
                raise Refused(f"pack {name!r} is being created; wait for it first")
            remove_pack(self.settings.packs_dir, name)
            return f"deleted pack {name!r}", name
        return _attempt(delete)

    def pack_candidates(self, collection: str) -> list[dict[str, str]]:
        """Indexed files of a collection a pack can be made from: ``label`` (path) and ``path`` (full)."""
        rows = self.retrieval.sources(collection, "indexed")
        return [{"label": row["path"], "path": os.path.join(row["root"], row["path"])} for row in rows]

    def pack_job(self) -> JobView | None:
        return self._pack.view() if self._pack is not None else None

    def create_pack(self, name: str, files: Sequence[str], force: bool = False) -> Outcome:
        """Start making pack ``name`` from ``files`` (full paths); the job reports its token count
        against the model's window and refuses a pack over it before any prefill."""
        from feldspar.model.packs import check_new_pack

        def start():
            with self._lock:
                view = self.pack_job()
                if view is not None and view.active:
                    raise Refused(f"pack {view.label!r} is still being created; wait for it")
                if not files:
                    raise Refused("choose at least one file for the pack")
                check_new_pack(self.settings.packs_dir, name, force)
                self._pack = Job("pack", name, lambda job: self._make_pack(job, name, list(files), force),
                                 self._hook).start()
            return f"creating pack {name!r} from {len(files)} file(s)", name
        return _attempt(start)

    def cancel_pack(self) -> Outcome:
        return _cancel(self._pack, "no pack is being created",
                       "stopping after the current prefill chunk; nothing will be saved")

    def _make_pack(self, job: Job, name: str, files: list[str], force: bool) -> tuple[str, dict]:
        from feldspar.home import require_writable
        from feldspar.model.packs import create_pack, prefix_ids
        from feldspar.pack_documents import read_pack_documents

        job.update(phase="reading files")
        require_writable(self.settings.packs_dir, "pack folder")
        read = read_pack_documents(files, self.settings.max_file_bytes)
        for skipped in read.skipped:
            job.notice(f"{skipped['status']}: {skipped['path']}: {skipped['reason']}")
        job.update(phase="loading the model")
        engine = self.engine()
        job.update(phase="counting tokens")
        tools = self._tools()
        tokens, window = len(prefix_ids(engine, read.documents, tools)), engine.context_window
        job.update(result={"tokens": tokens, "window": window, "model": engine.name})
        if tokens >= window:
            raise Refused(f"pack {name!r} would need {tokens:,} tokens but {engine.name} has a {window:,}-token "
                          "context window (and questions need room too); choose fewer or shorter files")
        job.checkpoint("prefill")
        job.update(phase="prefill", done=0, total=tokens)

        def progress(done: int, total: int) -> None:  # between prefill chunks
            if job.stop.is_set():
                raise _PackCancelled
            job.update(done=done, total=total)

        try:
            progress(0, tokens)
            meta = create_pack(engine, self.settings.packs_dir, name, read.documents, read.sources, force=force,
                               progress=progress, tools=tools)
        except _PackCancelled:
            return f"pack {name!r} cancelled; nothing was saved", {"interrupted": True}
        share = 100 * tokens / window
        return (f"pack {name!r}: {tokens:,} of {window:,} tokens ({share:.1f}% of the window) from "
                f"{meta['documents']} file(s), prefill {meta['prefill_s']:.1f} s"), {**meta, "window": window}

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the running jobs to end; True when none is left running."""
        return all(job.wait(timeout) for job in (self._ingest, self._pack) if job is not None)

    def close(self) -> None:
        for job in (self._ingest, self._pack):
            if job is not None:
                job.cancel()
                job.wait(60)
        if self._retrieval is not None:
            self._retrieval.close()


def build_library(settings: Settings, engine=None, hook=None, tools_module=None):
    """The web UI's documents and packs services (this module); ``engine``: a callable
    returning an already loaded engine to share for pack creation (default: loaded on first use).
    Packs are made with the tools the chats on them offer (``tools_module`` or the settings')."""
    from feldspar.compose import build_retrieval, build_runtime, pack_tool_schemas

    return LibraryServices(settings, retrieval=lambda: build_retrieval(settings),
                           engine=engine or build_runtime(settings).engine, hook=hook,
                           tools=lambda: pack_tool_schemas(settings, tools_module))
