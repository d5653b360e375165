"""UI test fixtures: a small ingested collection, a tools module with a side-effecting tool,
scripted Granite replies, and UiServices built over them for Streamlit's AppTest.

The collection is ingested once per session with the real retrieval service; each test
gets its own copy of that data home, so threads never leak between tests. Chat models are
the real ChatGranite over the scripted backend (tests/agents/agent_helpers.py).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "agents"))  # agent_helpers
sys.path.insert(0, str(Path(__file__).resolve().parent))  # ui_helpers

from agent_helpers import scripted_model  # noqa: E402

GUIDE = """# Router guide

## Reset

To reset the Feldspar router, hold the recessed button for ten seconds until the light blinks amber.

## Warranty

The warranty covers hardware faults for two years from purchase.
"""
CODE = '''def hardness(mineral):
    """Mohs hardness of a few minerals."""
    return {"quartz": 7, "feldspar": 6, "mica": 2.5}[mineral]
'''
TOOLS = '''"""Test tools: one side-effecting tool that appends a note to a file next to this module."""
from pathlib import Path

from feldspar.agents.tools import feldspar_tool

NOTES = Path(__file__).with_name("notes.txt")


@feldspar_tool(side_effects=True)
def save_note(text: str) -> str:
    """Save a note for the user (writes a file)."""
    with NOTES.open("a", encoding="utf-8") as out:
        out.write(text + "\\n")
    return "saved"
'''


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
    path.write_text(TOOLS, encoding="utf-8")
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
