"""The UI's services: what the Streamlit pages act on, built from Settings via app/compose.py.

One ``UiServices`` per server process (cached with ``st.cache_resource`` in app/webui/main.py),
shared by every browser session: the engine loads lazily on first use (a failure is a
message, not a crash, and the next use tries again), agents are built once per chat choice
(collection or pack, policy, k, generation settings) and share the persistent threads of
the CLI. Tests inject a chat model (``chat_model=``, e.g. ChatGranite over the scripted
backend) or an engine (``engine=``). One turn runs at a time on the one model
(``stream_turn`` holds a lock). The engine and the agents are the Runtime's (app/runtime.py,
built by compose; a new one when the model is switched). The chat-page data shapes (turns of a thread, sources,
budget) come from app/webui/chat.py. Knows compose, Settings and the agent's public API;
renders nothing.
"""

from __future__ import annotations

import mimetypes
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

from feldspar.settings import Settings

SCRIPTED_REPLIES_ENV = "FELDSPAR_TEST_SCRIPTED_REPLIES"  # test only: see scripted_chat_model_from_env


@dataclass(frozen=True)
class ChatChoice:
    """What a chat answers from and how: the sidebar's settings, one agent per distinct choice."""

    collection: str | None = None
    pack: str | None = None
    policy: str = "always"
    k: int = 4
    max_new_tokens: int = 512
    temperature: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class UiServices:
    def __init__(self, settings: Settings, *, chat_model: Any = None, engine: Any = None,
                 tools_module: str | Path | None = None) -> None:
        self.settings = settings
        from feldspar.labels import RANDOM_LABEL

        self.random_label = RANDOM_LABEL  # the CLI's words, on every random-weight answer
        self._chat_model = chat_model      # injected (tests, the test-only scripted switch)
        self.runtime = self._runtime(settings, engine)  # the engine (injected or loaded on first use), agents
        self._engine_error: str | None = None
        self._tools_module = tools_module
        self._models_used = [settings.model]
        self._threads = None
        self._retrieval = None
        self._library = None
        self._on_prefill = None            # the running turn's prefill listener (done, total)
        self._lock = threading.RLock()     # one model, one turn at a time
        self._build_lock = threading.Lock()

    # ---- errors ----------------------------------------------------------------------
    @property
    def user_errors(self) -> tuple[type[BaseException], ...]:
        from feldspar.errors import user_error_types

        return user_error_types()

    def error_text(self, exc: BaseException) -> str:
        from feldspar.webui.remedies import web_message

        return web_message(exc)

    # ---- the model -------------------------------------------------------------------
    def _runtime(self, settings: Settings, engine: Any = None):
        from feldspar.compose import build_runtime

        return build_runtime(settings, chat_model=self._chat_model, engine=engine)

    @property
    def _engine(self):
        return self.runtime.loaded_engine

    def engine(self):
        """The loaded engine (loads it now if needed); a user error when it cannot load."""
        return self._loading(self.runtime.engine)

    def _loading(self, load):
        """``load()``, its user error kept for the Models page (and raised)."""
        with self._build_lock:
            try:
                engine = load()
            except self.user_errors as exc:
                self._engine_error = self.error_text(exc)
                raise
            self._engine_error = None
            return engine

    def model_choices(self) -> list[str]:
        """The models the sidebar offers: those used in this server (the configured one first), then the catalog's."""
        from feldspar.model.catalog import CATALOG

        names = [*self._models_used, *(spec.name for spec in CATALOG if not spec.base)]
        return list(dict.fromkeys(names))

    def model_label(self, name: str) -> str:
        """How the picker shows a model: a random-weight checkpoint says so."""
        from feldspar.model.checkpoint_random import is_random_checkpoint

        return f"{name} (RANDOM WEIGHTS)" if os.path.isdir(name) and is_random_checkpoint(name) else name

    def switch_model(self, name: str) -> None:
        """Answer with ``name`` from now on (for every browser on this server): the engine loads on next
        use, agents are rebuilt, threads and collections stay. A model that cannot load is a message then."""
        with self._lock, self._build_lock:
            if name == self.settings.model:
                return
            self.settings = self.settings.model_copy(update={"model": name})
            self._models_used.append(name)
            self.runtime = self._runtime(self.settings)  # a new engine and new agents, on next use
            self._engine_error, self._library = None, None

    @property
    def engine_loaded(self) -> bool:
        return self._engine is not None

    @property
    def scripted(self) -> bool:
        return self._chat_model is not None

    def model_status(self) -> dict[str, Any]:
        """What the Models page shows: the configured model, and the loaded one's facts."""
        from feldspar.webui.models import engine_facts

        status: dict[str, Any] = {"configured": self.settings.model, "loaded": self._engine is not None,
                                  "error": self._engine_error, "chat_backend": self.chat_backend_name()}
        if self._engine is not None:
            status.update(engine_facts(self._engine))
        return status

    def chat_backend_name(self) -> str | None:
        if self._chat_model is not None:
            return f"{self._chat_model.backend.name} (scripted replies, test only)"
        return None

    def catalog(self) -> list[dict[str, Any]]:
        from feldspar.webui.models import catalog_rows

        return catalog_rows()

    def cache_stats(self) -> dict[str, Any] | None:
        """The engine's state cache (bytes used of budget, snapshots, hit rate); None when not loaded."""
        from feldspar.webui.models import cache_stats

        return cache_stats(self._engine) if self._engine is not None else None

    # ---- collections, packs, threads ---------------------------------------------------
    def retrieval(self):
        with self._build_lock:
            if self._retrieval is None:
                from feldspar.compose import build_retrieval

                self._retrieval = build_retrieval(self.settings)
            return self._retrieval

    def collections(self) -> list[str]:
        try:
            return [row["name"] for row in self.retrieval().collections()]
        except self.user_errors:
            return []

    def packs(self) -> list[str]:
        from feldspar.model.packs import list_packs

        try:
            return [row["name"] for row in list_packs(self.settings.packs_dir)]
        except (OSError, *self.user_errors):
            return []

    @property
    def threads(self):
        with self._build_lock:
            if self._threads is None:
                from feldspar.compose import build_thread_store

                self._threads = build_thread_store(self.settings)
            return self._threads

    def list_threads(self) -> list[dict[str, Any]]:
        return self.threads.list()

    def thread_exists(self, thread_id: str) -> bool:
        return self.threads.exists(thread_id)

    def rename_thread(self, thread_id: str, title: str) -> None:
        self.threads.rename(thread_id, title.strip() or "untitled")

    def delete_thread(self, thread_id: str) -> None:
        """Delete a thread and its saved model state (as `feldspar threads rm`)."""
        from feldspar.model.thread_states import remove_thread_state

        self.threads.remove(thread_id)
        remove_thread_state(self.settings.thread_states_dir, thread_id)

    def thread_choice(self, thread_id: str, base: ChatChoice) -> ChatChoice:
        """The choice a thread was made with (its collection or pack), other settings kept."""
        from dataclasses import replace

        meta = self.threads.meta(thread_id)
        if meta.get("pack"):
            return replace(base, pack=meta["pack"], collection=None, policy="pack")
        if meta.get("collection"):
            return replace(base, collection=meta["collection"], pack=None,
                           policy="always" if base.policy == "pack" else base.policy)
        return base

    def thread_turns(self, thread_id: str, window: int | None = None) -> list[dict[str, Any]]:
        """Every turn of a thread as the chat page shows it (question, answer, sources, trace, usage)."""
        from feldspar.webui.chat import turns_of

        meta = self.threads.meta(thread_id)
        turns = turns_of(self.threads.values(thread_id), window)
        for source in (s for turn in turns for s in turn["sources"]):
            if not source.get("collection") and meta.get("collection") and not meta.get("pack"):
                source["collection"] = meta["collection"]  # the collection the thread searched
        return turns

    # ---- the agent -------------------------------------------------------------------
    def default_choice(self) -> ChatChoice:
        s = self.settings
        return ChatChoice(collection=s.collection, policy=s.agent_policy if s.agent_policy != "pack" else "always",
                          k=s.agent_k, max_new_tokens=s.max_new_tokens, temperature=s.temperature)

    def agent(self, choice: ChatChoice):
        """The agent for ``choice`` (built once by the runtime; loads the engine unless a chat model was injected)."""
        with self._lock:
            self._loading(lambda: self.runtime.engine_for(choice.pack))  # the Models page says why it failed
            agent = self.runtime.agent(choice.collection, choice.pack, **self._agent_options(choice))
            backend = agent.deps.chat_model.backend
            if hasattr(backend, "progress"):  # the local engine: prefill progress for the page
                backend.progress = self._prefilled
            return agent

    def _agent_options(self, choice: ChatChoice) -> dict[str, Any]:
        return {"overrides": {"agent_k": choice.k, "max_new_tokens": choice.max_new_tokens,
                              "temperature": choice.temperature},
                "policy": choice.policy, "approve": "ask", "tools_module": self._tools_module}

    def known_window(self, choice: ChatChoice) -> int | None:
        """The chat model's context window when it is at hand, without loading a model for it."""
        agent = self.runtime.cached_agent(choice.collection, choice.pack, **self._agent_options(choice))
        if agent is not None:
            return int(agent.deps.context_window)
        if self._chat_model is not None:
            return int(self._chat_model.backend.context_window)
        return int(self._engine.context_window) if self._engine is not None else None

    def random_weights(self, choice: ChatChoice) -> bool:
        return bool(getattr(self.agent(choice).deps.chat_model.backend, "random_weights", False))

    def _prefilled(self, done: int, total: int) -> None:
        if self._on_prefill is not None:
            self._on_prefill(done, total)

    def stream_turn(self, choice: ChatChoice, question: str | None, thread_id: str | None,
                    resume: bool | None = None, on_prefill=None) -> Iterator[Any]:
        """The agent's events for a question (or for resuming an approval), one turn at a time;
        ``on_prefill(done, total)`` hears the prompt's prefill progress (the local engine)."""
        agent = self.agent(choice)
        with self._lock:
            self._on_prefill = on_prefill
            try:
                if resume is not None:
                    yield from agent.stream(None, thread_id, resume=resume)
                else:
                    yield from agent.stream(question, thread_id)
            finally:
                self._on_prefill = None

    def pending_approval(self, choice: ChatChoice, thread_id: str) -> dict[str, Any] | None:
        return self.agent(choice).pending_approval(thread_id)

    def budget(self, choice: ChatChoice, thread_id: str | None, question: str) -> dict[str, Any]:
        """Will ``question`` fit the window if asked now? The prompt the agent's model turn will read:
        with policy always, the question again as the search call, then the passages (estimated)."""
        from langchain_core.messages import HumanMessage

        from feldspar.agents.nodes import Nodes, search_messages
        from feldspar.webui.chat import budget_before

        agent = self.agent(choice)
        values = self.threads.values(thread_id) if thread_id and self.thread_exists(thread_id) else {}
        nodes = Nodes(agent.deps)
        asked = [HumanMessage(question)]
        if choice.policy == "always" and agent.deps.search is not None:  # what nodes.retrieve adds
            asked += search_messages(question, "", "search_budget")
        state = {**values, "messages": [*values.get("messages", []), *asked]}
        tokens = nodes.prompt_tokens(nodes.prompt_messages(state))
        passages = choice.k * self.settings.chunk_tokens if choice.policy in ("always", "auto") else 0
        budget = budget_before(tokens, agent.deps.context_window, choice.max_new_tokens, passages,
                               agent.deps.config.summary_share)
        note = agent.deps.mode_note or {}
        return {**budget, "pack_not_reused": note.get("why") if note.get("pack_reused") is False else None}

    # ---- files of a collection ---------------------------------------------------------
    def source_context(self, collection: str, path: str, start: int, end: int, margin: int = 400) -> dict[str, Any]:
        """The cited span of an ingested file with some text around it (only files of the collection)."""
        service = self.retrieval()
        whole = service.read_span(path, max(0, start - margin), None, collection=collection)
        text, first = whole["text"], whole["start"]
        stop = min(len(text), end - first + margin)
        return {"before": text[: start - first], "span": text[start - first: end - first],
                "after": text[end - first: stop], "total_chars": whole["total_chars"], "pages": whole.get("pages")}

    def source_file(self, collection: str, path: str) -> dict[str, Any]:
        """The bytes of one indexed file of ``collection``; any other path is refused."""
        from feldspar.retrieval.documents import DocumentUnreadable, resolve_document

        service = self.retrieval()
        root, key = resolve_document(service.manifest, collection, path)
        target = os.path.realpath(os.path.join(root, key))
        if os.path.commonpath([target, os.path.realpath(root)]) != os.path.realpath(root):
            raise DocumentUnreadable(f"{key!r} has left its ingest root {root}")
        try:
            data = Path(target).read_bytes()
        except OSError as exc:
            raise DocumentUnreadable(f"cannot read {key!r} of collection {collection!r}: {exc.strerror or exc}") from None
        return {"name": os.path.basename(key), "path": key, "root": root, "data": data,
                "mime": mimetypes.guess_type(key)[0] or "application/octet-stream"}

    # ---- the other pages --------------------------------------------------------------
    @property
    def library(self):
        """Documents and packs services (app/webui/library.py), built on first use."""
        if self._library is None:
            from feldspar.webui.library import build_library

            self._library = build_library(self.settings, engine=self.engine,  # packs share the loaded engine
                                          tools_module=self._tools_module)
        return self._library


def scripted_chat_model_from_env():
    """Test only: ChatGranite over scripted replies (a JSON list in ``$FELDSPAR_TEST_SCRIPTED_REPLIES``), else None."""
    import json

    path = os.environ.get(SCRIPTED_REPLIES_ENV)
    if not path:
        return None
    from feldspar.agents.chat_model import ChatGranite
    from feldspar.agents.scripted import ScriptedBackend

    replies = json.loads(Path(path).read_text(encoding="utf-8"))
    return ChatGranite(backend=ScriptedBackend([str(r) for r in replies], name="scripted-test"))
