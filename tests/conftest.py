"""Shared test fixtures: an isolated data home for every test, offline hub, tiny checkpoints,
the in-process CLI and the shared embedder.

No test touches the user's data directory or the network. Tiny random-weight Granite
checkpoints are written once per session by the same code as `feldspar models random
--tiny` and loaded through the production loader.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.app.cli_runner import run_cli
from tests.skip_summary import pytest_terminal_summary  # noqa: F401 - a hook: the last line names skipped tests

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# FELDSPAR_LOGIT_DIFF_LOG: tests/model/logit_reference.py logs compared logit differences there.
KEPT_ENV = ("FELDSPAR_HOME", "FELDSPAR_TEST_CHAT_TEMPLATE", "FELDSPAR_LOGIT_DIFF_LOG")


@pytest.fixture(autouse=True)
def feldspar_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point FELDSPAR_HOME at a fresh temp dir, drop any user config and run the decode step eager."""
    home = tmp_path / "feldspar-home"
    monkeypatch.setenv("FELDSPAR_HOME", str(home))
    monkeypatch.delenv("FELDSPAR_CONFIG", raising=False)
    for key in list(os.environ):
        if key.startswith("FELDSPAR_") and key not in KEPT_ENV:
            monkeypatch.delenv(key, raising=False)
    # the decode step runs eager in tests (one compile per tiny shape would cost minutes);
    # tests/model/test_decode_compile.py compiles it, and tests compile_choice's "auto"
    monkeypatch.setenv("FELDSPAR_COMPILE", "off")
    return home


# ---- model fixtures (catalog / tokenizer / tiny checkpoints) ---------------------------


def _fixture_chat_template() -> str | None:
    """Text of the file named by FELDSPAR_TEST_CHAT_TEMPLATE, else None (bundled template)."""
    path = os.environ.get("FELDSPAR_TEST_CHAT_TEMPLATE")
    return Path(path).read_text(encoding="utf-8") if path else None


def _tiny(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    from feldspar.model.checkpoint_random import write_random_checkpoint

    out = tmp_path_factory.mktemp(f"tiny-{name}")
    return write_random_checkpoint(name, out, tiny=True, seed=0, chat_template=_fixture_chat_template())


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny random h-tiny instruct: MoE hybrid with Mamba2 + attention + experts, chat template."""
    return _tiny(tmp_path_factory, "granite-4.0-h-tiny")


@pytest.fixture(scope="session")
def tiny_dense_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny random 350m instruct: dense, all attention, RoPE."""
    return _tiny(tmp_path_factory, "granite-4.0-350m")


@pytest.fixture(scope="session")
def tiny_base_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny random h-350m-base: hybrid, no chat template."""
    return _tiny(tmp_path_factory, "granite-4.0-h-350m-base")


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_checkpoint: Path):
    """The tokenizer of ``tiny_checkpoint``, loaded the way the app loads one."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_checkpoint)


@pytest.fixture(scope="session")
def tiny_model(tiny_checkpoint: Path):
    """The model of ``tiny_checkpoint`` (the sensitive miniature), loaded by the production loader.

    Shared by the whole session: tests must not change its weights or config (mutation tests
    patch functions, never the model).
    """
    from feldspar.model.loader import load_checkpoint

    model, _tokenizer, _resolved = load_checkpoint(str(tiny_checkpoint), "cpu", "float32")
    return model


# ---- shared by several folders -----------------------------------------------------------


@pytest.fixture
def cli(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch):
    """``cli(*args) -> CliResult``: the real `feldspar` entry point in-process (tests/app/cli_runner.py)."""
    return lambda *args: run_cli(list(args), capsys, monkeypatch)


@pytest.fixture(scope="session")
def embedder():
    """The bundled embedder in the CPU default precision (int8, built once into the user cache), loaded once."""
    from feldspar.retrieval.embeddings import Embedder
    from feldspar.settings import load_settings

    shared = Embedder(precision="int8", cache_dir=load_settings().embedders_cache)
    shared.embed(["load the model once"])
    return shared
