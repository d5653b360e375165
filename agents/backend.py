"""The chat-backend protocol: what ChatGranite needs from whatever generates the text.

Three implementations stand behind it: ``feldspar.model.chat_backend.
LocalChatBackend`` (the local engine, built by app/compose.py), ``feldspar.agents.scripted.
ScriptedBackend`` (scripted replies for tests and examples) and ``feldspar.agents.
remote_backend.RemoteChatBackend`` (a remote OpenAI-compatible server). A backend speaks Granite's native chat inputs:

- ``messages``: dicts in Granite/OpenAI shape: ``{"role": "system"|"user"|"assistant"|"tool",
  "content": str}``; assistant turns may carry ``"tool_calls": [{"id", "type": "function",
  "function": {"name", "arguments": dict}}]``; tool turns carry ``"tool_call_id"``.
- ``tools``: OpenAI function schemas ``{"type": "function", "function": {"name",
  "description", "parameters"}}``; ``documents``: dicts (``doc_id``, ``title``, ``text`` …).
  Both reach the model's chat template natively (``tools=`` / ``documents=``).

``stream_chat`` returns an iterable of raw text deltas (the model's own output, tool-call
tags included: parsing is ChatGranite's job, the same for every backend); once exhausted,
its ``result`` has the fields of ``GenerationResult`` (model/results.py). Errors a user can
fix (a prompt over the window, a template that cannot render) are raised by
``stream_chat`` itself, before any text. The remote backend maps these fields from the
server's response (``usage.prompt_tokens_details.cached_tokens`` -> ``reused_tokens``) and
writes server-parsed tool calls back into the raw text, so they are parsed the same way. Torch-free: agents/ only sees this.
"""

from __future__ import annotations

from typing import Any, Iterator, Protocol, Sequence, runtime_checkable

Message = dict[str, Any]


class ChatResult(Protocol):
    text: str
    prompt_tokens: int
    completion_tokens: int
    reused_tokens: int
    computed_tokens: int
    ttft_s: float
    prefill_s: float
    decode_s: float
    finish_reason: str  # "stop" or "length"

    def to_dict(self) -> dict[str, Any]: ...


class ChatStream(Protocol):
    def __iter__(self) -> Iterator[str]: ...

    @property
    def result(self) -> ChatResult: ...


@runtime_checkable
class ChatBackend(Protocol):
    name: str
    context_window: int
    random_weights: bool

    def stream_chat(self, messages: Sequence[Message], tools: Sequence[dict[str, Any]] | None = None,
                    documents: Sequence[dict[str, Any]] | None = None, *, max_new_tokens: int = 512,
                    temperature: float = 0.0, top_p: float = 1.0, seed: int | None = None,
                    reuse: bool | None = None, stop: Sequence[str] | None = None) -> ChatStream: ...

    def prompt_token_ids(self, messages: Sequence[Message], tools: Sequence[dict[str, Any]] | None = None,
                         documents: Sequence[dict[str, Any]] | None = None) -> list[int]: ...

    def count_tokens(self, text: str) -> int: ...
