"""Random weights are labelled wherever their text is shown (text, --verbose, --json), from one
flag, ``Engine.random_weights``; and model commands keep library noise out of their output."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from feldspar.labels import RANDOM_LABEL

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def unmarked_checkpoint(tiny_checkpoint, tmp_path_factory) -> Path:
    """The same tiny weights without the random-weights marker file (as a trained checkpoint looks)."""
    from feldspar.model.checkpoint_random import MARKER_FILE

    copy = tmp_path_factory.mktemp("unmarked") / "model"
    shutil.copytree(tiny_checkpoint, copy)
    (copy / MARKER_FILE).unlink()
    return copy


def test_the_engine_flag_follows_the_marker_file(tiny_checkpoint, unmarked_checkpoint):
    from feldspar.model.engine import Engine, EngineOptions

    options = EngineOptions(device="cpu")
    assert Engine.load(str(tiny_checkpoint), options).random_weights is True
    assert Engine.load(str(unmarked_checkpoint), options).random_weights is False


def test_generate_labels_random_weights_in_every_mode(cli, tiny_checkpoint, unmarked_checkpoint):
    text = cli("generate", "Hi", "-m", str(tiny_checkpoint), "-n", "3")
    assert text.code == 0 and text.out.startswith(RANDOM_LABEL + "\n"), text.out
    verbose = cli("generate", "Hi", "-m", str(tiny_checkpoint), "-n", "3", "--verbose")
    assert "RANDOM WEIGHTS" in verbose.err
    assert json.loads(cli("generate", "Hi", "-m", str(tiny_checkpoint), "-n", "3", "--json").out)["random_weights"] is True
    plain = cli("generate", "Hi", "-m", str(unmarked_checkpoint), "-n", "3", "--verbose")
    assert "RANDOM" not in plain.out + plain.err
    assert json.loads(cli("generate", "Hi", "-m", str(unmarked_checkpoint), "-n", "3", "--json").out)["random_weights"] is False


def test_ask_labels_every_answer(cli, tiny_checkpoint):
    text = cli("ask", "One?", "Two?", "-m", str(tiny_checkpoint), "-n", "2", "--policy", "none", "--verbose")
    assert text.code == 0 and text.out.count(RANDOM_LABEL) == 2 and text.err.count("RANDOM WEIGHTS") == 2
    data = json.loads(cli("ask", "One?", "-m", str(tiny_checkpoint), "-n", "2", "--policy", "none", "--json").out)
    assert data["random_weights"] is True and data["answers"][0]["random_weights"] is True


def test_chat_labels_the_session_and_each_reply(cli, tiny_checkpoint, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("Hello\nAgain\n/exit\n"))
    result = cli("chat", "-m", str(tiny_checkpoint), "-n", "2", "--verbose")
    assert result.code == 0 and result.out.startswith(RANDOM_LABEL)
    assert result.out.count("(random weights) granite>") == 2 and result.err.count("RANDOM WEIGHTS") == 2


# ---- quiet output (real processes: library switches are process-wide) ----------------------
def _feldspar(*args: str, home: Path, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "FELDSPAR_HOME": str(home), "HF_HUB_OFFLINE": "1", "COLUMNS": "100", **env}
    for key in ("HF_HUB_DISABLE_PROGRESS_BARS", "TRANSFORMERS_VERBOSITY", "TRANSFORMERS_NO_ADVISORY_WARNINGS"):
        environment.pop(key, None)
    return subprocess.run([sys.executable, "-m", "feldspar", *args], cwd=REPO, env=environment, capture_output=True,
                          text=True, timeout=300)


def test_model_commands_hide_library_progress_bars_and_warnings_unless_verbose(tiny_checkpoint, tmp_path):
    from feldspar.model.presets import TINY_CONTEXT

    quiet = _feldspar("generate", "Hi", "-m", str(tiny_checkpoint), "-n", "2", home=tmp_path)
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
    loud = _feldspar("generate", "Hi", "-m", str(tiny_checkpoint), "-n", "2", "--verbose", home=tmp_path)
    assert "Loading weights" in loud.stderr
    long_prompt = tmp_path / "long.txt"
    long_prompt.write_text(" ".join(["word"] * (TINY_CONTEXT + 10)), encoding="utf-8")
    overflow = _feldspar("generate", "-f", str(long_prompt), "-m", str(tiny_checkpoint), "-n", "1", home=tmp_path)
    assert overflow.returncode == 1 and overflow.stderr.count("\n") == 1 and "context window" in overflow.stderr
    assert "indexing errors" not in overflow.stderr


def test_models_random_reports_once_without_progress_bars(tmp_path):
    result = _feldspar("models", "random", "h-tiny", str(tmp_path / "ckpt"), "--tiny", home=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("RANDOM WEIGHTS") == 1 and result.stdout.count(str(tmp_path / "ckpt")) == 2
    assert "Writing model shards" not in result.stderr and "it/s" not in result.stderr
