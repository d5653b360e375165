"""The `feldspar-agent` model of `feldspar serve`: the agent graph over an ingested collection,
answered through the OpenAI API with citations in the ``citations`` extension field.

The collection is ingested once per module with the real retrieval service; one agent is
the real graph over a scripted Granite model (deterministic cited answers), the other runs
on the tiny random checkpoint through app/compose.py (wiring and random-weights marking).
"""

from __future__ import annotations

import openai
import pytest

from tests.agents.agent_helpers import GUIDE

NOTES = "Quartz has Mohs hardness 7; feldspar 6; mica 2.5. Granite is mostly feldspar and quartz.\n"
ANSWER = "Hold the recessed button for ten seconds [1]."


@pytest.fixture(scope="module")
def settings(tmp_path_factory, tiny_checkpoint):
    from feldspar.compose import build_retrieval
    from feldspar.settings import load_settings

    corpus = tmp_path_factory.mktemp("serve-corpus")
    (corpus / "guide.md").write_text(GUIDE, encoding="utf-8")
    (corpus / "minerals.txt").write_text(NOTES, encoding="utf-8")
    settings = load_settings(home=tmp_path_factory.mktemp("serve-agent-home"), collection="manuals",
                             model=str(tiny_checkpoint), device="cpu", dtype="float32", max_new_tokens=4,
                             parse_timeout_s=600)
    service = build_retrieval(settings)
    assert service.ingest([corpus]).indexed == 2
    service.close()
    return settings


@pytest.fixture(scope="module")
def server(settings):
    from feldspar.agents.chat_model import ChatGranite
    from feldspar.agents.scripted import ScriptedBackend
    from feldspar.compose import build_runtime
    from feldspar.serve.server import build_server
    from feldspar.serve.models import AgentModel
    from feldspar.serve.run import serve_in_thread

    scripted = ScriptedBackend([ANSWER] * 50, name="scripted-granite")
    chat_model = ChatGranite(backend=scripted)

    runtime = build_runtime(settings.model_copy(update={"max_new_tokens": 256}), chat_model=chat_model)
    scripted_agent = AgentModel(runtime.agents(approve="never").shared(), scripted, default_collection="manuals",
                                id="scripted-agent")
    app = build_server(settings, extra_models=[scripted_agent])  # + the tiny model and its feldspar-agent
    with serve_in_thread(app) as url:
        yield {"url": url, "scripted": scripted}


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server["url"] + "/v1", api_key="unused", max_retries=0, timeout=300)


def ask(client, question, model="scripted-agent", **extra):
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": question}],
                                          extra_body=extra or None)


def test_the_agent_answers_with_citations_to_ingested_files(client, server):
    reply = ask(client, "How do I reset the router?")
    assert reply.choices[0].message.content == ANSWER
    assert reply.choices[0].finish_reason == "stop"
    (citation,) = reply.model_extra["citations"]
    assert citation["doc_id"] == 1 and citation["path"].endswith("guide.md")
    assert "recessed button" in citation["text"] and citation["start"] < citation["end"]
    extension = reply.model_extra["feldspar"]
    assert extension["collection"] == "manuals" and extension["thread_id"] and extension["random_weights"] is False
    prompt = server["scripted"].requests[-1]["prompt"]
    assert "recessed button" in prompt  # the passages reached the model
    assert reply.usage.prompt_tokens == server["scripted"].requests[-1]["prompt_tokens"]


def test_the_agent_streams_and_continues_a_thread(client, server):
    chunks = list(client.chat.completions.create(model="scripted-agent", stream=True,
                                                 messages=[{"role": "user", "content": "How long is the warranty?"}]))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ANSWER
    last = [c for c in chunks if c.choices and c.choices[0].finish_reason][-1]
    thread_id = last.model_extra["feldspar"]["thread_id"]
    assert last.model_extra["citations"][0]["doc_id"] == 1
    follow = ask(client, "And for the modem?", thread_id=thread_id)
    assert follow.model_extra["feldspar"]["thread_id"] == thread_id
    sent = [m["content"] for m in server["scripted"].requests[-1]["messages"] if m["role"] == "user"]
    assert "How long is the warranty?" in sent and "And for the modem?" in sent


def test_a_client_resending_the_whole_conversation_continues_its_thread(client, server):
    """Open WebUI and most chat clients send the full history and no thread_id on every turn."""
    system = {"role": "system", "content": "Be brief."}
    first = client.chat.completions.create(model="scripted-agent", messages=[
        system, {"role": "user", "content": "Where is the reset button?"}])
    thread_id = first.model_extra["feldspar"]["thread_id"]
    history = [system, {"role": "user", "content": "Where is the reset button?"},
               {"role": "assistant", "content": first.choices[0].message.content + "\n"},  # clients trim or add space
               {"role": "user", "content": "And how long do I hold it?"}]
    follow = client.chat.completions.create(model="scripted-agent", messages=history)
    assert follow.model_extra["feldspar"]["thread_id"] == thread_id
    sent = [m["content"] for m in server["scripted"].requests[-1]["messages"] if m["role"] == "user"]
    assert sent[-2:] == ["Where is the reset button?", "And how long do I hold it?"]  # one thread, both turns
    edited = [*history[:2], {"role": "assistant", "content": "Something I never said."}, history[3]]
    other = client.chat.completions.create(model="scripted-agent", messages=edited)
    assert other.model_extra["feldspar"]["thread_id"] != thread_id  # an unknown history starts afresh


def test_the_agent_reports_unknown_collections_and_threads(client, settings):
    with pytest.raises(openai.NotFoundError) as info:
        ask(client, "Hi?", collection="nowhere")
    assert info.value.body["code"] == "unknown_collection" and "feldspar ingest" in info.value.body["message"]
    with pytest.raises(openai.NotFoundError) as info:
        ask(client, "Hi?", thread_id="0123456789ab")
    assert info.value.body["code"] == "unknown_thread"
    assert str(settings.home) not in info.value.body["message"]  # no server path in an error
    with pytest.raises(openai.BadRequestError):
        ask(client, "Hi?", collection="manuals", pack="p")
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model="scripted-agent", prompt="hi")
    assert info.value.body["code"] == "unsupported_model"


def test_a_bad_pack_answers_like_a_bad_collection(client):
    with pytest.raises(openai.NotFoundError) as info:
        ask(client, "Hi?", model="feldspar-agent", pack="nopack")
    assert info.value.body["code"] == "unknown_pack" and info.value.body["param"] == "pack"
    with pytest.raises(openai.BadRequestError) as info:
        ask(client, "Hi?", model="feldspar-agent", pack="bad name!")
    assert info.value.body["code"] == "invalid_pack_name" and info.value.body["param"] == "pack"


def test_feldspar_agent_over_the_tiny_model_is_marked_random(client):
    models = {m.id: m.model_extra for m in client.models.list()}
    assert models["feldspar-agent"]["random_weights"] is True
    assert models["feldspar-agent"]["agent"] == {"collection": "manuals", "pack": None}
    reply = ask(client, "How do I reset the router?", model="feldspar-agent")
    assert reply.system_fingerprint == "feldspar-random-weights"
    assert reply.choices[0].message.content.startswith("[RANDOM WEIGHTS")  # what a chat client displays
    assert reply.model_extra["feldspar"]["random_weights"] is True
    assert isinstance(reply.model_extra["citations"], list)
    assert reply.usage.prompt_tokens > 0 and reply.model_extra["feldspar"]["model_calls"] >= 1
