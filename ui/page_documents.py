"""The Documents page: collections, adding a folder or uploads, live ingest progress, file statuses.

Everything it does goes through ``services().library`` (feldspar.webui.library.LibraryServices):
the page only gathers input, shows the services' answers and polls the running ingest in a
fragment that reruns every second while a job is active, so the page never waits on an
ingest. Widget keys start with ``documents_`` (the browser test drives them).
"""

from __future__ import annotations

import streamlit as st

from feldspar.retrieval.manifest import FILE_STATUSES
from feldspar.ui.context import services
from feldspar.ui.views_documents import collections_table, show_outcome, sources_table
from feldspar.ui.views_jobs import SHARED_COLLECTION, current_collection, live_job_panel



def render() -> None:
    library = services().library
    st.title("Documents")
    view = library.ingest_job()
    # the last action's answer stays until the next action; its green line goes once its job has ended
    started = st.session_state.get("documents_flash_job")
    show_outcome(st.session_state.get("documents_flash"),
                 success=not (view is not None and not view.active and view.started == started))
    listed = library.attempt(library.collections)
    if not listed.ok:
        show_outcome(listed)
        return
    collection = _collection_picker(library, listed.value)
    _add_documents(library, collection)
    live_job_panel("documents", library.ingest_job, library.cancel_ingest,
                   "Stop after the current batch; ingest again to resume.", lambda job: f"Ingest into {job.label}",
                   hide_ended=st.session_state.get("documents_old_job"))
    _file_statuses(library, collection)
    _manage_collections(library, collection)


def _act(library, action, select: str | None = None) -> None:
    """Run an action and show its answer after a rerun, so every table on the page reflects it.
    An ended job from before this action is old news: its panel goes (its files show in the table)."""
    before = library.ingest_job()
    outcome = action()
    after = library.ingest_job()
    same = before is not None and after is not None and after.started == before.started
    st.session_state["documents_old_job"] = before.started if same else None
    st.session_state["documents_flash_job"] = after.started if after is not None and not same else None
    st.session_state["documents_flash"] = outcome
    if select and outcome.ok:
        st.session_state["documents_select"] = select
    st.rerun()


def _collection_picker(library, rows: list[dict]) -> str:
    collections_table(rows)
    names = sorted({row["name"] for row in rows} | {library.default_collection()})
    wanted = st.session_state.pop("documents_select", None)
    if wanted in names:
        st.session_state["documents_collection"] = wanted
    elif st.session_state.get("documents_collection") not in names:  # first visit, back from a page, deleted
        st.session_state["documents_collection"] = current_collection(library.default_collection(), names)
    chosen = st.selectbox("Collection", names, key="documents_collection",
                          help="Where ingested files go; a new name is created on the first ingest.")
    st.session_state[SHARED_COLLECTION] = chosen  # the chat and Packs pages open on it too
    return chosen


def _add_documents(library, collection: str) -> None:
    st.subheader("Add documents")
    left, right = st.columns(2)
    with left:
        roots = ", ".join(str(root) for root in library.allowed_roots) or "none"
        folder = st.text_input("Folder on the server", key="documents_folder",
                               help=f"An absolute path inside the allowed folders: {roots}")
        if st.button("Ingest folder", key="documents_ingest_folder", type="primary"):
            _act(library, lambda: library.ingest_folder(collection, folder))
    with right:
        limit = library.settings.ui_max_upload_bytes
        uploads = st.file_uploader("Upload files", accept_multiple_files=True, key="documents_upload",
                                   # the browser's bound (MB) is twice Feldspar's: most too-big files reach the
                                   # server and get a refusal that stays, not the uploader's passing note
                                   max_upload_size=-(-2 * limit // 1024**2),
                                   help="Text, Markdown, HTML, PDF, DOCX, code and data files; "
                                        f"at most {limit:,} bytes each.")
        if st.button("Ingest uploads", key="documents_ingest_uploads"):
            _act(library, lambda: library.ingest_uploads(collection, uploads or []))
    if st.button("Re-sync collection", key="documents_resync",
                 help="Read the collection's folders again: changed files are re-indexed, deleted ones removed."):
        _act(library, lambda: library.resync(collection))


def _file_statuses(library, collection: str) -> None:
    st.subheader("Files")
    left, right = st.columns(2)
    statuses = left.multiselect("Status", list(FILE_STATUSES), key="documents_status_filter")
    contains = right.text_input("Path or reason contains", key="documents_text_filter")
    rows = library.attempt(lambda: library.sources(collection, statuses, contains))
    if not rows.ok:
        show_outcome(rows)
        return
    sources_table(rows.value, "documents_sources_table")
    everything = library.attempt(lambda: library.sources(collection)).value or []
    if not everything:
        return
    choices = {f"{row['path']}  ({row['root']})": row for row in everything}
    picked = st.selectbox("Source to remove", list(choices), key="documents_remove_choice", index=None,
                          placeholder="choose a file")
    if st.button("Remove source", key="documents_remove_source", disabled=picked is None):
        row = choices[picked]
        _act(library, lambda: library.remove_source(collection, row["root"], row["path"]))


def _manage_collections(library, collection: str) -> None:
    with st.expander("Create or delete a collection"):
        name = st.text_input("New collection name", key="documents_new_collection",
                             help="3-63 letters, digits, '.', '_' or '-'")
        if st.button("Create collection", key="documents_create_collection"):
            _act(library, lambda: library.create_collection(name), select=name.strip())
        sure = st.checkbox(f"Yes, delete collection {collection!r} and its index", key="documents_confirm_delete")
        if st.button("Delete collection", key="documents_delete_collection", disabled=not sure):
            _act(library, lambda: library.delete_collection(collection))
