"""What shape a generation must take: a JSON Schema, any JSON object, a regex, a choice, tool calls.

Contract: a ``Structure`` is a plain, torch-free description that every layer can pass along
(the CLI, the server, agents, a remote backend). ``grammar()`` turns it into the grammar text
of llguidance (Lark with embedded ``%json``), which model/constrained.py compiles against a
tokenizer; ``validate(text)`` checks a finished output with jsonschema / ``re`` (what a remote
server's answer is checked with). JSON is written compactly (no free whitespace) so a model
cannot spend its budget on blanks. ``check_compiles`` raises ``StructureError`` naming the part
of a schema that the grammar engine cannot compile (a JSON pointer into the schema).
Knows grammars and schemas; nothing of models, tensors or HTTP.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

from feldspar.model.errors import ModelError

KINDS = ("json_schema", "json_object", "regex", "choice", "tool_calls")
_COMPACT = {"whitespace_flexible": False}
_SUBSCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SUBSCHEMA_MAPS = ("properties", "$defs", "definitions", "patternProperties")
_SUBSCHEMA_ONE = ("items", "additionalProperties", "not", "if", "then", "else", "contains")


class StructureError(ModelError):
    """A structure the grammar engine cannot compile; ``where`` is a JSON pointer (or '')."""

    def __init__(self, message: str, where: str = "") -> None:
        super().__init__(f"{where}: {message}" if where else message)
        self.reason = message
        self.where = where


@dataclass(frozen=True)
class ToolChoice:
    """Forced tool calls: ``names`` are the tools allowed (one for a named tool_choice)."""

    tools: tuple[tuple[str, str], ...]  # (name, parameters schema as JSON text)
    parallel: bool = True
    open_id: int = -1  # the <tool_call> / </tool_call> token ids, bound by model/constrained.py
    close_id: int = -1


@dataclass(frozen=True)
class Structure:
    kind: str
    value: Any = None  # schema (JSON text) | regex | tuple of choices | ToolChoice
    name: str = field(default="", compare=False)

    @classmethod
    def json_schema(cls, schema: dict[str, Any] | str, name: str = "") -> "Structure":
        text = schema if isinstance(schema, str) else json.dumps(schema, sort_keys=False)
        if not isinstance(json.loads(text), dict):
            raise StructureError("a JSON Schema must be an object")
        return cls("json_schema", text, name)

    @classmethod
    def json_object(cls) -> "Structure":
        return cls("json_object", json.dumps({"type": "object"}))

    @classmethod
    def regex(cls, pattern: str) -> "Structure":
        try:
            re.compile(pattern)
        except re.error as exc:
            raise StructureError(f"invalid regex: {exc}") from None
        return cls("regex", pattern)

    @classmethod
    def choice(cls, options: Sequence[str]) -> "Structure":
        options = tuple(o for o in options if o)
        if not options:
            raise StructureError("a choice needs at least one non-empty option")
        return cls("choice", options)

    @classmethod
    def tool_calls(cls, tools: Sequence[dict[str, Any]], names: Sequence[str] | None = None,
                   parallel: bool = True) -> "Structure":
        """Forced Granite ``<tool_call>`` blocks calling one of ``names`` (None: any declared tool)."""
        table = [((t.get("function") or t).get("name", ""), json.dumps((t.get("function") or t).get("parameters") or {}))
                 for t in tools]
        chosen = tuple((n, p) for n, p in table if n and (names is None or n in names))
        if not chosen:
            raise StructureError(f"no declared tool named {', '.join(names or []) or '(none declared)'}", "tool_choice")
        return cls("tool_calls", ToolChoice(chosen, parallel))

    def with_token_ids(self, open_id: int, close_id: int) -> "Structure":
        """A tool-call structure bound to a tokenizer's ``<tool_call>`` / ``</tool_call>`` ids."""
        if self.kind != "tool_calls":
            return self
        return Structure(self.kind, ToolChoice(self.value.tools, self.value.parallel, open_id, close_id), self.name)

    @property
    def is_json(self) -> bool:
        return self.kind in ("json_schema", "json_object")

    def schema(self) -> dict[str, Any] | None:
        return json.loads(self.value) if self.is_json else None

    def grammar(self) -> str:
        """llguidance grammar text (Lark; JSON parts as ``%json``)."""
        if self.is_json:
            return f"start: {_json_rule(self.value)}\n"
        if self.kind == "regex":
            return f"start: /{_lark_regex(self.value)}/\n"
        if self.kind == "choice":
            return "start: " + " | ".join(json.dumps(o) for o in self.value) + "\n"
        return _tool_grammar(self.value)

    def validate(self, text: str) -> list[str]:
        """Why ``text`` does not have this structure (empty when it does)."""
        if self.kind == "regex":
            return [] if re.fullmatch(self.value, text) else [f"does not match /{self.value}/"]
        if self.kind == "choice":
            return [] if text in self.value else [f"is not one of {', '.join(self.value)}"]
        if not self.is_json:
            return []
        try:
            data = json.loads(text)
        except ValueError as exc:
            return [f"not JSON: {exc}"]
        return schema_errors(self.schema() or {}, data)


def schema_errors(schema: dict[str, Any], data: Any) -> list[str]:
    import jsonschema

    validator = jsonschema.validators.validator_for(schema)(schema, format_checker=jsonschema.FormatChecker())
    return [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in validator.iter_errors(data)]


def _compact(schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "x-guidance": {**_COMPACT, **schema.get("x-guidance", {})}}


def _json_rule(schema_text: str) -> str:
    return "%json " + json.dumps(_compact(json.loads(schema_text)))


def _lark_regex(pattern: str) -> str:
    return pattern.replace("/", "\\/")


def tool_call_schema(name: str, parameters: str) -> dict[str, Any]:
    params = json.loads(parameters) if parameters else {"type": "object"}
    return {"type": "object", "properties": {"name": {"const": name}, "arguments": params},
            "required": ["name", "arguments"], "additionalProperties": False}


def _tool_grammar(choice: ToolChoice) -> str:
    schemas = [tool_call_schema(n, p) for n, p in choice.tools]
    body = schemas[0] if len(schemas) == 1 else {"anyOf": schemas}
    start = 'start: call ("\\n" call)*' if choice.parallel else "start: call"
    return (f"{start}\ncall: <[{choice.open_id}]> \"\\n\" body \"\\n\" <[{choice.close_id}]>\n"
            f"body: %json {json.dumps(_compact(body))}\n")


def shortest(schema: Any, depth: int = 0) -> int:
    """Characters of the shortest JSON text ``schema`` accepts (an estimate; never 0)."""
    if not isinstance(schema, dict) or depth > 16:
        return 4
    if "const" in schema:
        return len(json.dumps(schema["const"]))
    if schema.get("enum"):
        return min(len(json.dumps(e)) for e in schema["enum"])
    for key, pick in (("anyOf", min), ("oneOf", min), ("allOf", max)):
        if schema.get(key):
            return pick(shortest(sub, depth + 1) for sub in schema[key])
    kind = schema.get("type")
    if isinstance(kind, list):
        return min(shortest({**schema, "type": k}, depth + 1) for k in kind) if kind else 4
    if kind == "object":
        props = schema.get("properties") or {}
        return 2 + sum(len(json.dumps(k)) + 2 + shortest(props.get(k, {}), depth + 1) for k in schema.get("required", []))
    if kind == "array":
        return 2 + int(schema.get("minItems", 0)) * (shortest(schema.get("items", {}), depth + 1) + 1)
    if kind == "string":
        return 2 + int(schema.get("minLength", 0))
    return {"boolean": 5, "null": 4}.get(kind, len(str(schema.get("minimum", 0))))


def shortest_text(structure: Structure) -> int:
    if structure.is_json:
        return shortest(structure.schema())
    if structure.kind == "choice":
        return min(len(o) for o in structure.value)
    if structure.kind == "tool_calls":
        return min(shortest(tool_call_schema(n, p)) + 4 for n, p in structure.value.tools)
    return 8


# ---- naming the part of a schema that cannot compile ----------------------------------
def _children(schema: Any, pointer: str) -> Iterator[tuple[str, Any]]:
    if not isinstance(schema, dict):
        return
    for key in _SUBSCHEMA_ONE:
        if isinstance(schema.get(key), dict):
            yield f"{pointer}/{key}", schema[key]
    for key in _SUBSCHEMA_LISTS:
        for i, sub in enumerate(schema.get(key) or []):
            yield f"{pointer}/{key}/{i}", sub
    for key in _SUBSCHEMA_MAPS:
        for name, sub in (schema.get(key) or {}).items():
            yield f"{pointer}/{key}/{_escape(name)}", sub


def _escape(name: str) -> str:
    return name.replace("~", "~0").replace("/", "~1")


def _refers(schema: Any) -> bool:
    return "$ref" in json.dumps(schema)


def locate(schema: dict[str, Any], fails) -> str:
    """The deepest JSON pointer whose subschema fails on its own (``fails(sub) -> bool``)."""
    pointer, node = "", schema
    while True:
        for child_pointer, child in _children(node, pointer):
            if isinstance(child, dict) and not _refers(child) and fails(child):
                pointer, node = child_pointer, child
                break
        else:
            return pointer or "/"
