"""The remote path against servers that behave like llama.cpp's, over real HTTP.

The stand-in (tests/agents/remote_server.py) with ``llama=True`` answers ``/props`` (slots
sharing one window), ``/tokenize``, ignores ``suffix`` and lists no window; ``usage=False``
drops usage; ``{"unfinished": …}`` ends a stream with ``[DONE]`` and no finish reason. Each
test checks one property of issue 21's remote items: batch and serve with a remote model,
the proxy's completions, interrupted answers, FIM, labelled estimates, the server's window.
"""

from __future__ import annotations

import json
import re

import pytest
from tests.agents.remote_server import FIM_IDS, StandIn, token_id

from feldspar.agents.errors import AgentError
from feldspar.agents.remote_backend import RemoteChatBackend
from feldspar.model.errors import ContextOverflowError

from tests.app.cli_runner import run_cli


@pytest.fixture(scope="module")
def llama():
    with StandIn(llama=True, slots=4, n_ctx=8192) as running:
        yield running


@pytest.fixture(scope="module")
def plain():
    with StandIn(usage=False) as running:
        yield running


def test_the_per_slot_window_comes_from_props(llama):
    backend = RemoteChatBackend(llama.base_url, "granite-test", max_concurrency=8).connect()
    assert backend.context_window == 2048 and backend.slots == 4 and backend.ignores_suffix
    assert backend.max_concurrency == 4  # batch workers beyond the server's slots would only queue there


def test_a_stream_that_ends_without_a_finish_reason_is_an_error(plain):
    backend = RemoteChatBackend(plain.base_url, "granite-test").connect()
    plain.script({"unfinished": "Half an ans"})
    stream = backend.stream_chat([{"role": "user", "content": "Hi"}])
    with pytest.raises(AgentError, match="without a finish reason") as caught:
        list(stream)
    assert caught.value.details.get("retryable") is True


def test_fim_on_a_server_that_ignores_suffix_sends_granites_fim_prompt_as_ids(llama):
    backend = RemoteChatBackend(llama.base_url, "granite-test").connect()
    llama.script("    return a + b")
    prefix, suffix = "def add(a, b):\n", "\n# <|fim_middle|> stays text"
    text = "".join(backend.stream_completion(prefix, suffix, max_new_tokens=8))
    sent = llama.requests[-1]
    assert text == "    return a + b" and "suffix" not in sent
    ids = sent["prompt"]
    assert ids[0] == FIM_IDS["<|fim_prefix|>"] and ids[-1] == FIM_IDS["<|fim_middle|>"]
    assert ids.count(FIM_IDS["<|fim_middle|>"]) == 1  # the control string inside the code went as text
    assert FIM_IDS["<|fim_suffix|>"] in ids and token_id("add") in ids


def test_fim_on_a_server_that_reads_suffix_sends_it(plain):
    backend = RemoteChatBackend(plain.base_url, "granite-test").connect()
    plain.script("x")
    list(backend.stream_completion("a = ", "\nprint(a)"))
    assert plain.requests[-1]["suffix"] == "\nprint(a)" and plain.requests[-1]["prompt"] == "a = "


def test_counts_without_usage_are_labelled_estimates(plain):
    backend = RemoteChatBackend(plain.base_url, "granite-test").connect()
    plain.script("Hello there.")
    result = backend.stream_chat([{"role": "user", "content": "Hi"}]).finish()
    assert result.estimated and result.prompt_tokens > 0
    exact = RemoteChatBackend(plain.base_url, "granite-test", tokenizer=lambda text: list(text.encode()),
                              prompt_ids=lambda messages, tools, documents: [1] * 1234).connect()
    plain.script("Hello there.")
    counted = exact.stream_chat([{"role": "user", "content": "Hi"}]).finish()
    assert not counted.estimated and counted.prompt_tokens == 1234  # the real template's count, not a guess


def test_compose_counts_with_the_checkpoints_own_template(plain, tmp_path, tiny_checkpoint):
    from feldspar.compose import build_remote_backend
    from feldspar.model.loader import load_tokenizer, resolve
    from feldspar.model.prompts import chat_token_ids
    from feldspar.settings import load_settings

    backend = build_remote_backend(load_settings(home=tmp_path, remote_url=plain.base_url,
                                                 remote_tokenizer=str(tiny_checkpoint)))
    tools = [{"type": "function", "function": {"name": "calc", "description": "math", "parameters": {"type": "object"}}}]
    documents = [{"doc_id": "1", "title": "a.md", "text": "Feldspar is a mineral."}]
    messages = [{"role": "user", "content": "What is feldspar?"}]
    expected = chat_token_ids(load_tokenizer(resolve(str(tiny_checkpoint))), messages, tools, documents)
    assert backend.prompt_token_ids(messages, tools, documents) == expected


def test_context_size_exceeded_is_an_overflow_with_advice(llama):
    backend = RemoteChatBackend(llama.base_url, "granite-test").connect()
    llama.script({"status": 400, "message": "the request exceeds the available context size, try increasing it",
                  "code": "exceed_context_size_error"})
    with pytest.raises(ContextOverflowError, match="per-request window") as caught:
        backend.stream_chat([{"role": "user", "content": "Hi"}])
    assert "shared by 4 slots" in str(caught.value) and "--" not in str(caught.value)  # the app words the fix
    from feldspar.errors import user_message

    assert re.search("fewer --workers.*bigger -c", user_message(caught.value))


# ---- the CLI and the server with a remote model -----------------------------------------------
def test_batch_with_a_remote_model_retries_an_interrupted_answer(plain, tmp_path, capsys, monkeypatch):
    questions = tmp_path / "q.jsonl"
    questions.write_text('{"id": "a", "question": "Hi?"}\n', encoding="utf-8")
    plain.script({"unfinished": "Hal"}, "A whole answer.")
    out = tmp_path / "out.jsonl"
    result = run_cli(["batch", str(questions), "--out", str(out), "--policy", "none", "--model", plain.spec(),
                      "--home", str(tmp_path), "--json"], capsys, monkeypatch)
    assert result.code == 0, result.err
    record = json.loads(out.read_text(encoding="utf-8"))
    assert record["answer"] == "A whole answer." and record["error"] is None


def test_batch_reports_an_answer_interrupted_every_time_as_an_error(plain, tmp_path, capsys, monkeypatch):
    questions = tmp_path / "q.jsonl"
    questions.write_text('{"id": "a", "question": "Hi?"}\n', encoding="utf-8")
    plain.script(*[{"unfinished": "Hal"}] * 3)
    monkeypatch.setenv("FELDSPAR_REMOTE_URL", plain.base_url)  # the environment names the server
    out = tmp_path / "o.jsonl"
    result = run_cli(["batch", str(questions), "--out", str(out), "--policy", "none", "--home", str(tmp_path)],
                     capsys, monkeypatch)
    assert result.code == 1 and "1 failed" in result.err and "without a finish reason" in result.err
    assert "without a finish reason" in json.loads(out.read_text(encoding="utf-8"))["error"]
    assert len(plain.requests) == 3  # asked three times


def test_ask_out_of_window_says_so_and_exits_1(tmp_path, capsys, monkeypatch):
    with StandIn(llama=True, slots=4, n_ctx=400) as small:  # 100 tokens a slot
        result = run_cli(["ask", "Hi " * 200, "--policy", "none", "--model", small.spec(), "--home", str(tmp_path)],
                         capsys, monkeypatch)
    assert result.code == 1 and "context window" in result.err and "Traceback" not in result.err


def test_serve_proxies_a_remote_model_given_as_model_with_completions(llama, tmp_path):
    import openai

    from feldspar.serve.server import build_server
    from feldspar.serve.run import serve_in_thread
    from feldspar.settings import load_settings

    app = build_server(load_settings(home=tmp_path), [llama.spec()], agent=False)
    with serve_in_thread(app) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="x")
        assert [m.id for m in client.models.list()] == ["granite-test"]
        llama.script("return 1")
        done = client.completions.create(model="granite-test", prompt="def one():\n    ", max_tokens=4)
        assert done.choices[0].text == "return 1" and done.choices[0].finish_reason == "stop"
        llama.script("Hello.")
        chat = client.chat.completions.create(model="granite-test", messages=[{"role": "user", "content": "Hi"}])
        assert chat.choices[0].message.content == "Hello."


def test_generate_labels_estimated_counts_in_json_and_text(plain, tmp_path, capsys, monkeypatch):
    plain.script("Hello there.", "Hello again.")
    result = run_cli(["generate", "Hi", "--model", plain.spec(), "--home", str(tmp_path), "--json"], capsys, monkeypatch)
    assert result.code == 0, result.err
    assert json.loads(result.out)["estimated"] is True
    shown = run_cli(["generate", "Hi", "--model", plain.spec(), "--home", str(tmp_path), "-v"], capsys, monkeypatch)
    assert shown.code == 0 and "(estimated" in shown.err
