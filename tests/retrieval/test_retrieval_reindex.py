"""``ingest --reindex`` builds beside the old collection: a stop (Ctrl-C) keeps the old index
answering in full, and running the same command again resumes and switches when complete."""

from __future__ import annotations

import threading
from pathlib import Path

from retrieval_helpers import assert_consistent, manifest_rows, store_ids

from feldspar.retrieval.reindex import staging_name

SETTINGS = {"chunk_tokens": 32, "chunk_overlap": 4, "embed_batch_size": 2}  # write batches of 8 chunks


def write_files(root: Path, count: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (root / f"doc{i:03d}.md").write_text(f"# Doc {i}\n\nDocument {i} about granite minerals number {i * 7}.\n")


class StopAfterFirstBatch:
    """A progress sink that presses Ctrl-C (sets the stop event) once a batch is written."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop

    def start(self, total, label): pass
    def advance(self, n=1): pass
    def working_on(self, path): pass
    def notice(self, message): pass

    def chunks(self, written: int) -> None:
        if written:
            self.stop.set()


def test_interrupted_reindex_keeps_the_old_index_and_resumes(make_service, tmp_path):
    root, home = tmp_path / "corpus", tmp_path / "home"
    write_files(root, 30)
    service = make_service(home=home, **SETTINGS)
    service.ingest([root])
    old_ids, old_rows = store_ids(service), manifest_rows(home)
    before = [hit.path for hit in service.search("granite minerals number 49", k=3)]

    stop = threading.Event()
    stopped = service.ingest([root], reindex=True, progress=StopAfterFirstBatch(stop), stop=stop)
    assert stopped.interrupted and stopped.chunks_written > 0
    assert store_ids(service) == old_ids and manifest_rows(home) == old_rows, "the old index is untouched"
    assert [hit.path for hit in service.search("granite minerals number 49", k=3)] == before
    assert [row["name"] for row in service.collections()] == ["default"], "the build in progress is not listed"

    resumed = service.ingest([root], reindex=True)
    assert not resumed.interrupted
    assert 0 < resumed.chunks_written < len(old_ids), "the re-run resumes the build, not starts over"
    assert store_ids(service) == old_ids
    assert_consistent(service)
    assert manifest_rows(home, staging_name("default")) == {}
    assert service.store.recorded(staging_name("default")) is None
    assert [row["name"] for row in service.collections()] == ["default"]
