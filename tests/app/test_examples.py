"""Every script in examples/ runs: on the scripted model (no checkpoint) and on the tiny random checkpoint."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted(p for p in (Path(__file__).resolve().parents[2] / "examples").glob("*.py")
                  if not p.name.startswith("_"))
EXPECTED = {"ask_and_stream.py": "final answer event", "batch_questions.py": "second run: 4 skipped, 0 answered",
            "custom_graph.py": "Feldspar's own graph has nodes"}


def run_example(path: Path, home: Path, *extra: str) -> str:
    done = subprocess.run([sys.executable, str(path), "--home", str(home), *extra], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_every_example_is_listed():
    assert sorted(p.name for p in EXAMPLES) == sorted(EXPECTED)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_on_the_scripted_model(path, tmp_path):
    out = run_example(path, tmp_path)
    assert EXPECTED[path.name] in out and "RANDOM WEIGHTS" not in out


def test_examples_on_the_tiny_checkpoint(tiny_checkpoint, tmp_path):
    for path in EXAMPLES:
        out = run_example(path, tmp_path / path.stem, "--model", str(tiny_checkpoint))
        assert EXPECTED[path.name] in out and "RANDOM WEIGHTS" in out, (path.name, out)
