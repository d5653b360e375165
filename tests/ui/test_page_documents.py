"""The Documents page through Streamlit's AppTest, on the real services, store and embedder."""

from __future__ import annotations

from pathlib import Path

from tests.ui.library_fixtures import WAIT_S, allowed, gate, make_library, page_app, write_corpus  # noqa: F401


def messages(at) -> str:
    return " | ".join(e.value for e in [*at.success, *at.error, *at.warning, *at.info])


def statuses(library, collection="default") -> dict[str, str]:
    return {row["path"]: row["status"] for row in library.sources(collection)}


def files_table(at):
    """The file status table: the page's last table (collections first, then any job problems)."""
    return at.dataframe[-1].value


def ingest_folder(at, folder: Path):
    at.text_input(key="documents_folder").input(str(folder))
    at.button(key="documents_ingest_folder").click().run()
    return at


def test_ingest_a_folder_through_the_page_to_completion(make_library, allowed):
    library = make_library()
    names = write_corpus(allowed / "notes", 5)
    at = page_app("page_documents").run()
    assert not at.exception
    ingest_folder(at, allowed / "notes")
    assert "ingesting" in messages(at)
    assert library.wait(WAIT_S)
    at.run()
    assert not at.exception, at.exception
    assert "indexed 5" in messages(at), messages(at)
    assert statuses(library) == {name: "indexed" for name in names}
    table = files_table(at)
    assert sorted(table["path"]) == names and set(table["status"]) == {"indexed"}
    assert at.progress[0].value == 100


def test_cancel_mid_ingest_then_resume_loses_nothing(make_library, allowed, gate):
    library = make_library()
    names = write_corpus(allowed / "notes", 12)  # one chunk each, batches of 4
    gate.armed = True
    at = page_app("page_documents").run()
    ingest_folder(at, allowed / "notes")
    assert gate.reached.wait(WAIT_S), "the ingest never wrote a batch"
    at.run()
    assert at.button(key="documents_cancel").label == "Cancel"
    at.button(key="documents_cancel").click().run()
    gate.release.set()
    assert library.wait(WAIT_S)
    at.run()
    first = library.ingest_job()
    assert first.state == "cancelled" and "resume" in messages(at), messages(at)
    done_before = statuses(library)
    committed = [path for path, status in done_before.items() if status == "indexed"]
    assert 1 <= len(committed) < 12
    in_store_before = library.collections()[0]["chunks"]  # committed files' chunks and the batch in flight
    assert in_store_before >= sum(row["chunks"] for row in library.sources("default"))

    gate.armed = False
    at.button(key="documents_ingest_folder").click().run()  # the folder is still in the input
    assert library.wait(WAIT_S)
    at.run()
    second = library.ingest_job()
    assert second.state == "done", second.message
    assert statuses(library) == {name: "indexed" for name in names}
    assert second.result["unchanged"] == len(committed)
    total_chunks = sum(row["chunks"] for row in library.sources("default"))
    assert total_chunks == 12 and library.collections()[0]["chunks"] == 12
    assert second.result["chunks_written"] == total_chunks - in_store_before, "chunks embedded twice"


def test_status_table_filters(make_library, allowed):
    library = make_library()
    folder = allowed / "mixed"
    write_corpus(folder, 2)
    (folder / "blob.bin").write_bytes(b"\x00\x01binary")
    (folder / "empty.md").write_text("", encoding="utf-8")
    assert library.ingest_folder("default", str(folder)).ok and library.wait(WAIT_S)
    at = page_app("page_documents").run()
    table = files_table(at)
    assert set(table["status"]) == {"indexed", "skipped"} and len(table) == 4
    at.multiselect(key="documents_status_filter").select("skipped").run()
    table = files_table(at)
    assert sorted(table["path"]) == ["blob.bin", "empty.md"] and all(table["reason"])
    at.text_input(key="documents_text_filter").input("empty").run()
    assert list(files_table(at)["path"]) == ["empty.md"]
    at.multiselect(key="documents_status_filter").unselect("skipped").select("failed").run()
    assert "No files match" in " ".join(c.value for c in at.caption)


def test_an_ingest_with_failed_files_is_not_summarised_in_green():
    from streamlit.testing.v1 import AppTest

    def page():
        from feldspar.ui.views_documents import job_progress
        from feldspar.webui.jobs import JobView

        job_progress(JobView("ingest", "x", state="done", done=10, total=10, chunks=3, files_done=3, files_total=3,
                             message="x: indexed 1 · failed 2", result={"failed": 2, "problems": []}), "k")

    at = AppTest.from_function(page).run()
    assert not at.exception, at.exception
    assert [w.value for w in at.warning] == ["x: indexed 1 · failed 2"] and not at.success


def test_uploads_are_checked_before_anything_is_written(make_library, feldspar_home):
    library = make_library(ui_max_upload_bytes=64)
    uploads = feldspar_home / "uploads"
    at = page_app("page_documents").run()
    bad = [("big.md", b"x" * 65, "text/markdown"), ("virus.exe", b"MZ", "application/octet-stream"),
           ("../../escape.md", b"# hi", "text/markdown"), (".env", b"SECRET=1", "text/plain")]
    for name, data, mime in bad:
        at.file_uploader(key="documents_upload").set_value((name, data, mime))
        at.button(key="documents_ingest_uploads").click().run()
        assert not at.exception
        assert len(at.error) == 1, (name, messages(at))
        assert not uploads.exists() or not any(uploads.rglob("*")), f"{name} was written"
    errors = []
    for name, data, mime in bad:
        at.file_uploader(key="documents_upload").set_value((name, data, mime))
        at.button(key="documents_ingest_uploads").click().run()
        errors.append(at.error[0].value)
    assert "over the 64-byte limit" in errors[0] and "unknown type .exe" in errors[1]
    assert "path in its name" in errors[2] and "hidden files" in errors[3]
    assert library.ingest_job() is None


def test_good_upload_is_stored_under_the_home_and_indexed_and_can_be_removed(make_library, feldspar_home):
    library = make_library()
    at = page_app("page_documents").run()
    at.file_uploader(key="documents_upload").set_value([("guide.md", b"# Guide\n\nHold the button.\n", "text/markdown"),
                                                        ("bad.exe", b"MZ", "application/octet-stream")])
    at.button(key="documents_ingest_uploads").click().run()
    assert "Stored 1 upload" in messages(at) and "bad.exe" in messages(at)
    assert library.wait(WAIT_S)
    stored = feldspar_home / "uploads" / "default" / "guide.md"
    assert stored.read_bytes() == b"# Guide\n\nHold the button.\n"
    assert statuses(library) == {"guide.md": "indexed"}
    at.run()
    at.selectbox(key="documents_remove_choice").select_index(0).run()
    at.button(key="documents_remove_source").click().run()
    assert "removed guide.md" in messages(at), messages(at)
    assert statuses(library) == {} and not stored.exists()
    assert library.collections()[0]["chunks"] == 0


def test_remove_a_folder_source_keeps_the_rest(make_library, allowed):
    library = make_library()
    write_corpus(allowed / "notes", 3)
    assert library.ingest_folder("default", str(allowed / "notes")).ok and library.wait(WAIT_S)
    at = page_app("page_documents").run()
    choice = at.selectbox(key="documents_remove_choice")
    choice.select(next(option for option in choice.options if option.startswith("note01.md"))).run()
    at.button(key="documents_remove_source").click().run()
    assert "removed note01.md" in messages(at)
    assert statuses(library) == {"note00.md": "indexed", "note02.md": "indexed"}
    assert (allowed / "notes" / "note01.md").exists()
    assert library.collections()[0]["chunks"] == 2


def test_folder_outside_the_allowed_roots_is_refused(make_library, allowed, tmp_path):
    library = make_library()
    outside = tmp_path / "outside"
    write_corpus(outside, 1)
    (allowed / "link").symlink_to(outside)
    hidden = allowed / ".secret"
    write_corpus(hidden, 1)
    at = page_app("page_documents").run()
    for folder, words in [(outside, "outside the folders the UI may read"), (allowed / "link", "outside"),
                          (allowed / ".." / "outside", "outside"), (hidden, "hidden folder"),
                          (Path("relative/path"), "absolute"), (allowed / "missing", "no such")]:
        ingest_folder(at, folder)
        assert not at.exception and len(at.error) == 1 and words in at.error[0].value, (folder, messages(at))
    assert library.ingest_job() is None and library.collections() == []


def test_collection_create_select_and_delete(make_library, allowed):
    library = make_library()
    write_corpus(allowed / "notes", 2)
    at = page_app("page_documents").run()
    at.text_input(key="documents_new_collection").input("manuals")
    at.button(key="documents_create_collection").click().run()
    assert "created collection 'manuals'" in messages(at)
    assert at.selectbox(key="documents_collection").value == "manuals"
    ingest_folder(at, allowed / "notes")
    assert library.wait(WAIT_S)
    assert statuses(library, "manuals") == {"note00.md": "indexed", "note01.md": "indexed"}
    at.text_input(key="documents_new_collection").input("x")
    at.button(key="documents_create_collection").click().run()
    assert "invalid collection name" in messages(at), messages(at)
    at.run()
    assert at.button(key="documents_delete_collection").disabled
    at.checkbox(key="documents_confirm_delete").check().run()
    at.button(key="documents_delete_collection").click().run()
    assert "deleted collection 'manuals'" in messages(at)
    assert [row["name"] for row in library.collections()] == [] and statuses(library, "manuals") == {}
    assert (allowed / "notes" / "note00.md").exists()


def test_the_app_entry_serves_the_documents_page(feldspar_home):
    """app/webui/main.py builds UiServices (whose ``library`` is LibraryServices) and navigates to Documents."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    entry = Path(__file__).resolve().parents[2] / "app" / "webui" / "main.py"
    st.cache_resource.clear()  # the services of another test's data home must not leak in
    try:
        at = AppTest.from_file(str(entry), default_timeout=120).run()
        pages = {info.get("url_pathname"): page_hash for page_hash, info in at._registered_pages.items()}
        at._page_hash = pages["documents"]  # AppTest.switch_page only knows file-based pages
        at.run()
        assert not at.exception, at.exception
        assert [t.value for t in at.title] == ["Documents"]
        assert at.text_input(key="documents_folder").label == "Folder on the server"
        assert str(Path.home()) in at.text_input(key="documents_folder").help
        assert "No collections yet" in messages(at)
    finally:
        st.cache_resource.clear()


def test_upload_refusals_stay_red_per_file_after_the_ingest_ends(make_library, feldspar_home):
    library = make_library()
    at = page_app("page_documents").run()
    at.file_uploader(key="documents_upload").set_value([("guide.md", b"# Guide\n\nHold the button.\n", "text/markdown"),
                                                        ("program.exe", b"MZ", "application/octet-stream"),
                                                        ("bundle.zip", b"PK", "application/zip")])
    at.button(key="documents_ingest_uploads").click().run()
    assert library.wait(WAIT_S)
    at.run()  # the ingest has ended: the page reran
    assert not at.exception
    [refused] = [e.value for e in at.error]
    assert "program.exe" in refused and "bundle.zip" in refused and refused.count("\n- ") == 2
    assert not any("program.exe" in s.value for s in at.success)  # never in green
    assert "indexed 1" in " ".join(s.value for s in at.success)  # the job's own summary
    at.run()
    assert [e.value for e in at.error] == [refused]  # still there until the next action
    at.button(key="documents_resync").click().run()
    assert not any("program.exe" in e.value for e in at.error)


def test_documents_opens_on_the_collection_the_app_was_started_with(make_library, allowed):
    library = make_library(collection="zeta")
    write_corpus(allowed / "notes", 1)
    assert library.ingest_folder("alpha", str(allowed / "notes")).ok and library.wait(WAIT_S)
    at = page_app("page_documents").run()
    assert at.selectbox(key="documents_collection").value == "zeta"
