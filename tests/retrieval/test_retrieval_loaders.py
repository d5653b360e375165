"""Every loader on real files: text encodings, markdown, HTML, PDF, DOCX, code, data, refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.retrieval.retrieval_helpers import docx_file, encrypted_pdf_bytes, pdf_bytes

from feldspar.retrieval.loaders import Unreadable, file_kind, load_file

LIMIT = 1024 * 1024


def load(tmp_path: Path, name: str, data: bytes | str, limit: int = LIMIT):
    path = tmp_path / name
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return load_file(str(path), str(tmp_path), limit)


def refusal(tmp_path: Path, name: str, data: bytes | str, limit: int = LIMIT) -> Unreadable:
    with pytest.raises(Unreadable) as caught:
        load(tmp_path, name, data, limit)
    return caught.value


def test_plain_text_keeps_content_and_normalises_newlines(tmp_path):
    assert load(tmp_path, "a.txt", "one\r\ntwo\rthree\n").text == "one\ntwo\nthree\n"


def test_non_utf8_encodings_are_decoded(tmp_path):
    assert "café" in load(tmp_path, "latin.txt", "un café crème".encode("cp1252")).text
    assert load(tmp_path, "wide.txt", "hello wide world".encode("utf-16")).text.strip() == "hello wide world"
    assert load(tmp_path, "bom.md", b"\xef\xbb\xbf# Title\n").text == "# Title\n"


def test_markdown_and_rst_carry_their_markup(tmp_path):
    assert load(tmp_path, "a.md", "# T\n\nbody\n").markup == "markdown"
    assert load(tmp_path, "a.rst", "Title\n=====\n\nbody\n").markup == "rst"


def test_html_keeps_visible_text_only(tmp_path):
    html = ("<html><head><title>tab title</title><style>.x{color:red}</style></head><body>"
            "<script>var secret = 1;</script><h2>Intro</h2><p>Visible <b>bold</b> words</p>"
            "<noscript>no script text</noscript><ul><li>first</li><li>second</li></ul></body></html>")
    extracted = load(tmp_path, "page.html", html)
    assert "## Intro" in extracted.text
    assert "Visible bold words" in extracted.text
    assert "first\nsecond" in extracted.text.replace("\n\n", "\n")
    for hidden in ("secret", "color:red", "no script text", "tab title"):
        assert hidden not in extracted.text
    assert extracted.markup == "markdown"


def test_pdf_pages_are_numbered_and_spans_map_to_page_text(tmp_path):
    extracted = load(tmp_path, "doc.pdf", pdf_bytes(["Alpha page text", "Beta page text", "Gamma page text"]))
    assert [page for page, _, _ in extracted.pages] == [1, 2, 3]
    for (page, start, end), word in zip(extracted.pages, ["Alpha", "Beta", "Gamma"]):
        assert extracted.text[start:end].strip() == f"{word} page text"


def test_encrypted_pdf_is_skipped_with_reason(tmp_path):
    error = refusal(tmp_path, "locked.pdf", encrypted_pdf_bytes(["top secret"]))
    assert (error.status, error.reason) == ("skipped", "encrypted PDF")


def test_garbage_and_truncated_pdfs_fail_without_raising_anything_else(tmp_path):
    garbage = refusal(tmp_path, "garbage.pdf", b"%PDF-1.4\n" + bytes(range(256)) * 20)
    assert garbage.status in ("failed", "skipped")
    truncated = pdf_bytes(["Some text here"])[:60]
    error = refusal(tmp_path, "cut.pdf", truncated)
    assert error.status in ("failed", "skipped") and error.reason


def test_docx_headings_paragraphs_and_tables(tmp_path):
    path = docx_file(tmp_path / "report.docx")
    text = load_file(str(path), str(tmp_path), LIMIT).text
    assert "# Quarterly Report" in text and "## Risks" in text
    assert "Supply of feldspar minerals is uncertain." in text
    assert "north | 42" in text


def test_corrupt_docx_fails(tmp_path):
    error = refusal(tmp_path, "bad.docx", b"PK\x03\x04 this is not a zip archive at all")
    assert error.status == "failed" and "DOCX" in error.reason


@pytest.mark.parametrize("name,body", [
    ("main.py", "def main():\n    return 42\n"), ("app.ts", "export const x = 1;\n"), ("Makefile", "all:\n\techo hi\n"),
    ("data.json", '{"key": "value"}\n'), ("table.csv", "a,b\n1,2\n"), ("conf.yaml", "name: feldspar\n"),
])
def test_code_and_data_files_load_as_text(tmp_path, name, body):
    assert load(tmp_path, name, body).text == body


def test_refusals_have_reasons(tmp_path):
    assert refusal(tmp_path, "fake.txt", b"text\x00\x01\x02binary").reason == "binary content"
    assert refusal(tmp_path, "empty.md", b"   \n").reason == "only whitespace, no text"
    assert refusal(tmp_path, "big.txt", "x" * 2000, limit=1000).reason.startswith("larger than the size limit")
    assert refusal(tmp_path, "photo.xyz", b"data").reason.startswith("unsupported type")
    assert "docling" in refusal(tmp_path, "slides.pptx", b"data").reason


def test_nothing_outside_the_root_is_read(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("private")
    root = tmp_path / "root"
    root.mkdir()
    (root / "link.txt").symlink_to(outside)
    with pytest.raises(Unreadable, match="leaves the ingested root"):
        load_file(str(root / "link.txt"), str(root), LIMIT)


def test_file_kind_by_extension():
    assert file_kind("A.MD") == "markdown" and file_kind("x.htm") == "html" and file_kind("x.bin") is None
