"""Threads of `feldspar-agent` are private to the client that made them (real HTTP, two clients).

The leak this guards against: clients such as Open WebUI resend the whole history without a
``thread_id``, and the server matched it to a thread by hashing it. Two clients whose first
exchange is identical (a "hi" with a deterministic reply) then shared one thread, and client B's
prompt held what client A said after it. Each test would have shown A's secret in B's prompt.
"""

from __future__ import annotations

import openai
import pytest


HELLO = "Hello! How can I help?"
SECRET = "my card number is 4111 1111 1111 1111"


def start(tmp_path_factory, api_key):
    from feldspar.agents.chat_model import ChatGranite
    from feldspar.agents.scripted import ScriptedBackend
    from feldspar.compose import build_runtime
    from feldspar.serve.endpoints import create_app
    from feldspar.serve.models import AgentModel
    from feldspar.serve.run import serve_in_thread
    from feldspar.settings import load_settings

    settings = load_settings(home=tmp_path_factory.mktemp("privacy-home"), collection="notes")
    scripted = ScriptedBackend([HELLO] * 200, name="scripted-granite")
    chat_model = ChatGranite(backend=scripted)
    agents = build_runtime(settings, chat_model=chat_model).agents(policy="none", approve="never").shared()
    agent = AgentModel(agents, scripted, default_collection="notes", id="agent")
    return scripted, serve_in_thread(create_app([agent], api_key=api_key))


@pytest.fixture(scope="module")
def open_server(tmp_path_factory):
    scripted, running = start(tmp_path_factory, None)
    with running as url:
        yield scripted, url


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory):
    scripted, running = start(tmp_path_factory, "key-of-a,key-of-b")
    with running as url:
        yield scripted, url


def client(url, key="unused", user=None):
    headers = {"X-OpenWebUI-User-Id": user} if user else None
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=120, default_headers=headers)


def say(who, history):
    reply = who.chat.completions.create(model="agent", messages=history)
    return reply.choices[0].message.content, reply.model_extra["feldspar"]["thread_id"]


def prompt_of_last(scripted) -> str:
    return " ".join(str(m.get("content")) for m in scripted.requests[-1]["messages"])


def identical_openings_then_a_secret(a, b, scripted):
    """A and B open identically; A tells a secret; B asks what it said. Returns B's prompt and the threads."""
    hi = [{"role": "user", "content": "hi"}]
    reply_a, thread_a = say(a, hi)
    reply_b, thread_b = say(b, hi)
    assert reply_a == reply_b == HELLO
    _, thread_a2 = say(a, [*hi, {"role": "assistant", "content": reply_a}, {"role": "user", "content": SECRET}])
    _, thread_b2 = say(b, [*hi, {"role": "assistant", "content": reply_b},
                           {"role": "user", "content": "what did I tell you before?"}])
    return prompt_of_last(scripted), (thread_a, thread_b, thread_a2, thread_b2)


def test_without_keys_two_clients_with_the_same_opening_never_share_a_thread(open_server):
    scripted, url = open_server
    prompt, (a1, b1, a2, b2) = identical_openings_then_a_secret(client(url), client(url), scripted)
    assert "4111" not in prompt and "what did I tell you before?" in prompt
    assert a2 != b2 and b2 != a1


def test_without_keys_a_thread_that_moved_on_is_not_continued_by_a_replayed_history(open_server):
    scripted, url = open_server
    a, b = client(url), client(url)
    opening = [{"role": "user", "content": "good morning"}]
    reply, thread = say(a, opening)
    history = [*opening, {"role": "assistant", "content": reply}]
    _, same = say(a, [*history, {"role": "user", "content": SECRET}])
    assert same == thread  # one client resending its history keeps its thread
    _, other = say(b, [*history, {"role": "user", "content": "what did I tell you before?"}])
    assert other != thread and "4111" not in prompt_of_last(scripted)


def test_with_keys_each_client_keeps_its_own_thread_and_sees_only_it(keyed_server):
    scripted, url = keyed_server
    a, b = client(url, "key-of-a"), client(url, "key-of-b")
    prompt, (a1, b1, a2, b2) = identical_openings_then_a_secret(a, b, scripted)
    assert "4111" not in prompt
    assert a1 == a2 and b1 == b2 and a1 != b1  # each keeps continuity, apart from the other


def test_with_one_key_a_forwarded_user_header_separates_users(keyed_server):
    scripted, url = keyed_server
    alice, bob = client(url, "key-of-a", user="alice"), client(url, "key-of-a", user="bob")
    prompt, (a1, b1, a2, b2) = identical_openings_then_a_secret(alice, bob, scripted)
    assert "4111" not in prompt and a1 == a2 and b1 == b2 and a1 != b1


def test_an_explicit_thread_id_of_another_principal_is_unknown(keyed_server):
    scripted, url = keyed_server
    a, b = client(url, "key-of-a"), client(url, "key-of-b")
    _, thread = say(a, [{"role": "user", "content": SECRET}])
    with pytest.raises(openai.NotFoundError) as info:
        b.chat.completions.create(model="agent", messages=[{"role": "user", "content": "and?"}],
                                  extra_body={"thread_id": thread})
    assert info.value.body["code"] == "unknown_thread" and info.value.body["param"] == "thread_id"
    follow = a.chat.completions.create(model="agent", messages=[{"role": "user", "content": "and?"}],
                                       extra_body={"thread_id": thread})
    assert follow.model_extra["feldspar"]["thread_id"] == thread and "4111" in prompt_of_last(scripted)
