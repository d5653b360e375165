"""Split extracted text into overlapping chunks sized in embedding-model tokens.

Text is first cut into segments that a chunk never crosses: PDF pages, or markdown/rst
sections (so every chunk has one heading path, e.g. ``Guide > Install``). Each segment
is split by langchain's ``RecursiveCharacterTextSplitter`` with a token length
function, and every chunk records its exact character span in the extracted text:
``text[chunk.start:chunk.end] == chunk.text`` always holds.

This module does not know about files, ids or embeddings; it takes a token counter.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

from langchain_text_splitters import RecursiveCharacterTextSplitter

from feldspar.retrieval.loaders import Extracted

MARKDOWN_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$")
FENCE = re.compile(r"^\s*(```|~~~)")
RST_UNDERLINE = re.compile(r"^([=\-~^\"'`#*+:.])\1{2,}\s*$")


@dataclass(frozen=True)
class Chunk:
    index: int
    text: str
    start: int
    end: int
    page: int | None
    heading: str
    content_hash: str


@dataclass(frozen=True)
class Segment:
    start: int
    end: int
    page: int | None
    heading: str


class Chunker:
    """Chunks of at most ``chunk_tokens`` tokens (per ``token_len``) with ``overlap`` tokens."""

    def __init__(self, token_len: Callable[[str], int], chunk_tokens: int, overlap: int) -> None:
        overlap = min(overlap, chunk_tokens // 2)
        self.splitter = RecursiveCharacterTextSplitter(
            chunk_size=chunk_tokens,
            chunk_overlap=overlap,
            length_function=lru_cache(maxsize=65536)(token_len),
            strip_whitespace=True,
        )

    def chunk(self, extracted: Extracted) -> list[Chunk]:
        chunks: list[Chunk] = []
        for segment in segments(extracted):
            for start, end in self._spans(extracted.text, segment):
                piece = extracted.text[start:end]
                digest = hashlib.sha256(piece.encode("utf-8", "surrogatepass")).hexdigest()
                chunks.append(Chunk(len(chunks), piece, start, end, segment.page, segment.heading, digest))
        return chunks

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
