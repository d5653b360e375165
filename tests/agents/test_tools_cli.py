"""`feldspar tools list|run`: output, --json, exit codes, side effects only with --yes.

Runs the real entry point in-process (tests/app/cli_runner.py) on the test's own data home.
"""

from __future__ import annotations

import json

import pytest


TOOLS_MODULE = '''
from pathlib import Path
from feldspar.agents.tools import feldspar_tool

@feldspar_tool(side_effects=True)
def touch(path: str) -> str:
    """Create an empty file."""
    Path(path).touch()
    return f"created {path}"

@feldspar_tool
def explode(reason: str) -> str:
    """Always fails."""
    raise RuntimeError(reason)
'''


@pytest.fixture
def module(tmp_path) -> str:
    path = tmp_path / "user_tools.py"
    path.write_text(TOOLS_MODULE)
    return str(path)


def test_list_shows_the_builtin_tools(cli):
    result = cli("tools", "list")
    assert result.code == 0
    for name in ("search_documents", "read_document", "calculator", "current_time"):
        assert name in result.out


def test_list_json_has_name_description_side_effects_and_source(cli, module):
    result = cli("tools", "list", "--json", "--tools-module", module)
    rows = {row["name"]: row for row in json.loads(result.out)}
    assert rows["touch"] == {"name": "touch", "description": "Create an empty file.", "side_effects": True,
                             "source": "module:user_tools.py", "timeout_s": 30.0}
    assert rows["calculator"]["source"] == "builtin" and rows["calculator"]["side_effects"] is False


def test_run_prints_the_result(cli):
    result = cli("tools", "run", "calculator", '{"expression": "6 * 7"}')
    assert (result.code, result.out) == (0, "42\n")


def test_run_json_prints_the_result_value(cli):
    result = cli("tools", "run", "calculator", '{"expression": "2 ** 0.5 * 2 ** 0.5"}', "--json")
    assert result.code == 0
    assert json.loads(result.out) == {"result": pytest.approx(2.0)}


def test_a_failing_tool_exits_1_with_the_error(cli, module):
    as_json = cli("tools", "run", "explode", '{"reason": "no fuel"}', "--json", "--tools-module", module)
    assert as_json.code == 1
    assert json.loads(as_json.out) == {"error": "RuntimeError: no fuel"}
    plain = cli("tools", "run", "calculator", '{"expression": "__import__(\'os\')"}')
    assert plain.code == 1 and plain.out == ""
    assert plain.err.startswith("error: only these functions can be called") and plain.err.count("\n") == 1


def test_bad_arguments_exit_1_with_the_validation_message(cli):
    result = cli("tools", "run", "calculator", '{"expr": "1"}', "--json")
    assert result.code == 1
    assert json.loads(result.out) == {"error": "invalid arguments for calculator: unknown argument(s) 'expr'; "
                                               "expected: expression"}


@pytest.mark.parametrize("args, words", [
    (["nope", "{}"], "error: unknown tool 'nope'; available tools: search_documents, read_document, calculator"),
    (["calculator", "{expression: 1}"], "error: the arguments are not valid JSON"),
    (["calculator", "[1, 2]"], "error: the arguments must be a JSON object, got list"),
])
def test_usage_errors_exit_2_with_one_line(cli, args, words):
    result = cli("tools", "run", *args)
    assert result.code == 2
    assert result.err.startswith(words) and result.err.count("\n") == 1


def test_a_side_effecting_tool_needs_yes(cli, module, tmp_path):
    target = tmp_path / "created.txt"
    arguments = json.dumps({"path": str(target)})
    refused = cli("tools", "run", "touch", arguments, "--json", "--tools-module", module)
    assert refused.code == 1
    assert json.loads(refused.out) == {"error": "touch has side effects; pass --yes to run it"}
    assert not target.exists()
    allowed = cli("tools", "run", "touch", arguments, "--yes", "--tools-module", module)
    assert allowed.code == 0 and target.exists()


def test_a_missing_tools_module_is_one_clear_error(cli, tmp_path):
    result = cli("tools", "list", "--tools-module", str(tmp_path / "gone.py"))
    assert result.code == 1
    assert result.err == f"error: tools module not found: {tmp_path / 'gone.py'}\n"


def test_search_and_read_use_the_chosen_collection(cli, feldspar_home, tmp_path):
    from feldspar.compose import build_retrieval
    from feldspar.settings import load_settings

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "notes.md").write_text("# Notes\n\nOrthoclase is a potassium feldspar.\n")
    (tmp_path / "private.md").write_text("# Private\n\nnot for the model\n")
    service = build_retrieval(load_settings(home=feldspar_home))
    service.ingest([corpus], collection="minerals")
    service.close()
    found = cli("tools", "run", "search_documents", '{"query": "potassium feldspar"}', "--json", "-c", "minerals")
    passage = json.loads(found.out)["result"]["passages"][0]
    assert (passage["path"], passage["text"]) == ("notes.md", "# Notes\n\nOrthoclase is a potassium feldspar.")
    span = cli("tools", "run", "read_document", json.dumps({"path": "notes.md", "start": passage["start"],
                                                            "end": passage["end"]}), "--json", "-c", "minerals")
    assert json.loads(span.out)["result"]["text"] == passage["text"]
    escape = cli("tools", "run", "read_document", '{"path": "../private.md"}', "--json", "-c", "minerals")
    assert escape.code == 1
    assert json.loads(escape.out) == {"error": "'../private.md' is not a file of collection 'minerals'"}
    missing = cli("tools", "run", "search_documents", '{"query": "x"}', "--json", "-c", "absent")
    assert missing.code == 1 and "absent" in json.loads(missing.out)["error"]
