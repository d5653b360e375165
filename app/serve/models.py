"""What `feldspar serve` serves: chat models over a chat backend, and the agent model.

``ServedModel(id, backend, engine=None)`` answers chat through any chat backend
(agents/backend.py: the local engine's ``LocalChatBackend``, a ``ScriptedBackend`` in tests, a
remote one) and plain / fill-in-the-middle completions when it has an ``engine``. ``AgentModel``
answers chat through the agent graph (``feldspar-agent``) over a collection or a state pack,
with citations; its agents come from the runtime the app passes in (app/runtime.py, built by
app/compose.py), which builds each (collection, pack) once; a client that resends the whole
conversation without ``thread_id`` continues the thread that answered it, only if it is that
thread's principal and the thread has not moved on (app/serve/threads.py); a client's background
task (app/serve/tasks.py) is answered by the plain model without a thread, and the request's
generation settings reach the agent's model calls; a proxied remote model answers completions
too. ``open_*`` validate a request and return a lazy iterator of ``Piece``s (visible text, then
one ``Final`` with tool calls, finish reason, usage and extension fields): the server runs it on
a lane (app/serve/lanes.py). Tool calls are read from the model's raw text by Feldspar's own
parser (model/toolcalls.py, repairs included). Knows chat backends, the engine's public API and
agent events; nothing of HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from feldspar.serve.protocol import ApiError, ChatRequest, CompletionRequest, granite_messages, usage
from feldspar.serve.structure import request_structure, structure_errors
from feldspar.serve.tasks import utility_task
from feldspar.serve.threads import Conversations

AGENT_MODEL = "feldspar-agent"


@dataclass
class Final:
    finish_reason: str
    usage: dict[str, Any]
    extension: dict[str, Any]
    calls: list[Any] = field(default_factory=list)
    citations: list[dict[str, Any]] | None = None
    text: str | None = None  # the whole answer when it is not the streamed text (the agent's, citations checked)


Piece = str | Final  # visible text, then one Final


def _close(iterator: Any) -> None:
    close = getattr(iterator, "close", None)
    if close is not None:
        close()


def stream_pieces(stream: Any, tools: list[dict[str, Any]] | None, extension: dict[str, Any]) -> Iterator[Piece]:
    """A backend stream as visible text pieces and a Final (tool calls parsed from the raw text)."""
    from feldspar.model.toolcall_stream import VisibleText

    visible = VisibleText(tools) if tools else None
    deltas = iter(stream)
    try:
        for delta in deltas:
            piece = visible.push(delta) if visible else delta
            if piece:
                yield piece
    finally:
        _close(deltas)  # stops the engine's generation when the client went away
    result = stream.result
    calls, finish = [], result.finish_reason
    if visible is not None:
        rest, turn = visible.finish()
        if rest:
            yield rest
        calls = turn.calls
        finish = "tool_calls" if calls else finish
        extension = {**extension, "raw_text": result.text, "tool_call_repairs": list(turn.repairs),
                     "tool_call_errors": [{"name": e.name, "kind": e.kind, "message": e.message, "raw": e.raw}
                                          for e in turn.errors]}
    extension = {**extension, "reused_tokens": result.reused_tokens, "computed_tokens": result.computed_tokens,
                 "ttft_s": round(result.ttft_s, 4)}
    yield Final(finish, usage(result.prompt_tokens, result.completion_tokens, result.reused_tokens), extension, calls)


def backend_random_weights(backend: Any) -> bool:
    return bool(getattr(backend, "random_weights", False))


def model_entry(model_id: str, backend: Any, **extra: Any) -> dict[str, Any]:
    """A /v1/models entry: OpenAI's fields plus the window and whether the weights are random."""
    return {"id": model_id, "object": "model", "created": 0, "owned_by": "feldspar",
            "context_window": getattr(backend, "context_window", None),
            "random_weights": backend_random_weights(backend), **extra}


def served_name(engine: Any) -> str:
    """The name a model is served under: its catalog name, or the checkpoint folder's name (never a path)."""
    resolved = engine.resolved
    if resolved.catalog_name:
        return resolved.catalog_name
    return Path(resolved.source).name if resolved.local else resolved.source


class ServedModel:
    """A chat model (any chat backend); completions too when it has the engine behind it."""

    kind = "model"

    def __init__(self, id: str, backend: Any, engine: Any = None, default_max_tokens: int = 512,
                 lane_key: Any = None) -> None:
        self.id, self.backend, self.engine = id, backend, engine
        self.default_max_tokens = default_max_tokens
        self.lane_key = lane_key if lane_key is not None else (engine if engine is not None else backend)

    random_weights = property(lambda self: backend_random_weights(self.backend))

    def describe(self) -> dict[str, Any]:
        return model_entry(self.id, self.backend,
                           completions=self.engine is not None or hasattr(self.backend, "stream_completion"))

    def extension(self) -> dict[str, Any]:
        return {"random_weights": self.random_weights}

    def open_chat(self, request: ChatRequest) -> Callable[[], Iterator[Piece]]:
        """Validate and render now (errors raise here); the returned function generates."""
        tools = request.tools or None
        if request.tool_choice == "none":
            tools = None
        structure, param = request_structure(request)
        with structure_errors(param):
            stream = self.backend.stream_chat(
                granite_messages(request.messages), tools, request.documents or None,
                max_new_tokens=request.new_tokens(self.default_max_tokens), **_sampling(request),
                **_structure_option(self.backend, structure))
        return lambda: stream_pieces(stream, tools, self.extension())

    def open_completion(self, request: CompletionRequest) -> Callable[[], Iterator[Piece]]:
        if self.engine is None and hasattr(self.backend, "stream_completion"):  # a proxy to a remote server
            return self._remote_completion(request)
        if self.engine is None:
            raise ApiError(400, f"model {self.id!r} answers chat only, not completions", param="model",
                           code="unsupported_model")
        from feldspar.model.engine import GenerationParams

        prompt = request.prompt_value()
        structure, param = request_structure(request)
        params = GenerationParams(max_new_tokens=request.max_tokens, reuse=None, stop=tuple(request.stop_list()),
                                  structure=structure, **{k: v for k, v in _sampling(request).items() if k != "stop"})
        with structure_errors(param):
            if request.suffix is not None:
                stream = self.engine.fill_in_middle(prompt, request.suffix, params)
            else:
                stream = self.engine.complete(prompt, params) if isinstance(prompt, str) else self.engine.stream(prompt, params)
        return lambda: stream_pieces(stream, None, self.extension())


    def _remote_completion(self, request: CompletionRequest) -> Callable[[], Iterator[Piece]]:
        prompt = request.prompt_value()
        if not isinstance(prompt, str):
            raise ApiError(400, "a proxied model takes the prompt as text", param="prompt", code="invalid_prompt")
        stream = self.backend.stream_completion(prompt, request.suffix, max_new_tokens=request.max_tokens,
                                                **_sampling(request))
        return lambda: stream_pieces(stream, None, self.extension())


def generation(request: ChatRequest, default_max_tokens: int | None = None) -> dict[str, Any]:
    """The request's generation settings for the agent's model calls (only those the client sent)."""
    options = _sampling(request)
    if not options["stop"]:
        options.pop("stop")
    limit = request.max_completion_tokens or request.max_tokens or default_max_tokens
    if limit:
        options["max_new_tokens"] = limit
    return options


def _pack_errors(build: Callable[[], Any]) -> Any:
    """A pack that does not exist or is misnamed answers like a collection would: 404 / 400 on ``pack``."""
    from feldspar.model.errors import StateError

    try:
        return build()
    except StateError as exc:
        message = str(exc)
        if message.startswith("invalid pack name"):
            raise ApiError(400, message, param="pack", code="invalid_pack_name") from None
        if getattr(exc, "fix", None) == "list_packs":
            raise ApiError(404, message, param="pack", code="unknown_pack") from None
        raise


def _structure_option(backend: Any, structure: Any) -> dict[str, Any]:
    """``structure=`` for a backend that constrains decoding (a scripted one does not)."""
    return {"structure": structure} if structure is not None and getattr(backend, "constrains", False) else {}


def _sampling(request: Any) -> dict[str, Any]:
    values: dict[str, Any] = {"stop": request.stop_list()}
    for key in ("temperature", "top_p", "seed"):
        if getattr(request, key) is not None:
            values[key] = getattr(request, key)
    return values


class AgentModel:
    """``feldspar-agent``: the agent graph over a collection or a state pack, with citations.

    ``agents(collection, pack)`` returns an agent (feldspar.agents.runner.Agent): the runtime's
    ``Agents`` (app/runtime.py) builds each once and keeps it, and its ``cached(collection, pack)``
    returns it without building (a plain function has no such shortcut). The server builds agents
    on the engine's lane, in order with generations, through ``agent_for``.
    """

    kind = "agent"

    def __init__(self, agents: Any, backend: Any, default_collection: str | None,
                 default_pack: str | None = None, lane_key: Any = None, id: str = AGENT_MODEL) -> None:
        self.id, self.agents, self.backend = id, agents, backend
        self.default_collection, self.default_pack = default_collection, default_pack
        self.lane_key = lane_key if lane_key is not None else backend
        self.conversations = Conversations()

    random_weights = property(lambda self: backend_random_weights(self.backend))

    def describe(self) -> dict[str, Any]:
        return model_entry(self.id, self.backend, completions=False,
                           agent={"collection": self.default_collection, "pack": self.default_pack})

    def target(self, request: ChatRequest) -> tuple[str | None, str | None]:
        if (request.response_format or {}).get("type", "text") != "text":
            raise ApiError(400, f"{AGENT_MODEL} answers in prose with citations; ask a model for response_format",
                           param="response_format")
        if request.collection and request.pack:
            raise ApiError(400, "give collection or pack, not both", param="pack")
        if request.pack or request.collection:
            return (None, request.pack) if request.pack else (request.collection, None)
        return (None, self.default_pack) if self.default_pack else (self.default_collection, None)

    def cached(self, key: tuple[str | None, str | None]) -> Any:
        cached = getattr(self.agents, "cached", None)
        return cached(*key) if cached is not None else None

    def agent_for(self, key: tuple[str | None, str | None]) -> Any:
        """The agent for ``key`` (built on first use); runs on the lane, in order with generations."""
        return self.cached(key) or _pack_errors(lambda: self.agents(*key))

    def open_chat(self, agent: Any, request: ChatRequest, key: tuple[str | None, str | None],
                  principal: str = "", task: str | None = None) -> Callable[[], Iterator[Piece]]:
        messages = granite_messages(request.messages)
        task = utility_task(messages, task)
        if task is not None:  # a client's background task (a title, tags…): the plain model, no thread
            return self.open_utility(request, messages, task)
        last = next((i for i in range(len(messages) - 1, -1, -1) if messages[i]["role"] == "user"), None)
        if last is None or not messages[last]["content"].strip():
            raise ApiError(400, "the agent needs a user message to answer", param="messages")
        earlier, question = messages[:last], messages[last]["content"]
        if request.thread_id and not self.conversations.may_continue(principal, request.thread_id):
            raise ApiError(404, f"no thread {request.thread_id!r}", param="thread_id", code="unknown_thread")
        thread_id = request.thread_id or self.conversations.thread_of(principal, key, earlier)
        events = agent.stream(question, thread_id, generation=generation(request))  # an unknown thread fails here
        return lambda: self._pieces(agent, events, key, [*earlier, messages[last]], principal)

    def open_utility(self, request: ChatRequest, messages: list[dict[str, Any]], task: str
                     ) -> Callable[[], Iterator[Piece]]:
        options = generation(request)
        stream = self.backend.stream_chat(messages, None, None, max_new_tokens=options.pop("max_new_tokens", 512),
                                          **options)
        return lambda: stream_pieces(stream, None, {"random_weights": self.random_weights, "utility_task": task})

    def _pieces(self, agent: Any, events: Iterator[Any], key: tuple[str | None, str | None],
                conversation: list[dict[str, Any]], principal: str) -> Iterator[Piece]:
        thread_id, streamed = None, []
        try:
            for event in events:
                thread_id = event.thread_id
                if event.kind == "token" and event.text:
                    streamed.append(event.text)
                    yield event.text
        finally:
            _close(events)
        answer = agent.result(thread_id) if thread_id else {}
        if thread_id:
            replies = {answer.get("text", ""), "".join(streamed)}  # as sent whole, and as streamed
            self.conversations.remember(principal, key, [[*conversation, {"role": "assistant", "content": reply}]
                                                         for reply in replies], thread_id)
        used = answer.get("usage") or {}
        extension = {"random_weights": self.random_weights, "thread_id": thread_id, "collection": key[0],
                     "pack": key[1], "stop_reason": answer.get("stop_reason"),
                     "unknown_citations": answer.get("unknown_citations", []),
                     "reused_tokens": used.get("reused_tokens", 0), "computed_tokens": used.get("computed_tokens", 0),
                     "model_calls": used.get("model_calls", 0)}
        sources = [{k: v for k, v in source.items()} for source in answer.get("sources", [])]
        finish = "length" if used.get("finish_reason") == "length" else "stop"
        yield Final(finish, usage(used.get("prompt_tokens", 0), used.get("completion_tokens", 0),
                                  used.get("reused_tokens", 0)), extension, citations=sources,
                    text=answer.get("text", ""))
