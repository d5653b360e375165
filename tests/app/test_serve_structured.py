"""Structured outputs over HTTP: response_format and forced tool calls against a real `feldspar serve`.

The tiny random checkpoint answers; whatever it prefers, the grammar leaves only schema-valid
JSON, so these tests would fail if response_format or tool_choice were ignored.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jsonschema
import openai
import pytest
from pydantic import BaseModel

PERSON = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20},
                                           "age": {"type": "integer", "minimum": 0, "maximum": 150}},
          "required": ["name", "age"], "additionalProperties": False}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string", "maxLength": 12}}, "required": ["city"]}}},
    {"type": "function", "function": {"name": "add", "parameters": {
        "type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]}}},
]


@pytest.fixture(scope="module")
def server(tiny_checkpoint, tmp_path_factory):
    from feldspar.serve.server import build_server
    from feldspar.serve.run import serve_in_thread
    from feldspar.settings import load_settings

    settings = load_settings(home=tmp_path_factory.mktemp("serve-home"), model=str(tiny_checkpoint), device="cpu",
                             dtype="float32", max_new_tokens=80)
    app = build_server(settings, agent=False, queue=4)
    with serve_in_thread(app) as url:
        yield {"url": url, "model": tiny_checkpoint.name}


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server["url"] + "/v1", api_key="unused", max_retries=0, timeout=120)


def chat(client, server, **options):
    return client.chat.completions.create(model=server["model"], messages=[{"role": "user", "content": "Who?"}],
                                          **options)


def test_json_schema_strict_gives_valid_json(client, server):
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}}
    for seed in (1, 2):
        reply = chat(client, server, response_format=fmt, temperature=1.0, seed=seed, max_tokens=60)
        jsonschema.validate(json.loads(reply.choices[0].message.content), PERSON)
        assert reply.choices[0].finish_reason == "stop"


def test_json_object_streaming(client, server):
    stream = chat(client, server, response_format={"type": "json_object"}, stream=True, max_tokens=60,
                  temperature=1.0, seed=3)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert isinstance(json.loads(text), dict)


def test_completions_take_response_format(client, server):
    reply = client.completions.create(model=server["model"], prompt="Person:", max_tokens=60,
                                      extra_body={"response_format": {"type": "json_schema",
                                                                      "json_schema": {"name": "p", "schema": PERSON}}})
    jsonschema.validate(json.loads(reply.choices[0].text), PERSON)


def test_openai_parse_with_a_pydantic_model(client, server):
    class Person(BaseModel):
        name: str
        age: int

    reply = client.chat.completions.parse(model=server["model"], messages=[{"role": "user", "content": "Who?"}],
                                          response_format=Person, max_tokens=60)
    assert isinstance(reply.choices[0].message.parsed, Person)


def test_langchain_openai_default_with_structured_output(server):
    from langchain_openai import ChatOpenAI

    class City(BaseModel):
        city: str
        population: int

    llm = ChatOpenAI(model=server["model"], base_url=server["url"] + "/v1", api_key="unused", max_retries=0,
                     max_tokens=60)
    assert isinstance(llm.with_structured_output(City).invoke("Largest city?"), City)


def test_uncompilable_schema_is_a_400_naming_the_part(client, server):
    bad = {"type": "object", "properties": {"zip": {"type": "string", "pattern": "(?<=a)b"}}}
    with pytest.raises(openai.BadRequestError) as caught:
        chat(client, server, response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": bad}})
    error = caught.value.body
    assert error["param"] == "response_format.json_schema.schema/properties/zip"
    assert "look-around" in error["message"]


def test_unsatisfiable_within_max_tokens_finishes_with_length(client, server):
    long = {"type": "object", "properties": {"a": {"type": "string", "minLength": 50}}, "required": ["a"]}
    reply = chat(client, server, max_tokens=5,
                 response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": long}})
    assert reply.choices[0].finish_reason == "length"
    assert reply.choices[0].message.content.startswith('{"a":"')


@pytest.mark.parametrize("tool_choice, names", [
    ("required", {"get_weather", "add"}),
    ({"type": "function", "function": {"name": "add"}}, {"add"}),
])
def test_forced_tool_calls_name_the_tool_with_valid_arguments(client, server, tool_choice, names):
    reply = chat(client, server, tools=TOOLS, tool_choice=tool_choice, parallel_tool_calls=False, max_tokens=80,
                 temperature=1.0, seed=5)
    message = reply.choices[0].message
    assert reply.choices[0].finish_reason == "tool_calls" and len(message.tool_calls) == 1
    call = message.tool_calls[0].function
    assert call.name in names
    schema = next(t["function"]["parameters"] for t in TOOLS if t["function"]["name"] == call.name)
    jsonschema.validate(json.loads(call.arguments), schema)


def test_tool_choice_naming_an_undeclared_tool_is_a_400(client, server):
    with pytest.raises(openai.BadRequestError) as caught:
        chat(client, server, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "nope"}})
    assert caught.value.body["param"] == "tool_choice"


def test_random_weights_json_is_labelled_outside_the_content(client, server):
    """JSON content must parse, so the random-weights label moves to the fingerprint and header
    (a plain answer carries it as its first line: tests/app/test_serve_clients.py)."""
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}}
    raw = client.chat.completions.with_raw_response.create(
        model=server["model"], messages=[{"role": "user", "content": "Who?"}], response_format=fmt, max_tokens=60)
    reply = raw.parse()
    jsonschema.validate(json.loads(reply.choices[0].message.content), PERSON)
    assert reply.system_fingerprint == "feldspar-random-weights"
    assert raw.headers["x-feldspar-random-weights"] == "true"


def run_llm(tmp_path, server, *args: str) -> str:
    """simonw's `llm` CLI in a subprocess, with feldspar serve configured as an OpenAI-compatible model."""
    home = tmp_path / "llm-home"
    home.mkdir(exist_ok=True)
    models = [{"model_id": "feldspar-tiny", "model_name": server["model"], "api_base": server["url"] + "/v1",
               "supports_schema": True}]
    (home / "extra-openai-models.yaml").write_text(json.dumps(models))  # JSON is YAML
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    done = subprocess.run([sys.executable, "-m", "llm", *args], capture_output=True,
                          text=True, timeout=300, env={**env, "LLM_USER_PATH": str(home)})
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("stream", [True, False])
def test_llm_cli_concise_schema_prints_valid_json(tmp_path, server, stream):
    out = run_llm(tmp_path, server, "-m", "feldspar-tiny", "--schema", "name, age int",
                  *([] if stream else ["--no-stream"]), "Invent a person")
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
              "required": ["name", "age"]}
    jsonschema.validate(json.loads(out), schema)
    if not stream:  # the random-weights label reaches llm's log, outside the JSON content
        (logged,) = json.loads(run_llm(tmp_path, server, "logs", "-n", "1", "--json"))
        assert logged["response_json"]["system_fingerprint"] == "feldspar-random-weights"


def test_llm_cli_schema_file_prints_valid_json(tmp_path, server):
    path = tmp_path / "person.schema.json"
    path.write_text(json.dumps(PERSON))
    out = run_llm(tmp_path, server, "-m", "feldspar-tiny", "--schema", str(path), "-o", "max_tokens", "60",
                  "Invent a person")
    jsonschema.validate(json.loads(out), PERSON)
