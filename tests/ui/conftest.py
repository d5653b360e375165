"""UI test fixtures: a small ingested collection, a tools module with a side-effecting tool,
scripted Granite replies, and UiServices built over them for Streamlit's AppTest.

The collection is ingested once per session with the real retrieval service; each test
gets its own copy of that data home, so threads never leak between tests. Chat models are
the real ChatGranite over the scripted backend (tests/agents/agent_helpers.py).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.agents.agent_helpers import CODE, GUIDE, SAVE_NOTE_TOOLS, scripted_model


def write_corpus(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "guide.md").write_text(GUIDE, encoding="utf-8")
    (folder / "minerals.py").write_text(CODE, encoding="utf-8")
    return folder


@pytest.fixture(scope="session")
def ui_corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("ui-corpus"))


@pytest.fixture(scope="session")
def ingested_home(ui_corpus, tmp_path_factory) -> Path:
    """A data home with ``ui_corpus`` ingested into collection "docs" (copied per test)."""
    from feldspar.compose import build_retrieval
    from feldspar.settings import load_settings

    home = tmp_path_factory.mktemp("ui-home")
    service = build_retrieval(load_settings(home=home, collection="docs", parse_timeout_s=600))
    summary = service.ingest([ui_corpus])
    assert summary.indexed == 2, summary
    service.close()
    return home


@pytest.fixture
def ui_home(ingested_home, tmp_path) -> Path:
    home = tmp_path / "home"
    shutil.copytree(ingested_home, home)
    return home


@pytest.fixture
def tools_module(tmp_path) -> Path:
    path = tmp_path / "tools" / "ui_tools.py"
    path.parent.mkdir()
    path.write_text(SAVE_NOTE_TOOLS, encoding="utf-8")
    return path


@pytest.fixture
def make_services(ui_home, tools_module):
    """make_services(replies=None, context_window=8192, **settings) -> UiServices over the copied home."""
    from feldspar.settings import load_settings
    from feldspar.webui.services import UiServices

    def make(replies=None, context_window=8192, engine=None, **overrides):
        settings = load_settings(home=ui_home, collection="docs", **overrides)
        chat_model = scripted_model(replies, context_window=context_window) if replies is not None else None
        return UiServices(settings, chat_model=chat_model, engine=engine, tools_module=tools_module)

    return make
