"""The scripted backend: replies in order, small deltas, recorded requests, simulated reuse."""

from __future__ import annotations

import pytest

from feldspar.agents.backend import ChatBackend
from feldspar.agents.scripted import ScriptedBackend, ScriptExhausted, render, tokens
from feldspar.model.errors import ContextOverflowError

USER = [{"role": "user", "content": "What is 2+2?"}]
CALL = '<tool_call>\n{"name": "calculator", "arguments": {"expression": "2+2"}}\n</tool_call>'


def run(backend, messages=USER, **options):
    stream = backend.stream_chat(messages, **options)
    deltas = list(stream)
    return deltas, stream.result


def test_it_speaks_the_backend_protocol():
    backend = ScriptedBackend(["x"], name="granite-scripted", context_window=4096)
    assert isinstance(backend, ChatBackend)
    assert (backend.name, backend.context_window, backend.random_weights) == ("granite-scripted", 4096, False)


def test_replies_come_in_order_as_small_deltas():
    backend = ScriptedBackend([CALL, "It is 4."])
    deltas, result = run(backend)
    assert len(deltas) > 5 and "".join(deltas) == result.text == CALL
    assert run(backend)[1].text == "It is 4." and backend.remaining == 0


def test_every_request_is_recorded():
    backend = ScriptedBackend(["ok"])
    tools = [{"type": "function", "function": {"name": "calculator", "parameters": {}}}]
    documents = [{"doc_id": 1, "text": "Feldspar is a mineral."}]
    messages = [dict(m) for m in USER]
    run(backend, messages, tools=tools, documents=documents, max_new_tokens=9, temperature=0.2, reuse=False)
    messages[0]["content"] = "changed later"
    request = backend.requests[0]
    assert request["messages"] == USER and request["tools"] == tools and request["documents"] == documents
    assert (request["max_new_tokens"], request["temperature"], request["reuse"]) == (9, 0.2, False)
    assert "Feldspar is a mineral." in request["prompt"] and "calculator" in request["prompt"]


def test_tokens_follow_a_simple_deterministic_rule():
    assert tokens("Hi, you  there") == ["Hi", ",", " ", "you", "  ", "there"]
    backend = ScriptedBackend([])
    assert backend.count_tokens("Hi, you  there") == 6
    assert backend.prompt_token_ids(USER) == ScriptedBackend([]).prompt_token_ids(USER)
    assert len(backend.prompt_token_ids(USER)) == len(tokens(render(USER)))


def test_reuse_is_the_longest_common_prefix_with_earlier_prompts_and_replies():
    backend = ScriptedBackend(["Four.", "Five.", "Six."])
    _, first = run(backend)
    assert first.reused_tokens == 0 and first.computed_tokens == first.prompt_tokens
    follow_up = USER + [{"role": "assistant", "content": "Four."}, {"role": "user", "content": "And 2+3?"}]
    _, second = run(backend, follow_up)
    assert second.reused_tokens == first.prompt_tokens + first.completion_tokens
    assert second.reused_tokens + second.computed_tokens == second.prompt_tokens
    _, third = run(backend, follow_up, reuse=False)
    assert third.reused_tokens == 0


def test_finish_reason_length_stop_and_stop_strings():
    backend = ScriptedBackend(["one two three", "one two three", "alpha END beta"])
    assert run(backend, max_new_tokens=2)[1].finish_reason == "length"
    assert run(backend)[1].finish_reason == "stop"
    deltas, result = run(backend, stop=["END"])
    assert "".join(deltas) == result.text == "alpha " and result.finish_reason == "stop"


def test_callable_and_exception_replies():
    backend = ScriptedBackend([lambda request: f"You said {request['messages'][-1]['content']}", RuntimeError("down")])
    assert run(backend)[1].text == "You said What is 2+2?"
    with pytest.raises(RuntimeError, match="down"):
        backend.stream_chat(USER)


def test_running_out_of_script_is_a_clear_error():
    backend = ScriptedBackend(["only one"])
    run(backend)
    with pytest.raises(ScriptExhausted, match=r"1 replies and all were used; request 2 .*'What is 2\+2\?'"):
        backend.stream_chat(USER)


def test_a_prompt_over_the_window_is_refused_before_any_reply_is_used():
    backend = ScriptedBackend(["never"], context_window=20)
    with pytest.raises(ContextOverflowError, match="20-token context window"):
        backend.stream_chat(USER, max_new_tokens=5)
    assert backend.remaining == 1


def test_tool_turns_render_as_granite_writes_them():
    messages = USER + [{"role": "assistant", "content": "", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "calculator", "arguments": {"expression": "2+2"}}}]},
        {"role": "tool", "content": "4", "tool_call_id": "c1"}, {"role": "tool", "content": "5", "tool_call_id": "c2"}]
    text = render(messages)
    assert "<|start_of_role|>assistant<|end_of_role|>" + CALL + "<|end_of_text|>" in text
    assert ("<|start_of_role|>user<|end_of_role|>\n<tool_response>\n4\n</tool_response>\n<tool_response>\n5\n"
            "</tool_response><|end_of_text|>") in text
