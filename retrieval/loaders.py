"""Turn one file into plain text: txt/md/rst, visible HTML text, PDF pages, DOCX, code, data.

``file_kind`` decides from the name alone which loader applies (JSON Lines are kept as
their lines, so chunks can cite line ranges); ``load_file`` reads the
bytes (bounded by a size limit) and returns an ``Extracted`` text with page spans and a
markup hint (markdown or rst) for heading-aware chunking. A file that cannot be used
raises ``Unreadable`` with a status (``skipped`` or ``failed``) and a reason.

This module does not know about time or memory limits (``sandbox`` runs it in a limited
subprocess), chunking, embeddings or the manifest. Docling is used only for formats the
built-in loaders do not cover, and only when it is installed.
"""

from __future__ import annotations

import importlib.util
import io
import os
import re
from dataclasses import dataclass, field

TEXT_EXTENSIONS = {".txt": "text", ".text": "text", ".log": "text", ".md": "markdown",
                   ".markdown": "markdown", ".mdx": "markdown", ".rst": "rst"}
HTML_EXTENSIONS = {".html", ".htm", ".xhtml"}
JSONL_EXTENSIONS = {".jsonl", ".ndjson"}
DATA_EXTENSIONS = {".json", ".csv", ".tsv", ".yaml", ".yml", ".toml", ".ini", ".cfg", ".xml"}
CODE_EXTENSIONS = {
    ".py", ".pyi", ".js", ".mjs", ".ts", ".tsx", ".jsx", ".java", ".c", ".h", ".cpp", ".hpp",
    ".cc", ".go", ".rs", ".rb", ".php", ".sh", ".bash", ".sql", ".kt", ".swift", ".scala",
    ".cs", ".r", ".lua", ".pl", ".css", ".scss", ".tex", ".jinja", ".proto", ".vue",
}
CODE_FILENAMES = {"Makefile", "Dockerfile", "Justfile", "CMakeLists.txt"}
DOCLING_EXTENSIONS = {".pptx", ".xlsx", ".odt", ".epub"}
CONTROL_CHARS = re.compile(r"[\x00-\x08\x0e-\x1f]")


class Unreadable(Exception):
    """This file will not be indexed; ``status`` is ``skipped`` or ``failed``."""

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass
class Extracted:
    """The text of one file; ``pages`` holds ``(page_number, start, end)`` spans into ``text``."""

    text: str
    markup: str | None = None  # "markdown"/"rst": headings can be found; "jsonl": one record a line
    pages: list[tuple[int, int, int]] = field(default_factory=list)


def docling_available() -> bool:
    return importlib.util.find_spec("docling") is not None


def file_kind(name: str) -> str | None:
    """The loader kind for a file name, or ``None`` when the type is not supported."""
    ext = os.path.splitext(name)[1].lower()
    if ext in TEXT_EXTENSIONS:
        return TEXT_EXTENSIONS[ext]
    if ext in JSONL_EXTENSIONS:
        return "jsonl"
    if ext in HTML_EXTENSIONS:
        return "html"
    if ext == ".pdf":
        return "pdf"
    if ext == ".docx":
        return "docx"
    if ext in CODE_EXTENSIONS or name in CODE_FILENAMES:
        return "code"
    if ext in DATA_EXTENSIONS:
        return "data"
    if ext in DOCLING_EXTENSIONS and docling_available():
        return "docling"
    return None


def unsupported_reason(name: str) -> str:
    ext = os.path.splitext(name)[1].lower()
    if ext in DOCLING_EXTENSIONS:
        return f"unsupported type {ext} (install the docling extra: pip install 'feldspar[docling]')"
    return f"unsupported type {ext or '(no extension)'}"


def load_file(path: str, root: str, max_bytes: int) -> Extracted:
    """Extract the text of ``path``, which must resolve inside ``root``."""
    real = os.path.realpath(path)
    if os.path.commonpath([real, os.path.realpath(root)]) != os.path.realpath(root):
        raise Unreadable("skipped", "path leaves the ingested root")
    kind = file_kind(os.path.basename(path))
    if kind is None:
        raise Unreadable("skipped", unsupported_reason(os.path.basename(path)))
    data = read_bounded(real, max_bytes)
    if not data:
        raise Unreadable("skipped", "empty file")
    if not data.strip():
        raise Unreadable("skipped", "only whitespace, no text")
    extracted = LOADERS[kind](data, real)
    if not extracted.text.strip():
        raise Unreadable("skipped", "no extractable text")
    return extracted


def read_bounded(path: str, max_bytes: int) -> bytes:
    with open(path, "rb") as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise Unreadable("skipped", f"larger than the size limit of {max_bytes} bytes")
    return data


# ---- plain text ------------------------------------------------------------------------
def decode_text(data: bytes) -> str:
    """Decode bytes that should be text; binary content raises ``Unreadable``."""
    for bom, codec in ((b"\xef\xbb\xbf", "utf-8-sig"), (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16")):
        if data.startswith(bom):
            return _normalise_newlines(data.decode(codec, errors="replace"))
    if b"\x00" in data[:65536]:
        raise Unreadable("skipped", "binary content")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("cp1252", errors="replace")
    sample = text[:65536]
    if sample and len(CONTROL_CHARS.findall(sample)) > len(sample) * 0.05:
        raise Unreadable("skipped", "binary content")
    return _normalise_newlines(text)


def _normalise_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _load_text(markup: str | None):
    def load(data: bytes, path: str) -> Extracted:
        return Extracted(decode_text(data), markup=markup)

    return load


# ---- HTML ------------------------------------------------------------------------------
INVISIBLE_TAGS = "script, style, noscript, template, head, svg, iframe, object, canvas"
BLOCK_TAGS = "p, div, li, br, tr, section, article, pre, blockquote, table, ul, ol, dd, dt, header, footer"


def _load_html(data: bytes, path: str) -> Extracted:
    from selectolax.lexbor import LexborHTMLParser

    tree = LexborHTMLParser(decode_text(data))
    for node in tree.css(INVISIBLE_TAGS):
        node.decompose()
    for level in range(1, 7):
        for node in tree.css(f"h{level}"):
            node.replace_with(f"\n\n{'#' * level} {' '.join(node.text().split())}\n\n")
    for node in tree.css(BLOCK_TAGS):
        node.insert_after("\n")
    root = tree.body or tree.root
    raw = root.text(deep=True) if root is not None else ""
    return Extracted(_tidy_whitespace(raw), markup="markdown")


def _tidy_whitespace(text: str) -> str:
    lines = [" ".join(line.split()) for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


# ---- PDF -------------------------------------------------------------------------------
def _load_pdf(data: bytes, path: str) -> Extracted:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted and not _decrypt_with_empty_password(reader):
            raise Unreadable("skipped", "encrypted PDF")
        page_texts = [_normalise_newlines(page.extract_text() or "") for page in reader.pages]
    except Unreadable:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, IndexError, AttributeError, OSError) as exc:
        raise Unreadable("failed", f"corrupt PDF: {exc}") from None
    return _join_pages(page_texts)


def _decrypt_with_empty_password(reader) -> bool:
    try:
        return bool(reader.decrypt(""))
    except Exception:  # missing crypto backend or unsupported algorithm
        return False


def _join_pages(page_texts: list[str]) -> Extracted:
    parts: list[str] = []
    pages: list[tuple[int, int, int]] = []
    offset = 0
    for number, page_text in enumerate(page_texts, start=1):
        if parts:
            parts.append("\n\n")
            offset += 2
        parts.append(page_text)
        pages.append((number, offset, offset + len(page_text)))
        offset += len(page_text)
    return Extracted("".join(parts), markup=None, pages=pages)


# ---- DOCX ------------------------------------------------------------------------------
def _load_docx(data: bytes, path: str) -> Extracted:
    import docx
    from docx.table import Table

    try:
        document = docx.Document(io.BytesIO(data))
        blocks = [_table_text(b) if isinstance(b, Table) else _paragraph_text(b)
                  for b in document.iter_inner_content()]
    except Exception as exc:  # python-docx raises many types for a corrupt package
        raise Unreadable("failed", f"corrupt DOCX: {type(exc).__name__}: {exc}") from None
    return Extracted("\n\n".join(b for b in blocks if b.strip()), markup="markdown")


def _paragraph_text(paragraph) -> str:
    style = (paragraph.style.name if paragraph.style is not None else "") or ""
    match = re.fullmatch(r"Heading (\d)", style)
    if match:
        return f"{'#' * int(match.group(1))} {paragraph.text.strip()}"
    if style == "Title":
        return f"# {paragraph.text.strip()}"
    return paragraph.text


def _table_text(table) -> str:
    return "\n".join(" | ".join(cell.text.strip() for cell in row.cells) for row in table.rows)


# ---- Docling (optional) ----------------------------------------------------------------
def _load_with_docling(data: bytes, path: str) -> Extracted:
    from docling.document_converter import DocumentConverter  # type: ignore[import-not-found]

    try:
        markdown = DocumentConverter().convert(path).document.export_to_markdown()
    except Exception as exc:
        raise Unreadable("failed", f"docling could not convert the file: {exc}") from None
    return Extracted(markdown, markup="markdown")


LOADERS = {
    "text": _load_text(None),
    "markdown": _load_text("markdown"),
    "rst": _load_text("rst"),
    "code": _load_text(None),
    "data": _load_text(None),
    "jsonl": _load_text("jsonl"),
    "html": _load_html,
    "pdf": _load_pdf,
    "docx": _load_docx,
    "docling": _load_with_docling,
}
