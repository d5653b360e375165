"""Structured output on a remote server: the schema in the form the server understands, and a fallback.

``request_fields(structure, dialect)`` is what a chat request adds for a ``Structure``
(model/structure.py): ``openai`` (OpenAI, ``feldspar serve``, Ollama, llama-server's OpenAI
layer) sends ``response_format`` json_object / json_schema (strict); ``vllm`` adds
``structured_outputs`` (json, regex, choice) in the body; ``llamacpp`` adds llama-server's
``json_schema`` (JSON only). Forced tool calls are ``tool_choice`` ("required" or the named
function) with ``parallel_tool_calls`` in every dialect. None means the dialect cannot say it
(e.g. a regex to llama-server): the backend then sends the request unconstrained.
``refused(exc)`` tells a server that cannot constrain (a 400/422 naming the field) from
other errors, so the backend can say so in one line and fall back to validate-and-retry.
Knows OpenAI-compatible wire shapes; nothing of grammars or tensors.
"""

from __future__ import annotations

import json
from typing import Any

from feldspar.model.structure import Structure

DIALECTS = ("openai", "vllm", "llamacpp")
_FIELD_WORDS = ("response_format", "json_schema", "structured", "guided", "grammar", "regex", "choice",
                "tool_choice", "not supported", "unsupported")


def _tool_fields(structure: Structure) -> dict[str, Any]:
    names = [name for name, _ in structure.value.tools]
    choice = {"type": "function", "function": {"name": names[0]}} if len(names) == 1 else "required"
    return {"tool_choice": choice, "parallel_tool_calls": structure.value.parallel}


def request_fields(structure: Structure | None, dialect: str = "openai") -> dict[str, Any] | None:
    """Fields (top-level, and ``extra_body``) that ask the server for ``structure``; None: cannot."""
    if structure is None:
        return {}
    if structure.kind == "tool_calls":
        return _tool_fields(structure)
    schema = structure.schema()
    if dialect == "vllm":
        spec = ({"json": schema} if structure.is_json else {"regex": structure.value} if structure.kind == "regex"
                else {"choice": list(structure.value)})
        return {"extra_body": {"structured_outputs": spec}}
    if not structure.is_json:
        return None
    if dialect == "llamacpp":
        return {"extra_body": {"json_schema": schema}}
    if structure.kind == "json_object":
        return {"response_format": {"type": "json_object"}}
    return {"response_format": {"type": "json_schema", "json_schema": {
        "name": structure.name or "output", "schema": schema, "strict": True}}}


def merged(request: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    extra = {**request.get("extra_body", {}), **fields.get("extra_body", {})}
    out = {**request, **{k: v for k, v in fields.items() if k != "extra_body"}}
    if extra:
        out["extra_body"] = extra
    return out


def refused(exc: BaseException) -> bool:
    """True for a 400/422 answer that names a structured-output field (the server cannot constrain)."""
    status = getattr(exc, "status_code", None)
    text = json.dumps(getattr(exc, "body", None) or str(exc)).lower()
    return status in (400, 422) and any(word in text for word in _FIELD_WORDS)
