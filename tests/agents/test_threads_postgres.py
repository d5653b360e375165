"""Threads in a real PostgreSQL (started by the test): two agents share them; the CLI picks them by setting."""

from __future__ import annotations

import json
import uuid

import pytest
from tests.agents.agent_helpers import scripted_model
from tests.agents.postgres_server import SKIP_REASON, PostgresServer, binaries
from tests.agents.remote_server import StandIn, free_port

from feldspar.agents.configuration import AgentConfig
from feldspar.agents.errors import AgentError, UnknownThread
from feldspar.agents.nodes import AgentDeps
from feldspar.agents.runner import Agent
from feldspar.agents.threads import ThreadStore
from feldspar.errors import user_message

from tests.app.cli_runner import assert_one_error_line, run_cli


@pytest.fixture(scope="module")
def postgres():
    if binaries() is None:
        pytest.skip(SKIP_REASON)
    server = PostgresServer()
    yield server
    server.stop()


@pytest.fixture
def database(postgres) -> str:
    """A fresh database on the shared server: its URL."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres.url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return postgres.url.rsplit("/", 1)[0] + f"/{name}"


def agent_on(url: str, replies: list) -> tuple[Agent, object]:
    model = scripted_model(replies)
    deps = AgentDeps(chat_model=model, config=AgentConfig(policy="none"), context_window=8192,
                     count_tokens=lambda m, t, d: len(model.prompt_token_ids(m, t, d)))
    return Agent(deps, ThreadStore.postgres(url), meta={"model": "scripted"}), model.backend


def test_two_agents_share_threads_list_show_and_resume(database):
    first, _ = agent_on(database, ["Quartz is 7."])
    second, backend = agent_on(database, ["Mica is 2.5."])
    thread = first.ask("How hard is quartz?")["thread_id"]
    assert [(r["thread_id"], r["title"], r["turns"]) for r in second.threads.list()] == [(thread, "How hard is quartz?", 1)]
    answer = second.ask("And mica?", thread)
    assert answer["text"] == "Mica is 2.5." and "How hard is quartz?" in backend.requests[0]["prompt"]
    shown = first.threads.export(thread)
    assert [m["content"] for m in shown["messages"]] == ["How hard is quartz?", "Quartz is 7.", "And mica?", "Mica is 2.5."]
    assert shown["thread"]["turns"] == 2 and {s["node"] for s in shown["trace"]} == {"model", "finalize"}
    first.threads.rename(thread, "Hardness")
    assert second.threads.meta(thread)["title"] == "Hardness"
    second.threads.remove(thread)
    assert first.threads.list() == []
    with pytest.raises(UnknownThread) as info:
        first.threads.values(thread)
    assert "no thread" in user_message(info.value) and "feldspar threads list" in user_message(info.value)
    first.threads.close()
    second.threads.close()


def test_an_unreachable_database_is_one_clear_error_without_the_password():
    url = f"postgresql://feldspar:s3cret@127.0.0.1:{free_port()}/postgres"
    with pytest.raises(AgentError) as info:
        ThreadStore.postgres(url)
    message = user_message(info.value)
    assert "cannot connect to the thread database" in message and "s3cret" not in message
    assert "postgres_url" in message and "\n" not in message


def test_the_cli_keeps_threads_in_postgres_when_postgres_url_is_set(database, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FELDSPAR_POSTGRES_URL", database)
    with StandIn() as server:
        server.script("Two years.", "From the purchase date.")
        one, two = tmp_path / "laptop", tmp_path / "server"  # two data homes: only the database is shared
        asked = run_cli(["ask", "How long is the warranty?", "--policy", "none", "--model", server.spec(),
                         "--home", str(one), "--json"], capsys, monkeypatch)
        assert asked.code == 0, asked.err
        thread = json.loads(asked.out)["thread_id"]
        listed = json.loads(run_cli(["threads", "list", "--json", "--home", str(two)], capsys, monkeypatch).out)
        assert [(r["thread_id"], r["model"]) for r in listed] == [(thread, "granite-test")]
        again = run_cli(["ask", "From when?", "--thread", thread, "--policy", "none", "--model", server.spec(),
                         "--home", str(two), "--json"], capsys, monkeypatch)
        assert again.code == 0, again.err
        assert [m["content"] for m in server.requests[1]["messages"]][-3:] == [
            "How long is the warranty?", "Two years.", "From when?"]
    shown = json.loads(run_cli(["threads", "show", thread, "--json", "--home", str(one)], capsys, monkeypatch).out)
    assert [m["role"] for m in shown["messages"]].count("user") == 2
    assert not (one / "threads.sqlite").exists() and not (two / "threads.sqlite").exists()
    missing = run_cli(["threads", "show", "nope", "--home", str(one)], capsys, monkeypatch)
    assert_one_error_line(missing, 1, "no thread 'nope'")
