"""`feldspar serve` conformance with the official `openai` client and langchain-openai's ChatOpenAI.

One real server per module (uvicorn in a thread on a loopback port the OS chose), built by
app/serve/server.py's ``build_server`` over the tiny random checkpoint, plus a scripted Granite
model (real Granite-format text read by the real parser) for deterministic tool calls.
"""

from __future__ import annotations

import json

import openai
import pytest

from tests.app.serve_helpers import WEATHER_TOOL, weather_replies

SYSTEM = ("You are the reference librarian of the Feldspar mineral society. You answer questions about "
          "minerals, their hardness, their crystal systems and where they are found, in two sentences.")


@pytest.fixture(scope="module")
def server(tiny_checkpoint, tmp_path_factory):
    from feldspar.agents.scripted import ScriptedBackend
    from feldspar.serve.server import build_server
    from feldspar.serve.models import ServedModel
    from feldspar.serve.run import serve_in_thread
    from feldspar.settings import load_settings

    settings = load_settings(home=tmp_path_factory.mktemp("serve-home"), model=str(tiny_checkpoint), device="cpu",
                             dtype="float32", max_new_tokens=6)
    scripted = ScriptedBackend(weather_replies(), name="scripted-weather")
    app = build_server(settings, agent=False, extra_models=[ServedModel("scripted-weather", scripted)], queue=4)
    with serve_in_thread(app) as url:
        yield {"url": url, "app": app, "scripted": scripted, "tiny": tiny_checkpoint.name}


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server["url"] + "/v1", api_key="unused", max_retries=0, timeout=120)


def engine_of(server):
    return server["app"].state.feldspar.models[server["tiny"]].engine


def ask(client, model, content, **options):
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": content}], **options)


# ---- models ------------------------------------------------------------------------------
def test_models_lists_each_model_and_flags_random_weights(client, server):
    models = {m.id: m for m in client.models.list()}
    assert set(models) == {server["tiny"], "scripted-weather"}
    assert models[server["tiny"]].model_extra["random_weights"] is True
    assert models[server["tiny"]].model_extra["completions"] is True
    assert models["scripted-weather"].model_extra["random_weights"] is False
    assert client.models.retrieve("scripted-weather").id == "scripted-weather"


# ---- chat --------------------------------------------------------------------------------
def test_chat_non_stream_is_marked_as_random_weights_and_counts_tokens(client, server):
    raw = client.chat.completions.with_raw_response.create(
        model=server["tiny"], messages=[{"role": "user", "content": "What is feldspar?"}], max_tokens=5)
    reply = raw.parse()
    assert raw.headers["x-feldspar-random-weights"] == "true"
    assert reply.system_fingerprint == "feldspar-random-weights"
    assert reply.model_extra["feldspar"]["random_weights"] is True
    assert reply.object == "chat.completion" and reply.choices[0].message.role == "assistant"
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert 1 <= reply.usage.completion_tokens <= 5
    expected_prompt = len(engine_of(server).chat_ids([{"role": "user", "content": "What is feldspar?"}]))
    assert reply.usage.prompt_tokens == expected_prompt
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_chat_stream_adds_up_to_the_non_stream_answer_and_reports_usage(client, server):
    question = "Name three minerals harder than feldspar."
    whole = ask(client, server["tiny"], question, max_tokens=6, temperature=0)
    chunks = list(ask(client, server["tiny"], question, max_tokens=6, temperature=0, stream=True,
                      stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert all(c.system_fingerprint == "feldspar-random-weights" for c in chunks)


def test_the_state_cache_is_shared_across_requests_with_the_same_system_prompt(client, server):
    system = SYSTEM + " Session 1."
    first = client.chat.completions.create(model=server["tiny"], max_tokens=2, messages=[
        {"role": "system", "content": system}, {"role": "user", "content": "Is quartz harder than feldspar?"}])
    second = client.chat.completions.create(model=server["tiny"], max_tokens=2, messages=[
        {"role": "system", "content": system}, {"role": "user", "content": "Where is mica found?"}])
    system_turn = len(engine_of(server).chat_ids([{"role": "system", "content": system}], add_generation_prompt=False))
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert system_turn <= cached < second.usage.prompt_tokens
    assert second.model_extra["feldspar"]["computed_tokens"] == second.usage.prompt_tokens - cached


def test_documents_extension_reaches_the_template(client, server):
    question = [{"role": "user", "content": "What does the note say?"}]
    documents = [{"doc_id": "n1", "title": "note", "text": "Feldspar is the most common mineral group."}]
    plain = client.chat.completions.create(model=server["tiny"], messages=question, max_tokens=1)
    grounded = client.chat.completions.create(model=server["tiny"], messages=question, max_tokens=1,
                                              extra_body={"documents": documents})
    assert grounded.usage.prompt_tokens == len(engine_of(server).chat_ids(question, None, documents))
    assert grounded.usage.prompt_tokens > plain.usage.prompt_tokens
    scripted = server["scripted"]
    client.chat.completions.create(model="scripted-weather", messages=question, extra_body={"documents": documents})
    assert scripted.requests[-1]["documents"] == documents


# ---- tools -------------------------------------------------------------------------------
def test_tool_calls_round_trip(client, server):
    messages = [{"role": "user", "content": "What's the weather in Paris?"}]
    first = client.chat.completions.create(model="scripted-weather", messages=messages, tools=[WEATHER_TOOL])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Let me look."
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    messages += [choice.message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"}]
    second = client.chat.completions.create(model="scripted-weather", messages=messages, tools=[WEATHER_TOOL])
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content == "The weather report says: sunny, 21 C"
    sent = server["scripted"].requests[-1]["messages"]
    assert sent[1]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": {"city": "Paris"}}
    assert sent[2] == {"role": "tool", "content": "sunny, 21 C", "tool_call_id": call.id}


def test_streamed_tool_calls_and_repaired_shapes(client):
    chunks = list(client.chat.completions.create(
        model="scripted-weather", messages=[{"role": "user", "content": "Weather in Lyon? (python)"}],
        tools=[WEATHER_TOOL], stream=True))
    calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert [(tc.index, tc.function.name, json.loads(tc.function.arguments)) for tc in calls] == \
        [(0, "get_weather", {"city": "Lyon"})]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ""
    last = [c for c in chunks if c.choices and c.choices[0].finish_reason][-1]
    assert last.choices[0].finish_reason == "tool_calls"
    assert "python_call" in last.model_extra["feldspar"]["tool_call_repairs"]
    assert last.model_extra["feldspar"]["raw_text"] == 'get_weather(city="Lyon")'


def test_tool_choice_none_hides_the_tools(client, server):
    reply = client.chat.completions.create(model="scripted-weather", tools=[WEATHER_TOOL], tool_choice="none",
                                           messages=[{"role": "user", "content": "Weather in Paris?"}])
    assert reply.choices[0].message.content == "Hello from the scripted model."
    assert server["scripted"].requests[-1]["tools"] is None


# ---- completions ---------------------------------------------------------------------------
def test_completions_plain_and_streamed(client, server):
    whole = client.completions.create(model=server["tiny"], prompt="Feldspar is", max_tokens=5, temperature=0)
    assert whole.object == "text_completion" and whole.system_fingerprint == "feldspar-random-weights"
    assert whole.usage.prompt_tokens == len(engine_of(server).encode("Feldspar is"))
    chunks = list(client.completions.create(model=server["tiny"], prompt="Feldspar is", max_tokens=5, temperature=0,
                                            stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_fill_in_the_middle_uses_the_suffix(client, server):
    from feldspar.model.engine import GenerationParams

    prefix, suffix = "def area(r):\n    return ", " * r * r\n"
    reply = client.completions.create(model=server["tiny"], prompt=prefix, suffix=suffix, max_tokens=4)
    direct = engine_of(server).fill_in_middle(prefix, suffix, GenerationParams(max_new_tokens=4)).finish()
    assert reply.choices[0].text == direct.text
    assert reply.usage.prompt_tokens == direct.prompt_tokens
    assert reply.usage.prompt_tokens > len(engine_of(server).encode(prefix)) + 2


def test_completions_on_a_chat_only_model_is_a_clear_400(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model="scripted-weather", prompt="hi")
    assert info.value.body["code"] == "unsupported_model"


# ---- langchain-openai ---------------------------------------------------------------------
def test_langchain_chat_openai_invoke_stream_and_tools(server):
    from langchain_core.messages import HumanMessage, SystemMessage
    from langchain_openai import ChatOpenAI

    tiny = ChatOpenAI(base_url=server["url"] + "/v1", api_key="unused", model=server["tiny"], max_retries=0,
                      max_tokens=3, temperature=0, stream_usage=True)
    messages = [SystemMessage(SYSTEM + " Session 2."), HumanMessage("Which mineral is softest?")]
    answer = tiny.invoke(messages)
    assert answer.response_metadata["system_fingerprint"] == "feldspar-random-weights"
    again = tiny.invoke(messages)
    assert again.usage_metadata["input_token_details"]["cache_read"] > 0
    streamed = list(tiny.stream(messages))
    assert "".join(c.content for c in streamed) == answer.content
    scripted = ChatOpenAI(base_url=server["url"] + "/v1", api_key="unused", model="scripted-weather", max_retries=0)
    call = scripted.bind_tools([WEATHER_TOOL]).invoke("What's the weather in Paris?")
    assert call.tool_calls == [{"name": "get_weather", "args": {"city": "Paris"}, "id": call.tool_calls[0]["id"],
                                "type": "tool_call"}]
    assert call.response_metadata["finish_reason"] == "tool_calls"
