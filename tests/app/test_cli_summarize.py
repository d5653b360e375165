"""`feldspar summarize` and `feldspar extract` through the real entry point: the tiny random checkpoint
end to end (a state pack in long-context mode, the cache in map-reduce mode, random weights labelled),
and the bad inputs a user can give (one `error:` line, exit 2 for the command line, 1 for the world)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.app.cli_runner import assert_one_error_line

from feldspar.labels import RANDOM_LABEL

SCHEMA = {"type": "object", "properties": {"topic": {"type": "string"}}, "required": ["topic"]}


@pytest.fixture
def files(tmp_path) -> Path:
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "router.md").write_text("# Router\n\nHold the reset button for ten seconds.\n", encoding="utf-8")
    (folder / "modem.txt").write_text("The modem light turns green when the line is up.\n", encoding="utf-8")
    (folder / "blob.txt").write_bytes(b"\x00\x01\x02 binary")
    return folder


def test_summarize_on_the_tiny_random_checkpoint(cli, files, tiny_checkpoint, tmp_path, feldspar_home):
    out = tmp_path / "summary.md"
    long = cli("summarize", str(files), "--out", str(out), "-m", str(tiny_checkpoint), "-n", "4")
    assert long.code == 0, long.err
    text = out.read_text(encoding="utf-8")
    assert text.startswith(f"# Summary\n\n**{RANDOM_LABEL}**\n")
    assert "_Mode: long-context: 2 file(s) in one call (state pack 'summary-files')" in text
    assert f"- [1] {files / 'modem.txt'} — chars 0-" in text and f"- [2] {files / 'router.md'}" in text
    assert "skipped" in long.err and "blob.txt: binary content" in long.err
    assert RANDOM_LABEL in long.err and "summary: long-context" in long.err
    prompt, reused = map(int, re.search(r"prompt ([\d,]+) tok \(reused ([\d,]+)\)", long.err.replace(",", "")).groups())
    assert reused > prompt * 0.8  # the call resumed from the state pack of the documents
    assert [p.name for p in (feldspar_home / "packs").iterdir()] == ["summary-files"]
    first = cli("summarize", str(files), "--mode", "map-reduce", "-m", str(tiny_checkpoint), "-n", "4", "--json")
    report = json.loads(first.out)
    assert report["mode"] == "map-reduce" and report["random_weights"] is True
    assert (report["computed"], report["cached"], report["model_calls"]) == (2, 0, 3)
    again = cli("summarize", str(files), "--mode", "map-reduce", "-m", str(tiny_checkpoint), "-n", "4")
    assert "map-reduce: 2 file(s), 0 summarised, 2 from cache" in again.err
    assert again.out.startswith(f"# Summary\n\n**{RANDOM_LABEL}**")  # no --out: the markdown on stdout


def test_extract_unconstrained_on_the_tiny_random_checkpoint_keeps_invalid_rows(cli, files, tiny_checkpoint, tmp_path):
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(SCHEMA), encoding="utf-8")
    out = tmp_path / "rows.jsonl"
    result = cli("extract", str(files / "router.md"), "--schema", str(schema), "--out", str(out),
                 "-m", str(tiny_checkpoint), "-n", "4", "--retries", "1", "--unconstrained")
    assert result.code == 0, result.err
    (row,) = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert row["random_weights"] is True and row["path"] == str(files / "router.md")
    assert row["ok"] is False and row["attempts"] == 2 and row["error"] and "raw" in row  # noise is not JSON
    assert row["constrained"] is False
    assert RANDOM_LABEL in result.err and "1 row(s) from 1 file(s): 0 valid, 1 invalid" in result.err


def test_bad_command_lines_exit_2(cli, files):
    assert_one_error_line(cli("summarize"), 2, "give files or folders to summarise, or --collection")
    assert_one_error_line(cli("summarize", str(files), "--collection", "docs"), 2, "not both")
    assert_one_error_line(cli("summarize", str(files), "--mode", "fast"), 2, "'fast' is not one of 'auto', 'map-reduce'")
    assert_one_error_line(cli("extract", str(files), "--out", "x.jsonl"), 2, "--schema")


def test_bad_inputs_are_one_line_and_exit_1(cli, files, tmp_path):
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps({"type": "banana"}), encoding="utf-8")
    out = tmp_path / "rows.jsonl"
    assert_one_error_line(cli("extract", str(files), "--schema", str(schema), "--out", str(out)), 1,
                          "is not a valid JSON Schema")
    assert not out.exists()
    schema.write_text(json.dumps(SCHEMA), encoding="utf-8")
    blocker = tmp_path / "a-file"
    blocker.write_text("x", encoding="utf-8")
    assert_one_error_line(cli("summarize", str(files), "--out", str(blocker / "summary.md")), 1,
                          f"cannot write the output {blocker / 'summary.md'}")
    assert_one_error_line(cli("extract", str(files), "--schema", str(schema), "--out", str(tmp_path)), 1,
                          "is a directory")
    only_blob = cli("summarize", str(files / "blob.txt"), str(tmp_path / "gone.md"))
    lines = [line for line in only_blob.err.splitlines() if line.startswith("error: ")]
    assert only_blob.code == 1 and lines == [f"error: no readable files in {files / 'blob.txt'}, {tmp_path / 'gone.md'} "
                                             f"({files / 'blob.txt'}: binary content; {tmp_path / 'gone.md'}: "
                                             f"no such file or directory)"]


def test_an_unknown_or_empty_collection_is_one_line(cli, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli("ingest", str(empty), "--collection", "empty").code == 0
    assert_one_error_line(cli("summarize", "--collection", "empty"), 1, "collection 'empty' is empty; ingest something")
    assert_one_error_line(cli("summarize", "--collection", "nope"), 1, "no collection 'nope'")
