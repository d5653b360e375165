"""The composition root: the one place that builds Feldspar's parts from one Settings.

Every other package receives plain arguments; only this module reads Settings fields
and decides which concrete classes to use. Imports are local so `feldspar --help`
stays fast and a part that is not used is never loaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from feldspar.settings import Settings

if TYPE_CHECKING:  # pragma: no cover
    from feldspar.model.engine import Engine


def build_engine(settings: Settings, model: str | None = None) -> "Engine":
    """Load the Granite engine named by ``model`` or ``settings.model``."""
    from feldspar.model.engine import Engine, EngineOptions

    options = EngineOptions(
        device=settings.device,
        dtype=settings.dtype,
        prefill_chunk=settings.prefill_chunk,
        reuse=settings.reuse,
        cache_budget_bytes=settings.cache_budget_bytes,
        snapshot_interval=settings.snapshot_interval,
    )
    return Engine.load(model or settings.model, options)


def build_retrieval(settings: Settings, library_warnings: bool = False):
    """Build the retrieval service (ingest + search) for ``settings.collection``.

    ``library_warnings`` lets the parser subprocesses log their libraries' warnings (pypdf's
    repairs of damaged files…); by default they are quiet, the per-file reason says enough.
    """
    from feldspar.retrieval.ingest import IngestOptions
    from feldspar.retrieval.service import RetrievalConfig, RetrievalService
    from feldspar.retrieval.store import StoreLocation

    if settings.chroma_host:
        location = StoreLocation(host=settings.chroma_host, port=settings.chroma_port, ssl=settings.chroma_ssl)
        manifest_path = settings.home / f"manifest-{location.slug}.sqlite"
    else:
        location = StoreLocation(path=settings.chroma_dir)
        manifest_path = settings.manifest_path
    options = IngestOptions(
        chunk_tokens=settings.chunk_tokens,
        chunk_overlap=settings.chunk_overlap,
        max_file_bytes=settings.max_file_bytes,
        parse_timeout_s=settings.parse_timeout_s,
        parse_memory_bytes=settings.parse_memory_mb * 1024**2,
        parse_workers=settings.parse_workers,
        flush_chunks=max(settings.embed_batch_size * 4, 4),
        library_warnings=library_warnings,
    )
    config = RetrievalConfig(
        home=settings.home,
        location=location,
        manifest_path=manifest_path,
        collection=settings.collection,
        embedding_model=settings.embedding_model,
        embed_batch_size=settings.embed_batch_size,
        reranker=settings.reranker,
        ingest=options,
    )
    return RetrievalService(config)
