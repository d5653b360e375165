"""Contextual chunks: headers built per recipe, embedded and BM25-indexed, never stored as the text."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from feldspar.retrieval.chunking import Chunker
from feldspar.retrieval.context import HeaderBuilder, embedded_text
from feldspar.retrieval.loaders import Extracted

GUIDE = "# Feldspar guide\n\nIntro.\n\n## Install\n\nRun pip.\n\n### Offline\n\nNo network needed here.\n"


def chunks_of(embedder, extracted: Extracted, name: str, recipe: str = "title-heading"):
    return Chunker(embedder.token_len, 64, 8, recipe).chunk(extracted, name)


def test_markdown_header_is_title_then_heading_path(embedder):
    chunks = chunks_of(embedder, Extracted(GUIDE, markup="markdown"), "docs/guide.md")
    by_text = {c.text.split("\n")[-1]: c.context for c in chunks}
    assert by_text["No network needed here."] == "Feldspar guide > Install > Offline"
    assert by_text["Run pip."] == "Feldspar guide > Install"
    assert by_text["Intro."] == "Feldspar guide"
    assert all(c.title == "Feldspar guide" for c in chunks)


def test_recipe_none_has_no_header(embedder):
    chunks = chunks_of(embedder, Extracted(GUIDE, markup="markdown"), "guide.md", recipe="none")
    assert {c.context for c in chunks} == {""} and {c.title for c in chunks} == {""}


def test_pdf_pages_text_names_and_code_symbols():
    pdf = Extracted("page one text page two text", pages=[(1, 0, 13), (2, 14, 27)])
    assert HeaderBuilder("title-heading", pdf, "manuals/router_setup-v2.pdf").header("", 2, 14, 27) \
        == "router setup v2 > page 2"
    code = "import os\n\nclass Store:\n    def open(self):\n        pass\n\ndef main():\n    pass\n"
    builder = HeaderBuilder("title-heading", Extracted(code), "app/store.py")
    assert builder.header("", None, code.index("pass"), code.index("pass") + 4) == "store > open"
    assert builder.header("", None, 0, 9) == "store"  # above every symbol
    assert builder.header("", None, code.index("def main"), len(code)) == "store > main"


def test_stored_text_is_the_span_and_the_vector_is_of_header_plus_text(service, embedder, tmp_path):
    root = tmp_path / "c"
    root.mkdir()
    (root / "guide.md").write_text(GUIDE)
    service.ingest([root])
    raw = service.store.open("default", embedder.name, create=False)._collection.get(
        include=["documents", "metadatas", "embeddings"])
    assert raw["ids"]
    for text, meta, vector in zip(raw["documents"], raw["metadatas"], raw["embeddings"]):
        assert GUIDE[meta["start"]:meta["end"]] == text  # citations stay exact
        assert meta["context"].startswith("Feldspar guide") and meta["title"] == "Feldspar guide"
        expected = embedder.embed([embedded_text(meta["context"], text)])[0]
        assert np.allclose(vector, expected, atol=1e-5)
        assert not np.allclose(vector, embedder.embed([text])[0], atol=1e-3)


def test_another_recipe_reindexes_the_collection(make_service, feldspar_home, tmp_path):
    root = tmp_path / "c"
    root.mkdir()
    (root / "guide.md").write_text(GUIDE)
    plain = make_service(chunk_context="none")
    plain.ingest([root])
    assert plain.manifest.chunking("default").count("|") == 2  # the key of collections from before recipes
    assert all("context" not in m for _, _, page in plain.store.open("default", plain.embedder.name, create=False)
               .iterate() for m in page)
    plain.close()
    headed = make_service(chunk_context="title-heading")
    summary = headed.ingest([root])
    assert summary.updated + summary.indexed == 1 and summary.chunks_written > 0
    assert headed.manifest.chunking("default").endswith("|context=title-heading")
    metas = [m for _, _, page in headed.store.open("default", headed.embedder.name, create=False).iterate()
             for m in page]
    assert metas and all(m["context"].startswith("Feldspar guide") for m in metas)


def test_a_word_only_in_the_file_name_is_found_through_the_title_field(make_service, tmp_path):
    root = tmp_path / "c"
    root.mkdir()
    (root / "zirconium_notes.txt").write_text("The sample was heated slowly overnight in the furnace.\n")
    (root / "other.txt").write_text("Quartz and mica were sorted by hand in the lab.\n")
    headed = make_service()
    headed.ingest([root])
    top = headed.search("zirconium", k=1)[0]
    assert top.path == "zirconium_notes.txt" and top.bm25_rank == 1
    assert top.text == "The sample was heated slowly overnight in the furnace."
    plain = make_service(home=Path(tmp_path / "plain-home"), chunk_context="none")
    plain.ingest([root])
    assert all(hit.bm25_rank is None for hit in plain.search("zirconium", k=2))
