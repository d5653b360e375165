"""A BM25 (bm25s) index over a collection's chunks, cached on disk per collection state.

The cache folder is keyed by the manifest ``generation`` of the collection, which every
write bumps before and after touching the store, so a cache built while a write was in
progress is never reused. Building reads the chunk texts from Chroma page by page;
loading a cached index needs no Chroma call. Alongside the index it keeps each chunk's
id, path and file type so filters become a weight mask.

Fields: a chunk's tokens are its text's, plus its file title's repeated ``title`` times and
its header's heading path (and page, symbol) repeated ``heading`` times (``FieldBoosts``),
so a query naming a document or section finds its chunks. Chunks without a header (from
collections built before headers, or with the ``none`` recipe) are their text alone.

This module does not know about embeddings, fusion or how chunks are written.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import threading
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

import numpy as np

from feldspar.retrieval.store import ChunkCollection

TOKEN = re.compile(r"\w\w+", re.UNICODE)
STOPWORDS = frozenset(
    "the and for are but not you all any can had her was one our out has have this that with from "
    "they will would there their what about which when make like into than them then these some "
    "its also could does did how who why where been being were is it of to in on at by an as or be "
    "if do so no we he she his him my me your".split()
)


def tokenize(text: str) -> list[str]:
    return [t for t in TOKEN.findall(text.lower()) if t not in STOPWORDS]


@dataclass(frozen=True)
class FieldBoosts:
    """How many times the title and heading-path tokens count beside the text's (0: not indexed)."""

    title: int = 3  # measured on the eval sets (docs/retrieval.md)
    heading: int = 2

    @property
    def key(self) -> str:
        return f"t{self.title}h{self.heading}"

    def tokens(self, text: str, meta: dict) -> list[str]:
        title, context = meta.get("title") or "", meta.get("context") or ""
        heading = context[len(title):] if title and context.startswith(title) else context
        return tokenize(text) + tokenize(title) * self.title + tokenize(heading) * self.heading


class Bm25Index:
    """Chunk ids with their BM25 index, paths and file types, in one order."""

    def __init__(self, retriever, ids: list[str], paths: list[str], exts: list[str]) -> None:
        self.retriever = retriever
        self.ids = ids
        self.paths = np.asarray(paths, dtype=object)
        self.exts = np.asarray(exts, dtype=object)

    @classmethod
    def build(cls, collection: ChunkCollection, boosts: FieldBoosts = FieldBoosts()) -> "Bm25Index":
        import bm25s

        ids, tokens, paths, exts = [], [], [], []
        for page_ids, texts, metadatas in collection.iterate():
            ids += page_ids
            tokens += [boosts.tokens(t or "", m or {}) or [""] for t, m in zip(texts, metadatas)]
            paths += [m.get("path", "") for m in metadatas]
            exts += [m.get("ext", "") for m in metadatas]
        retriever = bm25s.BM25()
        if ids:
            retriever.index(tokens, show_progress=False)
        return cls(retriever, ids, paths, exts)

    def save(self, folder: Path) -> None:
        """Write atomically: a temp folder renamed into place (first writer wins)."""
        folder.parent.mkdir(parents=True, exist_ok=True)
        temp = Path(tempfile.mkdtemp(prefix=".building-", dir=folder.parent))
        if self.ids:
            self.retriever.save(str(temp), show_progress=False)
        (temp / "chunks.json").write_text(json.dumps(
            {"ids": self.ids, "paths": self.paths.tolist(), "exts": self.exts.tolist()}))
        try:
            os.rename(temp, folder)
        except OSError:
            shutil.rmtree(temp, ignore_errors=True)

    @classmethod
    def load(cls, folder: Path) -> "Bm25Index":
        import bm25s

        meta = json.loads((folder / "chunks.json").read_text())
        retriever = bm25s.BM25.load(str(folder), show_progress=False) if meta["ids"] else bm25s.BM25()
        return cls(retriever, meta["ids"], meta["paths"], meta["exts"])

    def mask(self, path_glob: str | None, file_types: set[str] | None) -> np.ndarray | None:
        if not path_glob and not file_types:
            return None
        keep = np.ones(len(self.ids), dtype=bool)
        if file_types:
            keep &= np.isin(self.exts, list(file_types))
        if path_glob:
            allowed = {p for p in set(self.paths.tolist()) if fnmatchcase(p, path_glob)}
            keep &= np.isin(self.paths, list(allowed))
        return keep.astype(np.float32)

    def matching_paths(self, path_glob: str) -> list[str]:
        return sorted(p for p in set(self.paths.tolist()) if fnmatchcase(p, path_glob))

    def top(self, query: str, n: int, mask: np.ndarray | None) -> list[str]:
        """Ids of the ``n`` best-scoring chunks with a positive score."""
        terms = tokenize(query)
        if not self.ids or not terms:
            return []
        scores = self.retriever.get_scores(terms, weight_mask=mask)
        n = min(n, len(scores))
        best = np.argpartition(-scores, n - 1)[:n]
        best = best[np.argsort(-scores[best])]
        return [self.ids[i] for i in best if scores[i] > 0]


class Bm25Cache:
    """Keeps one index per collection state under ``folder/<collection>/gen-<N>-<boosts>``.

    Concurrent searches of a collection whose index must be built share one build: the
    others wait for it instead of each reading every chunk again (at 100k chunks a build
    takes seconds, and 32 parallel ones on two cores take minutes).
    """

    def __init__(self, folder: Path, boosts: FieldBoosts = FieldBoosts()) -> None:
        self.folder = folder
        self.boosts = boosts
        self.builds = 0  # indexes built (not loaded from disk) by this cache
        self._loaded: dict[str, tuple[int, Bm25Index]] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, collection: ChunkCollection, generation: int) -> Bm25Index:
        held = self._loaded.get(collection.name)
        if held and held[0] == generation:
            return held[1]
        with self._guard:
            lock = self._locks.setdefault(collection.name, threading.Lock())
        with lock:
            held = self._loaded.get(collection.name)  # another search may have built it meanwhile
            if held and held[0] == generation:
                return held[1]
            target = self.folder / collection.name / f"gen-{generation}-{self.boosts.key}"
            index = self._load_or_build(collection, target)
            self._loaded[collection.name] = (generation, index)
            self._remove_old(target)
            return index

    def _load_or_build(self, collection: ChunkCollection, target: Path) -> Bm25Index:
        if (target / "chunks.json").is_file():
            try:
                return Bm25Index.load(target)
            except (OSError, ValueError, KeyError):
                shutil.rmtree(target, ignore_errors=True)
        index = Bm25Index.build(collection, self.boosts)
        self.builds += 1
        index.save(target)
        return index

    @staticmethod
    def _remove_old(current: Path) -> None:
        for other in current.parent.glob("gen-*"):
            if other != current:
                shutil.rmtree(other, ignore_errors=True)
