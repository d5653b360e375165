"""`pack create` on a messy folder: unreadable files are skipped with the same statuses as
ingest (and it says so), .jsonl is read as text, and only a folder with nothing left is refused."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.app.cli_runner import assert_one_error_line


def _unreadable_folder(tmp_path: Path, name: str) -> Path:
    """``tmp_path/name`` holding only files a pack cannot read, one a symlink to a file outside it."""
    outside = tmp_path / "secret.md"
    outside.write_text("outside the folder", encoding="utf-8")
    folder = tmp_path / name
    folder.mkdir()
    (folder / "empty.txt").write_text("")
    (folder / "blank.md").write_text("   \n\n")
    (folder / "binary.txt").write_bytes(b"\x00\x01\x02binary" * 20)
    (folder / "image.png").write_bytes(b"\x89PNG\r\n")
    os.symlink(outside, folder / "escape.md")
    return folder


def test_a_messy_folder_packs_what_can_be_read_and_says_what_was_skipped(cli, tiny_checkpoint, tmp_path):
    folder = _unreadable_folder(tmp_path, "notes")
    (folder / "good.md").write_text("# Feldspar\n\nOrthoclase is a feldspar.\n", encoding="utf-8")
    (folder / "records.jsonl").write_text('{"mineral": "quartz"}\n{"mineral": "mica"}\n', encoding="utf-8")

    made = cli("pack", "create", "notes", str(folder), "-m", str(tiny_checkpoint), "--json")
    assert made.code == 0, made.err
    data = json.loads(made.out)
    skipped = {Path(s["path"]).name: (s["status"], s["reason"]) for s in data["skipped"]}
    assert skipped == {
        "empty.txt": ("skipped", "empty file"),
        "blank.md": ("skipped", "only whitespace, no text"),
        "binary.txt": ("skipped", "binary content"),
        "image.png": ("skipped", "unsupported type .png"),
        "escape.md": ("skipped", "symlink leads outside the ingested root"),
    }
    for name in skipped:
        assert name in made.err  # each skipped file is reported on stderr too
    shown = json.loads(cli("pack", "show", "notes", "--json").out)
    assert sorted(Path(s["path"]).name for s in shown["sources"]) == ["good.md", "records.jsonl"]


def test_jsonl_text_reaches_the_pack_documents(tmp_path):
    from feldspar.pack_documents import read_pack_documents

    (tmp_path / "records.jsonl").write_text('{"mineral": "quartz"}\n', encoding="utf-8")
    (tmp_path / "empty.jsonl").write_text("")
    read = read_pack_documents([tmp_path], 1024)
    assert [d["title"] for d in read.documents] == ["records.jsonl"]
    assert read.documents[0]["text"] == '{"mineral": "quartz"}\n'
    assert read.skipped == [{"path": str(tmp_path / "empty.jsonl"), "status": "skipped", "reason": "empty file"}]


def test_a_folder_with_nothing_readable_is_refused_in_one_line(cli, tiny_checkpoint, tmp_path):
    folder = _unreadable_folder(tmp_path, "junk")
    assert_one_error_line(cli("pack", "create", "junk", str(folder), "-m", str(tiny_checkpoint)), 1,
                          "no readable files in")
