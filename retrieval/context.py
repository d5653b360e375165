"""Contextual chunk headers: a short line naming where a chunk sits in its file.

A chunk is embedded (and BM25-indexed) as ``header + "\\n" + text``, while the store keeps
the exact source span as the chunk text, so citations never change. The header is built
by a *recipe*, recorded per collection with the chunking settings (a collection built with
another recipe is re-chunked and re-embedded on the next ingest):

- ``none``: no header (chunks embedded as they are, as before recipes existed).
- ``title-heading``: the file's title (its first top-level Markdown/rst heading, else
  its name without extension, separators as spaces), the heading path down to the
  chunk (without repeating the title), ``page N`` for PDFs, and for source code the
  nearest ``def``/``class``/``function`` above the chunk.

This module does not know about files on disk, ids, embeddings or the store.
"""

from __future__ import annotations

import bisect
import re
from pathlib import PurePosixPath

from feldspar.retrieval.loaders import Extracted

RECIPES = ("none", "title-heading")
DEFAULT_RECIPE = "title-heading"
MAX_HEADER_CHARS = 200
SYMBOL = re.compile(
    r"^[ \t]*(?:export\s+|pub(?:\([^)]*\))?\s+|public\s+|private\s+|static\s+|async\s+)*"
    r"(?:def|class|fn|func|function|interface|struct|impl|trait|module|type)\s+([A-Za-z_][\w.]*)",
    re.MULTILINE)
CODE_SUFFIXES = {".py", ".js", ".ts", ".tsx", ".jsx", ".go", ".rs", ".java", ".kt", ".rb", ".c", ".h", ".cpp",
                 ".hpp", ".cs", ".swift", ".scala", ".php", ".lua", ".sh"}


def check_recipe(recipe: str) -> str:
    if recipe not in RECIPES:
        raise ValueError(f"unknown chunk context recipe {recipe!r}: use one of {', '.join(RECIPES)}")
    return recipe


def title_of(name: str, first_heading: str = "") -> str:
    """The top of the file's first heading path, else the file name without extension, readable."""
    if first_heading:
        return first_heading.split(" > ")[0]
    stem = PurePosixPath(name).stem or PurePosixPath(name).name
    return re.sub(r"[_\-.]+", " ", stem).strip() or name


class HeaderBuilder:
    """The headers of one file's chunks under one recipe."""

    def __init__(self, recipe: str, extracted: Extracted, name: str, first_heading: str = "") -> None:
        self.recipe = check_recipe(recipe)
        self.title = title_of(name, first_heading) if recipe != "none" else ""
        self._symbols: list[tuple[int, str]] = []
        if recipe != "none" and PurePosixPath(name).suffix.lower() in CODE_SUFFIXES:
            self._symbols = [(m.start(), m.group(1)) for m in SYMBOL.finditer(extracted.text)]
        self._starts = [offset for offset, _ in self._symbols]

    def symbol(self, start: int, end: int) -> str:
        """The last symbol defined before ``end`` (inside the chunk or above it)."""
        at = bisect.bisect_left(self._starts, end) - 1
        return self._symbols[at][1] if at >= 0 else ""

    def header(self, heading: str, page: int | None, start: int, end: int) -> str:
        if self.recipe == "none":
            return ""
        parts = [self.title]
        path = heading.split(" > ") if heading else []
        if path and path[0] == self.title:
            path = path[1:]
        parts += path
        if page is not None:
            parts.append(f"page {page}")
        symbol = self.symbol(start, end)
        if symbol:
            parts.append(symbol)
        return " > ".join(p for p in parts if p)[:MAX_HEADER_CHARS]


def embedded_text(header: str, text: str) -> str:
    """What the embedder and BM25 see for a chunk: its header line, then its text."""
    return f"{header}\n{text}" if header else text
