"""Retrieval test fixtures: one shared embedder and services on temp homes.

The embedder is the real bundled all-MiniLM-L6-v2 in the CPU default precision (int8,
built once into the user cache folder and reused), loaded once per session; services
are built by the real composition root and given that embedder instead of loading
their own. ``fp32_embedder`` is the sentence-transformers path, for comparisons.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))  # retrieval_helpers, hostile_parsers

from feldspar.compose import build_retrieval  # noqa: E402
from feldspar.settings import load_settings  # noqa: E402
from feldspar.retrieval.embeddings import Embedder  # noqa: E402


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    shared = Embedder(precision="int8", cache_dir=load_settings().embedders_cache)
    shared.embed(["load the model once"])
    return shared


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


