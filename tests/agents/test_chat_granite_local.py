"""ChatGranite over the local engine on a tiny random checkpoint: structure only (the text is noise)."""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.tools import tool

from feldspar.agents.chat_model import ChatGranite
from feldspar.model.chat_backend import LocalChatBackend
from feldspar.model.engine import Engine, EngineOptions

SAMPLED = {"temperature": 1.0, "seed": 7, "reuse": False}  # greedy random weights repeat one special token
MESSAGES = [SystemMessage("Be brief."), HumanMessage("Where is Quartzville?")]
DOCUMENTS = [{"doc_id": "notes-1", "title": "notes", "text": "Quartzville is the capital of Feldspar land."}]


@tool
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression."""
    return expression


@pytest.fixture(scope="module")
def backend(tiny_checkpoint):
    return LocalChatBackend(Engine.load(str(tiny_checkpoint), EngineOptions(device="cpu", dtype="float32")))


@pytest.fixture(scope="module")
def model(backend):
    return ChatGranite(backend=backend, max_tokens=6, **SAMPLED)


def test_invoke_returns_a_message_with_usage_and_engine_metadata(model, backend):
    message = model.invoke(MESSAGES)
    meta, usage = message.response_metadata, message.usage_metadata
    assert isinstance(message, AIMessage) and meta["model_name"] == backend.name
    assert meta["random_weights"] is True and meta["finish_reason"] in ("length", "stop", "tool_calls")
    assert usage["input_tokens"] == meta["prompt_tokens"] == model.get_num_tokens_from_messages(MESSAGES)
    assert usage["output_tokens"] == meta["completion_tokens"] <= 6
    assert meta["computed_tokens"] == meta["prompt_tokens"] and usage["input_token_details"]["cache_read"] == 0
    assert meta["ttft_s"] > 0 and meta["prefill_s"] > 0 and isinstance(meta["raw_text"], str)


def test_stream_aggregates_to_what_invoke_returns(model):
    chunks = list(model.stream(MESSAGES))
    merged = sum(chunks[1:], chunks[0])
    invoked = model.invoke(MESSAGES)
    assert chunks[-1].chunk_position == "last"
    assert merged.content == invoked.content and merged.response_metadata["raw_text"] == \
        invoked.response_metadata["raw_text"]
    assert merged.usage_metadata == invoked.usage_metadata


def test_a_follow_up_turn_reuses_the_engine_state(backend):
    model = ChatGranite(backend=backend, max_tokens=4, temperature=1.0, seed=7)
    first = model.invoke(MESSAGES)
    second = model.invoke(MESSAGES + [first, HumanMessage("And Mica?")])
    assert second.usage_metadata["input_token_details"]["cache_read"] >= first.usage_metadata["input_tokens"]


def test_bound_tools_and_documents_reach_the_rendered_prompt(model, backend):
    bound = model.bind_tools([calculator])
    message = bound.invoke(MESSAGES, documents=DOCUMENTS)
    plain = model.invoke(MESSAGES)
    assert message.response_metadata["prompt_tokens"] > plain.response_metadata["prompt_tokens"]
    ids = model.prompt_token_ids(MESSAGES, tools=[calculator], documents=DOCUMENTS)
    text = backend.engine.tokenizer.decode(ids, skip_special_tokens=False)
    assert '"name": "calculator"' in text and "Quartzville is the capital" in text and "notes-1" in text
    assert len(ids) == message.response_metadata["prompt_tokens"]
    assert isinstance(message.tool_calls, list) and isinstance(message.invalid_tool_calls, list)
