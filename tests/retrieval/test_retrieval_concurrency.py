"""Reads during a write: 32 concurrent searches (threads here, and separate processes) while a
real `feldspar ingest` writes to the same store (the second writer's refusal:
test_retrieval_resume).

The searches are fired once the writer has committed its first batch and while it is
still running (checked before firing); every one must be answered without an error.
"""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor

from tests.retrieval.retrieval_helpers import start_cli
from tests.retrieval.test_retrieval_resume import committed_at_least, wait_for, write_files

from feldspar.bench.retrieval_scale import SearchProcesses

WRITER = {"FELDSPAR_EMBED_BATCH_SIZE": "2", "FELDSPAR_CHUNK_TOKENS": "32"}


def test_32_searches_in_threads_and_processes_during_an_ingest(make_service, tmp_path):
    root, home = tmp_path / "corpus", tmp_path / "home"
    write_files(root, 150)
    searchers = SearchProcesses(sys.executable, home, processes=2, threads=16).start()
    writer = start_cli("ingest", str(root), home=home, env=WRITER)
    try:
        assert wait_for(home, committed_at_least(3), writer), "the ingest ended before the searches"
        service = make_service(home=home)
        with ThreadPoolExecutor(32) as pool:
            assert writer.poll() is None, "the writer must still be writing"
            threaded = list(pool.map(lambda i: service.search(f"granite minerals number {i}", k=5), range(32)))
            in_processes = searchers.go()
    finally:
        writer.wait(300)
        writer.stdout.close()
        writer.stderr.close()
    assert len(threaded) == 32 and all(hits for hits in threaded)
    assert len(in_processes) == 32 and [error for _, error in in_processes if error] == []
    assert writer.returncode == 0


def test_concurrent_searches_after_a_write_share_one_bm25_build(service, tmp_path):
    import threading

    write_files(tmp_path / "corpus", 40)
    service.ingest([tmp_path / "corpus"])
    searcher = service.searcher(service.embedder)
    assert searcher.bm25.builds == 0  # nothing searched yet: the index of this generation is not built
    start = threading.Barrier(8)

    def search(i: int):
        start.wait()
        return service.search(f"granite minerals number {i}", k=3)

    with ThreadPoolExecutor(8) as pool:
        answered = list(pool.map(search, range(8)))
    assert all(answered) and searcher.bm25.builds == 1
    service.search("granite", k=3)
    assert searcher.bm25.builds == 1  # same generation: loaded, not rebuilt
