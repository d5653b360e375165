"""Bad values are refused as one line with the same exit codes everywhere (2 usage, 1 runtime; a bad
choice is Typer's own error, listing the choices), --help is Typer's plain layout within 80 columns,
and an unwritable data home fails in one line before any work."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.app.cli_runner import assert_one_error_line


def _json_file(folder: Path, name: str, data) -> str:
    path = folder / name
    path.write_text(json.dumps(data), encoding="utf-8")
    return str(path)


USAGE_CASES = [
    (["generate", "hi", "-n", "0"], "--max-new-tokens"),
    (["generate", "hi", "-t", "-1"], "--temperature"),
    (["generate", "hi", "--top-p", "2"], "--top-p"),
    (["generate", "hi", "--top-p", "0"], "--top-p"),
    (["generate", "hi", "--device", "tpu"], "'tpu' is not one of 'auto', 'cpu', 'cuda'"),
    (["generate", "hi", "--dtype", "int8"], "--dtype"),
    (["generate", "hi", "--file", "{prompt}"], "not both"),
    (["generate"], "give the prompt as an argument or with --file"),
    (["generate", "--fim-prefix", "a", "--fim-prefix-file", "{prompt}"], "not both"),
    (["prompt", "hi", "--messages", "{messages}"], "--messages holds the whole conversation"),
    (["chat", "-n", "0"], "--max-new-tokens"),
    (["ask", "q", "--top-p", "1.5"], "--top-p"),
    (["search", ""], "the search query is empty"),
    (["search", "   "], "the search query is empty"),
    (["search", "x", "-k", "0"], "-k"),
    (["sources", "--status", "bogus"], "'bogus' is not one of 'indexed', 'skipped', 'failed', 'pending'"),
    (["models", "random", "h-tiny", "{out}", "--tiny", "--dtype", "float16"], "--dtype"),
    (["generate", "hi", "--no-such-flag"], "no such option"),
    (["ingest"], "missing argument"),
]


@pytest.mark.parametrize("args, needle", USAGE_CASES, ids=[" ".join(a) for a, _ in USAGE_CASES])
def test_usage_errors_exit_2_in_one_line(cli, tiny_checkpoint, tmp_path, args, needle):
    subs = {"{prompt}": _json_file(tmp_path, "prompt.txt", "a prompt"),
            "{messages}": _json_file(tmp_path, "m.json", [{"role": "user", "content": "x"}]),
            "{out}": str(tmp_path / "out")}
    model = ["-m", str(tiny_checkpoint)] if args[0] in ("generate", "prompt", "chat", "ask") else []
    line = assert_one_error_line(cli(*[subs.get(a, a) for a in args], *model), 2, needle)
    assert "Traceback" not in line


RUNTIME_CASES = [
    ("tools", [{}], "item 1: 'name' is missing"),
    ("tools", [{"type": "function", "function": {"description": "no name"}}], "item 1 (function): 'name' is missing"),
    ("tools", [{"type": "function", "function": "oops"}], "'oops' is not of type 'object'"),
    ("tools", [], "holds no tools"),
    ("documents", [{"foo": 1}], "item 1: 'text' is missing"),
    ("documents", [{"text": "fine"}, {"title": "t", "text": ""}], "item 2 (text): must not be empty"),
    ("messages", [{"role": "user"}], "item 1: 'content' is missing"),
    ("messages", [{"role": "robot", "content": "x"}], "'robot' is not one of"),
]


@pytest.mark.parametrize("what, items, needle", RUNTIME_CASES, ids=[f"{w}-{i}" for i, (w, _, _) in enumerate(RUNTIME_CASES)])
def test_bad_input_files_are_refused_before_the_model_runs(cli, tiny_checkpoint, tmp_path, what, items, needle):
    path = _json_file(tmp_path, f"{what}.json", items)
    args = ["prompt", "--messages", path] if what == "messages" else ["generate", "hi", f"--{what}", path]
    assert_one_error_line(cli(*args, "-m", str(tiny_checkpoint)), 1, needle)


def test_valid_tools_documents_and_messages_are_accepted(cli, tiny_checkpoint, tmp_path):
    tools = _json_file(tmp_path, "t.json", [{"type": "function", "function": {"name": "f", "parameters": {}}},
                                            {"name": "bare", "description": "a bare function"}])
    docs = _json_file(tmp_path, "d.json", [{"doc_id": 1, "title": "t", "text": "Feldspar is a mineral."}])
    result = cli("prompt", "q", "--tools", tools, "--documents", docs, "-m", str(tiny_checkpoint))
    assert result.code == 0, result.err
    calls = _json_file(tmp_path, "m.json", [{"role": "user", "content": "hi"},
                                            {"role": "assistant", "tool_calls": [{"function": {"name": "f"}}]}])
    assert cli("prompt", "--messages", calls, "-m", str(tiny_checkpoint)).code == 0


def test_a_missing_collection_is_the_same_runtime_error_for_search_and_sources(cli):
    for args in (["search", "x", "--collection", "nosuch"], ["sources", "--collection", "nosuch"],
                 ["sources", "--collection", "nosuch", "--status", "failed", "--json"]):
        assert_one_error_line(cli(*args), 1, "no collection 'nosuch'")


CHOICE_CASES = [  # (command line up to the flag, the flag, the choices Typer must list)
    (["ask", "q"], "--policy", ("always", "auto", "pack", "none")),
    (["ask", "q"], "--approve", ("ask", "always", "never")),
    (["batch", "{questions}"], "--approve", ("always", "never")),
    (["eval", "answers", "{questions}"], "--policy", ("always", "auto", "pack", "none")),
    (["summarize", "{questions}"], "--mode", ("auto", "map-reduce", "long-context")),
    (["generate", "hi"], "--quant", ("none", "int8", "int4", "auto")),
    (["generate", "hi"], "--dtype", ("auto", "float32", "bfloat16", "float16")),
    (["models", "random", "h-350m", "{out}"], "--dtype", ("float32", "bfloat16")),
    (["sources"], "--status", ("indexed", "skipped", "failed", "pending")),
]


@pytest.mark.parametrize("args, flag, choices", CHOICE_CASES, ids=[f"{a[0]} {f}" for a, f, _ in CHOICE_CASES])
def test_an_invalid_choice_is_typers_one_line_error_listing_every_choice(cli, tmp_path, args, flag, choices):
    questions = tmp_path / "questions.jsonl"
    questions.write_text('{"id": "1", "question": "q"}\n', encoding="utf-8")
    args = [a.replace("{questions}", str(questions)).replace("{out}", str(tmp_path / "out")) for a in args]
    line = assert_one_error_line(cli(*args, flag, "nonsense"), 2, f"invalid value for '{flag}'")
    listed = line.split("is not one of ", 1)[1]
    assert listed.startswith(", ".join(f"'{c}'" for c in choices)), line
    assert not (tmp_path / "out").exists()  # refused before any work


# ---- --help -------------------------------------------------------------------------------
def _all_command_paths(command, prefix=()) -> list[tuple[str, ...]]:
    paths = [prefix]
    for name, sub in getattr(command, "commands", {}).items():
        paths += _all_command_paths(sub, (*prefix, name))
    return paths


def test_help_is_typers_plain_layout_within_80_columns_for_every_command(cli, monkeypatch):
    import typer

    from feldspar.cli import _register_commands
    from feldspar.cli.root import app

    monkeypatch.setenv("COLUMNS", "80")
    _register_commands()
    paths = _all_command_paths(typer.main.get_command(app))
    assert ("pack", "create") in paths and len(paths) > 15
    for path in paths:
        result = cli(*path, "--help")
        assert result.code == 0, (path, result.err)
        assert result.out.startswith(f"Usage: feldspar {' '.join(path)}".rstrip()), (path, result.out)
        assert max(map(len, result.out.splitlines())) <= 80, (path, result.out)
        assert "<bool>" not in result.out and "\u2502" not in result.out, (path, result.out)  # flags: no type; no boxes
    ask = cli("ask", "--help").out
    assert "--policy <always|auto|pack|none>" in ask and "--trace  " in ask


# ---- an unwritable data home ------------------------------------------------------------
def _bind_read_only(folder: Path) -> bool:
    """Make ``folder`` a read-only bind mount of itself (root only); False where not permitted."""
    if os.geteuid() != 0:
        return False
    bound = subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True)
    if bound.returncode != 0:
        return False
    if subprocess.run(["mount", "-o", "remount,ro,bind", str(folder)], capture_output=True).returncode != 0:
        subprocess.run(["umount", str(folder)], capture_output=True)
        return False
    return True


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder no file can be written in: a read-only mount as root (chmod does not stop root),
    else permission bits; where neither works, a path under a regular file."""
    folder = tmp_path / "ro"
    folder.mkdir()
    (folder / "home").mkdir()
    if _bind_read_only(folder):
        yield folder
        subprocess.run(["umount", str(folder)], check=True)
    elif os.geteuid() != 0:
        folder.chmod(0o555)
        (folder / "home").chmod(0o555)
        yield folder
        (folder / "home").chmod(0o755)
        folder.chmod(0o755)
    else:
        blocker = tmp_path / "blocker"
        blocker.write_text("a file")
        yield blocker


HOME_COMMANDS = [
    ["ingest", "{doc}"],
    ["sources"],
    ["collections"],
    ["search", "anything"],
    ["pack", "create", "p", "{doc}", "-m", "{dir}"],  # a folder without a checkpoint: the home is checked before the model loads
]


@pytest.mark.parametrize("args", HOME_COMMANDS, ids=[a[0] if a[0] != "pack" else "pack create" for a in HOME_COMMANDS])
@pytest.mark.parametrize("home_kind", ["read-only", "read-only, missing", "a file", "under a file"])
def test_an_unwritable_home_is_one_line_before_any_work(cli, tmp_path, read_only_folder, monkeypatch, args,
                                                         home_kind):
    doc = tmp_path / "notes.md"
    doc.write_text("# Notes\n\nSome text.\n", encoding="utf-8")
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory")
    home = {"read-only": read_only_folder / "home", "read-only, missing": read_only_folder / "new-home",
            "a file": a_file, "under a file": a_file / "home"}[home_kind]
    monkeypatch.setenv("FELDSPAR_HOME", str(home))
    shown = {"{doc}": str(doc), "{dir}": str(tmp_path)}
    line = assert_one_error_line(cli(*[shown.get(a, a) for a in args]), 1, str(home))
    assert "FELDSPAR_HOME" in line and "--home" in line


def test_the_write_check_really_writes(tmp_path, read_only_folder):
    from feldspar.home import HomeNotWritable, require_writable

    assert require_writable(tmp_path / "fresh" / "home") == tmp_path / "fresh" / "home"
    assert not list((tmp_path / "fresh" / "home").iterdir())  # the probe file is gone
    with pytest.raises(HomeNotWritable, match="not writable|inside a file|is a file"):
        require_writable(read_only_folder / "home")


def test_an_unwritable_pack_folder_fails_before_the_model_loads(cli, tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    (home / "packs").write_text("a file where the pack folder should be")
    doc = tmp_path / "notes.md"
    doc.write_text("text", encoding="utf-8")
    monkeypatch.setenv("FELDSPAR_HOME", str(home))
    assert_one_error_line(cli("pack", "create", "p", str(doc), "-m", str(tmp_path)), 1, "pack folder")
