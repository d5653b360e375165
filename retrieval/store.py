"""Chroma access: an embedded PersistentClient or a Chroma server, a collection per corpus.

Each collection records the embedding model and how its vectors were made (precision:
fp32, fp16 or int8; collections from before that record count as fp32) in its metadata;
opening it with another model or precision raises ``EmbeddingModelMismatch`` or
``EmbeddingPrecisionMismatch`` before any model loads.
Writes are upserts by caller-chosen deterministic ids, split into batches Chroma
accepts. A reader in another process than the writer gets no vector hits (rather than an
error) until the writer has put the collection's first vector index on disk. Telemetry is always off (Feldspar runs offline).

This module does not know how ids are made, about files, the manifest or BM25.
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from feldspar.retrieval.errors import (
    EmbeddingModelMismatch,
    EmbeddingPrecisionMismatch,
    InvalidCollectionName,
    StoreDamaged,
    StoreUnavailable,
    UnknownCollection,
)

COLLECTION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,61}[A-Za-z0-9]$")
STAGING_NAME = re.compile(r"^feldspar-reindex-[0-9a-f]{16}$")
MODEL_KEY = "embedding_model"
PRECISION_KEY = "embedding_precision"
LEGACY_PRECISION = "fp32"
# Embedded Chroma in another process than the writer reads vectors from disk; before the
# writer has persisted its first index, a vector query fails with this (text search still works).
VECTORS_NOT_ON_DISK = "Nothing found on disk"
# What SQLite (under Chroma) says of a corrupt file; Chroma's Rust side panics with it.
DAMAGED = ("database disk image is malformed", "file is not a database")


def unavailable(what: str, label: str, exc: BaseException) -> StoreUnavailable:
    """The one-line error for a store that failed: ``StoreDamaged`` when its files are corrupt."""
    if isinstance(exc, (KeyboardInterrupt, SystemExit)):
        raise exc
    damage = next((words for words in DAMAGED if words in str(exc)), None)
    if damage:
        return StoreDamaged(f"the Chroma store at {label} is damaged ({damage})", fix="rebuild_store", store=label)
    return StoreUnavailable(f"cannot {what}: {exc}")


@contextmanager
def _quiet_panics() -> Iterator[None]:
    """Hold back what is written to stderr (fd 2) meanwhile: replayed on success, dropped when it
    raised (a corrupt store makes Chroma's Rust side print a panic report before raising; the
    one-line error names the cause)."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        held.seek(0)
        replay = held.read()
        if replay:
            os.write(2, replay)


def check_collection_name(name: str) -> str:
    if not COLLECTION_NAME.match(name) or ".." in name:
        raise InvalidCollectionName(
            f"invalid collection name {name!r}: use 3-63 letters, digits, '.', '_' or '-', "
            "starting and ending with a letter or digit"
        )
    return name


@dataclass(frozen=True)
class StoreLocation:
    """Where the chunks live: a local directory, or a server (host, port, ssl)."""

    path: Path | None = None
    host: str | None = None
    port: int = 8000
    ssl: bool = False

    @property
    def label(self) -> str:
        if self.host:
            return f"{'https' if self.ssl else 'http'}://{self.host}:{self.port}"
        return str(self.path)

    @property
    def slug(self) -> str:
        """A file-name-safe id of the store (``local`` or ``host_port``)."""
        return "local" if not self.host else re.sub(r"[^A-Za-z0-9.-]", "_", f"{self.host}_{self.port}")


class ChromaStore:
    def __init__(self, location: StoreLocation) -> None:
        self.location = location
        self._client: Any = None
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        with self._lock:  # concurrent searches must not open the store twice
            if self._client is None:
                self._client = self._connect()
            return self._client

    def _connect(self) -> Any:
        import chromadb
        from chromadb.config import Settings as ChromaSettings

        chroma_settings = ChromaSettings(anonymized_telemetry=False)
        try:
            if self.location.host:
                client = chromadb.HttpClient(host=self.location.host, port=self.location.port,
                                             ssl=self.location.ssl, settings=chroma_settings)
                client.heartbeat()
                return client
            self.location.path.mkdir(parents=True, exist_ok=True)
            with _quiet_panics():
                return chromadb.PersistentClient(path=str(self.location.path), settings=chroma_settings)
        except BaseException as exc:  # a corrupt file makes Chroma's Rust side panic (not an Exception)
            raise unavailable(f"open the Chroma store at {self.location.label}", self.location.label, exc) from None

    def open(self, name: str, model: str, create: bool, precision: str | None = None) -> "ChunkCollection":
        """The collection ``name`` checked against ``model`` (and ``precision``); created when ``create``."""
        check_collection_name(name)
        existing = self._get(name)
        if existing is None and not create:
            raise UnknownCollection(f"no collection {name!r} in {self.location.label}", fix="ingest_first", collection=name)
        if existing is None:
            existing = self.client.get_or_create_collection(
                name, metadata={MODEL_KEY: model, PRECISION_KEY: precision or LEGACY_PRECISION},
                embedding_function=None, configuration={"hnsw": {"space": "cosine"}},
            )
        metadata = existing.metadata or {}
        indexed_with = metadata.get(MODEL_KEY)
        if indexed_with and indexed_with != model:
            raise EmbeddingModelMismatch(name, indexed_with, model)
        made_with = metadata.get(PRECISION_KEY, LEGACY_PRECISION)
        if precision and made_with != precision:
            raise EmbeddingPrecisionMismatch(name, made_with, precision)
        return ChunkCollection(existing)

    def recorded(self, name: str) -> tuple[str | None, str] | None:
        """``(model, precision)`` a collection was built with, or None when it does not exist."""
        found = self._get(check_collection_name(name))
        if found is None:
            return None
        metadata = found.metadata or {}
        return metadata.get(MODEL_KEY), metadata.get(PRECISION_KEY, LEGACY_PRECISION)

    def _get(self, name: str) -> Any:
        try:
            return self.client.get_collection(name, embedding_function=None)
        except BaseException as exc:
            if "does not exist" in str(exc) or "not found" in str(exc).lower():
                return None
            raise unavailable(f"read collection {name!r}", self.location.label, exc) from None

    def model_of(self, name: str) -> str | None:
        found = self._get(check_collection_name(name))
        return None if found is None else (found.metadata or {}).get(MODEL_KEY)

    def drop(self, name: str) -> None:
        if self._get(check_collection_name(name)) is not None:
            self.client.delete_collection(name)

    def set_aside(self) -> Path | None:
        """Move a local store's directory aside (kept, never deleted); the next use starts an empty one."""
        if self.location.host:
            raise StoreUnavailable(f"the store at {self.location.label} is a server: repair or rebuild it there")
        with self._lock:
            self._client = None
            try:
                from chromadb.api.client import SharedSystemClient

                SharedSystemClient.clear_system_cache()
            except Exception:  # noqa: BLE001 - an older Chroma without the cache
                pass
            if not self.location.path.exists():
                return None
            aside = self.location.path.with_name(f"{self.location.path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
            self.location.path.rename(aside)
            return aside

    def rename(self, old: str, new: str) -> None:
        """Give collection ``old`` the name ``new`` (which must not exist)."""
        found = self._get(old)
        if found is not None:
            found.modify(name=new)

    def list(self) -> list[dict[str, Any]]:
        rows = []
        for item in self.client.list_collections():
            collection = item if hasattr(item, "count") else self.client.get_collection(item)
            if STAGING_NAME.match(collection.name):  # a reindex being built (retrieval/reindex.py)
                continue
            metadata = collection.metadata or {}
            rows.append({"name": collection.name, "embedding_model": metadata.get(MODEL_KEY),
                         "embedding_precision": metadata.get(PRECISION_KEY, LEGACY_PRECISION),
                         "chunks": collection.count()})
        return sorted(rows, key=lambda row: row["name"])


class ChunkCollection:
    """One Chroma collection of chunks: upsert, delete, query and page through it."""

    def __init__(self, collection: Any) -> None:
        self._collection = collection
        self.name: str = collection.name
        self._batch = 1000

    def count(self) -> int:
        return self._collection.count()

    def upsert(self, ids: list[str], vectors: np.ndarray, texts: list[str], metadatas: list[dict]) -> None:
        for at in range(0, len(ids), self._batch):
            part = slice(at, at + self._batch)
            self._collection.upsert(ids=ids[part], embeddings=vectors[part], documents=texts[part],
                                    metadatas=metadatas[part])

    def delete(self, ids: list[str]) -> None:
        for at in range(0, len(ids), self._batch):
            self._collection.delete(ids=ids[at : at + self._batch])

    def query(self, vector: np.ndarray, n: int, where: dict | None) -> list[tuple[str, float, str, dict]]:
        """``(id, cosine distance, text, metadata)`` of the ``n`` nearest chunks."""
        if n <= 0:
            return []
        try:
            result = self._collection.query(query_embeddings=[vector], n_results=n, where=where,
                                            include=["documents", "metadatas", "distances"])
        except Exception as exc:
            if VECTORS_NOT_ON_DISK in str(exc):  # another process is writing the first vectors: none to rank yet
                return []
            raise
        return list(zip(result["ids"][0], result["distances"][0], result["documents"][0], result["metadatas"][0]))

    def stored_metadata(self, ids: list[str]) -> dict[str, dict]:
        """``id -> metadata`` of those ``ids`` already in the collection."""
        if not ids:
            return {}
        result = self._collection.get(ids=ids, include=["metadatas"])
        return dict(zip(result["ids"], result["metadatas"]))

    def get(self, ids: list[str]) -> dict[str, tuple[str, dict]]:
        if not ids:
            return {}
        result = self._collection.get(ids=ids, include=["documents", "metadatas"])
        return {i: (d, m) for i, d, m in zip(result["ids"], result["documents"], result["metadatas"])}

    def iterate(self, page: int = 5000) -> Iterator[tuple[list[str], list[str], list[dict]]]:
        """Every chunk as pages of ``(ids, texts, metadatas)``."""
        offset = 0
        while True:
            result = self._collection.get(limit=page, offset=offset, include=["documents", "metadatas"])
            if not result["ids"]:
                return
            yield result["ids"], result["documents"], result["metadatas"]
            offset += len(result["ids"])
