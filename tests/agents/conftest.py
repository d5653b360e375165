"""Agent test fixtures: a small real collection (markdown, PDF, code) and scripted Granite agents.

The collection is ingested once per session with the real retrieval service and the
bundled embedder; agents are the real graph over ``ChatGranite(backend=ScriptedBackend(...))``
so every reply is Granite-format text read by the real parser.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.agents.agent_helpers import CODE, GUIDE, scripted_model
from tests.retrieval.retrieval_helpers import pdf_bytes

PDF_PAGES = ["Installation manual. Mount the router on a wall away from water.",
             "Troubleshooting. If the light stays red, the uplink cable is unplugged."]


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("corpus")
    (folder / "guide.md").write_text(GUIDE, encoding="utf-8")
    (folder / "minerals.py").write_text(CODE, encoding="utf-8")
    (folder / "manual.pdf").write_bytes(pdf_bytes(PDF_PAGES))
    return folder


@pytest.fixture(scope="session")
def collection_service(corpus, tmp_path_factory):
    """The real retrieval service with ``corpus`` ingested into collection "docs"."""
    from feldspar.compose import build_retrieval
    from feldspar.settings import load_settings

    home = tmp_path_factory.mktemp("agent-home")
    service = build_retrieval(load_settings(home=home, collection="docs", parse_timeout_s=600))  # slow shared CI boxes
    summary = service.ingest([corpus])
    assert summary.indexed == 3, summary
    yield service
    service.close()


@pytest.fixture(scope="session")
def search(collection_service):
    return lambda query, k: [hit.to_dict() for hit in collection_service.search(query, k)]


@pytest.fixture
def make_agent(search):
    """make_agent(replies, tools=(), threads=None, search=True, **config) -> (agent, backend)."""
    from feldspar.agents.configuration import AgentConfig
    from feldspar.agents.nodes import AgentDeps
    from feldspar.agents.runner import Agent
    from feldspar.agents.tools import run_tool

    def make(replies, tools=(), threads=None, with_search=True, context_window=8192, pack_documents=None, **config):
        model = scripted_model(replies, context_window=context_window)
        deps = AgentDeps(chat_model=model, config=AgentConfig(**config), search=search if with_search else None,
                         tools=list(tools), run_tool=lambda tool, args: run_tool(tool, args).to_dict(),
                         pack_documents=pack_documents, context_window=context_window,
                         count_tokens=lambda m, t, d: len(model.prompt_token_ids(m, t, d)))
        return Agent(deps, threads), model.backend

    return make
