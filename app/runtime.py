"""The runtime: the parts of one Settings, each built once, held by every front end.

``compose.build_runtime(settings)`` decides once whether the chat model runs in this process
(the local engine) or on an OpenAI-compatible server, and hands the Runtime compose's ``Parts``
with that decision made (``parts.remote``); nothing here reads Settings to choose a class. The
``Runtime`` builds, on first use and once each, through those parts: the engine (``engine()``:
packs, prompts and benchmarks need it here), the chat backend (``backend()``: the engine's
``LocalChatBackend`` or the connected remote one), chat models with given generation settings
(``chat_model()``), the ``generator()`` that `feldspar chat`/`generate` drive, the retrieval
service and the agents. Agents are cached here, per (collection, pack, options), and per calling
thread when asked (a thread store's SQLite connection serves one thread at a time);
``agents(**options)`` is a view ``(collection, pack) -> Agent`` with those options, what the
batch runner and the server's ``feldspar-agent`` call. The CLI, the server, the web UI and the
Python API hold one of these. Knows the Parts protocol and the agent's public API; nothing of
terminals, HTTP or pages.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from feldspar.model.engine import Engine
    from feldspar.settings import Settings

_GENERATION = ("max_new_tokens", "temperature", "top_p", "seed")


class Runtime:
    """One Settings' engine, chat backend, chat models, retrieval and agents, each built once.

    ``parts`` (compose.Parts) build them, local or remote decided. ``chat_model`` / ``engine`` are
    parts given ready-made (a scripted chat model in tests, an engine already loaded)."""

    def __init__(self, settings: "Settings", parts: Any, *, chat_model: Any = None,
                 engine: "Engine | None" = None) -> None:
        self.settings, self.parts = settings, parts
        self._given_chat_model, self._engine = chat_model, engine
        self._backend = self._retrieval = None
        self._chat_models: dict[tuple, Any] = {}
        self._agents: dict[tuple, Any] = {}
        self._lock = threading.RLock()  # held while a part is built
        self._guard = threading.Lock()  # held only to read or add an agent

    @property
    def remote(self) -> tuple[str, str] | None:
        """(base URL, model name) of the remote server the model runs on, else None (compose's decision)."""
        return self.parts.remote

    # ---- the model ---------------------------------------------------------------------------
    @property
    def loaded_engine(self) -> "Engine | None":
        """The engine when it is loaded already (never loads it)."""
        return self._engine

    def engine(self) -> "Engine":
        """The local engine, loaded on first call (a remote ``openai:`` model is refused in one line)."""
        with self._lock:
            if self._engine is None:
                self._engine = self.parts.engine()
            return self._engine

    def backend(self):
        """The one chat backend: the remote server's (connected), else the engine's LocalChatBackend."""
        with self._lock:
            if self._given_chat_model is not None:
                return self._given_chat_model.backend
            if self._backend is None:
                self._backend = self.parts.backend(self.engine)
            return self._backend

    def chat_model(self, settings: "Settings | None" = None, reuse: bool | None = None):
        """ChatGranite over ``backend()`` with the generation settings of ``settings`` (default: the
        runtime's); one per distinct setting. A chat model given to the runtime is returned as is."""
        if self._given_chat_model is not None:
            return self._given_chat_model
        settings = settings or self.settings
        key = (*(getattr(settings, name) for name in _GENERATION), reuse)
        with self._lock:
            if key not in self._chat_models:
                self._chat_models[key] = self.parts.chat_model(settings, self.backend(), reuse)
            return self._chat_models[key]

    def uses_engine(self, pack: str | None = None) -> bool:
        """Whether an agent on ``pack`` (None: a collection) needs the local engine: a pack always does;
        else only when the chat model runs on it here (not a remote server's, not a given one)."""
        return pack is not None or (self.remote is None and self._given_chat_model is None)

    def engine_for(self, pack: str | None = None) -> "Engine | None":
        """The engine an agent on ``pack`` (None: a collection) runs with, loaded now, or None when it
        needs none; a pack over a remote model is refused in one line (its state lives in a local engine)."""
        if pack is not None:
            self.parts.check_pack()
        return self.engine() if self.uses_engine(pack) else None

    def local_engine(self) -> "Engine | None":
        """The engine when the chat model runs on it here (loaded now), else None."""
        return self.engine() if self.uses_engine() else None

    def generator(self):
        """What `feldspar chat` / `generate` drive: the engine, or the remote server behind its methods."""
        return self.parts.generator(self.backend, self.engine)

    def retrieval(self):
        """The retrieval service of ``settings.collection``'s data home, built on first use."""
        with self._lock:
            if self._retrieval is None:
                self._retrieval = self.parts.retrieval()
            return self._retrieval

    # ---- agents ------------------------------------------------------------------------------
    def agent(self, collection: str | None = None, pack: str | None = None, *, overrides: dict | None = None,
              per_thread: bool = False, **options: Any):
        """The agent for (collection, pack) with ``options`` (compose.assemble_agent's: policy, approve,
        tools_module, threads, no_reuse) and Settings ``overrides`` (agent_k, max_new_tokens …), built
        once and kept; ``per_thread``: one per calling thread."""
        key = _agent_key(collection, pack, overrides, options, per_thread)
        with self._lock:  # one build at a time; a lookup (cached_agent) never waits for one
            agent = self._lookup(key)
            if agent is None:
                agent = self._build_agent(collection, pack, overrides or {}, options)
                with self._guard:
                    self._agents[key] = agent
            return agent

    def cached_agent(self, collection: str | None = None, pack: str | None = None, *, overrides: dict | None = None,
                     **options: Any):
        """What ``agent(collection, pack, overrides=…, **options)`` returns when it is built already, else None."""
        return self._lookup(_agent_key(collection, pack, overrides, options, False))

    def _lookup(self, key: tuple):
        with self._guard:
            return self._agents.get(key)

    def _build_agent(self, collection: str | None, pack: str | None, overrides: dict, options: dict):
        update = {**overrides, **({"collection": collection} if collection else {})}
        settings = self.settings.model_copy(update=update) if update else self.settings
        engine = self.engine_for(pack)
        chat_model = self.chat_model(settings, reuse=False if options.get("no_reuse") else None)
        return self.parts.agent(settings, chat_model, engine, pack=pack, **options)

    def agents(self, pack: str | None = None, **options: Any) -> "Agents":
        """A view ``(collection, pack) -> Agent`` with these options, one agent per calling thread;
        ``pack`` answers a question that names neither a collection nor a pack."""
        return Agents(self, pack, options, per_thread=True)

    def max_workers(self) -> int:
        """How many requests the backend serves at once: its ``max_concurrency`` attribute, else 1
        (the local engine serves one request at a time; a remote backend declares more)."""
        return max(1, int(getattr(self.backend(), "max_concurrency", 1) or 1))

    def close(self) -> None:
        if self._retrieval is not None:
            self._retrieval.close()
            self._retrieval = None


def _agent_key(collection, pack, overrides: dict | None, options: dict, per_thread: bool) -> tuple:
    return (collection, pack, tuple(sorted((overrides or {}).items())), tuple(sorted(options.items())),
            threading.get_ident() if per_thread else None)


class Agents:
    """The runtime's agents with one set of options: ``agents(collection, pack)``; cached by the runtime."""

    def __init__(self, runtime: Runtime, default_pack: str | None, options: dict, per_thread: bool = False) -> None:
        self.runtime, self.default_pack, self.options, self.per_thread = runtime, default_pack, options, per_thread

    def __call__(self, collection: str | None = None, pack: str | None = None):
        if collection is None and pack is None:
            pack = self.default_pack
        return self.runtime.agent(collection, pack, per_thread=self.per_thread, **self.options)

    def cached(self, collection: str | None = None, pack: str | None = None):
        """The agent for (collection, pack) when built already (never builds; for the shared, not per-thread, view)."""
        return None if self.per_thread else self.runtime.cached_agent(collection, pack, **self.options)

    def shared(self) -> "Agents":
        """The same options, one agent for every calling thread (the server builds and runs them on one lane)."""
        return Agents(self.runtime, self.default_pack, self.options, per_thread=False)

    def check(self) -> None:
        """Load the local engine, or connect the remote server, now: a model that cannot be used fails here, once."""
        self.runtime.backend()

    def max_workers(self) -> int:
        return self.runtime.max_workers()
