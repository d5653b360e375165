"""Ctrl-C stops a model command at once (between tokens), says in one line what was kept and
exits 130. Real processes and a real SIGINT: the model call runs in a LangGraph worker thread,
where Python's own KeyboardInterrupt never reaches it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LIMIT_S = 120  # without the stop flag the call runs on to its 100k-token limit: far longer than this


def _start(*args: str, home: Path) -> subprocess.Popen:
    env = {**os.environ, "FELDSPAR_HOME": str(home), "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    return subprocess.Popen([sys.executable, "-m", "feldspar", *args], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _interrupt_once_streaming(process: subprocess.Popen) -> tuple[str, str]:
    """Wait for the first streamed answer text (generation has started), then send SIGINT."""
    first = process.stdout.read(1)
    assert first, process.stderr.read()
    process.send_signal(signal.SIGINT)
    try:
        out, err = process.communicate(timeout=LIMIT_S)
    finally:
        process.kill()  # a no-op once it has exited; never leave a generating child behind
    return first + out, err


def _run(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "FELDSPAR_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "feldspar", *args], cwd=REPO, env=env, text=True,
                          capture_output=True, timeout=300)


def test_ctrl_c_stops_ask_between_tokens_and_keeps_the_last_completed_turn(tiny_checkpoint, tmp_path):
    model = ["-m", str(tiny_checkpoint), "--policy", "none"]
    first = _run("ask", "First?", *model, "-n", "2", "--json", home=tmp_path)
    assert first.returncode == 0, first.stderr
    thread = json.loads(first.stdout)["thread_id"]
    process = _start("ask", "Second?", "--thread", thread, *model, "-n", "100000", home=tmp_path)
    _, err = _interrupt_once_streaming(process)
    assert process.returncode == 130, err
    assert err.strip().splitlines() == ["interrupted; the thread keeps its last completed turn"], err
    exported = json.loads(_run("threads", "export", thread, home=tmp_path).stdout)
    answers = [m for m in exported["messages"] if m["role"] == "assistant"]
    assert len(answers) == 1 and exported["thread"]["turns"] == 1, exported


def test_ctrl_c_during_pack_create_says_nothing_was_saved(tiny_checkpoint, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "long.md").write_text(" ".join(f"word{i % 997}" for i in range(60000)), encoding="utf-8")
    process = _start("pack", "create", "big", str(docs), "-m", str(tiny_checkpoint), home=tmp_path)
    started = process.stderr.readline()  # "prefilling 1 document(s) with …": the prefill is under way
    assert "prefilling" in started, started + process.stderr.read()
    process.send_signal(signal.SIGINT)
    try:
        _, err = process.communicate(timeout=LIMIT_S)
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert err.strip().splitlines()[-1] == "interrupted; no pack was saved", err
    assert json.loads(_run("pack", "list", "--json", home=tmp_path).stdout) == []
