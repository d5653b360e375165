"""Persistent threads: another process continues them, kill -9 mid-turn keeps the completed steps."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from tests.agents.agent_helpers import scripted_model, tool_call

from feldspar.agents.configuration import AgentConfig
from feldspar.agents.errors import UnknownThread
from feldspar.agents.nodes import AgentDeps
from feldspar.agents.runner import Agent
from feldspar.agents.threads import ThreadStore
from feldspar.errors import user_message

REPO = Path(__file__).resolve().parents[2]  # the child imports tests.agents.agent_helpers from here


def agent_on(path: Path, replies: list, **config) -> tuple[Agent, object]:
    model = scripted_model(replies)
    deps = AgentDeps(chat_model=model, config=AgentConfig(policy="none", **config), context_window=8192,
                     count_tokens=lambda m, t, d: len(model.prompt_token_ids(m, t, d)))
    return Agent(deps, ThreadStore(path), meta={"model": "scripted"}), model.backend


def test_a_thread_written_by_one_store_is_continued_by_the_next(tmp_path):
    path = tmp_path / "threads.sqlite"
    first, _ = agent_on(path, ["Quartz is 7."])
    thread = first.ask("How hard is quartz?")["thread_id"]
    first.threads.close()
    second, backend = agent_on(path, ["Mica is 2.5."])
    answer = second.ask("And mica?", thread)
    assert answer["text"] == "Mica is 2.5." and "How hard is quartz?" in backend.requests[0]["prompt"]
    rows = second.threads.list()
    assert [(r["thread_id"], r["title"], r["turns"], r["model"]) for r in rows] == [(thread, "How hard is quartz?", 2, "scripted")]
    exported = second.threads.export(thread)
    assert [m["role"] for m in exported["messages"]] == ["user", "assistant", "user", "assistant"]
    assert {s["node"] for s in exported["trace"]} == {"model", "finalize"} and exported["last_answer"]["turn"] == 2


def test_an_unknown_thread_is_one_clear_error(tmp_path):
    agent, _ = agent_on(tmp_path / "threads.sqlite", ["unused"])
    with pytest.raises(UnknownThread) as info:
        agent.ask("hello?", "no-such-thread")
    assert "no thread 'no-such-thread'" in user_message(info.value) and "feldspar threads list" in user_message(info.value)
    with pytest.raises(UnknownThread):
        agent.threads.export("no-such-thread")


def test_removing_a_thread_removes_its_checkpoints(tmp_path):
    agent, _ = agent_on(tmp_path / "threads.sqlite", ["Hi."])
    thread = agent.ask("Hello?")["thread_id"]
    agent.threads.remove(thread)
    assert agent.threads.list() == [] and not agent.threads.exists(thread)
    assert agent.threads.saver.get_tuple({"configurable": {"thread_id": thread}}) is None


CHILD = """
import sys, threading
from pathlib import Path
from pydantic import BaseModel
from tests.agents.agent_helpers import scripted_model, tool_call
from feldspar.agents.configuration import AgentConfig
from feldspar.agents.nodes import AgentDeps
from feldspar.agents.runner import Agent
from feldspar.agents.threads import ThreadStore
from feldspar.agents.tools import FeldsparTool, run_tool

class Args(BaseModel):
    seconds: int

def block(seconds):
    Path({marker!r}).write_text("in the tool")
    threading.Event().wait(seconds)
    return "done"

model = scripted_model([tool_call("block", seconds=600), "never reached"])
tool = FeldsparTool(name="block", description="Waits.", args_schema=Args, func=block, timeout_s=600)
deps = AgentDeps(chat_model=model, config=AgentConfig(policy="none"), tools=[tool],
                 run_tool=lambda t, a: run_tool(t, a).to_dict(), context_window=8192)
agent = Agent(deps, ThreadStore(Path({store!r})))
agent.ask("Please wait for me.", None)
"""


def test_kill_9_mid_turn_leaves_the_thread_at_its_last_completed_step(tmp_path):
    store, marker = tmp_path / "threads.sqlite", tmp_path / "in-tool"
    script = CHILD.format(marker=str(marker), store=str(store))
    child = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():  # poll for the named point: the tool is running
            assert child.poll() is None, child.stderr.read()
            assert time.monotonic() < deadline, "the child never reached the tool"
            time.sleep(0.05)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL
    threads = ThreadStore(store)
    [row] = threads.list()
    messages = threads.values(row["thread_id"])["messages"]
    assert isinstance(messages[0], HumanMessage) and isinstance(messages[-1], AIMessage)
    assert messages[-1].tool_calls[0]["name"] == "block" and not any(isinstance(m, ToolMessage) for m in messages)
    threads.close()
    agent, backend = agent_on(store, ["Sorry for the wait."])
    answer = agent.ask("Are you there?", row["thread_id"])
    assert answer["text"] == "Sorry for the wait." and "Please wait for me." in backend.requests[0]["prompt"]
