"""Structured output on a remote backend, over real HTTP against a stand-in OpenAI-compatible server:
the schema goes in each dialect's form, a server that refuses it is said so in one line and Feldspar
falls back to validate-and-retry (extract's retries, with_structured_output's parser)."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel
from tests.agents.remote_server import StandIn

from feldspar.agents.chat_model import ChatGranite
from feldspar.agents.extract import ExtractOptions, extract_rows
from feldspar.agents.remote_backend import RemoteChatBackend
from feldspar.agents.summarize import SourceText
from feldspar.model.structure import Structure

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
CALC = {"type": "function", "function": {"name": "calculator", "parameters": {
    "type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]}}}


@pytest.fixture(scope="module")
def server():
    with StandIn() as running:
        yield running


def backend_for(server, notices=None, **options):
    notice = notices.append if notices is not None else (lambda line: None)
    return RemoteChatBackend(server.base_url, "granite-test", notice=notice, **options).connect()


def ask(backend, structure):
    return backend.stream_chat([{"role": "user", "content": "Where?"}], structure=structure).finish()


@pytest.mark.parametrize("dialect, structure, expected", [
    ("openai", Structure.json_schema(SCHEMA, name="place"),
     {"response_format": {"type": "json_schema", "json_schema": {"name": "place", "schema": SCHEMA, "strict": True}}}),
    ("openai", Structure.json_object(), {"response_format": {"type": "json_object"}}),
    ("vllm", Structure.json_schema(SCHEMA), {"structured_outputs": {"json": SCHEMA}}),
    ("vllm", Structure.regex("[a-z]+"), {"structured_outputs": {"regex": "[a-z]+"}}),
    ("vllm", Structure.choice(["a", "b"]), {"structured_outputs": {"choice": ["a", "b"]}}),
    ("llamacpp", Structure.json_schema(SCHEMA), {"json_schema": SCHEMA}),
    ("openai", Structure.tool_calls([CALC], ["calculator"], parallel=False),
     {"tool_choice": {"type": "function", "function": {"name": "calculator"}}, "parallel_tool_calls": False}),
])
def test_each_dialect_sends_the_schema_in_its_form(server, dialect, structure, expected):
    server.script('{"city": "Oslo"}')
    ask(backend_for(server, structured=dialect), structure)
    request = server.requests[0]
    assert {k: request.get(k) for k in expected} == expected


def test_a_dialect_that_cannot_say_it_sends_unconstrained_with_a_notice(server):
    notices = []
    server.script("abc")
    ask(backend_for(server, notices, structured="llamacpp"), Structure.regex("[a-z]+"))
    assert "json_schema" not in server.requests[0] and "response_format" not in server.requests[0]
    assert len(notices) == 1 and "cannot constrain" in notices[0]


def test_a_server_that_refuses_is_said_so_once_and_asked_again_without_it(server):
    notices = []
    backend = backend_for(server, notices)
    server.script({"status": 400, "message": "response_format is not supported by this server"}, '{"city": "Oslo"}')
    assert ask(backend, Structure.json_schema(SCHEMA)).text == '{"city": "Oslo"}'
    assert "response_format" in server.requests[0] and "response_format" not in server.requests[1]
    assert len(notices) == 1 and "validates and retries" in notices[0] and backend.constrains is False


def test_other_errors_are_not_mistaken_for_a_refusal(server):
    from feldspar.agents.errors import AgentError

    server.script({"status": 500, "message": "out of memory"})
    with pytest.raises(AgentError):
        ask(backend_for(server), Structure.json_schema(SCHEMA))


def test_extract_falls_back_to_validate_and_retry(server):
    backend = backend_for(server)
    server.script({"status": 400, "message": "unsupported field json_schema"}, "not json", '{"city": "Oslo"}')
    doc = SourceText(path="a.txt", text="Oslo is a city.", title="a.txt")
    rows = []
    extract_rows(ChatGranite(backend=backend), SCHEMA, [doc], ExtractOptions(retries=2), rows.append)
    assert rows[0]["ok"] and rows[0]["attempts"] == 2 and rows[0]["data"] == {"city": "Oslo"}
    assert "response_format" in server.requests[0]  # constrained was asked first


def test_with_structured_output_over_a_remote_server(server):
    class Place(BaseModel):
        city: str

    server.script(json.dumps({"city": "Bergen"}))
    place = ChatGranite(backend=backend_for(server)).with_structured_output(Place).invoke("Where?")
    assert place == Place(city="Bergen")
    assert server.requests[0]["response_format"]["json_schema"]["schema"]["properties"]["city"]["type"] == "string"
