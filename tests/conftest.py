"""Shared test fixtures: an isolated data home for every test, offline hub, tiny checkpoints.

No test touches the user's data directory or the network. Tiny random-weight Granite
checkpoints are written once per session by the same code as `feldspar models random
--tiny` and loaded through the production loader.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def feldspar_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point FELDSPAR_HOME at a fresh temp dir and drop any user config for each test."""
    home = tmp_path / "feldspar-home"
    monkeypatch.setenv("FELDSPAR_HOME", str(home))
    monkeypatch.delenv("FELDSPAR_CONFIG", raising=False)
    for key in list(os.environ):
        if key.startswith("FELDSPAR_") and key not in ("FELDSPAR_HOME", "FELDSPAR_TEST_CHAT_TEMPLATE"):
            monkeypatch.delenv(key, raising=False)
    return home


# ---- model fixtures (catalog / tokenizer / tiny checkpoints) ---------------------------
