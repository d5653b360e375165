"""The Packs page: make a state pack from chosen files, list, inspect and delete packs, chat on one.

Everything goes through ``services().library`` (feldspar.webui.library.LibraryServices). Pack
creation runs as a background job whose progress (reading, counting tokens against the
model's window, prefill) a fragment polls every second; a pack over the window ends the job
with its one-line reason. "Start a chat" sets ``st.session_state["chat_pack"]`` and switches
to the chat page. Widget keys start with ``packs_``.
"""

from __future__ import annotations

import streamlit as st

from feldspar.ui.context import services
from feldspar.ui.views_documents import show_outcome
from feldspar.ui.views_jobs import SHARED_COLLECTION, current_collection, live_job_panel
from feldspar.ui.views_packs import pack_record, packs_table, token_gauge

CHAT_PACK_KEY = "chat_pack"


def render() -> None:
    library = services().library
    st.title("Packs")
    show_outcome(st.session_state.pop("packs_flash", None))
    _create_form(library)
    live_job_panel("packs", library.pack_job, library.cancel_pack,
                   "Stop after the current prefill chunk; nothing is saved.", lambda job: f"Pack {job.label}",
                   details=_token_gauge)
    listed = library.attempt(library.packs)
    if not listed.ok:
        show_outcome(listed)
        return
    st.subheader("Saved packs")
    packs_table(listed.value)
    _inspect(library, [row["name"] for row in listed.value])


def _act(outcome) -> None:
    st.session_state["packs_flash"] = outcome
    st.rerun()


def _create_form(library) -> None:
    st.subheader("Create a pack")
    collections = library.attempt(library.collections)
    names = sorted(row["name"] for row in collections.value or [])
    if not names:
        st.info("Ingest documents on the Documents page first; a pack is made from a collection's files.")
        return
    if st.session_state.get("packs_collection") not in names:
        st.session_state["packs_collection"] = current_collection(library.default_collection(), names)
    collection = st.selectbox("Collection", names, key="packs_collection")
    st.session_state[SHARED_COLLECTION] = collection
    candidates = library.attempt(lambda: library.pack_candidates(collection)).value or []
    paths = {row["label"]: row["path"] for row in candidates}
    chosen = st.multiselect("Files", list(paths), key="packs_files",
                            help="Prefilled once as Granite documents; questions on the pack reuse that state.")
    name = st.text_input("Pack name", key="packs_name", help="letters, digits, '.', '_' or '-'")
    force = st.checkbox("Replace a pack of that name", key="packs_force")
    if st.button("Create pack", key="packs_create", type="primary", disabled=not chosen or not name.strip()):
        _act(library.create_pack(name.strip(), [paths[label] for label in chosen], force=force))


def _token_gauge(job) -> None:
    if job.result.get("window"):
        token_gauge(job.result["tokens"], job.result["window"])


def _inspect(library, names: list[str]) -> None:
    if not names:
        return
    st.subheader("Inspect a pack")
    name = st.selectbox("Pack", names, key="packs_pick")
    details = library.pack_details(name)
    if not details.ok:
        show_outcome(details)
    else:
        pack_record(details.value)
    left, right = st.columns(2)
    if left.button("Start a chat on this pack", key="packs_chat", disabled=not details.ok):
        st.session_state[CHAT_PACK_KEY] = name
        from feldspar.ui import page_chat

        st.switch_page(st.Page(page_chat.render, title="Chat", url_path="chat", default=True))
    sure = right.checkbox(f"Yes, delete pack {name!r}", key="packs_confirm_delete")
    if right.button("Delete pack", key="packs_delete", disabled=not sure):
        _act(library.delete_pack(name))
