"""User tools from outside Feldspar: a Python module of tools, and MCP servers.

``load_tools_module(path)`` imports a user's Python file (running its code: it is the
user's own) and collects the tools it defines: ``FeldsparTool`` instances and langchain
``BaseTool``s such as ``@tool`` functions, in definition order, or exactly the list
named ``TOOLS`` when the module has one.

``load_mcp_tools(servers)`` lists the tools of MCP servers through langchain-mcp-adapters
(``MultiServerMCPClient``), one server at a time so a failure names its server. Every
call of an MCP tool opens its own session (for stdio: starts the server process), and
runs under the tool's timeout like any tool. MCP tools count as having side effects
unless the server marks them read-only or the server's entry sets ``side_effects``.

A server entry is a plain dict: ``transport`` (``stdio`` default, ``streamable_http``,
``sse``), ``command``/``args``/``env``/``cwd`` for stdio, ``url``/``headers`` for HTTP,
plus Feldspar's ``side_effects``, ``timeout_s`` and ``tool_prefix``. This module does not
know Settings or the CLI.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import re
import sys
import threading
from pathlib import Path
from typing import Any

from langchain_core.tools import BaseTool

from feldspar.agents.errors import AgentError, McpError, ToolsModuleError
from feldspar.agents.tools import FeldsparTool, check_unique, from_langchain

MCP_LIST_TIMEOUT_S = 60.0
MCP_CALL_TIMEOUT_S = 60.0
TRANSPORTS = ("stdio", "streamable_http", "sse")


# ---- Python modules --------------------------------------------------------------------
def load_tools_module(path: str | Path) -> list[FeldsparTool]:
    """The tools a user's Python file defines; ``ToolsModuleError`` when there are none."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ToolsModuleError(f"tools module not found: {file}")
    module = _import_file(file.resolve())
    explicit = getattr(module, "TOOLS", None)
    if explicit is not None and not isinstance(explicit, (list, tuple)):
        raise ToolsModuleError(f"TOOLS in {file} must be a list of tools, got {type(explicit).__name__}")
    values = list(explicit) if explicit is not None else list(vars(module).values())
    tools = _collect(file, values, strict=explicit is not None)
    if not tools:
        raise ToolsModuleError(f"tools module {file} defines no tools (FeldsparTool instances or langchain "
                               f"@tool functions)")
    try:
        return check_unique(tools)
    except AgentError as exc:
        raise ToolsModuleError(f"tools module {file}: {exc}") from None


def _import_file(file: Path) -> Any:
    digest = hashlib.sha256(str(file).encode("utf-8", "surrogatepass")).hexdigest()[:12]
    name = f"feldspar_user_tools_{digest}"
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise ToolsModuleError(f"cannot import tools module {file}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # pydantic resolves annotations of models defined there through it
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        sys.modules.pop(name, None)
        raise ToolsModuleError(f"cannot import tools module {file}: syntax error on line {exc.lineno}: "
                               f"{exc.msg}") from None
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - the user's code may raise anything
        sys.modules.pop(name, None)
        raise ToolsModuleError(f"cannot import tools module {file}: {type(exc).__name__}: {exc}") from None
    return module


def _collect(file: Path, values: list[Any], strict: bool) -> list[FeldsparTool]:
    tools: list[FeldsparTool] = []
    seen: set[int] = set()
    label = f"module:{file.name}"
    for value in values:
        if id(value) in seen:
            continue
        seen.add(id(value))
        if isinstance(value, FeldsparTool):
            if value.source == "python":
                value.source = label
            tools.append(value)
        elif isinstance(value, BaseTool):
            try:
                tools.append(from_langchain(value, source=label))
            except AgentError as exc:
                raise ToolsModuleError(f"tools module {file}: {exc}") from None
        elif strict:
            raise ToolsModuleError(f"TOOLS in {file} holds a {type(value).__name__}, which is not a tool")
    return tools


# ---- MCP servers -----------------------------------------------------------------------
def load_mcp_tools(servers: dict[str, dict[str, Any]], *, timeout_s: float = MCP_LIST_TIMEOUT_S) -> list[FeldsparTool]:
    """The tools of every server in ``servers`` (name -> entry), adopted as FeldsparTools."""
    from langchain_mcp_adapters.client import MultiServerMCPClient

    tools: list[FeldsparTool] = []
    for name, entry in servers.items():
        connection = mcp_connection(name, entry)
        client = MultiServerMCPClient({name: connection}, handle_tool_errors=False)
        try:
            listed = run_coroutine(client.get_tools(server_name=name), timeout_s)
        except TimeoutError:
            raise McpError(f"MCP server {name!r} did not list its tools within {timeout_s:g} s") from None
        except Exception as exc:  # noqa: BLE001 - transports fail in many ways
            raise McpError(f"MCP server {name!r} could not be started or listed: {root_cause(exc)}") from None
        tools += [_adopt(name, entry, tool) for tool in listed]
    return check_unique(tools)


def mcp_connection(name: str, entry: dict[str, Any]) -> dict[str, Any]:
    """The langchain-mcp-adapters connection for one server entry; ``McpError`` when incomplete."""
    if not isinstance(entry, dict):
        raise McpError(f"MCP server {name!r}: the entry must be a table of settings")
    transport = entry.get("transport") or "stdio"
    if transport not in TRANSPORTS:
        raise McpError(f"MCP server {name!r}: unknown transport {transport!r} (use {', '.join(TRANSPORTS)})")
    if transport == "stdio":
        if not entry.get("command"):
            raise McpError(f"MCP server {name!r}: a stdio server needs a command")
        connection = {"transport": "stdio", "command": str(entry["command"]),
                      "args": [str(a) for a in entry.get("args") or []], "env": entry.get("env") or None}
        if entry.get("cwd"):
            connection["cwd"] = str(entry["cwd"])
        return connection
    if not entry.get("url"):
        raise McpError(f"MCP server {name!r}: a {transport} server needs a url")
    return {"transport": transport, "url": str(entry["url"]), **({"headers": entry["headers"]}
                                                                  if entry.get("headers") else {})}


def _adopt(server: str, entry: dict[str, Any], tool: BaseTool) -> FeldsparTool:
    hints = tool.metadata or {}
    side_effects = entry.get("side_effects")
    if side_effects is None:
        side_effects = hints.get("readOnlyHint") is not True
    name = mcp_tool_name(tool.name, entry.get("tool_prefix"))
    return from_langchain(tool, bool(side_effects), name=name, source=f"mcp:{server}",
                          description=tool.description or f"{tool.name} (from MCP server {server})",
                          timeout_s=float(entry.get("timeout_s") or MCP_CALL_TIMEOUT_S))


def mcp_tool_name(name: str, prefix: str | None = None) -> str:
    """An MCP tool name made valid for Feldspar (letters, digits, _ and -; at most 64)."""
    text = re.sub(r"[^A-Za-z0-9_-]", "_", f"{prefix}_{name}" if prefix else name)
    if not text or not (text[0].isalpha() or text[0] == "_"):
        text = f"_{text}"
    return text[:64]


def run_coroutine(coroutine: Any, timeout_s: float) -> Any:
    """Run ``coroutine`` to its end on a fresh event loop in a worker thread (safe inside a running loop)."""
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["value"] = asyncio.run(asyncio.wait_for(coroutine, timeout_s))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            box["error"] = exc

    worker = threading.Thread(target=work, name="feldspar-mcp", daemon=True)
    worker.start()
    worker.join(timeout_s + 10)
    if worker.is_alive():
        raise TimeoutError(f"did not finish within {timeout_s:g} s")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def root_cause(exc: BaseException) -> str:
    """The first leaf of nested exception groups, as ``Type: message``."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
