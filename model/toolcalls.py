"""Parse Granite ``<tool_call>`` blocks out of an assistant turn.

Granite writes each call as ``<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>``,
possibly several per turn, with free text around them. Parsing never raises: a block that
cannot be understood becomes a ``ToolCallError`` whose message can be sent back to the
model. Knows the tag syntax only; nothing of which tools exist or how to run them.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

OPEN, CLOSE = "<tool_call>", "</tool_call>"
_BLOCK = re.compile(re.escape(OPEN) + r"(.*?)(?:" + re.escape(CLOSE) + r"|$)", re.DOTALL)


@dataclass
class ToolCall:
    name: str
    arguments: dict[str, Any]
    id: str = field(default_factory=lambda: f"call_{uuid.uuid4().hex[:12]}")
    extra: dict[str, Any] = field(default_factory=dict)  # unknown keys the model added

    def to_openai(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


@dataclass
class ToolCallError:
    raw: str
    message: str

    def for_model(self) -> str:
        return f"Error: could not parse tool call ({self.message}). Raw call: {self.raw.strip()}"


@dataclass
class ParsedTurn:
    text: str
    calls: list[ToolCall]
    errors: list[ToolCallError]


def _call_from_object(obj: Any, raw: str) -> ToolCall | ToolCallError:
    if not isinstance(obj, dict):
        return ToolCallError(raw, "expected a JSON object with 'name' and 'arguments'")
    name = obj.get("name")
    if not isinstance(name, str) or not name.strip():
        return ToolCallError(raw, "missing or empty 'name'")
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError as exc:
            return ToolCallError(raw, f"'arguments' is not valid JSON: {exc.msg}")
    if args is None:
        args = {}
    if not isinstance(args, dict):
        return ToolCallError(raw, "'arguments' must be a JSON object")
    extra = {k: v for k, v in obj.items() if k not in ("name", "arguments", "parameters")}
    return ToolCall(name=name.strip(), arguments=args, extra=extra)


def parse_block(raw: str) -> list[ToolCall | ToolCallError]:
    """One ``<tool_call>`` body: a JSON object, a JSON list of them, or one object a line."""
    body = raw.strip()
    if not body:
        return [ToolCallError(raw, "empty tool call")]
    try:
        parsed = json.loads(body)
    except json.JSONDecodeError as exc:
        lines = [line for line in body.splitlines() if line.strip()]
        if len(lines) > 1:
            results = [r for line in lines for r in parse_block(line)]
            if not any(isinstance(r, ToolCallError) for r in results):
                return results
        return [ToolCallError(raw, f"invalid JSON: {exc.msg} at position {exc.pos}")]
    items = parsed if isinstance(parsed, list) else [parsed]
    return [_call_from_object(item, raw) for item in items] or [ToolCallError(raw, "empty list")]


def parse_assistant(text: str) -> ParsedTurn:
    """Split an assistant turn into plain text, tool calls and reportable errors."""
    calls: list[ToolCall] = []
    errors: list[ToolCallError] = []
    for match in _BLOCK.finditer(text):
        terminated = match.group(0).endswith(CLOSE)
        for item in parse_block(match.group(1)):
            if isinstance(item, ToolCallError) and not terminated:
                item.message = f"unterminated <tool_call> block; {item.message}"
            (calls if isinstance(item, ToolCall) else errors).append(item)
    remaining = _BLOCK.sub("", text)
    remaining = remaining.replace(CLOSE, "")
    return ParsedTurn(text=re.sub(r"\n{3,}", "\n\n", remaining).strip(), calls=calls, errors=errors)
