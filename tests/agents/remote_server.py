"""A stand-in remote GPU server: an OpenAI-compatible FastAPI app that answers from a script.

The one thing the remote-backend tests fake is the GPU box: ``StandIn`` runs this app with
uvicorn on a loopback port the OS chooses, in a thread, and answers each
``/v1/chat/completions`` (or ``/v1/completions``) with the next scripted reply:

- a string: Granite-format assistant text streamed as content (calls left in the text);
- ``{"content": str, "tool_calls": [{"name", "arguments"}]}``: calls parsed server-side and
  streamed as ``delta.tool_calls`` (arguments as a JSON string, in pieces);
- ``{"status": int, "message": str}``: an OpenAI-shaped error answer;
- ``{"hang": True}``: no answer until the test ends (the client times out);
- ``{"drop_after": str}``: that text streamed, then the connection dropped mid-answer;
- ``{"unfinished": str}``: that text streamed, then ``[DONE]`` with no ``finish_reason`` (what
  llama-cpp-python's server sends when another request interrupts the answer).

``llama=True`` makes it behave as llama.cpp's ``llama-server``: ``/props`` lists ``slots``
slots sharing one ``n_ctx`` window (``default_generation_settings.n_ctx`` is the per-slot
window), ``/tokenize`` answers ids (``parse_special`` turns the FIM strings into single ids,
``FIM_IDS``), ``/v1/models`` lists no window and ``suffix`` is ignored. ``usage=False``
sends no usage even when ``include_usage`` asks (llama-cpp-python).

Usage counts words and punctuation of the request, and ``prompt_tokens_details.
cached_tokens`` is the longest common prefix with an earlier request plus its reply, the
way a server's prefix cache behaves. It also refuses a wrong bearer key (401), an unknown
model (404, as vLLM words it) and, when ``tools_supported`` is false, any ``tools`` (400).
Every request body and its Authorization header is kept in ``requests``.

It tokenises like llama.cpp's server (``llama_tokens``): a Granite control string anywhere in
the text of a request becomes that control token's id, so ``control_ids[i]`` lists the control
ids request ``i``'s messages, tools, documents, prompt and suffix would have put in the prompt.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time
import zlib
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from feldspar.model.control_tokens import GRANITE_CONTROL_STRINGS

_TOKEN = re.compile(r"\w+|\s+|[^\w\s]")
FIM_IDS = {"<|fim_prefix|>": 100_001, "<|fim_suffix|>": 100_002, "<|fim_middle|>": 100_003}


def token_id(piece: str) -> int:
    return zlib.crc32(piece.encode()) % 100_000


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text)


_CONTROL = re.compile("|".join(re.escape(c) for c in sorted(GRANITE_CONTROL_STRINGS, key=len, reverse=True)))
CONTROL_BASE_ID = 100256  # Granite's first added-token id


def llama_tokens(text: str) -> list[int | str]:
    """Text as llama.cpp tokenises it with special parsing on: control strings -> ids, the rest words."""
    out: list[int | str] = []
    position = 0
    for match in _CONTROL.finditer(text):
        out += _tokens(text[position:match.start()])
        out.append(CONTROL_BASE_ID + GRANITE_CONTROL_STRINGS.index(match.group(0)))
        position = match.end()
    return out + _tokens(text[position:])


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in _strings(k) + _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def request_control_ids(body: dict[str, Any]) -> list[int]:
    """The control ids the text of a request's data becomes under llama.cpp's tokenisation."""
    texts = _strings([body.get(k) for k in ("messages", "tools", "documents", "prompt", "suffix")])
    return [t for text in texts for t in llama_tokens(text) if isinstance(t, int)]


def free_port() -> int:
    """A loopback port with nothing listening (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class StandIn:
    def __init__(self, models=("granite-test",), api_key: str | None = None, max_model_len: int | None = 8192,
                 listing_extra: dict[str, Any] | None = None, llama: bool = False, slots: int = 4,
                 n_ctx: int = 8192, usage: bool = True) -> None:
        self.llama, self.slots, self.n_ctx, self.send_usage = llama, slots, n_ctx, usage
        self.models = list(models)
        self.listing_extra = listing_extra or {}  # extra fields of each /v1/models entry
        self.api_key = api_key
        self.max_model_len = max_model_len
        self.tools_supported = True
        self.replies: list[Any] = []
        self.requests: list[dict[str, Any]] = []
        self.control_ids: list[list[int]] = []
        self._seen: list[list[str]] = []
        self._release = threading.Event()
        self.app = self._build()
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)  # connections wait in the backlog until uvicorn accepts: no start-up race
        self.port = self._sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", lifespan="off",
                                                    timeout_graceful_shutdown=2))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._sock]}, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def spec(self, model: str = "granite-test") -> str:
        return f"openai:{self.base_url}#{model}"

    def script(self, *replies: Any) -> "StandIn":
        self.replies, self.requests, self._seen, self.control_ids = list(replies), [], [], []
        self.tools_supported = True
        return self

    def __enter__(self) -> "StandIn":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._release.set()
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self._sock.close()

    # ---- the app --------------------------------------------------------------------------
    def _build(self) -> FastAPI:
        app = FastAPI()

        @app.get("/v1/models")
        async def models(request: Request):
            refused = self._refuse_key(request)
            if refused is not None:
                return refused
            window = {"max_model_len": self.max_model_len} if self.max_model_len and not self.llama else {}
            data = [{"id": m, "object": "model", "owned_by": "stand-in", **self.listing_extra, **window}
                    for m in self.models]
            return {"object": "list", "data": data}

        @app.get("/props")
        async def props():
            if not self.llama:
                return JSONResponse({"detail": "Not Found"}, status_code=404)
            return {"default_generation_settings": {"n_ctx": self.n_ctx // self.slots}, "total_slots": self.slots}

        @app.post("/tokenize")
        async def tokenize(request: Request):
            if not self.llama:
                return JSONResponse({"detail": "Not Found"}, status_code=404)
            body = await request.json()
            content = body.get("content", "")
            if body.get("parse_special") and content in FIM_IDS:
                return {"tokens": [FIM_IDS[content]]}
            return {"tokens": [token_id(piece) for piece in _tokens(content)]}

        @app.post("/v1/chat/completions")
        async def chat(request: Request):
            return await self._answer(request, chat=True)

        @app.post("/v1/completions")
        async def completions(request: Request):
            return await self._answer(request, chat=False)

        return app

    @staticmethod
    def _error(status: int, message: str, code: Any = None) -> JSONResponse:
        return JSONResponse({"error": {"message": message, "type": "invalid_request_error", "code": code or status}},
                            status_code=status)

    def _refuse_key(self, request: Request) -> JSONResponse | None:
        if self.api_key and request.headers.get("authorization") != f"Bearer {self.api_key}":
            return self._error(401, "Incorrect API key provided")
        return None

    async def _answer(self, request: Request, chat: bool):
        body = await request.json()
        self.requests.append({**body, "authorization": request.headers.get("authorization")})
        self.control_ids.append(request_control_ids(body))
        refused = self._refuse_key(request)
        if refused is not None:
            return refused
        if body.get("model") not in self.models:
            return self._error(404, f"The model `{body.get('model')}` does not exist.")
        if body.get("tools") and not self.tools_supported:
            return self._error(400, "tools param requires --jinja flag")
        reply = self.replies.pop(0) if self.replies else {"status": 500, "message": "the stand-in has no reply left"}
        if isinstance(reply, dict) and "status" in reply:
            return self._error(reply["status"], reply["message"], reply.get("code"))
        if isinstance(reply, dict) and reply.get("hang"):
            await asyncio.to_thread(self._release.wait, 30)
            return self._error(504, "released at teardown")
        if isinstance(reply, dict) and "drop_after" in reply:
            return StreamingResponse(self._dropped(body, reply["drop_after"]), media_type="text/event-stream")
        if isinstance(reply, dict) and "unfinished" in reply:
            return StreamingResponse(self._unfinished(body, reply["unfinished"], chat), media_type="text/event-stream")
        if not chat and self.llama:
            body.pop("suffix", None)  # llama-server's /v1/completions does not read it
        content = reply if isinstance(reply, str) else reply.get("content", "")
        calls = [] if isinstance(reply, str) else reply.get("tool_calls", [])
        return StreamingResponse(self._events(body, content, calls, chat), media_type="text/event-stream")

    def _usage(self, body: dict[str, Any], content: str, calls: list[dict[str, Any]]) -> dict[str, Any]:
        prompt = _tokens(json.dumps([body.get("tools"), body.get("documents"), body.get("messages", body.get("prompt"))],
                                    ensure_ascii=False))
        reply = _tokens(content + json.dumps(calls))
        cached = max((next((i for i, (a, b) in enumerate(zip(prompt, seen)) if a != b), min(len(prompt), len(seen)))
                      for seen in self._seen), default=0)
        self._seen.append(prompt + reply)
        return {"prompt_tokens": len(prompt), "completion_tokens": len(reply),
                "total_tokens": len(prompt) + len(reply), "prompt_tokens_details": {"cached_tokens": cached}}

    def _dropped(self, body: dict[str, Any], text: str):
        chunk = {"id": "stand-in", "object": "chat.completion.chunk", "created": 0, "model": body["model"],
                 "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
        yield f"data: {json.dumps(chunk)}\n\n"
        raise ConnectionAbortedError("the stand-in drops the connection mid-answer")

    def _unfinished(self, body: dict[str, Any], text: str, chat: bool):
        choice = {"index": 0, "delta": {"content": text}} if chat else {"index": 0, "text": text}
        chunk = {"id": "stand-in", "object": "chat.completion.chunk" if chat else "text_completion", "created": 0,
                 "model": body["model"], "choices": [{**choice, "finish_reason": None}]}
        yield f"data: {json.dumps(chunk)}\n\n"
        yield "data: [DONE]\n\n"

    def _events(self, body: dict[str, Any], content: str, calls: list[dict[str, Any]], chat: bool):
        base = {"id": "stand-in", "created": int(time.time()), "model": body["model"],
                "object": "chat.completion.chunk" if chat else "text_completion"}

        def event(choices: list[dict[str, Any]], **extra: Any) -> str:
            return f"data: {json.dumps({**base, 'choices': choices, **extra})}\n\n"

        pieces = _tokens(content)
        for start in range(0, len(pieces), 3):
            text = "".join(pieces[start:start + 3])
            choice = {"index": 0, "delta": {"content": text}} if chat else {"index": 0, "text": text}
            yield event([{**choice, "finish_reason": None}])
        for i, call in enumerate(calls):
            arguments = call["arguments"] if isinstance(call["arguments"], str) else json.dumps(call["arguments"])
            half = len(arguments) // 2
            head = {"index": i, "id": f"call_{i}", "type": "function", "function": {"name": call["name"], "arguments": ""}}
            for part in ({**head, "function": {**head["function"], "arguments": arguments[:half]}},
                         {"index": i, "function": {"arguments": arguments[half:]}}):
                yield event([{"index": 0, "delta": {"tool_calls": [part]}, "finish_reason": None}])
        finish = "tool_calls" if calls else "stop"
        yield event([{"index": 0, "delta": {}, "finish_reason": finish} if chat else
                     {"index": 0, "text": "", "finish_reason": finish}])
        if (body.get("stream_options") or {}).get("include_usage") and self.send_usage:
            yield event([], usage=self._usage(body, content, calls))
        yield "data: [DONE]\n\n"
