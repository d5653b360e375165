"""Bad bytes on the command line or in an input file: one error line, no traceback (real subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def feldspar(*args: str | bytes) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    return subprocess.run([sys.executable, "-m", "feldspar", *args], cwd=REPO, env=env, capture_output=True,
                          timeout=300)


def one_error_line(done: subprocess.CompletedProcess, needle: str) -> str:
    lines = [line for line in done.stderr.decode("utf-8", "replace").splitlines() if line.strip()]
    assert done.returncode != 0 and "Traceback" not in done.stderr.decode("utf-8", "replace"), done.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], lines
    return lines[0]


def test_a_documents_file_with_an_unpaired_surrogate_is_one_line(tiny_checkpoint, tmp_path):
    docs = tmp_path / "docs.json"
    docs.write_text('[{"title": "ok", "text": "fine"}, {"title": "bad", "text": "x\\ud800y"}]', encoding="utf-8")
    line = one_error_line(feldspar("generate", "hi", "-m", str(tiny_checkpoint), "--documents", str(docs)),
                          "unpaired surrogate")
    assert "item 2" in line and "docs.json" in line


def test_a_prompt_argument_that_is_not_utf8_is_one_line(tiny_checkpoint):
    done = feldspar("generate", b"caf\xe9", "-m", str(tiny_checkpoint), "-n", "2")  # Latin-1 bytes in argv
    one_error_line(done, "unpaired surrogate")


def test_fim_code_that_is_not_utf8_is_one_line(tiny_base_checkpoint):
    done = feldspar("generate", "-m", str(tiny_base_checkpoint), "--fim-prefix", b"x = \xff", "--fim-suffix", "", "-n", "1")
    one_error_line(done, "prompt holds an unpaired surrogate")


def test_a_question_that_is_not_utf8_is_one_line_and_stores_nothing(tiny_checkpoint, tmp_path):
    done = feldspar("ask", b"caf\xe9?", "-m", str(tiny_checkpoint), "-n", "2", "--policy", "none",
                    "--home", str(tmp_path / "home"))
    one_error_line(done, "question holds an unpaired surrogate")
