"""Tool commands: `feldspar tools list` and `feldspar tools run NAME 'JSON'`, for debugging tools.

Builds the tools through the composition root (built-ins, the tools module, MCP servers
from the settings; search/read over the chosen collection) and runs one exactly as the
agent would, through ``run_tool``: validated arguments, timeout, errors as text. A tool
with side effects runs only with ``--yes`` (or a yes at the prompt when interactive).
Knows flags and output; knows nothing of how tools work inside.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn, Optional

import typer

from feldspar.cli.root import PLAIN_HELP, HomeOpt, JsonOpt, app, print_json, print_table, settings_from

tools_app = typer.Typer(**PLAIN_HELP, help="Agent tools: list them, or run one by hand for debugging.", no_args_is_help=True)
app.add_typer(tools_app, name="tools")

ToolsModuleOpt = Annotated[Optional[Path], typer.Option("--tools-module", help="Python file defining extra tools")]
CollectionOpt = Annotated[Optional[str], typer.Option("--collection", "-c", help="collection searched and read by the tools")]
LIST_COLUMNS = ["name", "side_effects", "source", "description"]


def _build(home: Path | None, tools_module: Path | None, collection: str | None) -> list:
    from feldspar.compose import build_retrieval, build_tools

    settings = settings_from(home=home, collection=collection, tools_module=tools_module)
    return build_tools(settings, retrieval=build_retrieval(settings))


@tools_app.command("list")
def list_command(json_out: JsonOpt = False, tools_module: ToolsModuleOpt = None, collection: CollectionOpt = None,
                 home: HomeOpt = None) -> None:
    """List the tools the agent can call: name, side effects, where it comes from, description."""
    rows = [tool.describe() for tool in _build(home, tools_module, collection)]
    if json_out:
        print_json(rows)
    else:
        print_table(rows, LIST_COLUMNS, title="tools")


@tools_app.command("run")
def run_command(
    name: Annotated[str, typer.Argument(help="tool name (see `feldspar tools list`)")],
    arguments: Annotated[str, typer.Argument(help="arguments as a JSON object")] = "{}",
    json_out: Annotated[bool, typer.Option("--json", help='print {"result": …} or {"error": …}')] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="allow a tool with side effects to run")] = False,
    tools_module: ToolsModuleOpt = None,
    collection: CollectionOpt = None,
    home: HomeOpt = None,
) -> None:
    """Run one tool with JSON arguments, exactly as the agent would; exit 1 when the tool fails."""
    from feldspar.agents.errors import UnknownTool
    from feldspar.agents.tools import find_tool, run_tool

    args = _parse_arguments(arguments)
    try:
        tool = find_tool(_build(home, tools_module, collection), name)
    except UnknownTool as exc:
        _usage_error(str(exc))
    if tool.side_effects and not yes and not _confirmed(name, json_out):
        _fail(f"{name} has side effects; pass --yes to run it", json_out)
    outcome = run_tool(tool, args)
    if outcome.error is not None:
        _fail(outcome.error, json_out)
    if json_out:
        print_json({"result": outcome.value if outcome.value is not None else outcome.result})
    else:
        sys.stdout.write((outcome.result or "") + "\n")


def _parse_arguments(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        _usage_error(f"the arguments are not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); "
                     f"""give an object such as '{{"expression": "2 + 2"}}'""")
    if not isinstance(value, dict):
        _usage_error(f"the arguments must be a JSON object, got {type(value).__name__}; "
                     f"""give an object such as '{{"expression": "2 + 2"}}'""")
    return value


def _confirmed(name: str, json_out: bool) -> bool:
    if json_out or not sys.stdin.isatty():
        return False
    return typer.confirm(f"{name} has side effects. Run it?", default=False, err=True)


def _usage_error(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _fail(message: str, json_out: bool) -> NoReturn:
    if json_out:
        print_json({"error": message})
    else:
        typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)
