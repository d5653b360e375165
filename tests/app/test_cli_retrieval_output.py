"""Readable retrieval output as a user sees it in an 80-column terminal: the search layout,
file names with newlines, `--reasons` after an unchanged re-run, and no parser-library noise."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BROKEN_PDF = b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\nendobj\n"  # no xref, no %%EOF


def feldspar(*args: str, home: Path, columns: int = 80) -> subprocess.CompletedProcess:
    environment = {**os.environ, "FELDSPAR_HOME": str(home), "HF_HUB_OFFLINE": "1", "COLUMNS": str(columns)}
    return subprocess.run([sys.executable, "-m", "feldspar", *args], cwd=REPO, env=environment, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, Path, subprocess.CompletedProcess]:
    """A folder with a long markdown file, a name holding a newline, a broken PDF and a binary;
    ingested once into collection 'notes'."""
    root = tmp_path_factory.mktemp("corpus") / "notes"
    root.mkdir()
    body = " ".join(f"Obsidian is volcanic glass formed when lava cools quickly, sentence {i}." for i in range(12))
    (root / "a-long-folder-name" / "deeper").mkdir(parents=True)
    (root / "a-long-folder-name" / "deeper" / "obsidian-and-volcanic-glass.md").write_text(
        f"# Volcanic glass\n\n## Obsidian\n\n{body}\n", encoding="utf-8")
    (root / "odd\nname.txt").write_text("Quartz is piezoelectric.\n", encoding="utf-8")
    (root / "broken.pdf").write_bytes(BROKEN_PDF)
    (root / "noise.bin").write_bytes(b"\x00\x01")
    home = tmp_path_factory.mktemp("home")
    first = feldspar("ingest", str(root), "--collection", "notes", home=home)
    assert first.returncode == 0, first.stderr
    return root, home, first


def test_search_fits_80_columns_with_the_passage_on_its_own_line(corpus):
    _, home, _ = corpus
    result = feldspar("search", "obsidian cools quickly", "-k", "2", "--type", "md", "--collection", "notes", home=home)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert all(len(line) <= 80 and line == line.rstrip() for line in lines), result.stdout
    starts = [i for i, line in enumerate(lines) if re.match(r"^ \d\. ", line)]
    assert len(starts) == 2 and starts[0] == 0
    blocks = [lines[a:b] for a, b in zip(starts, starts[1:] + [len(lines)])]
    for block in blocks:
        assert block[0].endswith(".md") and block[0][4:] == "a-long-folder-name/deeper/obsidian-and-volcanic-glass.md"
        assert block[1].startswith("    chars ") and " · score " in block[1]
        assert len(block) >= 3 and all(line.startswith("    ") for line in block[2:])
    passages = [" ".join(line.strip() for line in block[2:]) for block in blocks]
    assert max(len(p) for p in passages) > 120  # a passage is not cut to a table cell
    assert any("Volcanic glass > Obsidian" in block[1] for block in blocks)


def test_a_newline_in_a_file_name_stays_on_one_table_row(corpus):
    _, home, _ = corpus
    table = feldspar("sources", "--collection", "notes", home=home, columns=200)
    assert table.returncode == 0, table.stderr
    rows = [line for line in table.stdout.splitlines() if "name.txt" in line]
    assert len(rows) == 1 and "odd\\nname.txt" in rows[0] and "indexed" in rows[0]
    hits = feldspar("search", "piezoelectric quartz", "-k", "1", "--collection", "notes", home=home)
    assert "odd\\nname.txt" in hits.stdout.splitlines()[0]
    listed = json.loads(feldspar("sources", "--collection", "notes", "--json", home=home).stdout)
    assert "odd\nname.txt" in {row["path"] for row in listed}  # JSON keeps the real name


def test_reasons_lists_skipped_and_failed_files_when_nothing_changed(corpus):
    root, home, first = corpus
    assert "2 file(s) not indexed; --reasons lists why" in first.stdout
    again = feldspar("ingest", str(root), "--collection", "notes", "--reasons", home=home, columns=200)
    assert again.returncode == 0, again.stderr
    assert "unchanged 4" in again.stdout
    assert "broken.pdf" in again.stdout and "failed" in again.stdout and "corrupt PDF" in again.stdout
    assert "noise.bin" in again.stdout and "unsupported type .bin" in again.stdout
    data = json.loads(feldspar("ingest", str(root), "--collection", "notes", "--json", home=home).stdout)
    assert sorted(row["path"] for row in data["not_indexed"]) == ["broken.pdf", "noise.bin"]


def test_parser_library_warnings_stay_out_of_ingest_output_unless_verbose(corpus, tmp_path):
    root, _, first = corpus
    assert "EOF marker" not in first.stdout + first.stderr
    verbose = feldspar("ingest", str(root), "--collection", "notes", "--verbose", home=tmp_path / "home")
    assert verbose.returncode == 0 and "EOF marker not found" in verbose.stderr
