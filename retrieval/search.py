"""Hybrid search: vector similarity (Chroma) plus BM25, fused by weighted reciprocal rank fusion.

Filters by path glob and file type apply to both sides (a Chroma ``where`` and a BM25
weight mask). ``Fusion`` holds the RRF constant and each side's weight. When a
cross-encoder reranker is given, the top ``rerank_top`` fused candidates are re-scored by
it. With ``mmr`` set (0..1, the weight of relevance), the final k are picked by maximal
marginal relevance over word-set overlap, so near-duplicate chunks do not fill the top k. Every hit carries what a citation needs: path, root, page, character
span, heading path, chunk text and score (and, for JSON Lines, the line range).

This module does not know how chunks got into the store or where settings come from.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from feldspar.retrieval.bm25 import Bm25Cache
from feldspar.retrieval.embeddings import Embedder
from feldspar.retrieval.store import ChunkCollection

RRF_K = 60


@dataclass(frozen=True)
class Fusion:
    """Weighted RRF: score = sum of weight / (k + rank) over the vector and BM25 rankings.

    The defaults were picked on the project's eval sets (docs/retrieval.md)."""

    k: int = 30
    vector_weight: float = 1.0
    bm25_weight: float = 2.0


@dataclass
class SearchHit:
    score: float
    path: str
    page: int | None
    start: int
    end: int
    heading: str
    text: str
    root: str
    chunk_id: str
    vector_rank: int | None = None
    bm25_rank: int | None = None
    line_start: int | None = None  # JSON Lines: the records (1-based lines) the chunk holds
    line_end: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def reciprocal_rank_fusion(rankings: list[list[str]], k: int = RRF_K,
                           weights: list[float] | None = None) -> list[tuple[str, float]]:
    """Ids sorted by sum of weight/(k + rank) over the rankings (rank starts at 1; weights 1 by default)."""
    scores: dict[str, float] = {}
    for ranking, weight in zip(rankings, weights or [1.0] * len(rankings)):
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + weight / (k + rank)
    return sorted(scores.items(), key=lambda pair: (-pair[1], pair[0]))


class HybridSearcher:
    def __init__(self, embedder: Embedder, bm25: Bm25Cache, reranker: Any = None, candidates: int = 50,
                 fusion: Fusion = Fusion(), rerank_top: int = 20, mmr: float | None = None) -> None:
        self.embedder = embedder
        self.bm25 = bm25
        self.reranker = reranker
        self.candidates = candidates
        self.fusion = fusion
        self.rerank_top = rerank_top
        self.mmr = mmr

    def search(self, collection: ChunkCollection, generation: int, query: str, k: int = 5,
               path_glob: str | None = None, file_types: list[str] | None = None) -> list[SearchHit]:
        if k <= 0 or not query.strip():
            return []
        types = {t.lower().lstrip(".") for t in file_types} if file_types else None
        index = self.bm25.get(collection, generation)  # its size stands in for a (slow) Chroma count
        where = self._where(index, path_glob, types)
        if not index.ids or where == "nothing":
            return []
        n = max(self.candidates, k)
        vector_hits = collection.query(self.embedder.embed_query(query), min(n, len(index.ids)), where)
        bm25_ids = index.top(query, n, index.mask(path_glob, types))
        vector_ids = [hit[0] for hit in vector_hits]
        fused = reciprocal_rank_fusion([vector_ids, bm25_ids], self.fusion.k,
                                       [self.fusion.vector_weight, self.fusion.bm25_weight])
        pool = fused[: self._pool_size(k)]
        hits = self._hits(collection, pool, vector_hits, vector_ids, bm25_ids)
        if self.reranker is not None:
            top = max(k, self.rerank_top)
            hits = self._rerank(query, hits[:top]) + hits[top:]
        return mmr_select(hits, k, self.mmr) if self.mmr is not None else hits[:k]

    def _pool_size(self, k: int) -> int:
        """Fused candidates to fetch: k, or more for the reranker and MMR to choose from."""
        size = k
        if self.reranker is not None:
            size = max(size, self.rerank_top)
        if self.mmr is not None:
            size = max(size, 3 * k)
        return size

    @staticmethod
    def _where(index, path_glob: str | None, types: set[str] | None) -> dict | str | None:
        clauses = []
        if types:
            clauses.append({"ext": {"$in": sorted(types)}})
        if path_glob:
            paths = index.matching_paths(path_glob)
            if not paths:
                return "nothing"
            clauses.append({"path": {"$in": paths}})
        if not clauses:
            return None
        return clauses[0] if len(clauses) == 1 else {"$and": clauses}

    @staticmethod
    def _hits(collection: ChunkCollection, pool: list[tuple[str, float]], vector_hits: list,
              vector_ids: list[str], bm25_ids: list[str]) -> list[SearchHit]:
        known = {hit[0]: (hit[2], hit[3]) for hit in vector_hits}
        known.update(collection.get([i for i, _ in pool if i not in known]))
        vector_rank = {i: r for r, i in enumerate(vector_ids, start=1)}
        bm25_rank = {i: r for r, i in enumerate(bm25_ids, start=1)}
        hits = []
        for chunk_id, score in pool:
            if chunk_id not in known:  # deleted between the BM25 cache and now
                continue
            text, meta = known[chunk_id]
            hits.append(SearchHit(
                score=round(score, 6), path=meta.get("path", ""), page=meta.get("page"),
                start=int(meta.get("start", 0)), end=int(meta.get("end", 0)), heading=meta.get("heading", ""),
                text=text or "", root=meta.get("root", ""), chunk_id=chunk_id,
                vector_rank=vector_rank.get(chunk_id), bm25_rank=bm25_rank.get(chunk_id),
                line_start=meta.get("line_start"), line_end=meta.get("line_end")))
        return hits

    def _rerank(self, query: str, hits: list[SearchHit]) -> list[SearchHit]:
        if not hits:
            return hits
        scores = self.reranker.predict([(query, hit.text) for hit in hits], show_progress_bar=False)
        for hit, score in zip(hits, scores):
            hit.score = round(float(score), 6)
        return sorted(hits, key=lambda hit: -hit.score)


def _words(text: str) -> frozenset[str]:
    return frozenset(text.lower().split())


def _overlap(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a and b else 0.0


def mmr_select(hits: list[SearchHit], k: int, relevance_weight: float) -> list[SearchHit]:
    """``k`` hits by maximal marginal relevance: relevance (1 at the top rank, falling linearly)
    weighed against the largest word-set overlap (Jaccard) with a hit already chosen."""
    if len(hits) <= 1:
        return hits[:k]
    relevance = {id(hit): 1.0 - rank / len(hits) for rank, hit in enumerate(hits)}
    words = {id(hit): _words(hit.text) for hit in hits}
    chosen: list[SearchHit] = []
    left = list(hits)
    while left and len(chosen) < k:
        def value(hit: SearchHit) -> float:
            redundancy = max((_overlap(words[id(hit)], words[id(c)]) for c in chosen), default=0.0)
            return relevance_weight * relevance[id(hit)] - (1.0 - relevance_weight) * redundancy
        best = max(left, key=value)  # ties keep the fused order: max returns the first
        chosen.append(best)
        left.remove(best)
    return chosen
