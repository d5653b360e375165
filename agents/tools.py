"""The agent's tool contract: ``FeldsparTool`` and ``run_tool``, which never raises.

A ``FeldsparTool`` is a name, a description, an argument schema (a pydantic model class;
tools adopted from langchain or MCP may bring a JSON-schema dict instead), a function,
whether it has side effects, and a timeout. A tool is checked when it is defined: a bad
name, an empty description or an unusable schema raise ``ToolDefinitionError`` at once.
langchain ``BaseTool``s are adopted as they are by ``from_langchain``.

``run_tool`` validates the arguments against the schema, calls the function in a worker
thread bounded by the tool's timeout (a hung tool is abandoned, never waited for), and
turns every failure (bad arguments, an exception in the tool, a result that is not JSON,
a timeout) into the error text of a ``ToolOutcome`` that goes back to the model.

This module does not know which tools exist (builtin_tools, tool_sources do), how calls
are parsed from model text, or who approves side effects: the graph reads
``side_effects`` and asks before calling ``run_tool``.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import math
import re
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import jsonschema
from langchain_core.tools import BaseTool, StructuredTool, ToolException
from langchain_core.tools.base import create_schema_from_function
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel, ValidationError
from pydantic_core import to_jsonable_python

from feldspar.agents.errors import InvalidToolArguments, ToolDefinitionError, UnknownTool

NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")
MAX_RESULT_CHARS = 20_000  # what the model gets back from one call; the rest is cut, and said so
MAX_ERROR_CHARS = 2_000
MAX_HUNG_CALLS = 4  # abandoned (timed-out) calls of one tool still running before it is refused


@dataclass(eq=False)
class FeldsparTool:
    """One tool the agent may call; checked on construction."""

    name: str
    description: str
    args_schema: Any  # a pydantic BaseModel subclass, or a JSON-schema dict (adopted tools)
    func: Callable[..., Any]
    side_effects: bool = False
    timeout_s: float = 30.0
    source: str = "python"
    _hung: list[threading.Thread] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        _check_definition(self)

    def parameters(self) -> dict[str, Any]:
        """The JSON schema of the arguments, as the model sees it."""
        if isinstance(self.args_schema, dict):
            return dict(self.args_schema)
        return convert_to_openai_tool(self.args_schema)["function"]["parameters"]

    def openai_schema(self) -> dict[str, Any]:
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                 "parameters": self.parameters()}}

    def validate(self, args: Any) -> dict[str, Any]:
        """The keyword arguments for ``func``; ``InvalidToolArguments`` with a clear message otherwise."""
        if not isinstance(args, dict):
            raise InvalidToolArguments(f"arguments of {self.name} must be a JSON object, got {_type_name(args)}")
        if isinstance(self.args_schema, dict):
            return _validate_json_schema(self.name, self.args_schema, args)
        return _validate_model(self.name, self.args_schema, args)

    def as_langchain(self) -> StructuredTool:
        """A langchain tool that runs through ``run_tool`` (timeout; errors become ToolExceptions)."""
        def call(**kwargs: Any) -> str:
            outcome = run_tool(self, kwargs)
            if outcome.error is not None:
                raise ToolException(outcome.error)
            return outcome.result or ""

        return StructuredTool(name=self.name, description=self.description, args_schema=self.args_schema,
                              func=call, handle_tool_error=True,
                              handle_validation_error=lambda exc: f"invalid arguments for {self.name}: "
                                                                  f"{_validation_message(exc)}",
                              metadata={"side_effects": self.side_effects, "source": self.source})

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "side_effects": self.side_effects,
                "source": self.source, "timeout_s": self.timeout_s}


@dataclass
class ToolOutcome:
    """What one call produced: ``result`` text or ``error`` text, never both."""

    name: str
    arguments: Any
    result: str | None = None
    error: str | None = None
    duration_s: float = 0.0
    timed_out: bool = False
    value: Any = None  # the JSON-ready value behind ``result`` (e.g. search hits with spans)
    truncated: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None

    def for_model(self) -> str:
        return f"Error: {self.error}" if self.error is not None else (self.result or "")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---- running ---------------------------------------------------------------------------
def run_tool(tool: FeldsparTool, args: Any, *, timeout_s: float | None = None,
             max_result_chars: int = MAX_RESULT_CHARS) -> ToolOutcome:
    """Validate and call ``tool``; every failure becomes ``error`` text. Never raises."""
    started = time.monotonic()
    name = str(getattr(tool, "name", "?"))
    try:
        kwargs = tool.validate(args)
    except Exception as exc:  # noqa: BLE001 - a tool's own validate may fail in any way
        return ToolOutcome(name, _jsonable(args), error=_describe(exc), duration_s=time.monotonic() - started)
    outcome = ToolOutcome(name, _jsonable(kwargs))
    try:
        _call_bounded(tool, kwargs, timeout_s or tool.timeout_s, outcome, max_result_chars)
    except Exception as exc:  # noqa: BLE001 - last resort: run_tool must not raise
        outcome.error = f"the tool could not be run: {_describe(exc)}"
    outcome.duration_s = time.monotonic() - started
    return outcome


def _call_bounded(tool: FeldsparTool, kwargs: dict[str, Any], timeout_s: float, outcome: ToolOutcome,
                  max_chars: int) -> None:
    tool._hung[:] = [thread for thread in tool._hung if thread.is_alive()]
    if len(tool._hung) >= MAX_HUNG_CALLS:
        outcome.error = (f"{len(tool._hung)} earlier calls of {tool.name} are still running after their "
                         f"timeout; not starting another")
        return
    box: dict[str, Any] = {}
    worker = threading.Thread(target=_work, args=(tool.func, kwargs, box), name=f"tool-{tool.name}", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        tool._hung.append(worker)
        outcome.timed_out = True
        outcome.error = f"{tool.name} did not finish within {timeout_s:g} s and was abandoned"
    elif "error" in box:
        outcome.error = _describe(box["error"])
    else:
        _set_result(outcome, box.get("value"), max_chars)


def _work(func: Callable[..., Any], kwargs: dict[str, Any], box: dict[str, Any]) -> None:
    try:
        value = func(**kwargs)
        if inspect.isawaitable(value):
            value = asyncio.run(_awaited(value))
        box["value"] = value
    except BaseException as exc:  # noqa: BLE001 - SystemExit in a tool must not end the agent
        box["error"] = exc


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


def _set_result(outcome: ToolOutcome, value: Any, max_chars: int) -> None:
    try:
        ready = value if isinstance(value, str) else to_jsonable_python(value)
        text = ready if isinstance(ready, str) else json.dumps(ready, ensure_ascii=False, allow_nan=False)
    except Exception as exc:  # noqa: BLE001 - any object may come back
        outcome.error = f"{outcome.name} returned a result that is not JSON ({_type_name(value)}): {_describe(exc)}"
        return
    outcome.value = ready
    if len(text) > max_chars:
        text = f"{text[:max_chars]}\n… [truncated: {len(text) - max_chars} more characters]"
        outcome.truncated = True
    outcome.result = text


def find_tool(tools: Sequence[FeldsparTool], name: str) -> FeldsparTool:
    for tool in tools:
        if tool.name == name:
            return tool
    available = ", ".join(t.name for t in tools) or "none"
    raise UnknownTool(f"unknown tool {str(name)[:100]!r}; available tools: {available}")


def run_named(tools: Sequence[FeldsparTool], name: Any, args: Any, **options: Any) -> ToolOutcome:
    """``run_tool`` for a tool named by the model; an unknown name is an error outcome."""
    try:
        tool = find_tool(tools, name)
    except UnknownTool as exc:
        return ToolOutcome(str(name)[:100], _jsonable(args), error=str(exc))
    return run_tool(tool, args, **options)


def check_unique(tools: Sequence[FeldsparTool]) -> list[FeldsparTool]:
    seen: dict[str, FeldsparTool] = {}
    for tool in tools:
        if tool.name in seen:
            raise ToolDefinitionError(f"two tools are named {tool.name!r} (from {seen[tool.name].source} and "
                                      f"{tool.source}); rename one")
        seen[tool.name] = tool
    return list(tools)


# ---- adopting langchain tools and plain functions --------------------------------------
def from_langchain(tool: BaseTool, side_effects: bool = False, *, name: str | None = None,
                   description: str | None = None, source: str = "langchain",
                   timeout_s: float = 30.0) -> FeldsparTool:
    """A FeldsparTool that calls a langchain ``BaseTool`` (sync or async) as it is.

    ``side_effects`` is also true when the tool's metadata says ``side_effects: True``.
    """
    if isinstance(tool, FeldsparTool):
        return tool
    if not isinstance(tool, BaseTool):
        raise ToolDefinitionError(f"{_type_name(tool)} is not a langchain BaseTool")
    try:
        schema = tool.tool_call_schema
    except Exception as exc:  # noqa: BLE001 - third-party schemas fail in many ways
        raise ToolDefinitionError(f"tool {tool.name!r}: cannot read its argument schema: {exc}") from None
    flagged = bool((tool.metadata or {}).get("side_effects"))
    return FeldsparTool(name=name or tool.name, description=description or tool.description,
                        args_schema=schema, func=_langchain_caller(tool), side_effects=side_effects or flagged,
                        timeout_s=timeout_s, source=source)


def _langchain_caller(tool: BaseTool) -> Callable[..., Any]:
    if isinstance(tool, StructuredTool) and tool.func is None and tool.coroutine is not None:
        async def call_async(**kwargs: Any) -> Any:
            return content_text(await tool.ainvoke(kwargs))

        return call_async

    def call(**kwargs: Any) -> Any:
        return content_text(tool.invoke(kwargs))

    return call


def content_text(content: Any) -> Any:
    """Text blocks (MCP / langchain content lists) joined into one string; anything else unchanged."""
    if isinstance(content, list) and content and all(
            isinstance(b, dict) and b.get("type") == "text" for b in content):
        return "\n".join(str(b.get("text", "")) for b in content)
    return content


def feldspar_tool(func: Callable[..., Any] | None = None, *, name: str | None = None,
                  description: str | None = None, side_effects: bool = False, timeout_s: float = 30.0):
    """Decorator: a FeldsparTool from a typed function (schema from the signature, docstring as description)."""
    def wrap(function: Callable[..., Any]) -> FeldsparTool:
        tool_name = name or function.__name__
        schema = create_schema_from_function(tool_name, function)
        text = description or inspect.getdoc(function) or ""
        return FeldsparTool(tool_name, text, schema, function, side_effects=side_effects, timeout_s=timeout_s)

    return wrap(func) if func is not None else wrap


# ---- checks and messages ---------------------------------------------------------------
def _check_definition(tool: FeldsparTool) -> None:
    if not isinstance(tool.name, str) or not NAME_PATTERN.fullmatch(tool.name):
        raise ToolDefinitionError(f"tool name {tool.name!r} is not valid: use 1-64 letters, digits, _ or -, "
                                  f"starting with a letter or _")
    label = f"tool {tool.name!r}"
    if not isinstance(tool.description, str) or not tool.description.strip():
        raise ToolDefinitionError(f"{label}: the description is empty; say what the tool does")
    if not callable(tool.func):
        raise ToolDefinitionError(f"{label}: func must be callable, got {_type_name(tool.func)}")
    if not isinstance(tool.side_effects, bool):
        raise ToolDefinitionError(f"{label}: side_effects must be True or False")
    timeout = tool.timeout_s
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not math.isfinite(timeout) or timeout <= 0:
        raise ToolDefinitionError(f"{label}: timeout_s must be a positive number of seconds, got {timeout!r}")
    _check_schema(label, tool.args_schema)


def _check_schema(label: str, schema: Any) -> None:
    if isinstance(schema, dict):
        if schema.get("type", "object") != "object":
            raise ToolDefinitionError(f"{label}: the argument schema must describe an object")
        try:
            jsonschema.validators.validator_for(schema).check_schema(schema)
        except jsonschema.SchemaError as exc:
            raise ToolDefinitionError(f"{label}: invalid JSON schema: {exc.message}") from None
        return
    if not (isinstance(schema, type) and issubclass(schema, BaseModel)):
        raise ToolDefinitionError(f"{label}: args_schema must be a pydantic BaseModel class, "
                                  f"got {_type_name(schema)}")
    try:
        schema.model_json_schema()
    except Exception as exc:  # noqa: BLE001 - pydantic raises several types here
        raise ToolDefinitionError(f"{label}: the argument schema cannot be written as JSON schema: {exc}") from None


def _validate_model(name: str, model: type[BaseModel], args: dict[str, Any]) -> dict[str, Any]:
    if model.model_config.get("extra") != "allow":
        accepted = set(model.model_fields) | {f.alias for f in model.model_fields.values() if f.alias}
        unknown = [str(k) for k in args if k not in accepted]
        if unknown:
            raise InvalidToolArguments(f"invalid arguments for {name}: unknown argument(s) "
                                       f"{', '.join(repr(u[:60]) for u in unknown[:5])}; expected: "
                                       f"{', '.join(model.model_fields) or 'none'}")
    try:
        instance = model.model_validate(args)
    except ValidationError as exc:
        raise InvalidToolArguments(f"invalid arguments for {name}: {_validation_message(exc)}") from None
    kwargs = {field_name: getattr(instance, field_name) for field_name in model.model_fields}
    kwargs.update(instance.model_extra or {})
    return kwargs


def _validate_json_schema(name: str, schema: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
    validator = jsonschema.validators.validator_for(schema)(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(args))
    if error is not None:
        where = ".".join(str(p) for p in error.absolute_path)
        raise InvalidToolArguments(f"invalid arguments for {name}: {where + ': ' if where else ''}"
                                   f"{_clip(error.message, 300)}")
    return dict(args)


def _validation_message(exc: Exception) -> str:
    if not isinstance(exc, ValidationError):
        return _describe(exc)
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(p) for p in error.get("loc", ())) or "arguments"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def _describe(exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception:  # noqa: BLE001 - a hostile __str__
        text = ""
    if isinstance(exc, ToolException) or hasattr(exc, "fix"):  # a message written for its reader
        return _clip(text or type(exc).__name__, MAX_ERROR_CHARS)
    return _clip(f"{type(exc).__name__}: {text}" if text else type(exc).__name__, MAX_ERROR_CHARS)


def _jsonable(value: Any) -> Any:
    try:
        return to_jsonable_python(value, fallback=repr)
    except Exception:  # noqa: BLE001 - recorded for the trace only
        return f"<{_type_name(value)}>"


def _type_name(value: Any) -> str:
    return f"class {value.__name__}" if isinstance(value, type) else type(value).__name__


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "…"
