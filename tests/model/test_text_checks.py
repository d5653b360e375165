"""Bad bytes are a clear error naming where they are, never a tokenizer TypeError or an IndexError."""

from __future__ import annotations

import pytest

from feldspar.model.engine import Engine, EngineOptions, GenerationParams
from feldspar.model.errors import PromptError
from feldspar.model.text_checks import check_text, first_surrogate

ONE = GenerationParams(max_new_tokens=1, reuse=False)


@pytest.fixture(scope="module")
def engine(tiny_checkpoint) -> Engine:
    return Engine.load(str(tiny_checkpoint), EngineOptions(device="cpu", dtype="float32", reuse=False))


def test_the_first_surrogate_is_found_with_its_place():
    assert first_surrogate([{"role": "user", "content": "ok"}, {"content": "a\udc80b"}], "messages") == (
        "messages.1.content", 1, "\udc80")
    assert first_surrogate({"\ud800": "x"}, "tools") == ("tools", 0, "\ud800")  # keys too
    assert first_surrogate("fine 🌍 text") is None  # a real astral character is not a surrogate


@pytest.mark.parametrize("call, param", [
    (lambda e: e.chat([{"role": "user", "content": "hi \ud800"}], params=ONE), "messages.0.content"),
    (lambda e: e.chat([{"role": "user", "content": "hi"}], documents=[{"text": "\udfff"}], params=ONE),
     "documents.0.text"),
    (lambda e: e.chat([{"role": "user", "content": "hi"}], tools=[{"type": "function", "function": {
        "name": "t", "description": "\ud800"}}], params=ONE), "tools.0.function.description"),
    (lambda e: e.complete("x\ud800", ONE), "prompt"),
    (lambda e: e.fill_in_middle("a", "b\ud800", ONE), "suffix"),
])
def test_a_surrogate_anywhere_is_a_prompt_error_naming_the_parameter(engine, call, param):
    with pytest.raises(PromptError, match="unpaired surrogate") as raised:
        call(engine)
    assert raised.value.details["param"] == param


@pytest.mark.parametrize("ids, param", [([99999999, -1], "prompt.0"), ([1, -1], "prompt.1"), ([1, "2"], "prompt.1")])
def test_token_ids_outside_the_vocabulary_are_refused_before_the_embedding(engine, ids, param):
    with pytest.raises(PromptError, match="outside this model's vocabulary") as raised:
        engine.stream(ids, ONE)
    assert raised.value.details["param"] == param
    assert engine.generate([1, engine.vocab_size - 1], ONE).prompt_tokens == 2


def test_check_text_passes_clean_data():
    check_text([{"role": "user", "content": "<|start_of_role|> is fine text"}], "messages")
