"""The retrieval facade the CLI, UI and agents use: ingest, search, sources, collections.

Also the UI's edits: create or drop a collection, remove one source (chunks, then its row).

Built by ``app.compose.build_retrieval`` from a ``RetrievalConfig`` of plain values; the
store, manifest, embedding model and reranker are opened lazily, so listing sources
never loads a model. One service may serve several collections of one store. The
embedding precision ``auto`` follows what an existing collection was built with (so a
collection made on a GPU in fp16 still answers on a CPU), and for a new one picks fp16 on
a GPU and int8 on a CPU; an explicit precision that differs from a collection's is refused.

This module does not read Settings, print anything or parse files itself.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from feldspar.retrieval.bm25 import Bm25Cache, FieldBoosts
from feldspar.retrieval.embeddings import DEFAULT_MODEL, Embedder, load_sentence_transformer, resolve_precision
from feldspar.retrieval.errors import InvalidSource
from feldspar.retrieval.ingest import IngestOptions, Ingestor, IngestSummary, Progress, single_writer
from feldspar.retrieval.manifest import Manifest
from feldspar.retrieval.reindex import staging_name
from feldspar.retrieval.search import Fusion, HybridSearcher, SearchHit
from feldspar.retrieval.store import STAGING_NAME, ChromaStore, StoreLocation, check_collection_name


@dataclass
class RetrievalConfig:
    home: Path
    location: StoreLocation
    manifest_path: Path
    collection: str = "default"
    embedding_model: str = DEFAULT_MODEL
    embed_batch_size: int = 16
    embed_precision: str = "auto"  # auto, fp32, fp16 or int8
    embed_threads: int = 0  # int8: texts run at once (0: every core this process may use)
    embed_cache_dir: Path | None = None  # where the int8 model is built once
    rerank_model: str | None = None  # a cross-encoder re-scoring the top ``rerank_top`` fused hits
    rerank_top: int = 20
    mmr: float | None = None  # MMR relevance weight; None: off
    fusion: Fusion = field(default_factory=Fusion)
    boosts: FieldBoosts = field(default_factory=FieldBoosts)
    ingest: IngestOptions = field(default_factory=IngestOptions)


class RetrievalService:
    def __init__(self, config: RetrievalConfig) -> None:
        self.config = config
        self.store = ChromaStore(config.location)
        self._embedders: dict[str, Embedder] = {}
        self._manifest: Manifest | None = None
        self._searchers: dict[str, HybridSearcher] = {}
        self._reranker = None
        self._lock = threading.RLock()  # the service is shared by concurrent searches
        self.announce: Callable[[str], None] | None = None  # told of slow one-time steps (building int8)

    @property
    def manifest(self) -> Manifest:
        with self._lock:
            if self._manifest is None:
                self._manifest = Manifest(self.config.manifest_path)
            return self._manifest

    # ---- embedders -----------------------------------------------------------------------
    def embedder_for(self, precision: str) -> Embedder:
        with self._lock:
            if precision not in self._embedders:
                self._embedders[precision] = Embedder(self.config.embedding_model, self.config.embed_batch_size,
                                                      precision, self.config.embed_cache_dir,
                                                      self.config.embed_threads, self._announce)
            return self._embedders[precision]

    def _announce(self, message: str) -> None:
        if self.announce is not None:
            self.announce(message)

    def use_embedder(self, embedder: Embedder) -> None:
        """Share an already loaded embedder (same model) for its precision."""
        self._embedders[embedder.precision] = embedder
        self._searchers.pop(embedder.precision, None)

    @property
    def embedder(self) -> Embedder:
        """The embedder a new collection gets."""
        return self.embedder_for(resolve_precision(self.config.embed_precision))

    def _embedder_of(self, name: str, fresh: bool = False) -> Embedder:
        """The embedder for collection ``name``: ``auto`` follows the precision it was built with."""
        recorded = None if fresh or self.config.embed_precision != "auto" else self.store.recorded(name)
        return self.embedder_for(resolve_precision(self.config.embed_precision, recorded[1] if recorded else None))

    def searcher(self, embedder: Embedder) -> HybridSearcher:
        with self._lock:
            if embedder.precision not in self._searchers:
                config = self.config
                if self._reranker is None and config.rerank_model:
                    self._reranker = load_sentence_transformer(config.rerank_model, cross_encoder=True)
                cache = Bm25Cache(config.home / "bm25" / config.location.slug, config.boosts)
                self._searchers[embedder.precision] = HybridSearcher(
                    embedder, cache, self._reranker, fusion=config.fusion, rerank_top=config.rerank_top, mmr=config.mmr)
            return self._searchers[embedder.precision]

    # ---- operations ----------------------------------------------------------------------
    def _name(self, collection: str | None) -> str:
        return check_collection_name(collection or self.config.collection)

    def ingest(self, paths: list[str | Path], collection: str | None = None, prune: bool = True,
               reindex: bool = False, progress: Progress | None = None,
               stop: threading.Event | None = None) -> IngestSummary:
        """Sync ``paths`` into the collection; setting ``stop`` ends the run after the current batch."""
        name = self._name(collection)
        ingestor = Ingestor(self.store, self.manifest, self._embedder_of(name, fresh=reindex), self.config.ingest,
                            self._writer_lock)
        return ingestor.ingest(paths, name, prune=prune, reindex=reindex, progress=progress, stop=stop)

    @property
    def _writer_lock(self) -> Path:
        return self.config.home / "locks" / f"ingest-{self.config.location.slug}.lock"

    def search(self, query: str, k: int = 5, collection: str | None = None, path_glob: str | None = None,
               file_types: list[str] | None = None) -> list[SearchHit]:
        name = self._name(collection)
        embedder = self._embedder_of(name)
        chunks = self.store.open(name, embedder.name, create=False, precision=embedder.precision)
        return self.searcher(embedder).search(chunks, self.manifest.generation(name), query, k, path_glob, file_types)

    def read_span(self, path: str, start: int | None = None, end: int | None = None,
                  collection: str | None = None) -> dict[str, Any]:
        """Characters ``[start, end)`` of one indexed file of the collection (see ``documents.read_span``)."""
        from feldspar.retrieval.documents import read_span

        return read_span(self.manifest, self._name(collection), path, start, end, self.config.ingest.max_file_bytes)

    def sources(self, collection: str | None = None, status: str | None = None) -> list[dict[str, Any]]:
        return self.manifest.sources(self._name(collection), status)

    def collections(self) -> list[dict[str, Any]]:
        counts = self.manifest.status_counts()
        rows = self.store.list()
        for row in rows:
            row["files"] = counts.get(row["name"], {})
        return rows

    def create_collection(self, collection: str) -> None:
        """An empty collection recording the embedder a new collection gets (no model loads)."""
        embedder = self.embedder
        self.store.open(self._name(collection), embedder.name, create=True, precision=embedder.precision)

    def drop_collection(self, collection: str) -> None:
        """Delete a collection's chunks and manifest rows (waits for no ingest: refused while one writes)."""
        name = self._name(collection)
        with single_writer(self._writer_lock, self.store.location.label):
            for dropped in (name, staging_name(name)):  # and a reindex of it being built
                self.store.drop(dropped)
                self.manifest.drop_collection(dropped)

    def rebuild_store(self, progress: Progress | None = None) -> dict[str, Any]:
        """A new store indexed again from the manifest's rows and the files on disk.

        The damaged store's directory is moved aside (kept; never opened here); each collection
        is re-ingested file by file under the roots it had, so paths and citations stay the same.
        Files gone from disk are counted as ``missing``. A complete reindex waiting for its
        switch counts as done; an unfinished one is dropped (its old collection is rebuilt).
        """
        with single_writer(self._writer_lock, self.store.location.label):
            aside = self.store.set_aside()
            for name, staging in self.manifest.pending_swaps():
                self.manifest.finish_swap(name, staging)
            planned = self.manifest.sources_by_collection()
            for name in [n for n in planned if STAGING_NAME.match(n)]:
                del planned[name]
                self.manifest.drop_collection(name)
        report: dict[str, Any] = {"set_aside": str(aside) if aside else None, "collections": {}}
        for name, rows in planned.items():
            files = [(root, os.path.join(root, path)) for root, path in rows]
            present = [target for target in files if os.path.lexists(target[1])]
            self.manifest.drop_collection(name)
            summary = self.ingest(present, collection=name, prune=False, progress=progress)
            report["collections"][name] = {**summary.counts(), "missing": len(files) - len(present),
                                           "chunks_written": summary.chunks_written}
        return report

    def remove_source(self, root: str, path: str, collection: str | None = None) -> int:
        """Forget one file of a collection: its chunks leave the store, then its manifest row.

        Returns the number of chunk ids removed. The file itself is not touched; a later
        sync of its root indexes it again if it is still there.
        """
        name = self._name(collection)
        with single_writer(self._writer_lock, self.store.location.label):
            record = self.manifest.files_under(name, root).get(path)
            if record is None:
                raise InvalidSource(f"collection {name!r} has no source {path!r} under {root}")
            ids = sorted(record.known_ids)
            recorded = self.store.recorded(name)
            if ids and recorded is not None:
                self.store.open(name, recorded[0] or self.config.embedding_model, create=False).delete(ids)
            self.manifest.forget(name, [record])
            return len(ids)

    def close(self) -> None:
        if self._manifest is not None:
            self._manifest.close()
            self._manifest = None
