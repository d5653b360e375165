"""The remote backend against Feldspar's own server: `feldspar serve` on a loopback port.

The stand-in server of test_remote_agent.py checks the client against scripted HTTP
answers; here the other side is the real thing (app/serve*.py built by compose's
``build_server``): the agent graph runs over HTTP with the same trace as in-process, both
for scripted Granite replies with a tool call and for the tiny random checkpoint, whose
greedy answer must be the same text whether the engine runs in this process or behind
the server. Follow-up turns report the server's reused tokens as cached tokens.
"""

from __future__ import annotations

import pytest
from tests.agents.agent_helpers import scripted_model
from tests.agents.test_remote_agent import CALL_TURNS, build, shape

from feldspar.agents.chat_model import ChatGranite
from feldspar.agents.remote_backend import RemoteChatBackend
from feldspar.agents.scripted import ScriptedBackend
from feldspar.agents.threads import ThreadStore


@pytest.fixture(scope="module")
def served(tiny_checkpoint, tmp_path_factory):
    from feldspar.serve.server import build_server
    from feldspar.serve.models import ServedModel
    from feldspar.serve.run import serve_in_thread
    from feldspar.settings import load_settings

    settings = load_settings(home=tmp_path_factory.mktemp("serve-home"), model=str(tiny_checkpoint), device="cpu",
                             dtype="float32", max_new_tokens=8)
    scripted = ScriptedBackend(list(CALL_TURNS), name="scripted-calc")
    app = build_server(settings, agent=False, extra_models=[ServedModel("scripted-calc", scripted)], queue=4)
    with serve_in_thread(app) as url:
        yield {"url": url + "/v1", "engine": app.state.feldspar.models[tiny_checkpoint.name].engine,
               "tiny": tiny_checkpoint.name}


def remote(served, model: str, **options) -> ChatGranite:
    return ChatGranite(backend=RemoteChatBackend(served["url"], model).connect(), **options)


def test_a_tool_turn_through_feldspar_serve_has_the_same_trace_as_in_process(served):
    local = build(scripted_model(list(CALL_TURNS)), None, policy="none").ask("What is 17 times 3?")
    over_http = build(remote(served, "scripted-calc"), None, policy="none").ask("What is 17 times 3?")
    assert [s["node"] for s in over_http["trace"]] == ["model", "tool", "model", "finalize"]
    assert shape(over_http) == shape(local)
    assert over_http["text"] == local["text"] == "It is 51."


def test_the_tiny_checkpoint_answers_the_same_text_in_process_and_over_http(served):
    from feldspar.model.chat_backend import LocalChatBackend

    in_process = ChatGranite(backend=LocalChatBackend(served["engine"]), max_new_tokens=8)
    over_http = remote(served, served["tiny"], max_new_tokens=8)
    assert over_http.backend.random_weights is True  # the server's model list says so
    assert over_http.backend.context_window == served["engine"].context_window
    local = build(in_process, None, policy="none").ask("Which mineral is the hardest?")
    answered = build(over_http, None, policy="none").ask("Which mineral is the hardest?")
    assert answered["text"] == local["text"] and answered["text"].strip()
    assert shape(answered) == shape(local)


def test_a_follow_up_through_feldspar_serve_reuses_the_servers_saved_state(served, tmp_path):
    model = remote(served, served["tiny"], max_new_tokens=4)
    agent = build(model, None, threads=ThreadStore(tmp_path / "threads.sqlite"), policy="none")
    first = agent.ask("Name a soft mineral.")
    second = agent.ask("And a hard one?", first["thread_id"])
    assert second["usage"]["reused_tokens"] > 0.5 * first["usage"]["prompt_tokens"]
