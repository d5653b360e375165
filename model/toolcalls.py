"""Parse tool calls out of a Granite assistant turn; never raises, whatever the text.

Granite writes each call as ``<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>``,
possibly several per turn, with free text around them. Without declared tools only that
shape (a JSON object, a list of them, or one per line, in a block) is read. With declared
tools (``parse_assistant(text, tools)``) the usual mistakes of small models are recovered too,
for declared tool names only, and each recovery is named in ``repairs``:

- ``python_call``: ``get_weather(city="Paris")``, a list of them, or one per line, inside
  a block or as the whole reply (``positional_arguments``, ``unquoted_strings`` refine it);
- ``code_fence``: calls in a ```` ``` ```` fence instead of tags; ``bare_json``: the whole
  reply is a call object;
- ``single_quotes``, ``trailing_commas``, ``python_literals``: dict literals that are not JSON;
- ``parameters_key`` (``"parameters"`` for ``"arguments"``), ``function_wrapper`` (the
  OpenAI ``{"function": {...}}`` shape), ``qualified_name`` (``functions.get_weather``),
  ``unclosed_tag`` (a block cut off before ``</tool_call>``).

A call that names an undeclared tool, or whose arguments fail the tool's JSON schema,
becomes a ``ToolCallError`` (``kind`` unknown_tool / invalid_arguments) whose ``for_model()``
message tells the model how to correct it. Reading is pure: ``json`` and a literal-only
walk of Python syntax trees (model/toolcall_repair.py), no eval. Knows the call syntax and
JSON schemas; nothing of how tools run.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any, Sequence

from feldspar.model.toolcall_repair import LiteralObject, NotACall, PythonCall, loads_json, read_python
from feldspar.model.toolcall_schema import ToolTable, schema_errors

OPEN, CLOSE, FENCE = "<tool_call>", "</tool_call>", "```"
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LANGUAGE_LINE = re.compile(r"[A-Za-z0-9_+-]{0,20}\s*$")


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:12]}"


@dataclass
class ToolCall:
    name: str
    arguments: dict[str, Any]
    id: str = field(default_factory=new_call_id)
    extra: dict[str, Any] = field(default_factory=dict)  # unknown keys the model added
    repairs: list[str] = field(default_factory=list)
    raw: str = field(default="", repr=False)  # the text the call was read from

    def to_openai(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


@dataclass
class ToolCallError:
    raw: str
    message: str
    kind: str = "syntax"  # syntax | unknown_tool | invalid_arguments
    name: str | None = None
    arguments: dict[str, Any] | None = None
    id: str = field(default_factory=new_call_id)
    repairs: list[str] = field(default_factory=list)
    hint: str = ""  # available tool names, or the expected argument schema

    def for_model(self) -> str:
        """The error as a tool result the model can act on."""
        if self.kind == "unknown_tool":
            return (f"Error: there is no tool named {self.name!r}. Available tools: {self.hint or 'none'}. "
                    "Call one of them, or answer without a tool.")
        if self.kind == "invalid_arguments":
            return (f"Error: invalid arguments for tool {self.name!r}: {self.message}. "
                    f"The arguments must match this JSON schema: {self.hint}")
        return (f"Error: could not parse tool call ({self.message}). Raw call: {self.raw.strip()[:500]}. "
                'Write each call as <tool_call>{"name": "TOOL", "arguments": {...}}</tool_call>.')


@dataclass
class ParsedTurn:
    text: str
    calls: list[ToolCall]
    errors: list[ToolCallError]
    repairs: list[str] = field(default_factory=list)


Item = ToolCall | ToolCallError


# ---- where calls can be: tags, fences, text ----------------------------------------------
@dataclass(frozen=True)
class Segment:
    kind: str  # "text" | "tag" | "fence" | "stray" (a lone </tool_call>)
    start: int
    end: int
    closed: bool = True
    body: str = ""


_QUOTED_OR_CLOSE = re.compile(r""""(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|</tool_call>|["']""", re.S)


def tag_end(text: str, inner: int, final: bool = True) -> int:
    """Where the ``</tool_call>`` closing a block whose body starts at ``inner`` is, or -1.

    Read from the call's structure: a ``</tool_call>`` (or ``<tool_call>``) inside a quoted
    string of the call's arguments is text, not the end of the block. A body whose last quote
    never closes ends at the first ``</tool_call>`` when ``final`` (a malformed call, read as
    before); while streaming (not ``final``) it is not closed yet.
    """
    for match in _QUOTED_OR_CLOSE.finditer(text, inner):
        token = match.group(0)
        if token == CLOSE:
            return match.start()
        if len(token) == 1:  # a quote that never closes
            return text.find(CLOSE, inner) if final else -1
    return -1


def segments(text: str, fences: bool = False, final: bool = True) -> list[Segment]:
    """Split ``text`` left to right at tool-call tags (and code fences when ``fences``).

    ``final``: ``text`` is the whole turn (not a prefix still streaming); see ``tag_end``.
    """
    markers = (OPEN, CLOSE, FENCE) if fences else (OPEN, CLOSE)
    found: list[Segment] = []
    position = 0
    while position < len(text):
        hits = [(i, m) for m in markers if (i := text.find(m, position)) >= 0]
        if not hits:
            found.append(Segment("text", position, len(text)))
            break
        start, marker = min(hits)
        if start > position:
            found.append(Segment("text", position, start))
        if marker == CLOSE:
            found.append(Segment("stray", start, start + len(CLOSE)))
            position = start + len(CLOSE)
            continue
        kind, closer, inner = ("tag", CLOSE, start + len(OPEN)) if marker == OPEN else ("fence", FENCE, start + 3)
        end = tag_end(text, inner, final) if marker == OPEN else text.find(closer, inner)
        if end < 0:
            found.append(Segment(kind, start, len(text), closed=False, body=text[inner:]))
            break
        found.append(Segment(kind, start, end + len(closer), closed=True, body=text[inner:end]))
        position = end + len(closer)
    return found


def could_be_bare(text: str, names: Sequence[str]) -> bool:
    """Whether ``text`` (left-stripped), or text it may grow into, can be a bare call reply."""
    if not text or text[0] in "{[(":
        return True
    match = _IDENT.match(text)
    if match is None:
        return False
    ident, rest = match.group(0), text[match.end():]
    if not rest:
        return any(name.startswith(ident) for name in names)
    stripped = rest.lstrip()
    return ident in names and (not stripped or stripped[0] == "(")


def tidy(text: str) -> str:
    return re.sub(r"\n{3,}", "\n\n", text).strip()


# ---- reading one block ---------------------------------------------------------------------
def _call_from_object(obj: Any, raw: str, repairs: Sequence[str] = (), table: ToolTable | None = None) -> Item:
    repairs = list(repairs)
    if not isinstance(obj, dict):
        return ToolCallError(raw, "expected a JSON object with 'name' and 'arguments'", repairs=repairs)
    if "name" not in obj and isinstance(obj.get("function"), dict):
        obj = {**{k: v for k, v in obj.items() if k not in ("function", "type")}, **obj["function"]}
        repairs.append("function_wrapper")
    name = obj.get("name")
    if not isinstance(name, str) or not name.strip():
        return ToolCallError(raw, "missing or empty 'name'", repairs=repairs)
    if "arguments" in obj:
        args = obj["arguments"]
    else:
        args = obj.get("parameters", {})
        repairs += ["parameters_key"] if "parameters" in obj else []
    if isinstance(args, str):
        args, problem = _arguments_from_string(args, repairs, table)
        if problem:
            return ToolCallError(raw, problem, name=name.strip(), repairs=repairs)
    if args is None:
        args = {}
    if not isinstance(args, dict):
        return ToolCallError(raw, "'arguments' must be a JSON object", name=name.strip(), repairs=repairs)
    extra = {k: v for k, v in obj.items() if k not in ("name", "arguments", "parameters")}
    return ToolCall(name=name.strip(), arguments=args, extra=extra, repairs=repairs, raw=raw)


def _arguments_from_string(text: str, repairs: list[str], table: ToolTable | None) -> tuple[Any, str]:
    if not text.strip():
        return {}, ""
    try:
        value, fixes = loads_json(text) if table is not None else (json.loads(text), [])
        repairs += fixes
        return value, ""
    except json.JSONDecodeError as exc:
        problem = f"'arguments' is not valid JSON: {exc.msg}"
    if table is not None:
        try:
            items = read_python(text)
        except NotACall:
            return None, problem
        if len(items) == 1 and isinstance(items[0], LiteralObject):
            repairs += items[0].repairs
            return items[0].value, ""
    return None, problem


def _from_python(items: list[PythonCall | LiteralObject], table: ToolTable) -> list[Item]:
    out: list[Item] = []
    for item in items:
        if isinstance(item, LiteralObject):
            out.append(_call_from_object(item.value, item.raw, item.repairs, table))
            continue
        arguments, repairs = dict(item.keywords), list(item.repairs)
        if item.positional:
            declared = table.resolve(item.name)
            free = [n for n in (table.specs[declared].parameter_names if declared else []) if n not in arguments]
            if len(item.positional) > len(free):
                out.append(ToolCallError(item.raw, f"{len(item.positional)} positional argument(s) that cannot be "
                                         "matched to parameter names; use name=value", name=item.name,
                                         repairs=repairs))
                continue
            arguments.update(zip(free, item.positional))
            repairs.append("positional_arguments")
        out.append(ToolCall(name=item.name, arguments=arguments, repairs=repairs, raw=item.raw))
    return out


def parse_block(raw: str, table: ToolTable | None = None) -> list[Item]:
    """One block body: a JSON object, a JSON list of them, or one per line; leniently with ``table``."""
    body = raw.strip()
    if not body:
        return [ToolCallError(raw, "empty tool call")]
    try:
        parsed, fixes = loads_json(body) if table is not None else (json.loads(body), [])
    except json.JSONDecodeError as exc:
        lines = [line for line in body.splitlines() if line.strip()]
        if len(lines) > 1:
            results = [r for line in lines for r in parse_block(line, table)]
            if not any(isinstance(r, ToolCallError) for r in results):
                return results
        if table is not None:
            try:
                return _from_python(read_python(body), table)
            except NotACall:
                pass
        return [ToolCallError(raw, f"invalid JSON: {exc.msg} at position {exc.pos}")]
    items = parsed if isinstance(parsed, list) else [parsed]
    return [_call_from_object(item, raw, fixes, table) for item in items] or [ToolCallError(raw, "empty list")]


# ---- calls outside tags (declared tools only) -------------------------------------------------
def _names_a_declared_tool(items: list[Item], table: ToolTable) -> bool:
    return any(isinstance(i.name, str) and table.resolve(i.name) for i in items)


def _with_repair(items: list[Item], repair: str) -> list[Item]:
    for item in items:
        item.repairs.insert(0, repair)
    return items


def fence_calls(body: str, table: ToolTable) -> list[Item] | None:
    """The calls in a code fence's body, or None when the fence is ordinary text."""
    first, newline, rest = body.partition("\n")
    content = rest if newline and _LANGUAGE_LINE.fullmatch(first) else body
    if OPEN in content:
        items = [i for s in segments(content) if s.kind == "tag" for i in _tag_items(s, table)]
        return _with_repair(items, "code_fence") if items else None
    if not content.strip():
        return None
    items = parse_block(content, table)
    return _with_repair(items, "code_fence") if _names_a_declared_tool(items, table) else None


def bare_calls(text: str, table: ToolTable) -> list[Item] | None:
    """The calls when the whole reply is a call (JSON or Python style), else None."""
    stripped = text.strip()
    if not stripped or not could_be_bare(stripped, table.names):
        return None
    items = parse_block(stripped, table)
    if not _names_a_declared_tool(items, table):
        return None
    for item in items:
        if "python_call" not in item.repairs:
            item.repairs.insert(0, "bare_json")
    return items


def _tag_items(segment: Segment, table: ToolTable | None) -> list[Item]:
    items = parse_block(segment.body, table)
    if not segment.closed:
        for item in items:
            if isinstance(item, ToolCallError):
                item.message = f"unterminated <tool_call> block; {item.message}"
            else:
                item.repairs.append("unclosed_tag")
    return items


# ---- checking against the declared tools ------------------------------------------------------
def check_call(item: Item, table: ToolTable | None) -> Item:
    """``item``, or an error when its tool is undeclared or its arguments fail the schema."""
    if table is None or isinstance(item, ToolCallError):
        return item
    declared = table.resolve(item.name)
    if declared is None:
        return ToolCallError(item.raw, f"unknown tool {item.name!r}", "unknown_tool", item.name, item.arguments,
                             item.id, item.repairs, ", ".join(table.names))
    if declared != item.name:
        item.name = declared
        item.repairs.append("qualified_name")
    problems = schema_errors(table.parameters(declared), item.arguments)
    if problems:
        return ToolCallError(item.raw, "; ".join(problems), "invalid_arguments", declared, item.arguments, item.id,
                             item.repairs, table.schema_text(declared))
    return item


def parse_assistant(text: str, tools: Sequence[dict[str, Any]] | None = None) -> ParsedTurn:
    """Split an assistant turn into plain text, tool calls and reportable errors."""
    text = text if isinstance(text, str) else "" if text is None else str(text)
    table = ToolTable(tools) if tools else None
    parts = segments(text, fences=table is not None)
    items: list[Item] = []
    visible: list[str] = []
    for part in parts:
        if part.kind == "text":
            visible.append(text[part.start:part.end])
        elif part.kind == "tag":
            items += _tag_items(part, table)
        elif part.kind == "fence":
            found = fence_calls(part.body, table)
            visible += [text[part.start:part.end]] if found is None else []
            items += found or []
    if table is not None and all(p.kind == "text" for p in parts):
        found = bare_calls(text, table)
        if found is not None:
            items, visible = found, []
    checked = [check_call(item, table) for item in items]
    repairs = list(dict.fromkeys(r for item in checked for r in item.repairs))
    return ParsedTurn(text=tidy("".join(visible)), calls=[c for c in checked if isinstance(c, ToolCall)],
                      errors=[e for e in checked if isinstance(e, ToolCallError)], repairs=repairs)
