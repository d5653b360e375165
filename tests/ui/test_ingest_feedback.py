"""The Documents page's ingest feedback (issue 23, item 12): files and bytes from the first
parse on, a Cancel that takes effect after the embedding batch in flight, and one chunk count
in the progress line, the job's last line and the collections table."""

from __future__ import annotations

from pathlib import Path

from tests.ui.library_fixtures import WAIT_S, allowed, gate, make_library, page_app, write_corpus  # noqa: F401


def messages(at) -> str:
    return " | ".join(e.value for e in [*at.success, *at.error, *at.warning, *at.info])


def start_ingest(at, folder: Path):
    at.text_input(key="documents_folder").input(str(folder))
    at.button(key="documents_ingest_folder").click().run()
    return at


def test_files_and_bytes_show_before_the_first_chunk_is_embedded(make_library, allowed, gate):
    library = make_library()
    names = write_corpus(allowed / "notes", 6)
    first = (allowed / "notes" / names[0]).stat().st_size
    gate.event, gate.armed = "parsed", True  # held once the first file's parse came back
    at = start_ingest(page_app("page_documents").run(), allowed / "notes")
    assert gate.reached.wait(WAIT_S), "the ingest never parsed a file"
    at.run()
    line = at.progress[0].text
    gate.release.set()
    assert library.wait(WAIT_S)
    assert "parsing and embedding" in line and "0 chunks embedded" in line, line
    assert f"1 of 6 files read ({first} B)" in line, line


def test_cancel_stops_after_the_embedding_batch_in_flight_and_every_count_agrees(make_library, allowed, gate,
                                                                                 embedder, monkeypatch):
    monkeypatch.setattr(embedder, "batch_size", 1)  # one chunk per embedding batch
    library = make_library()  # one chunk per file, files committed four at a time
    write_corpus(allowed / "notes", 12)
    gate.event, gate.armed = "embedded", True  # the first chunk of the first batch is stored, three to go
    at = start_ingest(page_app("page_documents").run(), allowed / "notes")
    assert gate.reached.wait(WAIT_S), "the ingest never embedded a chunk"
    at.run()
    line = at.progress[0].text
    assert "1 chunk embedded" in line and " · 0 B of" not in line, line  # the bytes of that chunk's file count
    at.button(key="documents_cancel").click().run()
    assert "stopping" in at.progress[0].text
    gate.release.set()
    assert library.wait(WAIT_S)
    at.run()
    view = library.ingest_job()
    stored = library.collections()[0]["chunks"]
    assert view.state == "cancelled" and view.chunks == view.result["chunks_written"] == stored == 1, (view, stored)
    assert "no file finished · 1 chunk embedded (kept); the collection holds 1 chunk" in messages(at), messages(at)
    assert list(at.dataframe[0].value["chunks"]) == [1]  # the collections table says the same
    assert "1 chunk embedded" in at.progress[0].text

    gate.armed = False
    at.button(key="documents_ingest_folder").click().run()  # resume: the stored chunk is not embedded again
    assert library.wait(WAIT_S)
    at.run()
    view = library.ingest_job()
    assert view.state == "done" and view.result["chunks_written"] == 11 and view.chunks == 11, view
    assert "11 chunks embedded" in messages(at) and "the collection holds 12 chunks" in messages(at), messages(at)
    assert list(at.dataframe[0].value["chunks"]) == [12]
