"""Fixtures for the Documents and Packs page tests: a real LibraryServices on the test's data home.

Imported by the page test modules (``from tests.ui.library_fixtures import …``). The services
are the real ones from app/compose.py with the session's shared int8 ``embedder``
(tests/conftest.py); a ``Gate`` hook holds a background job at a named point so tests cancel mid-ingest without
sleeping. Pages are run with Streamlit's AppTest from a two-line script that renders one page.
"""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

WAIT_S = 300  # generous bound for slow shared machines; never a sleep
RUN_S = 120


class Gate:
    """A job hook: when armed, the first ``event`` blocks the job until ``release`` is set."""

    def __init__(self, event: str = "batch") -> None:
        self.event = event
        self.armed = False
        self.reached = threading.Event()
        self.release = threading.Event()

    def __call__(self, job, event: str) -> None:
        if self.armed and event == self.event and not self.reached.is_set():
            self.reached.set()
            assert self.release.wait(WAIT_S), "the test never released the job"


@pytest.fixture
def allowed(tmp_path: Path) -> Path:
    folder = tmp_path / "allowed"
    folder.mkdir()
    return folder


@pytest.fixture
def gate() -> Gate:
    return Gate()


@pytest.fixture
def make_library(feldspar_home, allowed, gate, embedder):
    """make_library(**settings) -> LibraryServices registered for the pages; closed after the test."""
    from feldspar.webui.library import build_library
    from feldspar.settings import load_settings
    from feldspar.ui.context import register_services

    made = []

    def make(engine=None, **overrides):
        values = dict(home=feldspar_home, ui_allowed_roots=[allowed], embed_batch_size=1,
                      ui_max_upload_bytes=4096, parse_timeout_s=600)
        values.update(overrides)
        settings = load_settings(**values)
        library = build_library(settings, engine=engine, hook=gate)
        library.retrieval.use_embedder(embedder)
        register_services(SimpleNamespace(settings=settings, library=library))
        made.append(library)
        return library

    yield make
    for library in made:
        library.close()


def write_corpus(folder: Path, count: int) -> list[str]:
    """``count`` small Markdown files of one chunk each; returns their names."""
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for index in range(count):
        name = f"note{index:02d}.md"
        (folder / name).write_text(f"# Note {index}\n\nFeldspar note number {index} about orthoclase.\n",
                                   encoding="utf-8")
        names.append(name)
    return names


def page_app(page: str):
    """An AppTest running one Feldspar page (the services are registered by ``make_library``)."""
    from streamlit.testing.v1 import AppTest

    return AppTest.from_string(f"from feldspar.ui import {page}\n{page}.render()\n", default_timeout=RUN_S)
