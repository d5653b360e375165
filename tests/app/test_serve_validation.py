"""`feldspar serve` validates requests like OpenAI (real HTTP): each malformed field a 400 naming
``param``, never a 200 or a 500; bad bytes and out-of-vocabulary ids too; nothing names a server path."""

from __future__ import annotations

import json

import httpx
import pytest

from feldspar.serve.validate import MAX_MESSAGES

TOOL = {"type": "function", "function": {"name": "lookup", "description": "d",
                                          "parameters": {"type": "object", "properties": {}}}}
HI = [{"role": "user", "content": "hi"}]
CALL = {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_checkpoint):
    from feldspar.agents.scripted import ScriptedBackend
    from feldspar.serve.server import build_server
    from feldspar.serve.models import ServedModel
    from feldspar.serve.run import serve_in_thread
    from feldspar.settings import load_settings

    settings = load_settings(home=tmp_path_factory.mktemp("validate-home"), model=str(tiny_checkpoint), device="cpu",
                             dtype="float32", max_new_tokens=2)
    scripted = ServedModel("small", ScriptedBackend(["ok"] * 500, name="small"), default_max_tokens=8)
    app = build_server(settings, agent=False, extra_models=[scripted])
    with serve_in_thread(app) as url:
        yield {"url": url, "tiny": tiny_checkpoint.name, "paths": [str(tiny_checkpoint.parent), str(settings.home)]}


def post(server, path, body) -> httpx.Response:
    return httpx.post(server["url"] + path, content=json.dumps(body), timeout=120,
                      headers={"Content-Type": "application/json"})


def refused(response: httpx.Response, param: str) -> dict:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param, error
    return error


CHAT_CASES = [
    ("a tool without function", {"tools": [{"type": "function"}]}, "tools.0.function"),
    ("a function without name", {"tools": [{"type": "function", "function": {"description": "x"}}]},
     "tools.0.function.name"),
    ("parameters not an object", {"tools": [{"type": "function", "function": {"name": "f", "parameters": "nope"}}]},
     "tools.0.function.parameters"),
    ("an unknown tool type", {"tools": [{"type": "retrieval", "function": {"name": "f"}}]}, "tools.0.type"),
    ("a tool_choice naming an unknown tool",
     {"tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "missing"}}}, "tool_choice"),
    ("a tool_choice of 'sometimes'", {"tools": [TOOL], "tool_choice": "sometimes"}, "tool_choice"),
    ("a tool message without tool_call_id",
     {"messages": [*HI, {"role": "assistant", "tool_calls": [CALL]}, {"role": "tool", "content": "42"}]},
     "messages.2.tool_call_id"),
    ("a tool_calls entry without function",
     {"messages": [*HI, {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function"}]}]},
     "messages.1.tool_calls.0.function"),
    ("an unpaired surrogate in a message", {"messages": [{"role": "user", "content": "hi \ud800"}]},
     "messages.0.content"),
    ("an unpaired surrogate in a document", {"documents": [{"title": "t", "text": "\udfff"}]}, "documents.0.text"),
]


@pytest.mark.parametrize("what, fields, param", CHAT_CASES, ids=[c[0] for c in CHAT_CASES])
@pytest.mark.parametrize("model", ["small", "tiny"])
def test_a_malformed_chat_request_is_a_400_naming_the_field(server, what, fields, param, model):
    body = {"model": server[model] if model == "tiny" else model, "messages": HI, "max_tokens": 2, **fields}
    refused(post(server, "/v1/chat/completions", body), param)
    assert post(server, "/v1/chat/completions", {**body, "messages": HI, "tools": [TOOL],
                                                  "tool_choice": "auto"}).status_code == 200 or "surrogate" in what


@pytest.mark.parametrize("fields, param", [
    ({"prompt": [99999999, -1]}, "prompt.0"),
    ({"prompt": [1, 2, 10**6]}, "prompt.2"),
    ({"prompt": "x \ud800"}, "prompt"),
    ({"prompt": "def f():", "suffix": "\udc80"}, "suffix"),
])
def test_bad_completion_prompts_are_400s_naming_the_field(server, fields, param):
    refused(post(server, "/v1/completions", {"model": server["tiny"], "max_tokens": 1, **fields}), param)
    assert post(server, "/v1/completions", {"model": server["tiny"], "max_tokens": 1, "prompt": [1, 2]}).status_code == 200


def test_a_request_of_200k_messages_is_refused_before_it_is_parsed(server):
    body = {"model": "small", "messages": [{"role": "user", "content": "x"}] * 200_000}
    error = refused(post(server, "/v1/chat/completions", body), "messages")
    assert f"{MAX_MESSAGES:,}" in error["message"]
    assert post(server, "/v1/chat/completions", {"model": "small", "messages": HI * 50}).status_code == 200


def test_models_and_health_name_no_server_path(server):
    health = httpx.get(server["url"] + "/health", timeout=60)
    listed = httpx.get(server["url"] + "/v1/models", timeout=60)
    assert server["tiny"] in health.json()["models"] and server["tiny"] in [m["id"] for m in listed.json()["data"]]
    unknown = post(server, "/v1/chat/completions", {"model": "/etc/passwd", "messages": HI})
    for text in (health.text, listed.text, unknown.text):
        assert not any(path in text for path in server["paths"]), text
