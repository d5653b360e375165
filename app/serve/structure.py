"""Structured outputs on the wire: ``response_format`` and forcing ``tool_choice`` as a Structure.

``request_structure(request)`` reads OpenAI's ``response_format`` (``text``, ``json_object``,
``json_schema`` with ``schema`` / ``strict``) and, on chat, ``tool_choice`` ``"required"`` or
``{"type": "function", "function": {"name": ...}}`` with ``parallel_tool_calls``; forced tools
win over a response format. The result is a ``Structure`` (model/structure.py) the backend
constrains decoding with. ``structure_errors(param)`` turns a structure that cannot compile into a
400 whose ``param`` names the part (``response_format.json_schema.schema/properties/x``).
Knows the wire shapes; nothing of models or HTTP servers.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

from feldspar.model.structure import Structure, StructureError
from feldspar.serve.protocol import ApiError

FORMAT = "response_format"
SCHEMA_PARAM = "response_format.json_schema.schema"


def _format_structure(response_format: dict[str, Any] | None) -> Structure | None:
    if not response_format:
        return None
    kind = response_format.get("type")
    if kind in (None, "text"):
        return None
    if kind == "json_object":
        return Structure.json_object()
    if kind != "json_schema":
        raise ApiError(400, f"response_format.type {kind!r} is not one of text, json_object, json_schema",
                       param="response_format.type")
    spec = response_format.get("json_schema")
    if not isinstance(spec, dict) or not isinstance(spec.get("schema", {}), dict):
        raise ApiError(400, "response_format.json_schema must be an object with a 'schema' object",
                       param="response_format.json_schema")
    return Structure.json_schema(spec.get("schema") or {"type": "object"}, name=str(spec.get("name") or ""))


def _forced_tools(request: Any) -> Structure | None:
    choice, tools = getattr(request, "tool_choice", None), getattr(request, "tools", None) or []
    if choice in (None, "auto", "none"):
        return None
    if choice == "required":
        names = None
    elif isinstance(choice, dict) and isinstance((choice.get("function") or {}).get("name"), str):
        names = [choice["function"]["name"]]
    else:
        raise ApiError(400, "tool_choice must be none, auto, required or {\"type\": \"function\", "
                       "\"function\": {\"name\": ...}}", param="tool_choice")
    if not tools:
        raise ApiError(400, "tool_choice forces a tool call but no tools are declared", param="tool_choice")
    parallel = getattr(request, "parallel_tool_calls", None)
    try:
        return Structure.tool_calls(tools, names, parallel is not False)
    except StructureError as exc:
        raise ApiError(400, str(exc), param="tool_choice") from None


def request_structure(request: Any) -> tuple[Structure | None, str]:
    """The structure a request asks for, and the request field that asked for it."""
    forced = _forced_tools(request)
    if forced is not None:
        return forced, "tool_choice"
    try:
        return _format_structure(getattr(request, "response_format", None)), FORMAT
    except StructureError as exc:
        raise ApiError(400, f"{FORMAT}: {exc}", param=FORMAT) from None


@contextmanager
def structure_errors(param: str) -> Iterator[None]:
    """A structure the grammar engine cannot compile, raised inside, as a 400 naming the part."""
    try:
        yield
    except StructureError as exc:
        if param == FORMAT:
            where = SCHEMA_PARAM + (exc.where if exc.where not in ("", "/") else "")
        else:
            where = param
        raise ApiError(400, f"{where}: cannot be compiled to a grammar: {exc.reason}", param=where,
                       code="invalid_schema") from None
