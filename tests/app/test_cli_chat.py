"""`feldspar chat` never loses a conversation: overflow keeps it, /reset asks, /help, unknown
commands, /save FILE and --resume FILE, through the real entry point on a tiny checkpoint."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

from tests.app.cli_runner import run_cli


@pytest.fixture
def chat(capsys, monkeypatch, tiny_checkpoint):
    def run(stdin: str, *args: str):
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        return run_cli(["chat", "-m", str(tiny_checkpoint), "-n", "3", *args], capsys, monkeypatch)

    return run


def _saved(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["messages"]


def test_a_turn_over_the_context_window_is_reported_and_the_conversation_kept(chat, tmp_path, tiny_checkpoint):
    from feldspar.model.presets import TINY_CONTEXT

    too_long = " ".join(["word"] * (TINY_CONTEXT + 100))
    saved = tmp_path / "kept.json"
    result = chat(f"Hello\n{too_long}\nStill there?\n/save {saved}\n/exit\n")
    assert result.code == 0, result.err
    assert "context window" in result.err and "the conversation (2 message(s)) is kept" in result.err
    assert "Traceback" not in result.err and "indexing errors" not in result.err
    assert result.out.count("granite>") == 2  # the first and the third line were answered
    messages = _saved(saved)
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
    assert [m["content"] for m in messages if m["role"] == "user"] == ["Hello", "Still there?"]


def test_help_reset_confirmation_and_unknown_commands(chat, tmp_path):
    before, after = tmp_path / "before.json", tmp_path / "after.json"
    script = ["/help", "/bogus", "Hello", "/reset", "n", f"/save {before}", "/reset", "y", f"/save {after}",
              "//slash is a message", "/exit"]
    result = chat("\n".join(script) + "\n", "--system", "Be brief.")
    assert result.code == 0, result.err
    for command in ("/help", "/reset", "/save FILE", "/exit"):
        assert command in result.out
    assert "error: unknown command /bogus; /help lists the commands" in result.err
    assert result.out.count("granite>") == 2  # "Hello" and "/slash is a message"; /bogus was not sent
    assert "clear 2 message(s) of this conversation? [y/N]" in result.out
    assert "kept the conversation" in result.out and "conversation cleared (the system prompt stays)" in result.out
    assert [m["role"] for m in _saved(before)] == ["system", "user", "assistant"]
    assert _saved(after) == [{"role": "system", "content": "Be brief."}]


def test_a_saved_conversation_resumes(chat, tmp_path):
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    assert chat(f"Hello\n/save {first}\n/exit\n", "--system", "Be brief.").code == 0
    resumed = chat(f"And again?\n/save {second}\n/exit\n", "--resume", str(first), "--verbose")
    assert resumed.code == 0, resumed.err
    assert "resumed 2 message(s)" in resumed.err
    assert _saved(second)[:3] == _saved(first)
    assert [m["content"] for m in _saved(second) if m["role"] == "user"] == ["Hello", "And again?"]
    fresh = chat("And again?\n/exit\n", "--system", "Be brief.", "--verbose")
    assert _prompt_tokens(resumed.err) > _prompt_tokens(fresh.err)  # the model saw the resumed history


def _prompt_tokens(stats: str) -> int:
    line = next(line for line in stats.splitlines() if line.startswith("RANDOM WEIGHTS") and "prompt" in line)
    return int(line.split("prompt ")[1].split()[0])


def test_save_never_overwrites_another_file_and_resume_refuses_a_non_chat(chat, tmp_path, capsys, monkeypatch):
    precious = tmp_path / "notes.txt"
    precious.write_text("my notes", encoding="utf-8")
    result = chat(f"Hello\n/save {precious}\n/save\n/exit\n")
    assert result.code == 0 and "is not a saved chat" in result.err and "/save needs a file name" in result.err
    assert precious.read_text(encoding="utf-8") == "my notes"
    refused = chat("", "--resume", str(precious))
    assert refused.code == 1 and refused.err.startswith("error: ") and "not valid JSON" in refused.err
