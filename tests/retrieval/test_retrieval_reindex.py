"""``ingest --reindex`` builds beside the old collection: a stop (Ctrl-C) keeps the old index
answering in full, and running the same command again resumes and switches when complete."""

from __future__ import annotations

import threading
from pathlib import Path

from tests.retrieval.retrieval_helpers import assert_consistent, manifest_rows, store_ids

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


def test_a_resumed_reindex_with_other_chunk_settings_rechunks_what_was_written(make_service, tmp_path):
    root, home = tmp_path / "corpus", tmp_path / "home"
    root.mkdir()
    for i in range(20):  # about 40 tokens a file: chunks of 32 and of 16 tokens differ
        (root / f"doc{i:03d}.md").write_text(f"# Doc {i}\n\n" + " ".join(
            f"granite quartz mica basalt number {i * 5 + w}" for w in range(6)) + ".\n")
    service = make_service(home=home, **SETTINGS)
    service.ingest([root])
    old_ids = store_ids(service)
    stop = threading.Event()
    assert service.ingest([root], reindex=True, progress=StopAfterFirstBatch(stop), stop=stop).interrupted

    other = {**SETTINGS, "chunk_tokens": 16}
    resumed = make_service(home=home, **other)
    resumed.ingest([root], reindex=True)
    clean_home = tmp_path / "clean"
    clean = make_service(home=clean_home, **other)
    clean.ingest([root])
    assert store_ids(resumed) == store_ids(clean) != old_ids, "every file chunked the new way"
    assert_consistent(resumed)


def test_dropping_a_collection_drops_its_unfinished_reindex(make_service, tmp_path):
    root, home = tmp_path / "corpus", tmp_path / "home"
    write_files(root, 30)
    service = make_service(home=home, **SETTINGS)
    service.ingest([root])
    stop = threading.Event()
    assert service.ingest([root], reindex=True, progress=StopAfterFirstBatch(stop), stop=stop).interrupted
    service.drop_collection("default")
    assert service.store.recorded(staging_name("default")) is None
    assert manifest_rows(home, staging_name("default")) == {}


def test_a_switch_killed_at_any_step_is_finished_by_the_next_ingest(make_service, tmp_path):
    import json
    import shutil
    import signal

    from tests.retrieval.test_retrieval_crash import SETTINGS as CRASH_SETTINGS
    from tests.retrieval.test_retrieval_crash import Zygote, write_corpus

    root, clean_home = tmp_path / "corpus", tmp_path / "clean"
    write_corpus(root, 1)
    zygote = Zygote()
    try:
        assert zygote.ingest(clean_home, root) == {"signal": None, "code": 0}
        clean_rows = manifest_rows(clean_home)
        clean_ids = store_ids(make_service(home=clean_home, **CRASH_SETTINGS))
        for point in ("swap_marked", "swap_dropped", "swap_renamed"):
            home = tmp_path / point
            shutil.copytree(clean_home, home)
            assert zygote.ingest(home, root, point, 1, reindex=True)["signal"] == signal.SIGKILL, point
            after = make_service(home=home, **CRASH_SETTINGS)
            assert after.ingest([root]).chunks_written == 0, f"{point}: the complete build is not embedded again"
            assert {p: json.loads(r[1]) for p, r in manifest_rows(home).items()} == \
                {p: json.loads(r[1]) for p, r in clean_rows.items()}, point
            assert store_ids(after) == clean_ids and after.manifest.swap_of("default") is None, point
            assert after.store.recorded(staging_name("default")) is None, point
            assert_consistent(after)
    finally:
        zygote.close()
