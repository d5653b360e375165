"""The OpenAI wire format of `feldspar serve`: request models, response objects, error objects.

Requests are pydantic models (FastAPI validates bodies with them; unknown OpenAI fields are
accepted and ignored, fields Feldspar cannot honour such as ``n > 1`` or ``logprobs`` are
refused). Feldspar's extension fields are ``documents`` (Granite documents) on chat, and
``collection``, ``pack`` and ``thread_id`` for the ``feldspar-agent`` model. Responses are
plain dicts in OpenAI's shapes (chat completion, chunk, text completion, usage with
``prompt_tokens_details.cached_tokens``) plus the documented extension fields ``feldspar``
and ``citations``. ``ApiError`` is an error a client caused or must hear about, rendered as
``{"error": {"message", "type", "param", "code"}}``. Knows JSON shapes; nothing of models,
queues or HTTP servers.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from feldspar.model.results import RANDOM_CONTENT_LABEL

RANDOM_FINGERPRINT = "feldspar-random-weights"


def without_label(text: str) -> str:
    """An assistant message a client sends back, without the random-weights line it was shown."""
    return text[len(RANDOM_CONTENT_LABEL):] if text.startswith(RANDOM_CONTENT_LABEL) else text


# ---- errors ------------------------------------------------------------------------------
class ApiError(Exception):
    """An error answered to the client in OpenAI's shape with ``status``."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


# ---- requests ----------------------------------------------------------------------------
class _Request(BaseModel):
    model_config = ConfigDict(extra="allow")


class Message(_Request):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    name: str | None = None


class StreamOptions(_Request):
    include_usage: bool = False


class _Generation(_Request):
    model: str = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int = Field(1, ge=1, le=1, description="one choice per request")
    logprobs: Any = None
    response_format: dict[str, Any] | None = None  # text, json_object, json_schema (app/serve/structure.py)

    @field_validator("logprobs")
    @classmethod
    def _no_logprobs(cls, value: Any) -> Any:
        if value not in (None, False, 0):
            raise ValueError("logprobs are not supported")
        return value

    def stop_list(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


class ChatRequest(_Generation):
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    documents: list[dict[str, Any]] | None = None  # extension: Granite documents
    collection: str | None = None  # extension, feldspar-agent: the collection to search
    pack: str | None = None  # extension, feldspar-agent: answer from this state pack
    thread_id: str | None = None  # extension, feldspar-agent: continue this thread

    def new_tokens(self, default: int) -> int:
        return self.max_completion_tokens or self.max_tokens or default


class CompletionRequest(_Generation):
    prompt: str | list[str] | list[int]
    suffix: str | None = None  # fill-in-the-middle
    max_tokens: int = Field(16, ge=1)
    echo: bool = False

    @field_validator("echo")
    @classmethod
    def _no_echo(cls, value: bool) -> bool:
        if value:
            raise ValueError("echo is not supported")
        return value

    def prompt_value(self) -> str | list[int]:
        """The one prompt: a string, or token ids; a list of several prompts is refused."""
        prompt = self.prompt
        if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
            if len(prompt) != 1:
                raise ApiError(400, "one prompt per request: send several prompts as several requests", param="prompt")
            prompt = prompt[0]
        if isinstance(prompt, list) and self.suffix is not None:
            raise ApiError(400, "fill-in-the-middle takes a text prompt, not token ids", param="prompt")
        if not prompt and self.suffix is None:
            raise ApiError(400, "the prompt is empty", param="prompt")
        return prompt


# ---- messages into Granite chat dicts ---------------------------------------------------------
def content_text(content: Any, index: int) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    parts = []
    for part in content:
        if part.get("type", "text") != "text" or not isinstance(part.get("text"), str):
            raise ApiError(400, f"message {index} has a {part.get('type')!r} content part; Granite reads text only",
                           param=f"messages.{index}.content")
        parts.append(part["text"])
    return "\n".join(parts)


def _granite_call(call: dict[str, Any], index: int) -> dict[str, Any]:
    function = call.get("function") or {}
    arguments = function.get("arguments") or {}
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError:
            raise ApiError(400, f"message {index}: tool call arguments are not JSON",
                           param=f"messages.{index}.tool_calls") from None
    return {"id": call.get("id"), "type": "function", "function": {"name": function.get("name"), "arguments": arguments}}


def granite_messages(messages: list[Message]) -> list[dict[str, Any]]:
    """OpenAI chat messages as Granite chat dicts (developer -> system, arguments as objects)."""
    out = []
    for i, message in enumerate(messages):
        role = {"developer": "system", "function": "tool"}.get(message.role, message.role)
        item: dict[str, Any] = {"role": role, "content": content_text(message.content, i)}
        if role == "assistant":
            item["content"] = without_label(item["content"])
        if message.tool_calls:
            item["tool_calls"] = [_granite_call(call, i) for call in message.tool_calls]
        if message.tool_call_id:
            item["tool_call_id"] = message.tool_call_id
        out.append(item)
    return out


# ---- responses -----------------------------------------------------------------------------
def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> dict[str, Any]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": cached_tokens}}


def openai_tool_calls(calls: list[Any], streaming: bool = False) -> list[dict[str, Any]]:
    out = []
    for i, call in enumerate(calls):
        item = {"id": call.id, "type": "function",
                "function": {"name": call.name, "arguments": json.dumps(call.arguments, ensure_ascii=False)}}
        out.append({"index": i, **item} if streaming else item)
    return out


def wants_structure(request: Any) -> bool:
    """True when the request asks for JSON content (``response_format`` json_object / json_schema)."""
    kind = (getattr(request, "response_format", None) or {}).get("type")
    return kind in ("json_object", "json_schema")


class Envelope:
    """The fields every response object of one request shares (id, created, model, fingerprint)."""

    def __init__(self, kind: str, model: str, random_weights: bool, version: str, structured: bool = False) -> None:
        self.id = new_id("chatcmpl" if kind == "chat" else "cmpl")
        self.created = int(time.time())
        self.model = model
        self.random_weights = random_weights
        # Random weights are labelled in the content a client shows, except where the content must
        # parse (response_format JSON): there the fingerprint, header and extension field say it.
        self.label_content = random_weights and not structured
        self.fingerprint = RANDOM_FINGERPRINT if random_weights else f"feldspar-{version}"

    def shown(self, text: str) -> str:
        """The content as the client shows it: random weights' text starts with the label line."""
        return RANDOM_CONTENT_LABEL + text if text and self.label_content else text

    def head(self, object_name: str) -> dict[str, Any]:
        return {"id": self.id, "object": object_name, "created": self.created, "model": self.model,
                "system_fingerprint": self.fingerprint}

    def chat(self, text: str, calls: list[Any], finish: str, usage_: dict, extension: dict,
             citations: list | None, annotations: list | None = None) -> dict[str, Any]:
        text = self.shown(text)
        message: dict[str, Any] = {"role": "assistant", "content": text if text or not calls else None}
        if annotations:
            message["annotations"] = annotations
        if calls:
            message["tool_calls"] = openai_tool_calls(calls)
        body = {**self.head("chat.completion"),
                "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
                "usage": usage_, "feldspar": extension}
        if citations is not None:
            body["citations"] = citations
        return body

    def chat_chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**self.head("chat.completion.chunk"),
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}

    def usage_chunk(self, object_name: str, usage_: dict) -> dict[str, Any]:
        return {**self.head(object_name), "choices": [], "usage": usage_}

    def completion(self, text: str, finish: str, usage_: dict, extension: dict) -> dict[str, Any]:
        return {**self.head("text_completion"),
                "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}],
                "usage": usage_, "feldspar": extension}

    def completion_chunk(self, text: str, finish: str | None = None) -> dict[str, Any]:
        return {**self.head("text_completion"),
                "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}]}


def sse(data: dict[str, Any] | str) -> bytes:
    """One server-sent event: ``data: {...}`` (or ``data: [DONE]``) and a blank line."""
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return f"data: {text}\n\n".encode("utf-8")
