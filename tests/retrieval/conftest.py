"""Retrieval test fixtures: services on temp homes, and the fp32 embedder.

Services are built by the real composition root and given the session's shared
``embedder`` (tests/conftest.py: the real bundled all-MiniLM-L6-v2 in the CPU default
precision, int8) instead of loading their own. ``fp32_embedder`` is the sentence-transformers
path, for comparisons.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from feldspar.compose import build_retrieval
from feldspar.settings import load_settings
from feldspar.retrieval.embeddings import Embedder


@pytest.fixture(scope="session")
def fp32_embedder() -> Embedder:
    shared = Embedder(precision="fp32")
    shared.embed(["load the model once"])
    return shared


@pytest.fixture
def make_service(embedder, feldspar_home):
    made = []

    def make(home: Path | None = None, **overrides):
        settings = load_settings(home=home or feldspar_home, **overrides)
        service = build_retrieval(settings)
        if service.config.embedding_model == embedder.name:
            service.use_embedder(embedder)
        made.append(service)
        return service

    yield make
    for service in made:
        service.close()


@pytest.fixture
def service(make_service):
    return make_service()


