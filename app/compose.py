"""The composition root: the one place that builds Feldspar's parts from one Settings.

Every other package receives plain arguments; only this module reads Settings fields
and decides which concrete classes to use. Imports are local so `feldspar --help`
stays fast and a part that is not used is never loaded.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

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
    from feldspar.retrieval.ingest import IngestOptions
    from feldspar.retrieval.search import Fusion
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
        chunk_context=settings.chunk_context,
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
        embed_precision=settings.embed_precision,
        embed_threads=settings.embed_threads,
        embed_cache_dir=settings.embedders_cache,
        rerank_model=settings.rerank_model,
        rerank_top=settings.rerank_top,
        mmr=settings.search_mmr,
        fusion=Fusion(settings.rrf_k, settings.rrf_vector_weight, settings.rrf_bm25_weight),
        boosts=FieldBoosts(settings.bm25_title_boost, settings.bm25_heading_boost),
        ingest=options,
    )
    return RetrievalService(config)


# ---- the agent ---------------------------------------------------------------------------
def build_chat_model(settings: Settings, engine: "Engine", reuse: bool | None = None):
    """ChatGranite over the local engine, with the generation settings (``reuse=False``: recompute every prompt)."""
    from feldspar.agents.chat_model import ChatGranite
    from feldspar.model.chat_backend import LocalChatBackend

    return ChatGranite(backend=LocalChatBackend(engine), max_new_tokens=settings.max_new_tokens,
                       temperature=settings.temperature, top_p=settings.top_p, seed=settings.seed,
                       reuse=reuse)


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
                policy: str | None = None, approve: str | None = None, tools_module=None, threads: bool = True,
                no_reuse: bool = False):
    """The agent graph wired to a chat model (ChatGranite over ``engine`` unless one is given),
    the collection or a state pack, tools and persistent threads."""
    from feldspar.agents.adapters import EngineThreadStates, PromptTokenCounter, run_tool_record
    from feldspar.agents.nodes import AgentDeps
    from feldspar.agents.runner import Agent

    if chat_model is None and engine is None:
        chat_model = remote_chat_model(settings)
    if pack is not None and engine is None and remote_target(settings) is not None:
        refuse_remote(settings.model if settings.model.startswith("openai:") else f"openai:{settings.remote_url}")
    if chat_model is None:
        engine = engine or build_engine(settings)
        chat_model = build_chat_model(settings, engine, reuse=False if no_reuse else None)
    backend = chat_model.backend
    config = agent_config(settings, policy=policy or ("pack" if pack else None), approve=approve)
    retrieval = search = pack_documents = mode_note = None
    if pack is None and config.policy == "auto" and engine is not None and settings.long_context_share > 0:
        retrieval = build_retrieval(settings)
        collection_search(settings, retrieval)  # a missing or empty collection fails here
        pack, mode_note = long_context_pack(settings, engine, retrieval, pack_tool_schemas(settings, tools_module))
        if pack is not None:
            config = replace(config, policy="pack")
    meta: dict = {"model": backend.name, "collection": settings.collection if mode_note or not pack else None,
                  "pack": pack}
    if pack is not None:
        loaded = attach_pack(settings, engine, pack)
        pack_documents = loaded.documents
        meta.update(pack_tokens=len(loaded.token_ids), pack_load_s=round(loaded.load_s, 4))
    elif config.policy in ("always", "auto"):
        retrieval = retrieval or build_retrieval(settings)
        search = collection_search(settings, retrieval)
    tools = [t for t in build_tools(settings, None if pack else retrieval, tools_module, search=False)
             if pack is None or t.source != "builtin"]  # a pack: the user's own; the graph offers search_documents
    if pack is not None:  # the pack's prefix holds the tools it was made with: say when they differ
        from feldspar.pack_tools import reuse_note

        mode_note = reuse_note(loaded.meta, [t.openai_schema() for t in tools]) or mode_note
    deps = AgentDeps(chat_model=chat_model, config=config, search=search, tools=tools,
                     run_tool=run_tool_record, pack_documents=pack_documents, context_window=backend.context_window,
                     count_tokens=PromptTokenCounter(chat_model), mode_note=mode_note)
    store = build_thread_store(settings) if threads else None
    hooks = None
    if engine is not None and settings.reuse and not no_reuse:
        hooks = EngineThreadStates(engine, settings.thread_states_dir, settings.thread_state_budget_bytes)
    return Agent(deps, store, meta=meta, state_hooks=hooks)


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


def remote_chat_model(settings: Settings):
    """ChatGranite over the remote server when ``settings`` name one (Granite on an
    OpenAI-compatible server), else None: the caller builds the local engine."""
    return build_remote_chat_model(settings) if remote_target(settings) is not None else None


def build_remote_chat_model(settings: Settings):
    """ChatGranite over the remote server, with the generation settings."""
    from feldspar.agents.chat_model import ChatGranite

    return ChatGranite(backend=build_remote_backend(settings), max_new_tokens=settings.max_new_tokens,
                       temperature=settings.temperature, top_p=settings.top_p, seed=settings.seed)


def build_generator(settings: Settings):
    """What `feldspar chat` / `generate` drive: the local engine, or the remote server behind the same methods."""
    if remote_target(settings) is None:
        return build_engine(settings)
    from feldspar.remote_engine import RemoteEngine

    return RemoteEngine(build_remote_backend(settings))


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


# ---- many questions: batch, eval answers, the Python API ----------------------------------
class AgentFactory:
    """Agents for any (collection, pack), built on first use and kept; all share one engine or chat model.

    The engine is loaded only when the first agent needs it. Each calling thread gets agents of its
    own (a thread store's SQLite connection serves one thread at a time). ``max_workers`` is how many
    questions the backend can serve at once: its ``max_concurrency``, 1 when it declares none.
    """

    def __init__(self, settings: Settings, *, chat_model=None, engine: "Engine | None" = None, pack: str | None = None,
                 **agent_options) -> None:
        import threading

        if chat_model is None and engine is None:
            chat_model = remote_chat_model(settings)
        self.settings, self.chat_model, self.engine, self.options = settings, chat_model, engine, agent_options
        self.default_pack = pack  # used when a question names neither a collection nor a pack
        self.agents: dict[tuple[str | None, str | None, int], object] = {}
        self._lock, self._threading = threading.Lock(), threading

    def check(self) -> None:
        """Load the local engine now when the agents need one (a remote chat model is connected already)."""
        if self.chat_model is None:
            self.get_engine()

    def get_engine(self) -> "Engine":
        if self.engine is None:
            self.engine = build_engine(self.settings)
        return self.engine

    def __call__(self, collection: str | None = None, pack: str | None = None):
        if collection is None and pack is None:
            pack = self.default_pack
        with self._lock:
            key = (collection, pack, self._threading.get_ident())
            if key not in self.agents:
                settings = self.settings.model_copy(update={"collection": collection}) if collection else self.settings
                engine = self.get_engine() if self.chat_model is None else self.engine
                self.agents[key] = build_agent(settings, engine, chat_model=self.chat_model, pack=pack, **self.options)
            return self.agents[key]

    def max_workers(self) -> int:
        """How many requests the backend serves at once: its ``max_concurrency`` attribute, else 1
        (the local engine serves one request at a time; a remote backend declares more)."""
        chat_model = self.chat_model or self(None, None).deps.chat_model
        return max(1, int(getattr(chat_model.backend, "max_concurrency", 1) or 1))
