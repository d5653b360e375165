"""`feldspar bench retrieval`: ingest throughput, no-change re-sync, search latency, quality.

Measurements, each in its own temporary data home so nothing of the user's is
touched: (1) ingest of generated markdown files with the real embedder (files/s,
chunks/s, share of wall time inside the model; model load excluded), with contextual
headers and, side by side in the same run, without them (``chunk_context = "none"``); (2) a re-sync of
``sync_files`` unchanged files after a real first ingest; (3) search latency p50/p95
over ``search_chunks`` chunks whose vectors are synthetic (random, normalised) and
texts generated (with a title and header, so BM25's fields are indexed), while every
query is embedded for real; (4) with ``quality``, recall and MRR on the eval sets of
today's settings beside the settings before contextual chunks (``retrieval_quality``); then the scale rows of
``retrieval_scale`` (fp32 vs int8, a big streamed file, Ctrl-C, searches during a write).
The caller passes a factory for retrieval services (and the ingest command for the
subprocess rows), so this module knows no settings or composition root. This is a benchmark, not a
test: it reports numbers beside targets and asserts nothing.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

# (data home, collection name, precision=None, **setting overrides) -> a retrieval service (the app builds it).
MakeService = Callable[..., object]

WORDS = ("granite model state cache prefix token chunk search vector index manifest sync folder file page "
         "heading citation embed query answer agent tool graph memory store collection server lock batch "
         "parse loader retry timeout limit score rank fusion rerank latency throughput bench table").split()


def _sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def _write_corpus(folder: Path, files: int, sentences: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    for i in range(files):
        sub = folder / f"part{i % 20:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        body = "\n\n".join(_sentence(rng, rng.randint(8, 20)) for _ in range(sentences))
        (sub / f"doc{i:05d}.md").write_text(f"# Document {i}\n\n{body}\n", encoding="utf-8")


def _row(measure: str, value: float, unit: str, target: str, met: bool | None, note: str = "") -> dict:
    shown = f"{value:.1f} {unit}" if value >= 10 else f"{value:.3g} {unit}"
    return {"measure": measure, "value": shown, "raw": round(value, 4), "target": target,
            "met": "-" if met is None else ("yes" if met else "NO"), "note": note}


def bench_ingest(make_service: MakeService, home: Path, files: int = 300) -> list[dict]:
    corpus = home / "corpus"
    _write_corpus(corpus, files, sentences=40)
    rates, rows = {}, []
    for recipe in ("none", "title-heading", "none", "title-heading"):  # alternated: other load hits both alike
        service = make_service(home / f"{recipe}-{len(rates)}", "bench-ingest", chunk_context=recipe)
        service.embedder.embed(["warm up the model"])
        service.embedder.seconds = 0.0
        summary = service.ingest([corpus])
        rates.setdefault(recipe, []).append((summary.chunks_written, summary.seconds, summary.embed_seconds))
        service.close()
    chunks, seconds, embed = (sum(part[i] for part in rates["title-heading"]) for i in range(3))
    plain = sum(part[0] for part in rates["none"]) / sum(part[1] for part in rates["none"])
    ratio = (chunks / seconds) / plain
    rows += [
        _row("ingest files/s", 2 * files / seconds, "files/s", "-", None, f"{files} markdown files, twice"),
        _row("ingest chunks/s", chunks / seconds, "chunks/s", "-", None, f"{chunks} chunks, with headers"),
        _row("ingest chunks/s, no headers", plain, "chunks/s", "-", None, "chunk_context = none, same run"),
        _row("ingest rate, headers / none", ratio, "x", ">= 0.9x", ratio >= 0.9, "alternating rounds"),
        _row("ingest time in embedder", 100 * embed / seconds, "%", ">= 80 %", embed / seconds >= 0.8,
             "model load excluded"),
    ]
    return rows


def bench_resync(make_service: MakeService, home: Path, files: int) -> list[dict]:
    corpus = home / "many"
    _write_corpus(corpus, files, sentences=1)
    service = make_service(home, "bench-sync")
    first = service.ingest([corpus])
    again = service.ingest([corpus])
    assert again.unchanged == files, again.counts()
    return [
        _row("first ingest (tiny files)", first.seconds, "s", "-", None, f"{files} files, real embeddings"),
        _row(f"no-change re-sync, {files} files", again.seconds, "s", "<= 2 s", again.seconds <= 2.0,
             "stat + manifest only"),
    ]


def bench_search(make_service: MakeService, home: Path, chunks: int, queries: int = 100) -> list[dict]:
    """Latency with today's settings, and with the fusion and fields of before (no BM25 fields,
    k 60, weights 1 / 1) on the same chunks, queries alternating between the two."""
    service = make_service(home, "bench-search")
    before = make_service(home, "bench-search", bm25_title_boost=0, bm25_heading_boost=0, rrf_k=60,
                          rrf_vector_weight=1.0, rrf_bm25_weight=1.0)
    before.use_embedder(service.embedder)
    collection = service.store.open("bench-search", service.embedder.name, create=True,
                                    precision=service.embedder.precision)
    _fill_synthetic(collection, chunks, service.embedder.dimension)
    service.manifest.mark_changed("bench-search")
    started = time.perf_counter()
    service.search("warm up", k=5)
    first = time.perf_counter() - started
    before.search("warm up", k=5)
    rng = random.Random(11)
    latencies: dict[str, list[float]] = {"now": [], "before": []}
    for _ in range(queries):
        query = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8)))
        for label, searcher in (("now", service), ("before", before)):
            started = time.perf_counter()
            searcher.search(query, k=10)
            latencies[label].append(1000 * (time.perf_counter() - started))
    p50 = statistics.median(latencies["now"])
    p95 = float(np.percentile(latencies["now"], 95))
    p95_before = float(np.percentile(latencies["before"], 95))
    note = f"{chunks} synthetic vectors, real query embedding"
    return [
        _row("first search (builds BM25 cache)", first, "s", "-", None, note),
        _row(f"search p50 at {chunks} chunks", p50, "ms", "-", None, note),
        _row(f"search p95 at {chunks} chunks", p95, "ms", "<= 50 ms", p95 <= 50.0, note),
        _row(f"search p95 at {chunks} chunks, before", p95_before, "ms", "-", None,
             "no BM25 fields, k 60, weights 1/1; queries alternating with the row above"),
    ]


def _fill_synthetic(collection, chunks: int, dimension: int, batch: int = 5000) -> None:
    rng = np.random.default_rng(3)
    words = random.Random(5)
    for at in range(0, chunks, batch):
        n = min(batch, chunks - at)
        vectors = rng.standard_normal((n, dimension)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        ids = [f"synthetic-{at + i}" for i in range(n)]
        texts = [_sentence(words, 40) for _ in range(n)]
        metas = [{"path": f"synthetic/file{(at + i) // 10}.txt", "ext": "txt", "start": 0, "end": len(t),
                  "heading": "", "root": "synthetic", "title": f"file{(at + i) // 10} " + _sentence(words, 2),
                  "context": f"file{(at + i) // 10} > " + _sentence(words, 3)} for i, t in enumerate(texts)]
        collection.upsert(ids, vectors, texts, metas)


def run_benchmark(make_service: MakeService, search_chunks: int = 100_000, sync_files: int = 10_000,
                  log: Callable[[str], None] | None = None, docs: Path | None = None,
                  ingest_command: list[str] | None = None, big_file_mb: float = 50.0,
                  big_file_seconds: float = 60.0, precision: bool = True, basics: bool = True,
                  ingest_files: int = 300, quality: bool = False) -> list[dict]:
    from feldspar.bench import retrieval_scale as scale

    say = log or (lambda message: None)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="feldspar-bench-") as temp:
        if precision and docs is not None:
            say("fp32 vs int8: quality and interleaved speed …")
            rows += scale.bench_precision(make_service, Path(temp) / "precision", docs,
                                          docs / "eval" / "docs_questions.jsonl", log=say)
        if ingest_command and big_file_mb > 0:
            say(f"big file ({big_file_mb:g} MB) ingest, searches during the write, Ctrl-C …")
            rows += scale.bench_big_file(make_service, ingest_command, Path(temp) / "big", big_file_mb,
                                         big_file_seconds, log=say)
        if basics:
            say("ingest throughput …")
            rows += bench_ingest(make_service, Path(temp) / "ingest", ingest_files)
            say(f"no-change re-sync of {sync_files} files …")
            rows += bench_resync(make_service, Path(temp) / "sync", sync_files)
            say(f"search latency at {search_chunks} chunks …")
            rows += bench_search(make_service, Path(temp) / "search", search_chunks)
        if quality and docs is not None:
            from feldspar.bench.retrieval_quality import quality_rows

            say("quality: today's settings vs before contextual chunks …")
            rows += quality_rows(make_service, Path(temp) / "quality", docs, log=say)
    return rows
