"""What real OpenAI clients see from `feldspar serve`, over HTTP with the official ``openai`` client.

The agent is the real graph over a scripted Granite model and a fixed search (no store
needed: the properties here are the server's). Each test is one property of issue 21's
client items: the request's generation settings reach the agent's model calls and a cut
answer says ``length``; citations arrive as message ``annotations`` (streamed too) whose
links open the cited passage; a client's background task is answered by the plain model
without a thread; a random-weight model's content starts with its label; ``/v1/responses``
and over-window errors name what to use instead.
"""

from __future__ import annotations

import httpx
import openai
import pytest

from feldspar.model.results import RANDOM_CONTENT_LABEL

PASSAGE = {"path": "/srv/feldspar/private/guide.md", "page": None, "start": 12, "end": 96, "heading": "Reset",
           "score": 0.9, "text": "To reset the router, hold the recessed button for ten seconds.", "chunk_id": "c1",
           "collection": "manuals"}
ANSWER = "Hold the recessed button for ten seconds [1]. " + "It blinks amber afterwards. " * 20
TITLE_TASK = ("### Task:\nGenerate a concise, 3-5 word title with an emoji summarizing the chat history.\n"
              "### Chat History:\n<chat_history>\nUSER: How do I reset it?\n</chat_history>")


def reply(request):
    return '{"title": "Router reset"}' if "### Task:" in str(request["messages"][-1]["content"]) else ANSWER


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from feldspar.agents.chat_model import ChatGranite
    from feldspar.agents.configuration import AgentConfig
    from feldspar.agents.nodes import AgentDeps
    from feldspar.agents.runner import Agent
    from feldspar.agents.scripted import ScriptedBackend
    from feldspar.agents.threads import ThreadStore
    from feldspar.serve.endpoints import create_app
    from feldspar.serve.models import AgentModel, ServedModel
    from feldspar.serve.run import serve_in_thread

    scripted = ScriptedBackend([reply] * 200, name="scripted-granite")
    model = ChatGranite(backend=scripted)
    threads = ThreadStore(tmp_path_factory.mktemp("threads") / "threads.sqlite")

    def build(collection, pack):
        deps = AgentDeps(chat_model=model, config=AgentConfig(policy="always"), search=lambda q, k: [dict(PASSAGE)],
                         tools=[], run_tool=None, pack_documents=None, context_window=8192,
                         count_tokens=lambda m, t, d: len(model.prompt_token_ids(m, t, d)))
        return Agent(deps, threads)

    noisy = ScriptedBackend(["zq xv noise"] * 50, name="noisy")
    noisy.random_weights = True
    small = ScriptedBackend(["never"] * 5, name="small", context_window=40)
    app = create_app([AgentModel(build, scripted, "manuals"), ServedModel("noisy", noisy),
                      ServedModel("small", small)])
    with serve_in_thread(app) as url:
        yield {"url": url, "scripted": scripted, "noisy": noisy, "threads": threads}


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server["url"] + "/v1", api_key="unused", max_retries=0, timeout=120)


def user(text):
    return [{"role": "user", "content": text}]


# ---- 1. the request's settings reach the agent ------------------------------------------------
def test_the_agent_honours_max_tokens_and_sampling_and_says_length_when_cut(client, server):
    done = client.chat.completions.create(model="feldspar-agent", messages=user("How do I reset it?"), max_tokens=4,
                                          temperature=0.7, top_p=0.9, seed=3, stop=["zzz"])
    sent = server["scripted"].requests[-1]
    assert (sent["max_new_tokens"], sent["temperature"], sent["top_p"], sent["seed"]) == (4, 0.7, 0.9, 3)
    assert sent["stop"] == ["zzz"]
    assert done.choices[0].finish_reason == "length" and done.usage.completion_tokens <= 4
    whole = client.chat.completions.create(model="feldspar-agent", messages=user("And again?"),
                                           max_completion_tokens=400)
    assert server["scripted"].requests[-1]["max_new_tokens"] == 400 and whole.choices[0].finish_reason == "stop"


# ---- 2. citations as annotations ----------------------------------------------------------------
def test_citations_are_message_annotations_whose_links_open_the_passage(client, server):
    done = client.chat.completions.create(model="feldspar-agent", messages=user("How do I reset it?"))
    message = done.choices[0].message
    marks = [a.model_dump() for a in message.annotations]  # the client's own typed field
    assert [m["type"] for m in marks] == ["url_citation"]
    cited = marks[0]["url_citation"]
    assert cited["title"] == "[1] guide.md · chars 12-96 · Reset"
    assert message.content[cited["start_index"]:cited["end_index"]] == "[1]"
    assert "/srv/" not in str(marks)  # a file name, never the server's path
    opened = httpx.get(cited["url"])  # a browser click: no API key
    assert opened.status_code == 200 and "hold the recessed button" in opened.text and "guide.md" in opened.text
    assert done.model_extra["citations"][0]["doc_id"] == 1  # the extension field stays


def test_streamed_answers_carry_the_annotations_too(client):
    chunks = list(client.chat.completions.create(model="feldspar-agent", messages=user("Reset?"), stream=True))
    marks = [a for c in chunks if c.choices for a in (c.choices[0].delta.model_extra or {}).get("annotations") or []]
    assert len(marks) == 1 and marks[0]["url_citation"]["title"].startswith("[1] guide.md")


# ---- 3. background tasks -----------------------------------------------------------------------
def test_a_clients_title_task_is_answered_by_the_plain_model_without_a_thread(client, server):
    before = len(server["threads"].list())
    done = client.chat.completions.create(model="feldspar-agent", messages=user(TITLE_TASK))
    assert done.choices[0].message.content == '{"title": "Router reset"}'
    assert done.model_extra["feldspar"]["utility_task"] == "title_generation"
    assert len(server["threads"].list()) == before  # no thread stored
    assert server["scripted"].requests[-1]["documents"] is None  # no retrieval ran


def test_a_client_can_mark_a_task_with_a_header(client, server):
    before = len(server["threads"].list())
    marked = openai.OpenAI(base_url=server["url"] + "/v1", api_key="unused", max_retries=0,
                           default_headers={"X-Feldspar-Task": "tags_generation"})
    done = marked.chat.completions.create(model="feldspar-agent", messages=user("Tags for: router reset"))
    assert done.model_extra["feldspar"]["utility_task"] == "tags_generation"
    assert len(server["threads"].list()) == before


# ---- 4. the random-weights label in the content -------------------------------------------------
def test_random_weights_are_labelled_in_the_content_and_the_label_is_not_fed_back(client, server):
    done = client.chat.completions.create(model="noisy", messages=user("Hi"))
    assert done.choices[0].message.content == RANDOM_CONTENT_LABEL + "zq xv noise"
    streamed = "".join(c.choices[0].delta.content or "" for c in
                       client.chat.completions.create(model="noisy", messages=user("Hi"), stream=True) if c.choices)
    assert streamed.startswith(RANDOM_CONTENT_LABEL)
    history = [*user("Hi"), {"role": "assistant", "content": done.choices[0].message.content}, *user("More")]
    client.chat.completions.create(model="noisy", messages=history)
    assert server["noisy"].requests[-1]["messages"][1]["content"] == "zq xv noise"


# ---- 5. small gaps -------------------------------------------------------------------------------
def test_the_responses_api_answers_an_error_naming_chat_completions(client):
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.create(model="feldspar-agent", input="Hi")
    assert "/v1/chat/completions" in caught.value.body["message"]


def test_an_over_window_error_names_the_param_the_client_sent(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="small", messages=user("Hi"), max_tokens=64)
    assert caught.value.body["param"] == "max_tokens" and caught.value.body["code"] == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="small", messages=user("Hi " * 50))
    assert caught.value.body["param"] == "messages"


def test_langchain_openai_sees_the_cut_and_the_label(server):
    from langchain_openai import ChatOpenAI

    agent = ChatOpenAI(base_url=server["url"] + "/v1", api_key="unused", model="feldspar-agent", max_tokens=4,
                       max_retries=0)
    reply = agent.invoke("How do I reset it?")
    assert reply.response_metadata["finish_reason"] == "length"
    noisy = ChatOpenAI(base_url=server["url"] + "/v1", api_key="unused", model="noisy", max_retries=0)
    assert noisy.invoke("Hi").content.startswith(RANDOM_CONTENT_LABEL)


def test_citation_offsets_count_the_random_weights_label(tmp_path):
    """The label line is part of the content a client shows, so annotation offsets include it."""
    from feldspar.agents.chat_model import ChatGranite
    from feldspar.agents.configuration import AgentConfig
    from feldspar.agents.nodes import AgentDeps
    from feldspar.agents.runner import Agent
    from feldspar.agents.scripted import ScriptedBackend
    from feldspar.agents.threads import ThreadStore
    from feldspar.serve.endpoints import create_app
    from feldspar.serve.models import AgentModel
    from feldspar.serve.run import serve_in_thread

    scripted = ScriptedBackend([ANSWER] * 10, name="random-granite")
    scripted.random_weights = True
    model = ChatGranite(backend=scripted)
    threads = ThreadStore(tmp_path / "threads.sqlite")

    def build(collection, pack):
        deps = AgentDeps(chat_model=model, config=AgentConfig(policy="always"), search=lambda q, k: [dict(PASSAGE)],
                         tools=[], run_tool=None, pack_documents=None, context_window=8192,
                         count_tokens=lambda m, t, d: len(model.prompt_token_ids(m, t, d)))
        return Agent(deps, threads)

    with serve_in_thread(create_app([AgentModel(build, scripted, "manuals")])) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=120)
        message = client.chat.completions.create(model="feldspar-agent", messages=user("Reset?")).choices[0].message
        cited = message.annotations[0].url_citation
        assert message.content.startswith(RANDOM_CONTENT_LABEL)
        assert message.content[cited.start_index:cited.end_index] == "[1]"
        chunks = list(client.chat.completions.create(model="feldspar-agent", messages=user("Again?"), stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        marks = [a for c in chunks if c.choices for a in (c.choices[0].delta.model_extra or {}).get("annotations") or []]
        span = marks[0]["url_citation"]
        assert text.startswith(RANDOM_CONTENT_LABEL) and text[span["start_index"]:span["end_index"]] == "[1]"
