"""Chunks: exact character spans, token budget, overlap, heading paths, page boundaries."""

from __future__ import annotations

import pytest

from feldspar.retrieval.chunking import Chunker
from feldspar.retrieval.loaders import Extracted

SENTENCE = "Feldspar minerals form about half of the crust of the Earth and weather into clay. "


@pytest.fixture(scope="module")
def chunker(embedder):
    return Chunker(embedder.token_len, chunk_tokens=64, overlap=16)


def markdown_doc() -> str:
    return (
        "Preamble before any heading.\n\n"
        "# Guide\n\nIntro text.\n\n"
        "## Install\n\n" + SENTENCE * 12 + "\n\n"
        "```bash\n# not a heading, a shell comment\npip install feldspar\n```\n\n"
        "### Offline\n\nNo network needed.\n\n"
        "## Usage\n\nRun   it\twith  odd   spacing.\n"
    )


def test_every_chunk_maps_back_to_the_exact_text(chunker):
    text = markdown_doc()
    chunks = chunker.chunk(Extracted(text, markup="markdown"))
    assert len(chunks) > 4
    for chunk in chunks:
        assert text[chunk.start:chunk.end] == chunk.text
    assert [c.index for c in chunks] == list(range(len(chunks)))


def test_chunks_respect_the_token_budget_and_overlap(chunker, embedder):
    text = SENTENCE * 40
    chunks = chunker.chunk(Extracted(text))
    assert len(chunks) >= 4
    assert all(embedder.token_len(c.text) <= 64 for c in chunks)
    assert all(later.start < earlier.end for earlier, later in zip(chunks, chunks[1:])), "chunks overlap"
    covered = set()
    for c in chunks:
        covered.update(range(c.start, c.end))
    assert all(i in covered for i, ch in enumerate(text) if not ch.isspace())


def test_heading_paths_follow_markdown_structure_and_ignore_code_fences(chunker):
    chunks = chunker.chunk(Extracted(markdown_doc(), markup="markdown"))
    headings = {c.heading for c in chunks}
    assert {"", "Guide", "Guide > Install", "Guide > Install > Offline", "Guide > Usage"} <= headings
    assert not any("shell comment" in h for h in headings)
    install = [c for c in chunks if "pip install" in c.text]
    assert install and install[0].heading == "Guide > Install"


def test_rst_titles_become_heading_paths(chunker):
    text = "Manual\n======\n\nIntro.\n\nSetup\n-----\n\nSteps here.\n"
    chunks = chunker.chunk(Extracted(text, markup="rst"))
    assert [c.heading for c in chunks] == ["Manual", "Manual > Setup"]


def test_pdf_chunks_never_cross_pages(chunker):
    pages = [SENTENCE * 6, "Second page is short.", SENTENCE * 3]
    text, spans, at = "", [], 0
    for number, page in enumerate(pages, start=1):
        if text:
            text += "\n\n"
            at += 2
        spans.append((number, at, at + len(page)))
        text += page
        at += len(page)
    chunks = chunker.chunk(Extracted(text, pages=spans))
    for chunk in chunks:
        number, start, end = spans[chunk.page - 1]
        assert start <= chunk.start and chunk.end <= end
    assert {c.page for c in chunks} == {1, 2, 3}


def test_content_hash_depends_on_text_only(chunker):
    first = chunker.chunk(Extracted("same words here"))[0]
    second = chunker.chunk(Extracted("same words here"))[0]
    other = chunker.chunk(Extracted("other words here"))[0]
    assert first.content_hash == second.content_hash != other.content_hash
