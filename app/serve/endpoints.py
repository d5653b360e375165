"""`feldspar serve`: an OpenAI-compatible HTTP server over Feldspar's models and agent.

``create_app(models, api_key=None, queue=8, max_body=16 MiB, keepalive_s=15)`` returns the FastAPI app:
``/v1/models``, ``/v1/chat/completions`` (stream via server-sent events and non-stream;
tools -> ``tool_calls``; Granite ``documents``), ``/v1/completions`` (plain and
fill-in-the-middle via ``suffix``), ``/health``, ``/sources/<token>`` (a cited passage, the
link of an answer's ``annotations``; app/serve/citations.py) and ``/v1/responses`` (an
error naming ``/v1/chat/completions``). A random-weight model's chat content starts with
its label line. Each engine runs its requests in order
on a lane (app/serve/lanes.py) with ``queue`` waiting slots; beyond them the answer is 429
with Retry-After. A streaming client that disconnects stops its generation at the next
token (Starlette cancels the response; the job's cancel flag stops the worker); a
non-streaming one too (a watcher reads ``http.disconnect``). A stream waiting for its next
token (queued, or a long prompt) gets an SSE comment every ``keepalive_s``; the token and
body-size checks are app/serve/gate.py. Every error is an OpenAI
error object with its status code, never a traceback; the server keeps serving. The parts
served are built by the caller (app/cli/serve.py through app/compose.py, or tests with
scripted backends); this module knows HTTP, the wire format and lanes.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Awaitable, Callable, Sequence

from fastapi import APIRouter, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

from feldspar.serve.citations import SOURCES_PATH, SourceStore, annotations
from feldspar.serve.errors import api_errors, as_api_error, install_error_handlers
from feldspar.serve.gate import Gate
from feldspar.serve.lanes import IDLE, Job, Lane, LaneFull
from feldspar.serve.models import AgentModel, Final, ServedModel
from feldspar.serve.protocol import (RANDOM_CONTENT_LABEL, ApiError, ChatRequest, CompletionRequest, Envelope,
                                     openai_tool_calls, sse, wants_structure)
from feldspar.serve.tasks import TASK_HEADER
from feldspar.serve.threads import principal_of
from feldspar.serve.validate import check_chat, check_completion

KEEPALIVE = b": keep-alive\n\n"  # an SSE comment: clients skip it, proxies see traffic

class ServerState:
    """The models by id, one lane per engine (or backend), and the bearer token."""

    def __init__(self, models: Sequence[ServedModel | AgentModel], api_key: str | None, queue: int,
                 keepalive_s: float = 15.0) -> None:
        from feldspar import __version__

        self.version = __version__
        self.keepalive_s = keepalive_s
        self.models = {m.id: m for m in models}
        if len(self.models) != len(models):
            raise ValueError("two served models have the same id")
        self.api_key = api_key or None
        self.sources = SourceStore()  # cited passages behind the links of annotations
        self.lanes: dict[int, Lane] = {}
        for model in models:
            self.lanes.setdefault(id(model.lane_key), Lane(model.id, queue))

    def model(self, name: str) -> ServedModel | AgentModel:
        if name not in self.models:
            raise ApiError(404, f"the model {name!r} does not exist; see /v1/models (served: "
                           f"{', '.join(self.models)})", param="model", code="model_not_found")
        return self.models[name]

    def lane(self, model: ServedModel | AgentModel) -> Lane:
        return self.lanes[id(model.lane_key)]

    def close(self) -> None:
        for lane in self.lanes.values():
            lane.close()


# ---- the app ------------------------------------------------------------------------------
def create_app(models: Sequence[ServedModel | AgentModel], *, api_key: str | None = None, queue: int = 8,
               max_body: int = 16 * 1024**2, keepalive_s: float = 15.0) -> FastAPI:
    """The server over ``models`` (chat models and at most one agent model).

    ``keepalive_s``: a stream whose next token is that long in coming (queued behind other
    requests, or a long prompt) gets an SSE comment, so proxies and clients keep it open.
    """
    state = ServerState(models, api_key, queue, keepalive_s)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        state.close()

    app = FastAPI(title="Feldspar", version=state.version, lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.feldspar = state
    install_error_handlers(app)
    app.add_middleware(Gate, api_key=state.api_key, max_body=max_body)
    router = APIRouter(prefix="/v1")
    router.add_api_route("/models", list_models, methods=["GET"])
    router.add_api_route("/models/{model_id:path}", get_model, methods=["GET"])
    router.add_api_route("/chat/completions", chat_completions, methods=["POST"])
    router.add_api_route("/completions", completions, methods=["POST"])
    router.add_api_route("/responses", responses, methods=["POST", "GET"])
    app.include_router(router)
    app.add_api_route(SOURCES_PATH + "/{token}", cited_passage, methods=["GET"])
    app.add_api_route("/health", health, methods=["GET"])
    return app


def server_state(request: Request) -> ServerState:
    return request.app.state.feldspar


async def health(request: Request) -> dict[str, Any]:
    state = server_state(request)
    return {"status": "ok", "version": state.version, "models": list(state.models),
            "lanes": {lane.name: lane.snapshot() for lane in state.lanes.values()}}


async def list_models(request: Request) -> dict[str, Any]:
    return {"object": "list", "data": [m.describe() for m in server_state(request).models.values()]}


async def get_model(model_id: str, request: Request) -> dict[str, Any]:
    return server_state(request).model(model_id).describe()


def _headers(model: ServedModel | AgentModel) -> dict[str, str]:
    return {"X-Feldspar-Random-Weights": "true"} if model.random_weights else {}


def _admit(lane: Lane):
    try:
        return lane.admit()
    except LaneFull as exc:
        raise as_api_error(exc) from None


async def _submit(lane: Lane, open_work: Callable[[], Awaitable[Any]]) -> Job:
    """Admit a request to its lane (429 when full), prepare its work, queue it; the slot is freed on failure."""
    ticket = _admit(lane)
    try:
        work = await open_work()
    except BaseException:
        ticket.release()
        raise
    return ticket.submit(work)


def _usage_wanted(body: Any) -> bool:
    return bool(body.stream_options and body.stream_options.include_usage)


def _event_stream(events: Any, model: ServedModel | AgentModel) -> StreamingResponse:
    return StreamingResponse(events, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", **_headers(model)})


async def responses(request: Request):
    raise ApiError(404, "this server does not implement the Responses API (/v1/responses): use /v1/chat/completions "
                   "(or /v1/completions)", code="unsupported_endpoint")


async def cited_passage(token: str, request: Request):
    text = server_state(request).sources.get(token)
    if text is None:
        raise ApiError(404, "no such cited passage (links last while the server runs)", code="not_found")
    return PlainTextResponse(text)


def window_error(error: ApiError, body: ChatRequest) -> ApiError:
    """An over-window error in the client's words: the token limit it sent (``max_tokens`` …)."""
    if error.code != "context_length_exceeded":
        return error
    sent = "max_completion_tokens" if body.max_completion_tokens else "max_tokens" if body.max_tokens else None
    message = str(error).replace("max_new_tokens", sent or "max_tokens")
    return ApiError(error.status, message, param=sent or "messages", code="context_length_exceeded")


@api_errors
async def chat_completions(body: ChatRequest, request: Request):
    check_chat(body)
    state = server_state(request)
    model = state.model(body.model)
    lane = state.lane(model)
    task = request.headers.get(TASK_HEADER)

    async def open_work():
        if isinstance(model, AgentModel):
            key = model.target(body)
            agent = model.cached(key) or await lane.call(lambda: model.agent_for(key))
            principal = principal_of(request.headers, state.api_key is not None)
            return await run_in_threadpool(model.open_chat, agent, body, key, principal, task)
        return await run_in_threadpool(model.open_chat, body)

    try:
        job = await _submit(lane, open_work)
    except Exception as exc:  # noqa: BLE001 - every error becomes the client's error object
        raise window_error(as_api_error(exc), body) from None
    envelope = Envelope("chat", model.id, model.random_weights, state.version, wants_structure(body))

    def cite(final: Final, text: str) -> list[dict]:  # offsets into the content as the client shows it
        return annotations(final.citations or [], envelope.shown(text), str(request.base_url), state.sources)

    if body.stream:
        return _event_stream(chat_events(job, envelope, _usage_wanted(body), state.keepalive_s, cite), model)
    text, final = await collect(job, request)
    text = final.text if final.text is not None else text
    return JSONResponse(envelope.chat(text, final.calls, final.finish_reason, final.usage, final.extension,
                                      final.citations, cite(final, text)), headers=_headers(model))


@api_errors
async def completions(body: CompletionRequest, request: Request):
    check_completion(body)
    state = server_state(request)
    model = state.model(body.model)
    if isinstance(model, AgentModel):
        raise ApiError(400, f"{model.id} answers chat only; use /v1/chat/completions", param="model",
                       code="unsupported_model")

    async def open_work():
        return await run_in_threadpool(model.open_completion, body)

    job = await _submit(state.lane(model), open_work)
    envelope = Envelope("completion", model.id, model.random_weights, state.version, wants_structure(body))
    if body.stream:
        return _event_stream(completion_events(job, envelope, _usage_wanted(body), state.keepalive_s), model)
    text, final = await collect(job, request)
    return JSONResponse(envelope.completion(text, final.finish_reason, final.usage, final.extension),
                        headers=_headers(model))


# ---- running a job -------------------------------------------------------------------------
async def collect(job: Job, request: Request) -> tuple[str, Final]:
    """All of a job's text and its Final; a client that disconnects meanwhile cancels the job."""
    watcher = asyncio.create_task(_cancel_on_disconnect(request, job))
    try:
        parts: list[str] = []
        final = None
        async for piece in job.items():
            if isinstance(piece, Final):
                final = piece
            else:
                parts.append(piece)
        if final is None:
            raise ApiError(500, "the generation ended without a result", "server_error")
        return "".join(parts), final
    finally:
        watcher.cancel()


async def _cancel_on_disconnect(request: Request, job: Job) -> None:
    while True:
        message = await request.receive()
        if message.get("type") == "http.disconnect":
            job.leave()
            return


async def job_events(job: Job, piece_chunk: Callable[[str], dict], final_chunks: Callable[[Final], list[dict]],
                     keepalive_s: float) -> AsyncIterator[bytes]:
    """A job as SSE: a chunk per text piece, then its Final's chunks, then ``[DONE]``; an error
    after the headers travels as an event; an SSE comment whenever nothing came for ``keepalive_s``."""
    try:
        final = None
        async for piece in job.items(idle_s=keepalive_s):
            if piece is IDLE:
                yield KEEPALIVE
            elif isinstance(piece, Final):
                final = piece
            else:
                yield sse(piece_chunk(piece))
        if final is None:
            raise ApiError(500, "the generation ended without a result", "server_error")
        for chunk in final_chunks(final):
            yield sse(chunk)
    except Exception as exc:  # after the headers: the error travels as an event
        yield sse(as_api_error(exc).body())
    yield sse("[DONE]")


async def chat_events(job: Job, envelope: Envelope, usage_wanted: bool, keepalive_s: float,
                      cite: Callable[[Final, str], list[dict]] | None = None) -> AsyncIterator[bytes]:
    streamed: list[str] = []

    def piece_chunk(piece: str) -> dict:
        if not streamed and envelope.label_content:
            piece = RANDOM_CONTENT_LABEL + piece  # the first line a client shows
        streamed.append(piece)
        return envelope.chat_chunk({"content": piece})

    def final_chunks(final: Final) -> list[dict]:
        chunks = [envelope.chat_chunk({"tool_calls": openai_tool_calls(final.calls, streaming=True)})] if final.calls else []
        text = final.text if final.text is not None else "".join(streamed).removeprefix(RANDOM_CONTENT_LABEL)
        marks = cite(final, text) if cite else []
        last = envelope.chat_chunk({"annotations": marks} if marks else {}, final.finish_reason)
        last["feldspar"] = final.extension
        if final.citations is not None:
            last["citations"] = final.citations
        chunks.append(last)
        if usage_wanted:
            chunks.append(envelope.usage_chunk("chat.completion.chunk", final.usage))
        return chunks

    yield sse(envelope.chat_chunk({"role": "assistant", "content": ""}))
    async for event in job_events(job, piece_chunk, final_chunks, keepalive_s):
        yield event


async def completion_events(job: Job, envelope: Envelope, usage_wanted: bool, keepalive_s: float
                            ) -> AsyncIterator[bytes]:
    def final_chunks(final: Final) -> list[dict]:
        last = envelope.completion_chunk("", final.finish_reason)
        last["feldspar"] = final.extension
        return [last, envelope.usage_chunk("text_completion", final.usage)] if usage_wanted else [last]

    async for event in job_events(job, envelope.completion_chunk, final_chunks, keepalive_s):
        yield event
