"""The runtime (app/runtime.py): one engine per Settings for every agent, chat model and front end.

Model loads are counted where they really happen: every call of transformers'
``AutoModelForCausalLM.from_pretrained`` (the tiny random checkpoint, really loaded) is recorded
before it runs. The runtime, the server, the CLI and the Python API each load it once however
many agents (collections, options, calling threads) and chat requests they serve. Local vs remote
is decided by compose.build_runtime once: a remote runtime's agents share its one connected
backend and nothing is loaded here.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import httpx
import pytest

from tests.app.cli_runner import run_cli

ASK = {"policy": "none", "approve": "never"}


@pytest.fixture
def loads(monkeypatch):
    """The sources of every model load, as they happen (the real load runs)."""
    from transformers import AutoModelForCausalLM

    real = AutoModelForCausalLM.from_pretrained.__func__
    seen: list[str] = []

    def counting(cls, source, *args, **kwargs):
        seen.append(str(source))
        return real(cls, source, *args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", classmethod(counting))
    return seen


@pytest.fixture
def settings(tiny_checkpoint):
    from feldspar.settings import load_settings

    return load_settings(model=str(tiny_checkpoint), device="cpu", dtype="float32", max_new_tokens=4,
                         agent_policy="none")


def engine_of(agent):
    return agent.deps.chat_model.backend.engine


def test_the_runtime_loads_the_engine_once_for_every_agent_and_chat_model(settings, loads):
    from feldspar.compose import build_runtime

    runtime = build_runtime(settings)
    assert loads == [] and runtime.remote is None  # nothing is loaded before a part needs it
    first, other = runtime.agent(**ASK), runtime.agent("elsewhere", **ASK)
    recompute = runtime.agent(**ASK, no_reuse=True)
    first.ask("Hi?")
    other.ask("Hello?")
    recompute.ask("Hey?")
    assert runtime.agent(**ASK) is first and len({id(first), id(other), id(recompute)}) == 3
    engine = runtime.engine()
    assert {id(engine_of(a)) for a in (first, other, recompute)} == {id(engine)}
    assert first.deps.chat_model is other.deps.chat_model is runtime.chat_model()  # same generation settings
    assert recompute.deps.chat_model is not first.deps.chat_model and recompute.deps.chat_model.reuse is False
    assert runtime.generator() is engine and runtime.chat_model().backend is runtime.backend()
    assert loads == [str(settings.model)]


def test_each_calling_thread_gets_its_own_agent_over_the_one_engine(settings, loads):
    from feldspar.compose import build_runtime

    view = build_runtime(settings).agents(**ASK)
    here, there = view(None, None), []
    worker = threading.Thread(target=lambda: there.append(view(None, None)))
    worker.start()
    worker.join()
    assert view(None, None) is here and there[0] is not here
    assert there[0].deps.chat_model is here.deps.chat_model and view.max_workers() == 1
    assert len(loads) == 1


def test_the_python_api_holds_one_runtime(settings, loads):
    from feldspar import Feldspar

    fs = Feldspar(settings, **ASK)
    fs.ask("Hi?")
    fs.ask("Other?", collection="elsewhere")
    fs.generate("yes or no?", choice=["yes", "no"])
    assert fs.chat_model is fs.agent.deps.chat_model and engine_of(fs.agent) is fs.engine is fs.runtime.engine()
    assert engine_of(fs.agents("elsewhere", None)) is fs.engine
    assert len(loads) == 1


def test_the_server_serves_the_model_and_its_agent_from_one_runtime(settings, loads):
    from feldspar.serve.run import serve_in_thread
    from feldspar.serve.server import build_server

    app = build_server(settings, queue=2)
    models = app.state.feldspar.models
    agent_model = models["feldspar-agent"]
    (model_id,) = [key for key in models if key != "feldspar-agent"]
    with serve_in_thread(app) as url:
        for model in (model_id, "feldspar-agent", "feldspar-agent", model_id):
            reply = httpx.post(f"{url}/v1/chat/completions", timeout=120,
                               json={"model": model, "messages": [{"role": "user", "content": "Hi?"}]})
            assert reply.status_code == 200, reply.text
    agent = agent_model.cached((settings.collection, None))
    assert agent is not None and agent_model.agents.runtime.loaded_engine is models[model_id].engine
    assert engine_of(agent) is models[model_id].engine
    assert len(loads) == 1


def test_the_cli_loads_the_model_once_for_several_questions_and_collections(settings, loads, tmp_path, capsys,
                                                                            monkeypatch):
    flags = ["--model", settings.model, "--device", "cpu", "--dtype", "float32", "--max-new-tokens", "4"]
    asked = run_cli(["ask", "One?", "Two?", "--policy", "none", "--json", *flags], capsys, monkeypatch)
    assert asked.code == 0, asked.err
    assert len(json.loads(asked.out)["answers"]) == 2 and len(loads) == 1
    questions = tmp_path / "q.jsonl"
    questions.write_text("".join(json.dumps({"id": str(i), "question": "Hi?", "collection": name}) + "\n"
                                 for i, name in enumerate(["one", "two", "one"])), encoding="utf-8")
    batch = run_cli(["batch", str(questions), "--out", str(tmp_path / "a.jsonl"), "--policy", "none", "--json",
                     *flags], capsys, monkeypatch)
    assert batch.code == 0, batch.err
    assert json.loads(batch.out)["answered"] == 3  # three questions, two collections: two agents
    assert len(loads) == 2  # each command holds a runtime of its own: one load each


# ---- local or remote: decided once, by compose --------------------------------------------------
@pytest.fixture
def remote_url():
    from feldspar.agents.scripted import ScriptedBackend
    from feldspar.serve.endpoints import create_app
    from feldspar.serve.models import ServedModel
    from feldspar.serve.run import serve_in_thread

    scripted = ScriptedBackend(["Remote answer."] * 20, name="granite-remote")
    with serve_in_thread(create_app([ServedModel("granite-remote", scripted)])) as url:
        yield url + "/v1"


def test_a_remote_runtime_shares_one_connected_backend_and_loads_nothing(remote_url, loads):
    from feldspar.compose import build_runtime
    from feldspar.remote_engine import RemoteEngine
    from feldspar.settings import SettingsError, load_settings

    runtime = build_runtime(load_settings(remote_url=remote_url, agent_policy="none"))
    assert runtime.remote == (remote_url, "")
    first, other = runtime.agent(**ASK), runtime.agent("elsewhere", **ASK)
    assert first.ask("Hi?")["text"] == other.ask("Hi?")["text"] == "Remote answer."
    assert first.deps.chat_model.backend is other.deps.chat_model.backend is runtime.backend()
    assert runtime.backend().name == "granite-remote" and runtime.local_engine() is None
    generator = runtime.generator()
    assert isinstance(generator, RemoteEngine) and generator.backend is runtime.backend()
    with pytest.raises(SettingsError, match="is a remote server"):
        runtime.agent(pack="some-pack", **ASK)  # a pack's state lives in a local engine: refused, not loaded
    spec = build_runtime(load_settings(model=f"openai:{remote_url}#granite-remote"))
    assert spec.remote == (remote_url, "granite-remote") and spec.agent(**ASK).ask("Hi?")["text"] == "Remote answer."
    with pytest.raises(SettingsError, match="is a remote server"):
        spec.engine()  # packs, prompts and benchmarks need the model here
    assert loads == []


def test_the_decision_follows_the_model_named_and_the_parts_given(tiny_checkpoint, remote_url):
    from feldspar.agents.chat_model import ChatGranite
    from feldspar.agents.scripted import ScriptedBackend
    from feldspar.compose import build_runtime
    from feldspar.settings import load_settings

    with_remote = load_settings(remote_url=remote_url)
    assert build_runtime(with_remote).remote == (remote_url, "")
    assert build_runtime(with_remote, str(tiny_checkpoint)).remote is None  # `serve --model PATH` runs it here
    assert build_runtime(with_remote, f"openai:{remote_url}#granite-remote").remote == (remote_url, "granite-remote")
    scripted = ChatGranite(backend=ScriptedBackend(["x"]))
    given = build_runtime(with_remote, chat_model=scripted)
    assert given.remote is None and given.chat_model() is scripted and given.backend() is scripted.backend
    assert build_runtime(load_settings()).remote is None  # the default stays local
