"""Split extracted text into overlapping chunks sized in embedding-model tokens.

Text is first cut into segments that a chunk never crosses: PDF pages, or markdown/rst
sections (so every chunk has one heading path, e.g. ``Guide > Install``). Each segment
is split by langchain's ``RecursiveCharacterTextSplitter`` with a token length
function, and every chunk records its exact character span in the extracted text:
``text[chunk.start:chunk.end] == chunk.text`` always holds. Chunks are produced lazily
(``iter_chunks``): a long segment is cut into windows of ``WINDOW_CHARS`` at a paragraph,
line or word break before splitting, so a file of any size streams in bounded memory and
always gives the same chunks. JSON Lines chunks also record their 1-based line range.
Each chunk also carries its context header (``context.py``) for embedding and BM25.

This module does not know about files, ids or embeddings; it takes a token counter.
"""

from __future__ import annotations

import bisect
import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Iterator

from langchain_text_splitters import RecursiveCharacterTextSplitter

from feldspar.retrieval.context import HeaderBuilder, check_recipe
from feldspar.retrieval.loaders import Extracted

MARKDOWN_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$")
FENCE = re.compile(r"^\s*(```|~~~)")
RST_UNDERLINE = re.compile(r"^([=\-~^\"'`#*+:.])\1{2,}\s*$")
WINDOW_CHARS = 65536
BREAKS = ("\n\n", "\n", " ")


@dataclass(frozen=True)
class Chunk:
    index: int
    text: str
    start: int
    end: int
    page: int | None
    heading: str
    content_hash: str
    line_start: int | None = None  # JSON Lines: first and last line (1-based) of the chunk
    line_end: int | None = None
    context: str = ""  # the header embedded before the text (``context.HeaderBuilder``); not part of the span
    title: str = ""  # the file's title, a BM25 field


@dataclass(frozen=True)
class Segment:
    start: int
    end: int
    page: int | None
    heading: str


class Chunker:
    """Chunks of at most ``chunk_tokens`` tokens (per ``token_len``) with ``overlap`` tokens."""

    def __init__(self, token_len: Callable[[str], int], chunk_tokens: int, overlap: int,
                 recipe: str = "none") -> None:
        self.recipe = check_recipe(recipe)
        overlap = min(overlap, chunk_tokens // 2)
        self.splitter = RecursiveCharacterTextSplitter(
            chunk_size=chunk_tokens,
            chunk_overlap=overlap,
            length_function=lru_cache(maxsize=4096)(token_len),  # small: a big file's pieces must not pile up
            strip_whitespace=True,
        )

    def chunk(self, extracted: Extracted, name: str = "") -> list[Chunk]:
        return list(self.iter_chunks(extracted, name))

    def iter_chunks(self, extracted: Extracted, name: str = "") -> Iterator[Chunk]:
        """The chunks of ``extracted`` (``name``: the file's path, for the context header)."""
        lines = _LineIndex(extracted.text) if extracted.markup == "jsonl" else None
        parts = segments(extracted)
        first = next((s.heading for s in parts[:2] if s.heading), "") if extracted.markup != "jsonl" else ""
        headers = HeaderBuilder(self.recipe, extracted, name, first)
        index = 0
        for segment in parts:
            for window in _windows(extracted.text, segment):
                for start, end in self._spans(extracted.text, window):
                    piece = extracted.text[start:end]
                    digest = hashlib.sha256(piece.encode("utf-8", "surrogatepass")).hexdigest()
                    first, last = lines.span(start, end) if lines else (None, None)
                    context = headers.header(segment.heading, segment.page, start, end)
                    yield Chunk(index, piece, start, end, segment.page, segment.heading, digest, first, last,
                                context, headers.title)
                    index += 1

    def _spans(self, text: str, segment: Segment) -> list[tuple[int, int]]:
        body = text[segment.start : segment.end]
        spans: list[tuple[int, int]] = []
        previous_start, previous_end = -1, 0
        for piece in self.splitter.split_text(body):
            if not piece.strip():
                continue
            found = _locate(body, piece, previous_start + 1, previous_end)
            if found < 0:  # the splitter changed the text; never cite an inexact span
                continue
            spans.append((segment.start + found, segment.start + found + len(piece)))
            previous_start, previous_end = found, found + len(piece)
        return spans


class _LineIndex:
    """1-based line numbers of character offsets (newline positions found once)."""

    def __init__(self, text: str) -> None:
        self.newlines: list[int] = []
        at = text.find("\n")
        while at >= 0:
            self.newlines.append(at)
            at = text.find("\n", at + 1)

    def span(self, start: int, end: int) -> tuple[int, int]:
        return bisect.bisect_left(self.newlines, start) + 1, bisect.bisect_left(self.newlines, end - 1) + 1


def _windows(text: str, segment: Segment) -> Iterator[Segment]:
    """``segment`` cut into pieces of at most ``WINDOW_CHARS``, each ending at a break if one exists."""
    start = segment.start
    while segment.end - start > WINDOW_CHARS:
        limit = start + WINDOW_CHARS
        cut = limit
        for mark in BREAKS:  # the last paragraph break in the window's second half, else line, else word
            found = text.rfind(mark, start + WINDOW_CHARS // 2, limit)
            if found >= 0:
                cut = found + len(mark)
                break
        yield Segment(start, cut, segment.page, segment.heading)
        start = cut
    yield Segment(start, segment.end, segment.page, segment.heading)


def _locate(body: str, piece: str, earliest: int, previous_end: int) -> int:
    """Where ``piece`` starts: the latest match that still touches the previous chunk.

    Repetitive text matches in many places; the true chunk starts inside the previous
    one (overlap) or right after it (past whitespace), so take the last match there.
    """
    latest = previous_end
    while latest < len(body) and body[latest].isspace():
        latest += 1
    found = body.rfind(piece, earliest, latest + len(piece))
    return found if found >= 0 else body.find(piece, earliest)


def segments(extracted: Extracted) -> list[Segment]:
    """Spans a chunk must not cross: pages, else heading sections, else the whole text."""
    if extracted.pages:
        return [Segment(start, end, page, "") for page, start, end in extracted.pages if end > start]
    if extracted.markup == "markdown":
        return _sections(extracted.text, _markdown_headings(extracted.text))
    if extracted.markup == "rst":
        return _sections(extracted.text, _rst_headings(extracted.text))
    return [Segment(0, len(extracted.text), None, "")]


def _line_offsets(text: str) -> list[tuple[int, str]]:
    offsets, position = [], 0
    for line in text.split("\n"):
        offsets.append((position, line))
        position += len(line) + 1
    return offsets


def _markdown_headings(text: str) -> list[tuple[int, int, str]]:
    """``(offset, level, title)`` for each ATX heading outside fenced code."""
    headings, in_fence = [], False
    for offset, line in _line_offsets(text):
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        match = None if in_fence else MARKDOWN_HEADING.match(line)
        if match:
            headings.append((offset, len(match.group(1)), match.group(2).strip()))
    return headings


def _rst_headings(text: str) -> list[tuple[int, int, str]]:
    """``(offset, level, title)`` for rst titles; levels follow first use of each underline."""
    lines = _line_offsets(text)
    levels: dict[str, int] = {}
    headings = []
    for (offset, title), (_, underline) in zip(lines, lines[1:]):
        match = RST_UNDERLINE.match(underline)
        if match and title.strip() and len(underline.rstrip()) >= len(title.rstrip()) and not RST_UNDERLINE.match(title):
            level = levels.setdefault(match.group(1), len(levels) + 1)
            headings.append((offset, level, title.strip()))
    return headings


def _sections(text: str, headings: list[tuple[int, int, str]]) -> list[Segment]:
    result: list[Segment] = []
    stack: list[tuple[int, str]] = []
    bounds = [0] + [offset for offset, _, _ in headings] + [len(text)]
    titles = [""]
    for _, level, title in headings:
        stack = [(lvl, t) for lvl, t in stack if lvl < level] + [(level, title)]
        titles.append(" > ".join(t for _, t in stack))
    for start, end, heading in zip(bounds, bounds[1:], titles):
        if text[start:end].strip():
            result.append(Segment(start, end, None, heading))
    return result
