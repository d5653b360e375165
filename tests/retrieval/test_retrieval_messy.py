"""A generated messy folder ingests with one status per file and nothing read outside the root."""

from __future__ import annotations

import os
from pathlib import Path

from tests.retrieval.retrieval_helpers import assert_consistent, pdf_bytes

from feldspar.retrieval.scan import IGNORED_DIRS


def build_messy_folder(base: Path) -> tuple[Path, Path]:
    root, outside = base / "messy", base / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret.txt").write_text("OUTSIDE-SECRET-TOKEN lives here")
    files = {
        "good.md": b"# Good\n\nA normal markdown file about granite.\n",
        "binary.txt": bytes(range(256)) * 8,
        "empty.txt": b"",
        "latin1.txt": "caf\xe9 cr\xe8me br\xfbl\xe9e".encode("latin-1"),
        "utf16.txt": "wide characters here".encode("utf-16"),
        "good.pdf": pdf_bytes(["Real page one", "Real page two"]),
        "truncated.pdf": pdf_bytes(["Cut short"])[:50],
        "garbage.pdf": b"%PDF-1.7\n" + os.urandom(2000),
        "huge.txt": b"big line of text\n" * 20_000,
        "unknown.bin": b"\x7fELF fake",
        "weird name with spaces & ünïcode.md": b"# Odd\n\nOdd names are fine.\n",
        "newline\nname.txt": b"a file with a newline in its name",
    }
    for name, data in files.items():
        (root / name).write_bytes(data)
    (root / os.fsdecode(b"bad-\xff-bytes.txt")).write_bytes(b"name is not utf-8")
    (root / "escape.txt").symlink_to(outside / "secret.txt")
    (root / "escape-dir").symlink_to(outside)
    (root / "dangling.txt").symlink_to(base / "does-not-exist.txt")
    (root / "inside-link.md").symlink_to(root / "good.md")
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("ignored tool folder")
    return root, outside


def test_messy_folder_gets_one_status_per_file(make_service, tmp_path):
    root, outside = build_messy_folder(tmp_path)
    service = make_service(max_file_bytes=100_000)
    summary = service.ingest([root])
    rows = {row["path"]: row for row in service.sources()}
    expected_paths = {
        "good.md", "binary.txt", "empty.txt", "latin1.txt", "utf16.txt", "good.pdf", "truncated.pdf",
        "garbage.pdf", "huge.txt", "unknown.bin", "weird name with spaces & ünïcode.md", "newline\nname.txt",
        "bad-\\xff-bytes.txt", "escape.txt", "escape-dir", "dangling.txt", "inside-link.md",
    }
    assert set(rows) == expected_paths
    assert not any(part in IGNORED_DIRS for path in rows for part in path.split("/"))
    status = {path: row["status"] for path, row in rows.items()}
    for indexed in ("good.md", "latin1.txt", "utf16.txt", "good.pdf", "weird name with spaces & ünïcode.md",
                    "newline\nname.txt", "bad-\\xff-bytes.txt", "inside-link.md"):
        assert status[indexed] == "indexed", (indexed, rows[indexed])
    reasons = {path: row["reason"] for path, row in rows.items()}
    assert reasons["binary.txt"] == "binary content"
    assert reasons["empty.txt"] == "empty file"
    assert reasons["huge.txt"].startswith("larger than the size limit")
    assert reasons["unknown.bin"].startswith("unsupported type")
    assert reasons["escape.txt"] == "symlink leads outside the ingested root"
    assert reasons["escape-dir"] == "symlink leads outside the ingested root"
    assert reasons["dangling.txt"] in ("broken symlink", "symlink leads outside the ingested root")
    for broken in ("truncated.pdf", "garbage.pdf"):
        assert status[broken] in ("failed", "skipped") and reasons[broken]
    counted = summary.indexed + summary.skipped + summary.failed
    assert counted == len(expected_paths)
    assert_consistent(service)
    for hit in service.search("OUTSIDE-SECRET-TOKEN", k=20):
        assert "OUTSIDE-SECRET-TOKEN" not in hit.text
    page_hits = [h for h in service.search("Real page two", k=20) if h.path == "good.pdf"]
    assert page_hits and {h.page for h in page_hits} <= {1, 2} and any(h.page == 2 for h in page_hits)


def test_messy_folder_resync_is_all_unchanged(make_service, tmp_path):
    root, _ = build_messy_folder(tmp_path)
    service = make_service(max_file_bytes=100_000)
    first = service.ingest([root])
    again = service.ingest([root])
    assert again.unchanged == first.indexed + first.skipped + first.failed
    assert again.chunks_written == 0
