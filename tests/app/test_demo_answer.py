"""The demo's answer step is the agent's: the passages it retrieves from docs/ reach the rendered prompt."""

from __future__ import annotations

import json

from tests.agents.agent_helpers import scripted_model

from feldspar.cli.demo import QUESTION, answer_question
from feldspar.cli.retrieval import demo_retrieval
from feldspar.cli.root import console
from feldspar.compose import build_agent, build_retrieval
from feldspar.settings import load_settings


def test_the_demo_grounds_its_answer_in_the_retrieved_docs(tmp_path, capsys):
    settings = load_settings(home=tmp_path / "home", collection="docs")
    demo_retrieval(settings, console)  # the demo's own ingest of docs/ into collection "docs"
    top = build_retrieval(settings).search(QUESTION, k=1)[0]
    chat_model = scripted_model(["Feldspar resumes from saved state [1]."])
    agent = build_agent(settings, chat_model=chat_model, approve="never")
    answer = answer_question(agent)
    prompt = chat_model.backend.requests[0]["prompt"]
    assert json.dumps(top.text, ensure_ascii=False)[1:-1][:200] in prompt  # the passage, as the search response
    assert answer["sources"][0]["path"] == top.path
    shown = capsys.readouterr().out
    assert "Feldspar resumes from saved state" in shown and top.path in shown
