"""The composition root: the one place that builds Feldspar's parts from one Settings.

Every other package receives plain arguments; only this module reads Settings fields
and decides which concrete classes to use. ``build_runtime(settings)`` decides once whether
the model runs here or on a remote OpenAI-compatible server and returns the Runtime
(app/runtime.py) that the CLI, the server, the web UI and the Python API hold; the Runtime
builds each part once, on first use, through the builders below (engine, chat backend and
chat model, retrieval, tools, thread store, and ``assemble_agent``: the agent graph over
them). Imports are local so `feldspar --help` stays fast and a part that is not used is
never loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from feldspar.settings import Settings

if TYPE_CHECKING:  # pragma: no cover
    from feldspar.model.engine import Engine


def build_engine(settings: Settings, model: str | None = None) -> "Engine":
    """Load the Granite engine named by ``model`` or ``settings.model``."""
    from feldspar.model.names import resolve

    refuse_remote(model or settings.model)
    resolve(model or settings.model)  # a mistyped name or missing folder: one line, before torch is imported
    from feldspar.model.engine import Engine, EngineOptions

    options = EngineOptions(
        device=settings.device,
        dtype=settings.dtype,
        quant=settings.quant,
        compile=settings.compile,
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
    from feldspar.retrieval.bm25 import FieldBoosts
    from feldspar.retrieval.search import Fusion
    from feldspar.retrieval.service import RetrievalConfig, RetrievalService

    location, manifest_path = _store_location(settings)
    config = RetrievalConfig(
        home=settings.home,
        location=location,
        manifest_path=manifest_path,
        collection=settings.collection,
        embedding_model=settings.embedding_model,
        embed_batch_size=settings.embed_batch_size,
        embed_precision=settings.embed_precision,
        embed_threads=settings.embed_threads,
        embed_cache_dir=settings.embedders_cache,
        rerank_model=settings.rerank_model,
        rerank_top=settings.rerank_top,
        mmr=settings.search_mmr,
        fusion=Fusion(settings.rrf_k, settings.rrf_vector_weight, settings.rrf_bm25_weight),
        boosts=FieldBoosts(settings.bm25_title_boost, settings.bm25_heading_boost),
        ingest=_ingest_options(settings, library_warnings),
    )
    return RetrievalService(config)


def _store_location(settings: Settings):
    """(StoreLocation, manifest path): a Chroma server when ``chroma_host`` is set, else the data home's folder."""
    from feldspar.retrieval.store import StoreLocation

    if settings.chroma_host:
        location = StoreLocation(host=settings.chroma_host, port=settings.chroma_port, ssl=settings.chroma_ssl)
        return location, settings.home / f"manifest-{location.slug}.sqlite"
    return StoreLocation(path=settings.chroma_dir), settings.manifest_path


def _ingest_options(settings: Settings, library_warnings: bool):
    from feldspar.retrieval.ingest import IngestOptions

    return IngestOptions(
        chunk_tokens=settings.chunk_tokens,
        chunk_overlap=settings.chunk_overlap,
        chunk_context=settings.chunk_context,
        max_file_bytes=settings.max_file_bytes,
        parse_timeout_s=settings.parse_timeout_s,
        parse_memory_bytes=settings.parse_memory_mb * 1024**2,
        parse_workers=settings.parse_workers,
        flush_chunks=max(settings.embed_batch_size * 4, 4),
        library_warnings=library_warnings,
    )


# ---- the runtime and the agent ------------------------------------------------------------
def build_runtime(settings: Settings, model: str | None = None, *, chat_model=None, engine: "Engine | None" = None):
    """The Runtime (app/runtime.py) of ``settings``, where local vs remote is decided, once.

    ``model`` (a `serve --model` name) replaces ``settings.model`` and runs remotely only when it is
    an ``openai:`` spec; without it ``remote_target`` decides. A given ``chat_model`` or ``engine``
    is used as is (nothing remote is connected then)."""
    from feldspar.agents.remote_backend import parse_model_spec
    from feldspar.runtime import Runtime

    if model is not None:
        settings = settings.model_copy(update={"model": model})
        remote = parse_model_spec(model)
    else:
        remote = remote_target(settings)
    if chat_model is not None or engine is not None:
        remote = None
    return Runtime(settings, Parts(settings, remote), chat_model=chat_model, engine=engine)


class Parts:
    """How a Runtime builds each part: this module's builders for one Settings, local or ``remote``
    (base URL, model name) decided. The Runtime calls each at most once and keeps what it returns."""

    def __init__(self, settings: Settings, remote: tuple[str, str] | None) -> None:
        self.settings, self.remote = settings, remote

    def engine(self) -> "Engine":
        """The local engine of ``settings.model`` (an ``openai:`` spec is refused in one line)."""
        return build_engine(self.settings)

    def check_pack(self) -> None:
        """An agent on a state pack needs the model here: refused in one line when it runs remotely."""
        if self.remote is not None:
            model = self.settings.model
            refuse_remote(model if model.startswith("openai:") else f"openai:{self.remote[0]}")

    def backend(self, engine):
        """The chat backend: the remote server's, connected; else LocalChatBackend over ``engine()``."""
        if self.remote is not None:
            return build_remote_backend(self.settings, self.remote)
        from feldspar.model.chat_backend import LocalChatBackend

        return LocalChatBackend(engine())

    def generator(self, backend, engine):
        """What `feldspar chat` / `generate` drive: ``engine()``, or the remote ``backend()`` behind its methods."""
        if self.remote is None:
            return engine()
        from feldspar.remote_engine import RemoteEngine

        return RemoteEngine(backend())

    def retrieval(self):
        return build_retrieval(self.settings)

    def chat_model(self, settings: Settings, backend, reuse: bool | None = None):
        return build_chat_model(settings, backend, reuse)

    def agent(self, settings: Settings, chat_model, engine: "Engine | None", **options):
        return assemble_agent(settings, chat_model, engine, **options)


def build_chat_model(settings: Settings, backend, reuse: bool | None = None):
    """ChatGranite over a chat backend, with the generation settings (``reuse=False``: recompute every prompt)."""
    from feldspar.agents.chat_model import ChatGranite

    return ChatGranite(backend=backend, max_new_tokens=settings.max_new_tokens, temperature=settings.temperature,
                       top_p=settings.top_p, seed=settings.seed, reuse=reuse)


def agent_config(settings: Settings, **overrides):
    from feldspar.agents.configuration import AgentConfig

    values = dict(policy=settings.agent_policy, k=settings.agent_k, max_steps=settings.agent_max_steps,
                  max_tool_calls=settings.agent_max_tool_calls, max_new_tokens=settings.max_new_tokens,
                  summary_share=settings.agent_summary_share, approve=settings.approve)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return AgentConfig(**values)


def collection_search(settings: Settings, service):
    """search(query, k) over ``settings.collection``; a missing or empty collection fails here, once."""
    from feldspar.agents.errors import AgentError

    rows = {row["name"]: row for row in service.collections()}
    row = rows.get(settings.collection)
    if row is None:
        service.store.open(settings.collection, service.embedder.name, create=False)  # raises UnknownCollection
    if row is not None and not row.get("chunks"):
        raise AgentError(f"collection {settings.collection!r} is empty", fix="ingest_first", collection=settings.collection)
    from feldspar.agents.adapters import CollectionSearch

    return CollectionSearch(service)


def build_agent(settings: Settings, engine: "Engine | None" = None, *, chat_model=None, pack: str | None = None,
                **options):
    """An agent of a runtime of its own (see ``assemble_agent`` for ``options``): over ``chat_model``
    when given, else over ``engine`` or the model ``settings`` name."""
    return build_runtime(settings, chat_model=chat_model, engine=engine).agent(None, pack, **options)


@dataclass
class _AnswerSource:
    """Where an agent's answers come from: a state pack (``loaded``) or the collection's ``search``."""

    config: Any
    pack: str | None = None
    retrieval: Any = None
    search: Any = None
    loaded: Any = None
    mode_note: dict | None = None


def assemble_agent(settings: Settings, chat_model, engine: "Engine | None" = None, *, pack: str | None = None,
                   policy: str | None = None, approve: str | None = None, tools_module=None, threads: bool = True,
                   no_reuse: bool = False):
    """The agent graph wired to ``chat_model`` (``engine``: the local one behind it, when the model runs
    here), the collection or a state pack, tools and persistent threads."""
    from feldspar.agents.adapters import EngineThreadStates, PromptTokenCounter, run_tool_record
    from feldspar.agents.nodes import AgentDeps
    from feldspar.agents.runner import Agent

    config = agent_config(settings, policy=policy or ("pack" if pack else None), approve=approve)
    source = _answer_source(settings, engine, config, pack, tools_module)
    meta: dict = {"model": chat_model.backend.name, "pack": source.pack,
                  "collection": settings.collection if source.mode_note or not source.pack else None}
    if source.loaded is not None:
        meta.update(pack_tokens=len(source.loaded.token_ids), pack_load_s=round(source.loaded.load_s, 4))
    tools = _agent_tools(settings, source, tools_module)
    deps = AgentDeps(chat_model=chat_model, config=source.config, search=source.search, tools=tools,
                     run_tool=run_tool_record, pack_documents=source.loaded.documents if source.loaded else None,
                     context_window=chat_model.backend.context_window, count_tokens=PromptTokenCounter(chat_model),
                     mode_note=source.mode_note)
    store = build_thread_store(settings) if threads else None
    hooks = None
    if engine is not None and settings.reuse and not no_reuse:
        hooks = EngineThreadStates(engine, settings.thread_states_dir, settings.thread_state_budget_bytes)
    return Agent(deps, store, meta=meta, state_hooks=hooks)


def _answer_source(settings: Settings, engine, config, pack: str | None, tools_module) -> _AnswerSource:
    """The given pack; else the collection's auto pack when policy auto and it fits the window; else search."""
    source = _AnswerSource(config, pack)
    if pack is None and config.policy == "auto" and engine is not None and settings.long_context_share > 0:
        source.retrieval = build_retrieval(settings)
        collection_search(settings, source.retrieval)  # a missing or empty collection fails here
        source.pack, source.mode_note = long_context_pack(settings, engine, source.retrieval,
                                                          pack_tool_schemas(settings, tools_module))
        if source.pack is not None:
            source.config = replace(config, policy="pack")
    if source.pack is not None:
        source.loaded = attach_pack(settings, engine, source.pack)
    elif source.config.policy in ("always", "auto"):
        source.retrieval = source.retrieval or build_retrieval(settings)
        source.search = collection_search(settings, source.retrieval)
    return source


def _agent_tools(settings: Settings, source: _AnswerSource, tools_module) -> list:
    """The agent's tools: on a pack only the user's own (and a note when they differ from the pack's)."""
    pack = source.pack
    tools = [t for t in build_tools(settings, None if pack else source.retrieval, tools_module, search=False)
             if pack is None or t.source != "builtin"]  # a pack: the user's own; the graph offers search_documents
    if pack is not None:  # the pack's prefix holds the tools it was made with: say when they differ
        from feldspar.pack_tools import reuse_note

        source.mode_note = reuse_note(source.loaded.meta, [t.openai_schema() for t in tools]) or source.mode_note
    return tools


def long_context_pack(settings: Settings, engine: "Engine", retrieval, tools=None) -> tuple[str | None, dict]:
    """The collection's auto pack when it fits the window (made or refreshed as needed), and why."""
    from feldspar.long_context import decide, ensure_pack

    decision, read = decide(retrieval, engine, settings.collection, settings.long_context_share,
                            settings.max_new_tokens)
    if decision.use_pack:
        ensure_pack(engine, settings.packs_dir, decision.pack, read, tools=tools)
    note = {"mode": "long-context pack" if decision.use_pack else "retrieval", "why": decision.reason,
            "collection_tokens": decision.tokens}
    return decision.pack if decision.use_pack else None, note


def attach_pack(settings: Settings, engine: "Engine", name: str):
    """Load a state pack into the engine's cache; returns the loaded pack (documents, ids, timing)."""
    from feldspar.model.packs import install_pack, load_pack

    loaded = load_pack(engine, settings.packs_dir, name)
    install_pack(engine, loaded)
    return loaded


def pack_tool_schemas(settings: Settings, tools_module=None) -> list[dict]:
    """The tool schemas a chat on a pack offers (the user's own tools): what a pack is prefilled with."""
    return [t.openai_schema() for t in build_tools(settings, None, tools_module) if t.source != "builtin"]


def build_tools(settings: Settings, retrieval=None, tools_module=None, search: bool = True) -> list:
    """The agent's tools: built-ins (search/read only with a retrieval service), a tools module, MCP servers.

    ``tools_module`` (a path) overrides ``settings.tools_module``; ``search=False`` leaves out
    ``search_documents``, which the agent's graph makes itself from its search (agents/nodes.py).
    """
    from feldspar.agents.adapters import CollectionSearch
    from feldspar.agents.builtin_tools import (
        calculator_tool, current_time_tool, read_document_tool, search_documents_tool,
    )
    from feldspar.agents.tools import check_unique

    tools = []
    if retrieval is not None:
        if search:
            tools.append(search_documents_tool(CollectionSearch(retrieval), settings.agent_k))
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


# ---- remote Granite servers and scale-out -------------------------------------------------
def remote_target(settings: Settings) -> tuple[str, str] | None:
    """(base URL, model name) when the model runs on an OpenAI-compatible server, else None.

    ``--model openai:<base-url>#<model>`` wins; else ``remote_url`` with ``remote_model``
    (an empty name means the server's only model).
    """
    from feldspar.agents.remote_backend import parse_model_spec

    spec = parse_model_spec(settings.model)
    if spec is not None:
        return spec
    if settings.remote_url:
        return settings.remote_url.rstrip("/"), settings.remote_model or ""
    return None


def refuse_remote(model: str) -> None:
    """Packs, benchmarks and prompts need the model in this process: a remote spec is refused in one line."""
    from feldspar.settings import SettingsError

    if model.startswith("openai:"):
        raise SettingsError(f"{model} is a remote server; this needs a Granite checkpoint in this process "
                            "(a catalog name, hub id or local path)")


def build_remote_backend(settings: Settings, target: tuple[str, str] | None = None):
    """The chat backend on the remote server, connected (model name checked, window read)."""
    from feldspar.agents.remote_backend import RemoteChatBackend

    url, model = target or remote_target(settings)
    tokenizer = prompt_ids = None
    if settings.remote_tokenizer:  # exact counts: the checkpoint's tokenizer and its own chat template
        from feldspar.model.loader import load_tokenizer, resolve
        from feldspar.model.prompts import chat_token_ids, encode

        loaded = load_tokenizer(resolve(settings.remote_tokenizer))
        tokenizer = lambda text: encode(loaded, text)  # noqa: E731
        prompt_ids = lambda messages, tools, documents: chat_token_ids(loaded, messages, tools, documents)  # noqa: E731
    backend = RemoteChatBackend(url, model, api_key=settings.remote_api_key, timeout_s=settings.remote_timeout_s,
                                context_window=settings.remote_context_window, tokenizer=tokenizer,
                                max_concurrency=settings.remote_concurrency, prompt_ids=prompt_ids,
                                structured=settings.remote_structured)
    return backend.connect()


def build_thread_store(settings: Settings):
    """Agent threads: PostgreSQL when ``postgres_url`` is set, else ``threads.sqlite`` in the data home."""
    from feldspar.agents.threads import ThreadStore

    if settings.postgres_url:
        return ThreadStore.postgres(settings.postgres_url)
    check_thread_store(settings)
    return ThreadStore(settings.threads_path)


def check_thread_store(settings: Settings) -> None:
    """A data home that cannot hold ``threads.sqlite`` fails as one line (cheap: before a model loads)."""
    from feldspar.home import require_writable

    if not settings.postgres_url:
        require_writable(settings.threads_path.parent)
