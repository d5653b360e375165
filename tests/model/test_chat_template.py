"""The chat template against hand-written strings from shared/granite-format.md.

Runs on ``tiny_tokenizer``; set FELDSPAR_TEST_CHAT_TEMPLATE to a Granite template file to
check that file instead of the bundled one.
"""

from __future__ import annotations

import pytest

S, E, END = "<|start_of_role|>", "<|end_of_role|>", "<|end_of_text|>"
DEFAULT = "You are a helpful assistant. Please ensure responses are professional, accurate, and safe."
DEFAULT_TURN = "<|start_of_role|>system<|end_of_role|>" + DEFAULT + "<|end_of_text|>\n"
GEN = "<|start_of_role|>assistant<|end_of_role|>"

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Météo actuelle d'une ville",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TIME = {"type": "function", "function": {"name": "get_time", "description": "Current time", "parameters": {}}}
WEATHER_LINE = (
    '{"type": "function", "function": {"name": "get_weather", "description": "Météo actuelle d\'une ville", '
    '"parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}'
)
TIME_LINE = '{"type": "function", "function": {"name": "get_time", "description": "Current time", "parameters": {}}}'

TOOLS_BLOCK = (
    "You are a helpful assistant with access to the following tools. You may call one or more tools to assist "
    "with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
    + WEATHER_LINE + "\n" + TIME_LINE + "\n</tools>\n\n"
    "For each tool call, return a json object with function name and arguments within <tool_call></tool_call> "
    'XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>. '
    "If a tool does not exist in the provided list of tools, notify the user that you do not have the ability "
    "to fulfill the request."
)
DOCS = [
    {"doc_id": 1, "title": "Zürich", "text": "Zürich liegt am See.", "source": "wiki"},
    {"doc_id": 2, "title": "Oslo", "text": "Oslo is the capital of Norway."},
]
DOCS_BLOCK = (
    "You are a helpful assistant with access to the following documents. You may use one or more documents to "
    "assist with the user query.\n\nYou are given a list of documents within <documents></documents> XML tags:\n"
    "<documents>\n"
    '{"doc_id": 1, "title": "Zürich", "text": "Zürich liegt am See.", "source": "wiki"}\n'
    '{"doc_id": 2, "title": "Oslo", "text": "Oslo is the capital of Norway."}\n'
    "</documents>\n\n"
    "Write the response to the user's input by strictly aligning with the facts in the provided documents. "
    "If the information needed to answer the question is not available in the documents, inform the user that "
    "the question cannot be answered based on the available data."
)


@pytest.fixture
def render(tiny_tokenizer):
    def _render(messages, **kwargs):
        return tiny_tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)

    return _render


def test_plain_chat_gets_default_system(render):
    out = render([{"role": "user", "content": "Hello!"}])
    assert out == DEFAULT_TURN + "<|start_of_role|>user<|end_of_role|>Hello!<|end_of_text|>\n"


def test_add_generation_prompt(render):
    out = render([{"role": "user", "content": "Hello!"}], add_generation_prompt=True)
    assert out == DEFAULT_TURN + "<|start_of_role|>user<|end_of_role|>Hello!<|end_of_text|>\n" + GEN
    assert out.endswith("<|end_of_role|>")


def test_caller_system_prompt_replaces_default(render):
    out = render([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
    assert out == (
        "<|start_of_role|>system<|end_of_role|>Be brief.<|end_of_text|>\n"
        "<|start_of_role|>user<|end_of_role|>Hi<|end_of_text|>\n"
    )


def test_multi_turn(render):
    messages = [
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4."},
        {"role": "user", "content": "And 3+3?"},
    ]
    assert render(messages, add_generation_prompt=True) == (
        DEFAULT_TURN
        + "<|start_of_role|>user<|end_of_role|>What is 2+2?<|end_of_text|>\n"
        "<|start_of_role|>assistant<|end_of_role|>4.<|end_of_text|>\n"
        "<|start_of_role|>user<|end_of_role|>And 3+3?<|end_of_text|>\n"
        "<|start_of_role|>assistant<|end_of_role|>"
    )


def test_tools_block(render):
    out = render([{"role": "user", "content": "Weather in Paris?"}], tools=[WEATHER, TIME])
    assert out == (
        "<|start_of_role|>system<|end_of_role|>" + TOOLS_BLOCK + "<|end_of_text|>\n"
        "<|start_of_role|>user<|end_of_role|>Weather in Paris?<|end_of_text|>\n"
    )


def test_documents_block(render):
    out = render([{"role": "user", "content": "Where is Zürich?"}], documents=DOCS, add_generation_prompt=True)
    assert out == (
        "<|start_of_role|>system<|end_of_role|>" + DOCS_BLOCK + "<|end_of_text|>\n"
        "<|start_of_role|>user<|end_of_role|>Where is Zürich?<|end_of_text|>\n" + GEN
    )


def test_system_tools_and_documents_join_with_blank_lines(render):
    messages = [{"role": "system", "content": "Answer in French."}, {"role": "user", "content": "q"}]
    out = render(messages, tools=[WEATHER, TIME], documents=DOCS)
    assert out == (
        "<|start_of_role|>system<|end_of_role|>Answer in French.\n\n" + TOOLS_BLOCK + "\n\n" + DOCS_BLOCK
        + "<|end_of_text|>\n<|start_of_role|>user<|end_of_role|>q<|end_of_text|>\n"
    )


def test_tools_and_documents_without_system(render):
    out = render([{"role": "user", "content": "q"}], tools=[WEATHER, TIME], documents=DOCS)
    assert out.startswith("<|start_of_role|>system<|end_of_role|>" + TOOLS_BLOCK + "\n\n" + DOCS_BLOCK + END)
    assert DEFAULT not in out


def test_assistant_single_tool_call_without_content(render):
    messages = [
        {"role": "user", "content": "Weather in Zürich?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Zürich"}}}]},
    ]
    assert render(messages) == (
        DEFAULT_TURN + "<|start_of_role|>user<|end_of_role|>Weather in Zürich?<|end_of_text|>\n"
        '<|start_of_role|>assistant<|end_of_role|><tool_call>\n{"name": "get_weather", "arguments": '
        '{"city": "Zürich"}}\n</tool_call><|end_of_text|>\n'
    )


def test_assistant_several_tool_calls_with_content(render):
    messages = [
        {"role": "user", "content": "Weather and time?"},
        {"role": "assistant", "content": "Let me check.", "tool_calls": [
            {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}},
            {"type": "function", "function": {"name": "get_time", "arguments": {}}}]},
    ]
    assert render(messages) == (
        DEFAULT_TURN + "<|start_of_role|>user<|end_of_role|>Weather and time?<|end_of_text|>\n"
        "<|start_of_role|>assistant<|end_of_role|>Let me check.\n"
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call><|end_of_text|>\n'
    )


def test_several_tool_calls_without_content_and_string_arguments(render):
    messages = [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"name": "a", "arguments": '{"x":1,  "y" : "é"}'},
            {"type": "function", "function": {"name": "b", "arguments": "{}"}}]},
    ]
    assert render(messages) == (
        DEFAULT_TURN + "<|start_of_role|>user<|end_of_role|>go<|end_of_text|>\n"
        '<|start_of_role|>assistant<|end_of_role|><tool_call>\n{"name": "a", "arguments": {"x":1,  "y" : "é"}}\n'
        '</tool_call>\n<tool_call>\n{"name": "b", "arguments": {}}\n</tool_call><|end_of_text|>\n'
    )


def test_consecutive_tool_messages_merge_into_one_user_turn(render):
    messages = [
        {"role": "user", "content": "Weather and time?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}},
            {"type": "function", "function": {"name": "get_time", "arguments": {}}}]},
        {"role": "tool", "content": '{"temp": 3}'},
        {"role": "tool", "content": "12:00"},
        {"role": "assistant", "content": "3 °C at noon."},
        {"role": "tool", "content": "late"},
    ]
    assert render(messages, add_generation_prompt=True) == (
        DEFAULT_TURN + "<|start_of_role|>user<|end_of_role|>Weather and time?<|end_of_text|>\n"
        '<|start_of_role|>assistant<|end_of_role|><tool_call>\n{"name": "get_weather", "arguments": '
        '{"city": "Oslo"}}\n</tool_call>\n<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>'
        "<|end_of_text|>\n"
        '<|start_of_role|>user<|end_of_role|>\n<tool_response>\n{"temp": 3}\n</tool_response>\n'
        "<tool_response>\n12:00\n</tool_response><|end_of_text|>\n"
        "<|start_of_role|>assistant<|end_of_role|>3 °C at noon.<|end_of_text|>\n"
        "<|start_of_role|>user<|end_of_role|>\n<tool_response>\nlate\n</tool_response><|end_of_text|>\n"
        "<|start_of_role|>assistant<|end_of_role|>"
    )


def test_content_as_list_of_parts(render):
    messages = [{"role": "user", "content": [{"type": "text", "text": "first"}, {"type": "text", "text": "second"}]}]
    assert render(messages) == DEFAULT_TURN + "<|start_of_role|>user<|end_of_role|>first\nsecond<|end_of_text|>\n"


def test_non_first_system_message_renders_in_place(render):
    messages = [
        {"role": "user", "content": "a"},
        {"role": "system", "content": "Now be formal."},
        {"role": "user", "content": "b"},
    ]
    assert render(messages) == (
        DEFAULT_TURN + "<|start_of_role|>user<|end_of_role|>a<|end_of_text|>\n"
        "<|start_of_role|>system<|end_of_role|>Now be formal.<|end_of_text|>\n"
        "<|start_of_role|>user<|end_of_role|>b<|end_of_text|>\n"
    )


def test_non_ascii_is_not_escaped(render):
    text = "Grüße aus Köln — 東京 🙂"
    out = render([{"role": "user", "content": text}], tools=[WEATHER], documents=DOCS[:1])
    assert text in out and "Météo actuelle" in out and "Zürich liegt" in out
    assert "\\u" not in out


def test_rendered_prompt_tokenizes_control_tags_as_single_ids(tiny_tokenizer):
    ids = tiny_tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True,
                                             tokenize=True, return_dict=True)["input_ids"]
    start = tiny_tokenizer.convert_tokens_to_ids(S)
    end_role = tiny_tokenizer.convert_tokens_to_ids(E)
    assert ids.count(start) == 3 and ids.count(end_role) == 3
    assert ids.count(tiny_tokenizer.eos_token_id) == 2
    assert ids[-1] == end_role
