"""The fast paths behave like the slow ones: query embedding, scan keys, empty collections."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from feldspar.retrieval.scan import display_key, relative_key, scan_entry, scan_root

QUERIES = ["granite", "search vector index manifest sync", "Ünïcode ✓ query", "long query words " * 200]


@pytest.mark.parametrize("query", QUERIES)
def test_query_embedding_equals_batch_embedding(embedder, query):
    expected = embedder.embed([query])[0]
    got = embedder.embed_query(query)
    assert got.dtype == np.float32 and got.shape == expected.shape
    assert np.allclose(got, expected, atol=1e-5)
    assert np.linalg.norm(got) == pytest.approx(1.0, abs=1e-5)


def test_scan_keys_equal_relative_paths(tmp_path):
    root = tmp_path / "root"
    (root / "a" / "b").mkdir(parents=True)
    (root / "top.md").write_text("top")
    (root / "a" / "b" / "deep.txt").write_text("deep")
    odd = os.fsencode(str(root / "a")) + b"/caf\xe9.txt"
    with open(odd, "wb") as handle:
        handle.write(b"latin")
    os.symlink(root / "top.md", root / "a" / "link.md")
    real = os.path.realpath(root)
    found = scan_root(real, 1024)
    expected = sorted(display_key(os.path.relpath(os.path.join(d, n), real))
                      for d, _, names in os.walk(real) for n in names)
    assert [f.key for f in found] == expected
    assert "a/caf\\xe9.txt" in expected
    link = next(f for f in found if f.key == "a/link.md")
    assert link.path == os.path.join(real, "top.md") and link.skip_reason is None
    single = scan_entry(real, os.path.join(real, "a", "b", "deep.txt"), 1024)
    assert (single.key, single.size) == ("a/b/deep.txt", 4)


def test_relative_key_edge_cases():
    assert relative_key("/", "/srv/x.txt") == "srv/x.txt"
    assert relative_key("/data", "/data/") == "."
    assert relative_key("/data", "/data/sub/") == "sub"


def test_search_of_an_emptied_collection_finds_nothing(service, tmp_path: Path):
    root = tmp_path / "docs"
    root.mkdir()
    (root / "one.md").write_text("# One\n\nGranite and feldspar.\n")
    service.ingest([root])
    assert service.search("granite", k=3)
    (root / "one.md").unlink()
    assert service.ingest([root]).removed == 1
    assert service.search("granite", k=3) == []
