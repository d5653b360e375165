"""The agent graph and the CLI over HTTP: a stand-in remote server gives the same trace as in-process.

The same scripted Granite replies run once through ``ScriptedBackend`` in this process and
once through ``RemoteChatBackend`` against the stand-in server (tests/agents/remote_server.py);
the traces must have the same steps with the same tool results and answers. Then `feldspar
ask`, `chat` and `generate` run through the real entry point with ``--model openai:…#…``.
"""

from __future__ import annotations

import io
import json
import sys

import pytest
from tests.agents.agent_helpers import scripted_model, tool_call
from tests.agents.remote_server import StandIn, free_port

from feldspar.agents.builtin_tools import calculator_tool
from feldspar.agents.chat_model import ChatGranite
from feldspar.agents.configuration import AgentConfig
from feldspar.agents.nodes import AgentDeps
from feldspar.agents.remote_backend import RemoteChatBackend
from feldspar.agents.runner import Agent
from feldspar.agents.threads import ThreadStore
from feldspar.agents.tools import run_tool

from tests.app.cli_runner import assert_one_error_line, run_cli

_TIMING = {"duration_s", "ttft_s", "prefill_s", "decode_s", "elapsed_s", "started", "ended", "at", "time_s"}


@pytest.fixture(scope="module")
def server():
    with StandIn() as running:
        yield running


def build(model, search, threads=None, **config) -> Agent:
    deps = AgentDeps(chat_model=model, config=AgentConfig(**config), search=search, tools=[calculator_tool()],
                     run_tool=lambda tool, args: run_tool(tool, args).to_dict(), pack_documents=None,
                     context_window=model.backend.context_window,
                     count_tokens=lambda m, t, d: len(model.prompt_token_ids(m, t, d)))
    return Agent(deps, threads)


def shape(answer: dict) -> list[tuple]:
    """Each step's node, its fields and the values that do not depend on the backend (no timings or counts)."""
    steps = []
    for step in answer["trace"]:
        keys = tuple(sorted(k for k in step if k not in _TIMING))
        calls = [(c.get("name"), c.get("args", c.get("arguments"))) for c in step.get("tool_calls") or []]
        steps.append((step["node"], keys, step.get("name"), step.get("args"), step.get("result"), step.get("query"),
                      calls, step.get("finish_reason"), step.get("repairs"), step.get("stop_reason")))
    return steps


def run_both(server, replies, remote_replies, question, search=None, **config):
    local = build(scripted_model(replies), search, **config).ask(question)
    server.script(*remote_replies)
    remote_model = ChatGranite(backend=RemoteChatBackend(server.base_url, "granite-test").connect())
    remote = build(remote_model, search, **config).ask(question)
    return local, remote


CALL_TURNS = [tool_call("calculator", expression="17 * 3"), "It is 51."]


@pytest.mark.parametrize("remote_replies", [
    CALL_TURNS,  # the server leaves the call in the content
    [{"content": "", "tool_calls": [{"name": "calculator", "arguments": {"expression": "17 * 3"}}]}, "It is 51."],
], ids=["call-in-content", "server-side-tool-calls"])
def test_a_tool_turn_over_http_has_the_same_trace_as_in_process(server, remote_replies):
    local, remote = run_both(server, CALL_TURNS, remote_replies, "What is 17 times 3?", policy="none")
    assert [s["node"] for s in remote["trace"]] == ["model", "tool", "model", "finalize"]
    assert shape(remote) == shape(local)
    assert remote["text"] == local["text"] == "It is 51." and remote["stop_reason"] == local["stop_reason"]
    assert remote["trace"][1]["result"] == "51"
    tool_turn = server.requests[1]["messages"][-1]
    assert tool_turn["role"] == "tool" and tool_turn["content"] == "51"
    assert server.requests[1]["messages"][-2]["tool_calls"][0]["function"]["name"] == "calculator"


def test_retrieval_grounds_the_remote_prompt_and_cites(server, search):
    replies = ["Hold the recessed button for ten seconds [1]."]
    local, remote = run_both(server, replies, replies, "How do I reset the router?", search=search)
    assert [s["node"] for s in remote["trace"]] == ["retrieve", "model", "finalize"] and shape(remote) == shape(local)
    assert remote["sources"] == local["sources"] and remote["sources"][0]["doc_id"] == 1
    request = server.requests[0]
    assert request["tools"][0]["function"]["name"] == "search_documents"
    assert "recessed button" in request["messages"][-1]["content"]


def test_a_follow_up_turn_reports_the_servers_cached_tokens(server, tmp_path):
    server.script("Two years.", "From the purchase date.")
    model = ChatGranite(backend=RemoteChatBackend(server.base_url, "granite-test").connect())
    agent = build(model, None, threads=ThreadStore(tmp_path / "threads.sqlite"), policy="none")
    first = agent.ask("How long is the warranty?")
    second = agent.ask("From when?", first["thread_id"])
    step = [s for s in second["trace"] if s["node"] == "model"][0]
    assert step["reused_tokens"] > 0 and step["computed_tokens"] == step["prompt_tokens"] - step["reused_tokens"]
    assert [r["thread_id"] for r in agent.threads.list()] == [first["thread_id"]]


# ---- the CLI with --model openai:<base-url>#<model> ---------------------------------------------
def test_ask_cli_runs_the_agent_on_the_remote_server(server, tmp_path, capsys, monkeypatch):
    server.script({"content": "", "tool_calls": [{"name": "calculator", "arguments": {"expression": "17 * 3"}}]},
                  "It is 51.")
    result = run_cli(["ask", "What is 17 times 3?", "--policy", "none", "--model", server.spec(), "--home",
                      str(tmp_path), "--json"], capsys, monkeypatch)
    assert result.code == 0, result.err
    out = json.loads(result.out)
    answer = out["answers"][0]
    assert out["model"] == "granite-test" and out["random_weights"] is False and answer["text"] == "It is 51."
    assert [s["node"] for s in answer["trace"]] == ["model", "tool", "model", "finalize"]
    listed = json.loads(run_cli(["threads", "list", "--json", "--home", str(tmp_path)], capsys, monkeypatch).out)
    assert [row["model"] for row in listed] == ["granite-test"]


def test_the_remote_model_comes_from_settings_too(server, tmp_path, capsys, monkeypatch):
    server.script("Hello from the server.")
    monkeypatch.setenv("FELDSPAR_REMOTE_URL", server.base_url)  # no model name: the server's only one
    result = run_cli(["ask", "Hi", "--policy", "none", "--home", str(tmp_path)], capsys, monkeypatch)
    assert result.code == 0, result.err
    assert "Hello from the server." in result.out


def test_chat_cli_streams_remote_turns_and_keeps_the_conversation(server, tmp_path, capsys, monkeypatch):
    failure = {"status": 500, "message": "GPU fell off the bus"}
    server.script("Hello!", failure, failure, "Still here.")  # the openai client retries a 5xx once
    saved = tmp_path / "chat.json"
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"Hi\nBoom?\nAgain\n/save {saved}\n/exit\n"))
    result = run_cli(["chat", "--model", server.spec(), "--home", str(tmp_path), "-v"], capsys, monkeypatch)
    assert result.code == 0, result.err
    assert "Hello!" in result.out and "Still here." in result.out
    err = " ".join(result.err.split())
    assert "error: the Granite server" in err and "answered 500: GPU fell off the bus" in err
    assert "Traceback" not in err and "reused" in err
    messages = json.loads(saved.read_text(encoding="utf-8"))["messages"]
    assert [m["content"] for m in messages] == ["Hi", "Hello!", "Again", "Still here."]
    assert [m["content"] for m in server.requests[3]["messages"]] == ["Hi", "Hello!", "Again"]


def test_generate_cli_json_over_the_remote_server(server, tmp_path, capsys, monkeypatch):
    server.script(tool_call("calculator", expression="2+2"))
    tools = tmp_path / "tools.json"
    tools.write_text(json.dumps([{"type": "function", "function": {"name": "calculator", "description": "math",
                                                                    "parameters": {"type": "object", "properties": {
                                                                        "expression": {"type": "string"}}}}}]))
    result = run_cli(["generate", "2+2?", "--tools", str(tools), "--model", server.spec(), "--home", str(tmp_path),
                      "--json"], capsys, monkeypatch)
    assert result.code == 0, result.err
    out = json.loads(result.out)
    assert out["model"] == "granite-test" and out["tool_calls"][0]["function"]["arguments"] == {"expression": "2+2"}


@pytest.mark.parametrize("spec, needle", [
    ("openai:http://127.0.0.1:{port}/v1#granite-nope", "it serves: granite-test"),
    ("openai:http://127.0.0.1:{free}/v1#granite-test", "cannot reach the Granite server"),
])
def test_cli_remote_errors_are_one_line(server, tmp_path, capsys, monkeypatch, spec, needle):
    spec = spec.format(port=server.port, free=free_port())
    result = run_cli(["ask", "Hi", "--policy", "none", "--model", spec, "--home", str(tmp_path)], capsys, monkeypatch)
    assert_one_error_line(result, 1, needle)


@pytest.mark.parametrize("command", [["pack", "create", "p", "{docs}"], ["prompt", "Hi"]])
def test_commands_that_need_a_local_model_refuse_a_remote_one(server, tmp_path, capsys, monkeypatch, command):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A\n\nSome text.", encoding="utf-8")
    args = [part.format(docs=tmp_path / "docs") for part in command]
    result = run_cli([*args, "--model", server.spec(), "--home", str(tmp_path)], capsys, monkeypatch)
    assert_one_error_line(result, 1, "is a remote server")


def test_compose_reads_the_remote_settings_and_counts_with_a_local_tokenizer(server, tmp_path, tiny_checkpoint):
    from feldspar.compose import build_remote_backend, remote_target
    from feldspar.model.loader import load_tokenizer, resolve
    from feldspar.model.prompts import encode
    from feldspar.settings import load_settings

    settings = load_settings(home=tmp_path, remote_url=server.base_url + "/", remote_context_window=2048,
                             remote_tokenizer=str(tiny_checkpoint))
    assert remote_target(settings) == (server.base_url, "")
    backend = build_remote_backend(settings)
    assert backend.name == "granite-test" and backend.context_window == 2048
    tokenizer = load_tokenizer(resolve(str(tiny_checkpoint)))
    text = "Feldspar is a rock-forming mineral."
    assert backend.count_tokens(text) == len(encode(tokenizer, text))
    assert remote_target(load_settings(home=tmp_path)) is None  # the default stays local


def test_a_server_that_lists_random_weights_gets_its_output_labelled(tmp_path, capsys, monkeypatch):
    with StandIn(listing_extra={"random_weights": True}, max_model_len=None) as noisy:
        noisy.script("zq xv noise")
        result = run_cli(["ask", "Hi", "--policy", "none", "--model", noisy.spec(), "--home", str(tmp_path)],
                         capsys, monkeypatch)
    assert result.code == 0, result.err
    assert "RANDOM WEIGHTS" in result.out and "zq xv noise" in result.out
