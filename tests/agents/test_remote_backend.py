"""RemoteChatBackend and ChatGranite over real HTTP, against a stand-in OpenAI-compatible server."""

from __future__ import annotations

import json

import pytest
from tests.agents.agent_helpers import tool_call
from tests.agents.remote_server import StandIn, free_port

from feldspar.agents.chat_model import ChatGranite
from feldspar.agents.errors import AgentError
from feldspar.agents.remote_backend import RemoteChatBackend, openai_messages, parse_model_spec
from feldspar.errors import user_message
from feldspar.model.errors import ContextOverflowError

CALC = {"type": "function", "function": {"name": "calculator", "description": "Evaluate arithmetic.",
                                          "parameters": {"type": "object", "properties": {"expression": {"type": "string"}},
                                                         "required": ["expression"]}}}


@pytest.fixture(scope="module")
def server():
    with StandIn(api_key="sk-test") as running:
        yield running


def backend_for(server, model="granite-test", **options) -> RemoteChatBackend:
    options.setdefault("api_key", "sk-test")
    return RemoteChatBackend(server.base_url, model, **options).connect()


def test_the_model_spec_names_the_server_and_the_model():
    assert parse_model_spec("openai:http://gpu:8000/v1/#granite-4.0-h-tiny") == ("http://gpu:8000/v1", "granite-4.0-h-tiny")
    assert parse_model_spec("openai:http://gpu:8000/v1") == ("http://gpu:8000/v1", "")
    assert parse_model_spec("granite-4.0-h-1b") is None


def test_connect_reads_the_window_and_takes_the_only_model_when_none_is_named(server):
    backend = backend_for(server, model="")
    assert backend.name == "granite-test" and backend.context_window == 8192 and backend.random_weights is False
    assert backend_for(server, context_window=4096).context_window == 4096  # a setting wins over the listing


def test_text_streams_in_deltas_and_usage_maps_cached_tokens_to_reused(server):
    backend = backend_for(server)
    server.script("Hello there, the router resets in ten seconds.", "Again: ten seconds.")
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "How long?"}]
    stream = backend.stream_chat(messages, max_new_tokens=64, seed=7)
    deltas = list(stream)
    first = stream.result
    assert len(deltas) > 1 and "".join(deltas) == first.text == "Hello there, the router resets in ten seconds."
    assert first.reused_tokens == 0 and first.computed_tokens == first.prompt_tokens > 0
    assert first.completion_tokens > 0 and first.finish_reason == "stop" and first.ttft_s >= 0
    request = server.requests[0]
    assert request["max_tokens"] == 64 and request["seed"] == 7 and request["stream"] is True
    assert request["authorization"] == "Bearer sk-test" and "tools" not in request
    follow = messages + [{"role": "assistant", "content": first.text}, {"role": "user", "content": "Sure?"}]
    second = backend.stream_chat(follow).finish()
    assert 0 < second.reused_tokens < second.prompt_tokens
    assert second.computed_tokens == second.prompt_tokens - second.reused_tokens


def test_tools_go_natively_and_documents_as_the_extension_field(server):
    backend = backend_for(server)
    server.script("Fine.")
    documents = [{"doc_id": "1", "title": "Guide", "text": "Hold the button."}]
    backend.stream_chat([{"role": "user", "content": "Hi"}], [CALC], documents).finish()
    assert server.requests[0]["tools"] == [CALC] and server.requests[0]["documents"] == documents


def test_server_side_tool_calls_reach_chat_granite_as_tool_calls(server):
    model = ChatGranite(backend=backend_for(server)).bind_tools([CALC])
    server.script({"content": "Let me compute.", "tool_calls": [{"name": "calculator", "arguments": {"expression": "17*3"}}]})
    reply = model.invoke("What is 17 times 3?")
    assert reply.content == "Let me compute."
    assert [(c["name"], c["args"]) for c in reply.tool_calls] == [("calculator", {"expression": "17*3"})]
    assert reply.response_metadata["finish_reason"] == "tool_calls" and reply.response_metadata["repairs"] == []
    assert "<tool_call>" in reply.response_metadata["raw_text"]


def test_calls_left_in_the_content_go_through_feldspars_parser_and_its_repairs(server):
    model = ChatGranite(backend=backend_for(server)).bind_tools([CALC])
    server.script(tool_call("calculator", expression="2+2"), "<tool_call>\ncalculator(expression='6*7')\n</tool_call>")
    plain = model.invoke("2+2?")
    assert plain.content == "" and plain.tool_calls[0]["args"] == {"expression": "2+2"}
    repaired = model.invoke("6*7?")
    assert repaired.tool_calls[0]["args"] == {"expression": "6*7"}
    assert "python_call" in repaired.response_metadata["repairs"]


def test_streaming_chat_granite_yields_text_and_usage_with_cache_reads(server):
    model = ChatGranite(backend=backend_for(server))
    server.script("One two three four five six seven.")
    chunks = list(model.stream("Count."))
    assert len([c for c in chunks if c.content]) > 1
    assert "".join(c.content for c in chunks) == "One two three four five six seven."
    usage = chunks[-1].usage_metadata
    assert usage["input_tokens"] > 0 and usage["input_token_details"]["cache_read"] == 0


def test_assistant_calls_and_tool_answers_go_out_in_openai_shape():
    out = openai_messages([{"role": "assistant", "content": "", "tool_calls": [
        {"id": None, "type": "function", "function": {"name": "calculator", "arguments": {"expression": "1+1"}}}]},
        {"role": "tool", "content": "2", "tool_call_id": None}])
    call = out[0]["tool_calls"][0]
    assert json.loads(call["function"]["arguments"]) == {"expression": "1+1"} and call["id"]
    assert out[1]["tool_call_id"] == call["id"]


def test_token_estimates_recalibrate_from_the_servers_usage(server):
    backend = backend_for(server)
    text = "The quick brown fox jumps over the lazy dog. " * 20
    before = backend.count_tokens(text)
    server.script("ok")
    backend.stream_chat([{"role": "user", "content": text}]).finish()
    assert backend.count_tokens(text) != before and backend.count_tokens(text) > 0
    assert backend.prompt_token_ids([{"role": "user", "content": text}])


def test_completions_and_fill_in_the_middle_stream_too(server):
    backend = backend_for(server)
    server.script("def add(a, b):", "return a + b")
    assert backend.stream_completion("# add", max_new_tokens=16).finish().text == "def add(a, b):"
    result = backend.stream_completion("def add(a, b):\n    ", "\n", max_new_tokens=16).finish()
    assert result.text == "return a + b" and server.requests[1]["suffix"] == "\n"


# ---- errors: one line each, with the remedy key the app words ------------------------------------
def one_line(exc: BaseException) -> str:
    message = user_message(exc)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_an_unreachable_server_is_one_clear_error():
    with pytest.raises(AgentError) as info:
        RemoteChatBackend(f"http://127.0.0.1:{free_port()}/v1", "granite-test", max_retries=0).connect()
    assert info.value.fix == "remote_unreachable" and "cannot reach" in one_line(info.value)


def test_a_wrong_model_name_lists_the_servers_models(server):
    with pytest.raises(AgentError) as info:
        backend_for(server, model="granite-nope")
    assert info.value.fix == "remote_model" and "granite-test" in one_line(info.value)
    backend = backend_for(server)
    backend.model = "granite-gone"  # the server stopped serving it after connect
    with pytest.raises(AgentError) as late:
        backend.stream_chat([{"role": "user", "content": "hi"}])
    assert late.value.fix == "remote_model" and "granite-test" in str(late.value)


def test_a_bad_api_key_is_refused_with_the_401(server):
    with pytest.raises(AgentError) as info:
        backend_for(server, api_key="wrong")
    assert info.value.fix == "remote_api_key" and "401" in one_line(info.value)
    assert "FELDSPAR_API_KEY" in one_line(info.value)


@pytest.mark.parametrize("reply, fix, words", [
    ({"status": 500, "message": "CUDA out of memory"}, "remote_status", "500: CUDA out of memory"),
    ({"status": 503, "message": "engine is loading"}, "remote_status", "503: engine is loading"),
    ({"status": 400, "message": "bad temperature"}, "remote_status", "400: bad temperature"),
])
def test_a_4xx_or_5xx_answer_carries_the_servers_message(server, reply, fix, words):
    backend = backend_for(server, max_retries=0)
    server.script(reply)
    with pytest.raises(AgentError) as info:
        backend.stream_chat([{"role": "user", "content": "hi"}])
    assert info.value.fix == fix and words in one_line(info.value)


def test_a_server_without_tool_support_says_so(server):
    backend = backend_for(server)
    server.script("never sent")
    server.tools_supported = False
    with pytest.raises(AgentError) as info:
        backend.stream_chat([{"role": "user", "content": "hi"}], [CALC])
    assert info.value.fix == "remote_tools" and "does not accept tools" in one_line(info.value)
    assert "--enable-auto-tool-choice" in one_line(info.value)


@pytest.mark.parametrize("answer", [
    {"status": 400, "message": "This model's maximum context length is 8192 tokens."},  # vLLM's words
    {"status": 400, "message": "prompt too big", "code": "context_length_exceeded"},    # OpenAI's code
])
def test_a_prompt_over_the_servers_window_is_a_context_overflow(server, answer):
    backend = backend_for(server)
    server.script(answer)
    with pytest.raises(ContextOverflowError):
        backend.stream_chat([{"role": "user", "content": "hi"}])


def test_a_server_that_does_not_answer_in_time_is_a_timeout(server):
    backend = backend_for(server, timeout_s=0.5, max_retries=0)
    server.script({"hang": True})
    with pytest.raises(AgentError) as info:
        backend.stream_chat([{"role": "user", "content": "hi"}])
    assert info.value.fix == "remote_timeout" and "in time" in one_line(info.value)


def test_no_model_name_on_a_server_with_several_asks_for_one():
    with StandIn(models=("granite-a", "granite-b")) as several:
        with pytest.raises(AgentError) as info:
            RemoteChatBackend(several.base_url).connect()
    assert info.value.fix == "remote_model" and "granite-a, granite-b" in one_line(info.value)
    assert "none was named" in str(info.value)


def test_a_connection_dropped_mid_answer_is_one_clear_error_after_the_text_so_far(server):
    backend = backend_for(server, max_retries=0)
    server.script({"drop_after": "The first half"})
    stream = backend.stream_chat([{"role": "user", "content": "hi"}])
    seen = []
    with pytest.raises(AgentError) as info:
        for delta in stream:
            seen.append(delta)
    assert seen == ["The first half"] and "broke mid-answer" in one_line(info.value)
