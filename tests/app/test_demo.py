"""`feldspar demo` leads somewhere: an existing download command when no checkpoint is at hand,
where the data went, how to go on without weights or with one's own folder; and the README's
commands that use the demo's collection work after it as written."""

from __future__ import annotations

import importlib.metadata
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def feldspar(*args: str, home: Path, hf_home: Path) -> subprocess.CompletedProcess:
    environment = {**os.environ, "FELDSPAR_HOME": str(home), "HF_HUB_OFFLINE": "1", "HF_HOME": str(hf_home),
                   "COLUMNS": "120"}
    return subprocess.run([sys.executable, "-m", "feldspar", *args], cwd=REPO, env=environment, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """The demo with an empty Hugging Face cache, offline: no checkpoint can be loaded."""
    home, hf_home = tmp_path_factory.mktemp("home"), tmp_path_factory.mktemp("hf")
    result = feldspar("demo", home=home, hf_home=hf_home)
    assert result.returncode == 0, result.stderr
    return result, home, hf_home


def test_the_no_checkpoint_line_names_a_command_the_pinned_hub_ships(demo_run):
    result, _, _ = demo_run
    assert "No Granite checkpoint could be loaded" in result.stdout
    command = re.search(r"`(\S+) download ibm-granite/granite-4\.0-h-1b`", " ".join(result.stdout.split()))
    assert command is not None, result.stdout
    scripts = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="console_scripts")}
    assert scripts.get(command.group(1), "").startswith("huggingface_hub"), (command.group(1), sorted(scripts))


def test_the_demo_ends_with_what_to_do_next(demo_run):
    result, home, _ = demo_run
    tail = result.stdout[result.stdout.index("What next"):]
    flat = " ".join(tail.split())
    assert str(home) in flat and "collection 'docs'" in flat
    assert "feldspar models random h-1b ./h-1b-random --tiny" in flat and "RANDOM WEIGHTS" in flat
    assert "feldspar chat -m ./h-1b-random" in flat
    assert "feldspar ingest ~/notes --collection notes" in flat and 'feldspar ask --pack notes "your question"' in flat
    assert "feldspar eval retrieval docs/eval/docs_questions.jsonl --collection docs" in flat
    assert "feldspar ui --collection docs" in flat and "feldspar serve --collection docs" in flat


def _readme_commands(prefix: str) -> list[str]:
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    return [line.split("#")[0].strip() for line in lines if line.strip().startswith(prefix)]


def test_the_readme_eval_command_works_after_the_demo_as_written(demo_run):
    _, home, hf_home = demo_run
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert ". .venv/bin/activate" in readme  # `feldspar` is on PATH for the commands that follow
    commands = _readme_commands("feldspar eval retrieval")
    assert commands == ["feldspar eval retrieval docs/eval/docs_questions.jsonl --collection docs"]
    result = feldspar(*shlex.split(commands[0])[1:], home=home, hf_home=hf_home)
    assert result.returncode == 0, result.stderr
    assert "recall@5" in result.stdout
