"""Requests of `feldspar serve` validated like OpenAI validates them: each problem a 400 naming ``param``.

Three checks run at the edge, before anything is rendered or queued:

- ``bound_messages(body)``: on the raw bytes, before any JSON parsing, a request with more
  than ``MAX_MESSAGES`` messages is refused (counted as ``"role"`` keys: an upper bound, in
  microseconds even for a 16 MiB body);
- ``check_chat(request)``: tools (``type`` "function", a ``function`` object with a ``name``
  of OpenAI's form, ``parameters`` an object), ``tool_choice`` ("none", "auto", "required" or
  a declared function), tool messages with a ``tool_call_id``, assistant ``tool_calls``
  entries with a ``function`` that has a ``name``;
- ``check_text_fields(request)``: no unpaired surrogate anywhere (valid JSON, but not
  Unicode text: the tokenizer would fail on it).

Token ids of ``/v1/completions`` are checked against the model's vocabulary by the engine
(model/text_checks.py), whose ``PromptError`` carries the ``param`` too. Knows the OpenAI
request shape; nothing of models or HTTP frameworks.
"""

from __future__ import annotations

import re
from typing import Any

from feldspar.model.text_checks import first_surrogate
from feldspar.serve.protocol import ApiError

MAX_MESSAGES = 10_000
TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
TOOL_CHOICES = ("none", "auto", "required")


def _bad(param: str, message: str) -> ApiError:
    return ApiError(400, f"{param}: {message}", param=param, code="invalid_value")


def bound_messages(body: bytes) -> ApiError | None:
    """An error when the raw body plainly holds more than ``MAX_MESSAGES`` messages, else None."""
    if body.count(b'"role"') > MAX_MESSAGES:
        return _bad("messages", f"more than {MAX_MESSAGES:,} messages in one request; send the conversation's "
                                "recent part, or a summary of the rest")
    return None


def check_text_fields(request: Any) -> None:
    hit = first_surrogate(request.model_dump(exclude_none=True))
    if hit is not None:
        where, index, char = hit
        raise _bad(where, f"holds an unpaired surrogate (U+{ord(char):04X}) at character {index}, which is not "
                          "valid Unicode text; send UTF-8 text")


def check_tools(tools: list[Any] | None) -> list[str]:
    """The declared function names; an ApiError for the first malformed tool."""
    names: list[str] = []
    for i, tool in enumerate(tools or []):
        where = f"tools.{i}"
        if not isinstance(tool, dict):
            raise _bad(where, "a tool is an object {\"type\": \"function\", \"function\": {...}}")
        if tool.get("type", "function") != "function":
            raise _bad(f"{where}.type", f"unknown tool type {tool.get('type')!r}; only 'function' tools are supported")
        function = tool.get("function")
        if not isinstance(function, dict):
            raise _bad(f"{where}.function", "missing the 'function' object (name, description, parameters)")
        name = function.get("name")
        if not isinstance(name, str) or not TOOL_NAME.match(name):
            raise _bad(f"{where}.function.name", "a function needs a 'name' of 1-64 letters, digits, '_' or '-'")
        if "parameters" in function and not isinstance(function["parameters"], dict):
            raise _bad(f"{where}.function.parameters", "'parameters' must be a JSON Schema object")
        if not isinstance(function.get("description", ""), str):
            raise _bad(f"{where}.function.description", "'description' must be a string")
        names.append(name)
    return names


def check_tool_choice(choice: Any, names: list[str]) -> None:
    if choice is None:
        return
    if isinstance(choice, str):
        if choice not in TOOL_CHOICES:
            raise _bad("tool_choice", f"{choice!r} is not one of {', '.join(TOOL_CHOICES)} or a function object")
        if choice == "required" and not names:
            raise _bad("tool_choice", "'required' needs tools")
        return
    function = choice.get("function") if isinstance(choice, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(choice, dict) or choice.get("type") != "function" or not isinstance(name, str):
        raise _bad("tool_choice", 'a tool choice object is {"type": "function", "function": {"name": ...}}')
    if name not in names:
        raise _bad("tool_choice", f"names the function {name!r}, which is not among the tools "
                                  f"({', '.join(names) or 'none given'})")


def check_messages(messages: list[Any]) -> None:
    for i, message in enumerate(messages):
        if message.role == "tool" and not message.tool_call_id:
            raise _bad(f"messages.{i}.tool_call_id", "a tool message needs the 'tool_call_id' of the call it answers")
        for j, call in enumerate(message.tool_calls or []):
            where = f"messages.{i}.tool_calls.{j}"
            if message.role != "assistant":
                raise _bad(f"messages.{i}.tool_calls", "only assistant messages have tool_calls")
            function = call.get("function") if isinstance(call, dict) else None
            if not isinstance(function, dict):
                raise _bad(f"{where}.function", "a tool call needs a 'function' object with 'name' and 'arguments'")
            if not isinstance(function.get("name"), str) or not function["name"]:
                raise _bad(f"{where}.function.name", "a tool call needs the function's 'name'")
            if call.get("type", "function") != "function":
                raise _bad(f"{where}.type", f"unknown tool call type {call.get('type')!r}")


def check_chat(request: Any) -> None:
    """Every check of a chat request; the first problem raises an ApiError(400, param=...)."""
    check_text_fields(request)
    check_tool_choice(request.tool_choice, check_tools(request.tools))
    check_messages(request.messages)


def check_completion(request: Any) -> None:
    check_text_fields(request)
