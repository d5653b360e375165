"""The locally built Granite-shaped tokenizer: added-token ids, special flags, round trips."""

from __future__ import annotations

import pytest

from feldspar.model.tokenizer_build import ADDED_TOKEN_NAMES, TINY_REGULAR_SIZE, build_tokenizer

# granite-models.md, "Tokenizer (all eight)": ids 100256..100283 in this order.
GRANITE_ADDED = [
    "<|pad|>", "<|end_of_text|>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
    "<|filename|>", "<|reponame|>", "<|start_of_role|>", "<|end_of_role|>", "<|unused_1|>",
    "<|start_of_plugin|>", "<|end_of_plugin|>", "<|unk|>", "<tool_call>", "</tool_call>",
    "<tool_response>", "</tool_response>", "<think>", "</think>", "<think_on>", "<think_off>",
    "<schema>", "</schema>", "<tools>", "</tools>", "<documents>", "</documents>",
]
NOT_SPECIAL = ["<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>",
               "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>"]
TEXTS = [
    "Hello, world!",
    "  leading and trailing spaces  \n\n\ttabs\r\nCRLF",
    "Café naïve résumé Straße — “quotes” ‘single’ …",
    "日本語のテキスト、中文文本、한국어 텍스트, русский текст, Ελληνικά, עברית, العربية",
    "emoji 🙂🚀👩‍👩‍👧‍👦 🏳️‍🌈 and combining e\u0301 and zero\u200bwidth",
    "def f(x):\n    return {'a': [1, 2.5e-3, None]}\n",
    "<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call>",
]


@pytest.fixture(scope="module")
def full_tokenizer():
    return build_tokenizer("full")


def test_full_size_added_token_ids(full_tokenizer):
    assert len(full_tokenizer) == 100284
    ids = full_tokenizer.convert_tokens_to_ids(GRANITE_ADDED)
    assert ids == list(range(100256, 100284))
    assert list(ADDED_TOKEN_NAMES) == GRANITE_ADDED


def test_full_size_special_roles(full_tokenizer):
    assert full_tokenizer.bos_token == full_tokenizer.eos_token == "<|end_of_text|>"
    assert full_tokenizer.eos_token_id == full_tokenizer.bos_token_id == 100257
    assert (full_tokenizer.pad_token, full_tokenizer.pad_token_id) == ("<|pad|>", 100256)
    assert (full_tokenizer.unk_token, full_tokenizer.unk_token_id) == ("<|unk|>", 100269)


def test_no_bos_is_prepended(full_tokenizer, tiny_tokenizer):
    for tok in (full_tokenizer, tiny_tokenizer):
        ids = tok("Hello")["input_ids"]
        assert tok.bos_token_id not in ids
        assert tok.decode(ids) == "Hello"


def test_tiny_size_layout(tiny_tokenizer):
    assert len(tiny_tokenizer) == TINY_REGULAR_SIZE + 28
    ids = tiny_tokenizer.convert_tokens_to_ids(GRANITE_ADDED)
    assert ids == list(range(TINY_REGULAR_SIZE, TINY_REGULAR_SIZE + 28))
    assert tiny_tokenizer.eos_token_id == TINY_REGULAR_SIZE + 1


@pytest.mark.parametrize("text", TEXTS)
def test_round_trip_is_exact(tiny_tokenizer, full_tokenizer, text):
    for tok in (tiny_tokenizer, full_tokenizer):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text


def test_round_trip_of_every_byte_value(tiny_tokenizer):
    text = bytes(range(1, 128)).decode("ascii") + "".join(chr(c) for c in range(0xA0, 0x250))
    ids = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tiny_tokenizer.decode(ids) == text


def test_control_tags_are_single_tokens(tiny_tokenizer):
    for tag in GRANITE_ADDED:
        ids = tiny_tokenizer("a" + tag + "b", add_special_tokens=False)["input_ids"]
        assert tiny_tokenizer.convert_tokens_to_ids(tag) in ids


def test_skip_special_keeps_tool_and_fim_tokens(tiny_tokenizer):
    text = "<|start_of_role|>assistant<|end_of_role|>" + "".join(NOT_SPECIAL) + "ok<|end_of_text|>"
    ids = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tiny_tokenizer.decode(ids, skip_special_tokens=True) == "assistant" + "".join(NOT_SPECIAL) + "ok"


def test_tokenizer_saves_and_reloads_offline(tmp_path):
    from transformers import AutoTokenizer

    tok = build_tokenizer("tiny")
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert len(again) == len(tok)
    assert again("héllo 🙂")["input_ids"] == tok("héllo 🙂")["input_ids"]
    assert again.chat_template == tok.chat_template


def test_build_is_deterministic():
    a, b = build_tokenizer("tiny"), build_tokenizer("tiny")
    assert a.get_vocab() == b.get_vocab()
    assert a("The quick brown fox")["input_ids"] == b("The quick brown fox")["input_ids"]


def test_without_chat_template():
    assert build_tokenizer("tiny", with_chat_template=False).chat_template is None
    assert build_tokenizer("tiny", chat_template="{{ 'x' }}").chat_template == "{{ 'x' }}"


def test_unknown_size_raises():
    with pytest.raises(ValueError):
        build_tokenizer("huge")
