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


def build_retrieval(settings: Settings):
    """Build the retrieval service (ingest + search) for ``settings.collection``."""
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


def build_tools(settings: Settings, retrieval=None, tools_module=None) -> list:
    """The agent's tools: built-ins (search/read only with a retrieval service), a tools module, MCP servers.

    ``tools_module`` (a path) overrides ``settings.tools_module``.
    """
    from feldspar.agents.builtin_tools import (
        calculator_tool, current_time_tool, read_document_tool, search_documents_tool,
    )
    from feldspar.agents.tools import check_unique

    tools = []
    if retrieval is not None:
        tools.append(search_documents_tool(lambda query, k: [hit.to_dict() for hit in retrieval.search(query, k)]))
        tools.append(read_document_tool(retrieval.read_span))
    tools += [calculator_tool(), current_time_tool()]
    module = tools_module or settings.tools_module
    if module is not None:
        from feldspar.agents.tool_sources import load_tools_module

        tools += load_tools_module(module)
    if settings.mcp_servers:
        from feldspar.agents.tool_sources import load_mcp_tools

        servers = {name: server.model_dump(exclude_none=True) for name, server in settings.mcp_servers.items()}
        tools += load_mcp_tools(servers)
    return check_unique(tools)
