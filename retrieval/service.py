"""The retrieval facade the CLI, UI and agents use: ingest, search, sources, collections.

Built by ``app.compose.build_retrieval`` from a ``RetrievalConfig`` of plain values; the
store, manifest, embedding model and reranker are opened lazily, so listing sources
never loads a model. One service may serve several collections of one store.

This module does not read Settings, print anything or parse files itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from feldspar.retrieval.bm25 import Bm25Cache
from feldspar.retrieval.embeddings import DEFAULT_MODEL, Embedder, load_sentence_transformer
from feldspar.retrieval.ingest import IngestOptions, Ingestor, IngestSummary, Progress
from feldspar.retrieval.manifest import Manifest
from feldspar.retrieval.search import HybridSearcher, SearchHit
from feldspar.retrieval.store import ChromaStore, StoreLocation, check_collection_name


@dataclass
class RetrievalConfig:
    home: Path
    location: StoreLocation
    manifest_path: Path
    collection: str = "default"
    embedding_model: str = DEFAULT_MODEL
    embed_batch_size: int = 64
    reranker: str | None = None
    ingest: IngestOptions = field(default_factory=IngestOptions)


class RetrievalService:
    def __init__(self, config: RetrievalConfig) -> None:
        self.config = config
        self.store = ChromaStore(config.location)
        self.embedder = Embedder(config.embedding_model, config.embed_batch_size)
        self._manifest: Manifest | None = None
        self._searcher: HybridSearcher | None = None

    @property
    def manifest(self) -> Manifest:
        if self._manifest is None:
            self._manifest = Manifest(self.config.manifest_path)
        return self._manifest

    @property
    def searcher(self) -> HybridSearcher:
        if self._searcher is None:
            reranker = load_sentence_transformer(self.config.reranker, cross_encoder=True) if self.config.reranker else None
            cache = Bm25Cache(self.config.home / "bm25" / self.config.location.slug)
            self._searcher = HybridSearcher(self.embedder, cache, reranker)
        return self._searcher

    def _name(self, collection: str | None) -> str:
        return check_collection_name(collection or self.config.collection)

    def ingest(self, paths: list[str | Path], collection: str | None = None, prune: bool = True,
               reindex: bool = False, progress: Progress | None = None) -> IngestSummary:
        lock = self.config.home / "locks" / f"ingest-{self.config.location.slug}.lock"
        ingestor = Ingestor(self.store, self.manifest, self.embedder, self.config.ingest, lock)
        return ingestor.ingest(paths, self._name(collection), prune=prune, reindex=reindex, progress=progress)

    def search(self, query: str, k: int = 5, collection: str | None = None, path_glob: str | None = None,
               file_types: list[str] | None = None) -> list[SearchHit]:
        name = self._name(collection)
        chunks = self.store.open(name, self.embedder.name, create=False)
        return self.searcher.search(chunks, self.manifest.generation(name), query, k, path_glob, file_types)

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

    def close(self) -> None:
        if self._manifest is not None:
            self._manifest.close()
            self._manifest = None
