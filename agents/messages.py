"""langchain-core messages <-> Granite chat dicts (the shape chat backends take).

SystemMessage -> system, HumanMessage -> user, AIMessage -> assistant (its ``tool_calls``
as OpenAI-style ``{"id", "type": "function", "function": {"name", "arguments"}}``),
ToolMessage -> tool (with ``tool_call_id``); a ChatMessage keeps its role when Granite has
it. Content given as a list of blocks becomes its text parts joined by newlines, as
Granite's template joins them; Granite reads text only, so image, audio or file blocks
are refused with a clear error rather than dropped. Documents may be dicts or langchain
``Document``s. Knows langchain-core message classes; nothing of models or graphs.
"""

from __future__ import annotations

from typing import Any, Sequence

from langchain_core.documents import Document
from langchain_core.messages import (
    AIMessage, BaseMessage, ChatMessage, FunctionMessage, HumanMessage, SystemMessage, ToolMessage,
)

GRANITE_ROLES = ("system", "user", "assistant", "tool")
_IGNORED_BLOCKS = ("tool_use", "tool_call", "tool_call_chunk", "invalid_tool_call", "reasoning", "thinking")


def content_text(message: BaseMessage, index: int) -> str:
    """A message's content as one string; non-text blocks are refused (Granite reads text only)."""
    content = message.content
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and block.get("type", "text") == "text" and isinstance(block.get("text"), str):
            parts.append(block["text"])
        elif isinstance(block, dict) and block.get("type") in _IGNORED_BLOCKS:
            continue
        else:
            kind = block.get("type", "?") if isinstance(block, dict) else type(block).__name__
            raise ValueError(f"message {index} has a {kind!r} content block; Granite chat reads text only")
    return "\n".join(parts)


def _tool_call(call: dict[str, Any]) -> dict[str, Any]:
    return {"id": call.get("id"), "type": "function",
            "function": {"name": call["name"], "arguments": call.get("args") or {}}}


def to_granite(message: BaseMessage, index: int = 0) -> dict[str, Any]:
    """One langchain message as a Granite chat dict."""
    text = content_text(message, index)
    if isinstance(message, SystemMessage):
        return {"role": "system", "content": text}
    if isinstance(message, HumanMessage):
        return {"role": "user", "content": text}
    if isinstance(message, AIMessage):
        out: dict[str, Any] = {"role": "assistant", "content": text}
        if message.tool_calls:
            out["tool_calls"] = [_tool_call(call) for call in message.tool_calls]
        return out
    if isinstance(message, ToolMessage):
        return {"role": "tool", "content": text, "tool_call_id": message.tool_call_id}
    if isinstance(message, FunctionMessage):
        return {"role": "tool", "content": text, "name": message.name}
    if isinstance(message, ChatMessage) and message.role in GRANITE_ROLES:
        return {"role": message.role, "content": text}
    raise ValueError(f"message {index} ({type(message).__name__}, role {getattr(message, 'role', '?')!r}) "
                     f"has no Granite role; use one of {', '.join(GRANITE_ROLES)}")


def to_granite_messages(messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
    return [to_granite(message, i) for i, message in enumerate(messages)]


def to_granite_documents(documents: Sequence[Any] | None) -> list[dict[str, Any]] | None:
    """Granite documents from dicts (as given) or langchain Documents (metadata, then ``text``)."""
    if not documents:
        return None
    out = []
    for i, document in enumerate(documents):
        if isinstance(document, Document):
            out.append({**document.metadata, "text": document.page_content})
        elif isinstance(document, dict):
            out.append(document)
        else:
            raise ValueError(f"document {i} is a {type(document).__name__}; give dicts or langchain Documents")
    return out
