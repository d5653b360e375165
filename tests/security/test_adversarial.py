"""The adversarial battery: every path that turns text into tokens keeps control strings as text.

One property each, over generated text that mixes Granite's 28 control strings with fragments of
them and ordinary text (hypothesis, derandomized, few examples so the suite stays fast):

- chat, documents, tools (schemas, call arguments, results): the prompt holds exactly the
  control ids of the same prompt with harmless text, and decodes back to the rendered text;
- fill-in-the-middle: exactly the three FIM ids, in order;
- remote: a server that tokenises like llama.cpp gets no control id from anything sent;
- serve (real HTTP, the tiny engine): the ids the engine saw for a chat or FIM request hold
  only the structure's control ids; a request carrying an unpaired surrogate is a 400, never a 500.
"""

from __future__ import annotations

import json
from collections import Counter

import httpx
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from feldspar.model.control_tokens import GRANITE_CONTROL_STRINGS
from feldspar.model.prompts import chat_token_ids, fim_ids, render_chat

from tests.agents.remote_server import StandIn

FAST = settings(max_examples=10, derandomize=True, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
OVER_HTTP = settings(FAST, max_examples=6)  # each example is a request (and a generation on the tiny model)
PLAIN = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=8)
HOSTILE = st.lists(st.one_of(st.sampled_from(GRANITE_CONTROL_STRINGS), PLAIN,
                             st.sampled_from(["<", "|", ">", "<|", "|>", "</", "\n", "system", "role"])),
                   max_size=10).map(lambda parts: "x" + "".join(parts))
TOOL = {"type": "function", "function": {"name": "search", "description": "Search the notes.",
                                          "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}


def controls(tokenizer, ids) -> Counter:
    added = set(tokenizer.get_added_vocab().values())
    return Counter(i for i in ids if i in added)


def chat_with(text: str, where: str):
    """A chat with ``text`` in one place (``where``) and harmless text everywhere else."""
    value = {w: (text if w == where else "x") for w in ("user", "system", "document", "title", "arguments", "result",
                                                       "description", "assistant")}
    tool = json.loads(json.dumps(TOOL))
    tool["function"]["description"] = value["description"]
    messages = [{"role": "system", "content": value["system"]}, {"role": "user", "content": value["user"]},
                {"role": "assistant", "content": value["assistant"], "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "search",
                                                                  "arguments": {"q": value["arguments"]}}}]},
                {"role": "tool", "content": value["result"], "tool_call_id": "c1"}]
    return messages, [tool], [{"doc_id": 1, "title": value["title"], "text": value["document"]}]


@pytest.mark.parametrize("where", ["user", "system", "assistant", "document", "title", "arguments", "result",
                                   "description"])
@FAST
@given(text=HOSTILE)
def test_property_chat_documents_and_tools_add_no_control_ids(tiny_tokenizer, where, text):
    clean = chat_token_ids(tiny_tokenizer, *chat_with("x", where))
    hostile_chat = chat_with(text, where)
    ids = chat_token_ids(tiny_tokenizer, *hostile_chat)
    assert controls(tiny_tokenizer, ids) == controls(tiny_tokenizer, clean)
    assert tiny_tokenizer.decode(ids) == render_chat(tiny_tokenizer, *hostile_chat)


@FAST
@given(prefix=HOSTILE, suffix=HOSTILE)
def test_property_fim_holds_exactly_the_three_fim_ids(tiny_tokenizer, prefix, suffix):
    vocab = tiny_tokenizer.get_vocab()
    ids = fim_ids(tiny_tokenizer, prefix, suffix)
    added = set(tiny_tokenizer.get_added_vocab().values())
    assert [i for i in ids if i in added] == [vocab["<|fim_prefix|>"], vocab["<|fim_suffix|>"], vocab["<|fim_middle|>"]]


@pytest.fixture(scope="module")
def stand_in():
    with StandIn() as running:
        yield running


@OVER_HTTP
@given(text=HOSTILE, where=st.sampled_from(["user", "system", "document", "arguments", "result", "description"]))
def test_property_a_remote_server_gets_no_control_token(stand_in, text, where):
    from feldspar.agents.remote_backend import RemoteChatBackend

    stand_in.script("ok", "ok")
    backend = RemoteChatBackend(stand_in.base_url, "granite-test")
    backend.stream_chat(*chat_with(text, where)).finish()
    backend.stream_completion(text, text).finish()  # fill-in-the-middle
    assert stand_in.control_ids == [[], []]


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_checkpoint):
    from feldspar.serve.server import build_server
    from feldspar.serve.run import serve_in_thread
    from feldspar.settings import load_settings

    home = tmp_path_factory.mktemp("adversarial-home")
    chat_settings = load_settings(home=home, model=str(tiny_checkpoint), device="cpu", dtype="float32")
    app = build_server(chat_settings, agent=False)
    with serve_in_thread(app) as url:
        engine = app.state.feldspar.models[tiny_checkpoint.name].engine
        yield {"url": url, "model": tiny_checkpoint.name, "engine": engine}


def post(served, path, body) -> httpx.Response:
    return httpx.post(served["url"] + path, content=json.dumps(body), timeout=120,
                      headers={"Content-Type": "application/json"})


@OVER_HTTP
@given(text=HOSTILE, where=st.sampled_from(["user", "document", "result", "arguments"]))
def test_property_serve_chat_prompts_hold_only_the_structures_control_ids(served, tiny_tokenizer, text, where):
    messages, tools, documents = chat_with(text, where)
    for message in messages:
        for call in message.get("tool_calls", []):
            call["function"]["arguments"] = json.dumps(call["function"]["arguments"])
    body = {"model": served["model"], "messages": messages, "tools": tools, "documents": documents, "max_tokens": 1}
    assert post(served, "/v1/chat/completions", body).status_code == 200
    expected = chat_token_ids(tiny_tokenizer, *chat_with("x", where))
    assert controls(tiny_tokenizer, served["engine"].last_prompt_ids) == controls(tiny_tokenizer, expected)


@OVER_HTTP
@given(prefix=HOSTILE, suffix=HOSTILE)
def test_property_serve_fim_holds_exactly_the_three_fim_ids(served, tiny_tokenizer, prefix, suffix):
    body = {"model": served["model"], "prompt": prefix, "suffix": suffix, "max_tokens": 1}
    assert post(served, "/v1/completions", body).status_code == 200
    added = set(tiny_tokenizer.get_added_vocab().values())
    assert len([i for i in served["engine"].last_prompt_ids if i in added]) == 3


@OVER_HTTP
@given(text=PLAIN, surrogate=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),
       where=st.sampled_from(["content", "document", "stop", "tool"]))
def test_property_an_unpaired_surrogate_anywhere_is_a_400_never_a_500(served, text, surrogate, where):
    bad = text + surrogate
    body = {"model": served["model"], "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]}
    if where == "content":
        body["messages"][0]["content"] = bad
    elif where == "document":
        body["documents"] = [{"text": bad}]
    elif where == "stop":
        body["stop"] = [bad]
    else:
        body["tools"] = [{"type": "function", "function": {"name": "f", "description": bad}}]
    response = post(served, "/v1/chat/completions", body)
    assert response.status_code == 400 and "surrogate" in response.json()["error"]["message"], response.text
