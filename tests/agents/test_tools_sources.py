"""User tools: Python tools modules, and MCP servers run for real over stdio.

The MCP server is a small FastMCP script written by the test and started by
langchain-mcp-adapters as a subprocess, exactly as a configured server would be.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from feldspar.agents.errors import AgentError, McpError, ToolsModuleError
from feldspar.agents.tool_sources import load_mcp_tools, load_tools_module, mcp_tool_name
from feldspar.agents.tools import run_tool
from feldspar.compose import build_tools
from feldspar.settings import SettingsError, load_settings

MODULE = '''
from langchain_core.tools import tool
from pydantic import BaseModel
from feldspar.agents.tools import FeldsparTool, feldspar_tool

class Greeting(BaseModel):
    name: str

greet = FeldsparTool("greet", "Greet someone.", Greeting, lambda name: f"hello {name}")

@tool
def reverse(text: str) -> str:
    """Reverse a text."""
    return text[::-1]

@feldspar_tool(side_effects=True)
def delete_everything(confirm: bool) -> str:
    """Pretend to delete everything."""
    return "deleted"

not_a_tool = 42
'''

MCP_SERVER = '''
from mcp.server.fastmcp import FastMCP
from mcp.types import ToolAnnotations

server = FastMCP("feldspar-test", log_level="ERROR")

@server.tool(annotations=ToolAnnotations(readOnlyHint=True))
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b

@server.tool()
def fail(message: str) -> str:
    """Always fails with the message."""
    raise ValueError(message)

@server.tool(name="notes.write")
def write_note(text: str) -> str:
    """Write a note (a side effect)."""
    return "noted: " + text

if __name__ == "__main__":
    server.run("stdio")
'''


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


# ---- tools modules ------------------------------------------------------------------------
def test_a_module_yields_its_feldspar_and_langchain_tools_in_order(tmp_path):
    tools = load_tools_module(write(tmp_path / "my_tools.py", MODULE))
    assert [(t.name, t.side_effects, t.source) for t in tools] == [
        ("greet", False, "module:my_tools.py"), ("reverse", False, "module:my_tools.py"),
        ("delete_everything", True, "module:my_tools.py")]
    assert run_tool(tools[0], {"name": "Ada"}).result == "hello Ada"
    assert run_tool(tools[1], {"text": "abc"}).result == "cba"


def test_a_tools_list_picks_exactly_those_tools(tmp_path):
    module = write(tmp_path / "listed.py", MODULE + "\nTOOLS = [reverse]\n")
    assert [t.name for t in load_tools_module(module)] == ["reverse"]


@pytest.mark.parametrize("source, words", [
    (None, "tools module not found"),
    ("x = 1\n", "defines no tools"),
    ("def broken(:\n", "syntax error on line 1"),
    ("raise RuntimeError('no network here')\n", "RuntimeError: no network here"),
    ("import sys\nsys.exit(2)\n", "SystemExit: 2"),
    ("import no_such_module_anywhere\n", "ModuleNotFoundError"),
    ("TOOLS = 'reverse'\n", "TOOLS in .* must be a list of tools"),
    ("TOOLS = [42]\n", "TOOLS in .* holds a int, which is not a tool"),
    (MODULE + "\nagain = FeldsparTool('greet', 'Greet twice.', Greeting, lambda name: name)\n",
     "two tools are named 'greet'"),
    ("from feldspar.agents.tools import FeldsparTool\nfrom pydantic import BaseModel\n"
     "class A(BaseModel):\n    x: int\nbad = FeldsparTool('has space', 'd', A, print)\n",
     "tool name 'has space' is not valid"),
])
def test_a_bad_module_is_one_clear_error(tmp_path, source, words):
    path = tmp_path / "user_tools.py"
    if source is not None:
        write(path, source)
    with pytest.raises(ToolsModuleError, match=words):
        load_tools_module(path)


def test_settings_name_a_tools_module_and_the_argument_overrides_it(tmp_path):
    first = write(tmp_path / "first.py", MODULE)
    second = write(tmp_path / "second.py", MODULE + "\nTOOLS = [greet]\n")
    settings = load_settings(tools_module=first)
    assert [t.name for t in build_tools(settings)][2:] == ["greet", "reverse", "delete_everything"]
    assert [t.name for t in build_tools(settings, tools_module=second)][2:] == ["greet"]


def test_a_module_tool_named_like_a_builtin_is_refused(tmp_path):
    clash = write(tmp_path / "clash.py", "from langchain_core.tools import tool\n@tool\n"
                                          "def calculator(x: str) -> str:\n    '''Mine.'''\n    return x\n")
    with pytest.raises(AgentError, match="two tools are named 'calculator' \\(from builtin and module:clash.py\\)"):
        build_tools(load_settings(), tools_module=clash)


# ---- MCP ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mcp_server(tmp_path_factory) -> dict:
    script = write(tmp_path_factory.mktemp("mcp") / "server.py", MCP_SERVER)
    return {"command": sys.executable, "args": [str(script)]}


@pytest.fixture(scope="module")
def mcp_tools(mcp_server):
    return {tool.name: tool for tool in load_mcp_tools({"local": mcp_server})}


def test_mcp_tools_are_listed_with_schema_and_side_effects(mcp_tools):
    assert sorted(mcp_tools) == ["add", "fail", "notes_write"]
    add = mcp_tools["add"]
    assert (add.description, add.source, add.side_effects) == ("Add two integers.", "mcp:local", False)
    assert add.openai_schema()["function"]["parameters"]["required"] == ["a", "b"]
    assert mcp_tools["notes_write"].side_effects and mcp_tools["fail"].side_effects


def test_mcp_round_trip_over_stdio(mcp_tools):
    assert run_tool(mcp_tools["add"], {"a": 2, "b": 40}).result == "42"
    assert run_tool(mcp_tools["notes_write"], {"text": "hi"}).result == "noted: hi"


def test_mcp_tool_errors_and_bad_arguments_come_back_as_error_text(mcp_tools):
    assert "boom" in run_tool(mcp_tools["fail"], {"message": "boom"}).error
    assert run_tool(mcp_tools["add"], {"a": 1}).error == "invalid arguments for add: 'b' is a required property"


def test_settings_carry_mcp_servers_to_build_tools(mcp_server, tmp_path, monkeypatch):
    config = tmp_path / "config.toml"
    config.write_text(f'[mcp_servers.local]\ncommand = {str(mcp_server["command"])!r}\n'
                      f'args = [{mcp_server["args"][0]!r}]\nside_effects = false\ntool_prefix = "calc"\n')
    monkeypatch.setenv("FELDSPAR_CONFIG", str(config))
    tools = {t.name: t for t in build_tools(load_settings())}
    assert sorted(tools) == ["calc_add", "calc_fail", "calc_notes_write", "calculator", "current_time"]
    assert not tools["calc_notes_write"].side_effects
    assert run_tool(tools["calc_add"], {"a": 1, "b": 1}).result == "2"


def test_an_mcp_server_that_cannot_start_is_one_clear_error(tmp_path):
    missing = tmp_path / "no-such-server"
    with pytest.raises(McpError, match="MCP server 'ghost' could not be started or listed"):
        load_mcp_tools({"ghost": {"command": str(missing)}})


def test_an_mcp_server_that_never_answers_times_out_with_a_clear_error():
    silent = {"command": sys.executable, "args": ["-c", "import time; time.sleep(600)"]}
    with pytest.raises(McpError, match="MCP server 'mute' did not list its tools within 0.5 s"):
        load_mcp_tools({"mute": silent}, timeout_s=0.5)


@pytest.mark.parametrize("entry, words", [
    ({"transport": "stdio"}, "a stdio MCP server needs a command"),
    ({"transport": "sse"}, "a sse MCP server needs a url"),
    ({"transport": "pigeon", "command": "x"}, "transport"),
    ({"command": "x", "colour": "red"}, "colour"),
])
def test_bad_mcp_settings_are_refused(entry, words):
    with pytest.raises(SettingsError, match=words):
        load_settings(mcp_servers={"bad": entry})


def test_mcp_tool_names_are_made_valid():
    assert mcp_tool_name("notes.write") == "notes_write"
    assert mcp_tool_name("2fast") == "_2fast"
    assert mcp_tool_name("search", "web") == "web_search"
