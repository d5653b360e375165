"""The Packs page through Streamlit's AppTest, with a tiny random-weight Granite checkpoint."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.ui.library_fixtures import WAIT_S, allowed, gate, make_library, page_app, write_corpus  # noqa: F401

# The Packs page inside a navigation whose chat page is a stand-in showing the pack it was given.
NAVIGATION = '''
import streamlit as st
from feldspar.ui import page_packs

def chat():
    st.title("Chat stand-in")
    st.write(f"chat_pack={st.session_state.get('chat_pack')}")

st.navigation([st.Page(page_packs.render, title="Packs", url_path="packs", default=True),
               st.Page(chat, title="Chat", url_path="chat")]).run()
'''


@pytest.fixture(scope="module")
def engine(tiny_checkpoint):
    from feldspar.compose import build_engine
    from feldspar.settings import load_settings

    return build_engine(load_settings(model=str(tiny_checkpoint), device="cpu", dtype="float32"))


@pytest.fixture(scope="module")
def small_window_engine(tiny_checkpoint, tmp_path_factory):
    """The tiny checkpoint with a 64-token context window: any pack is over it."""
    from feldspar.compose import build_engine
    from feldspar.settings import load_settings

    copy = tmp_path_factory.mktemp("small-window") / "ckpt"
    shutil.copytree(tiny_checkpoint, copy)
    config = json.loads((copy / "config.json").read_text())
    config["max_position_embeddings"] = 64
    (copy / "config.json").write_text(json.dumps(config))
    return build_engine(load_settings(model=str(copy), device="cpu", dtype="float32"))


def messages(at) -> str:
    return " | ".join(e.value for e in [*at.success, *at.error, *at.warning, *at.info])


def ingested(library, folder: Path, count: int) -> list[str]:
    names = write_corpus(folder, count)
    assert library.ingest_folder("default", str(folder)).ok and library.wait(WAIT_S)
    return names


def create_through_page(at, files: list[str], name: str):
    at.multiselect(key="packs_files").set_value(files).run()
    at.text_input(key="packs_name").input(name).run()
    at.button(key="packs_create").click().run()
    return at


def test_create_list_inspect_and_delete_a_pack(make_library, allowed, engine, feldspar_home):
    library = make_library(engine=lambda: engine)
    names = ingested(library, allowed / "notes", 3)
    at = page_app("page_packs").run()
    assert not at.exception
    create_through_page(at, names[:2], "notes")
    assert "creating pack 'notes' from 2 file(s)" in messages(at), messages(at)
    assert library.wait(WAIT_S)
    at.run()
    view = library.pack_job()
    assert view.state == "done", view.message
    tokens, window = view.result["tokens"], view.result["window"]
    assert window == engine.context_window and 0 < tokens < window
    assert f"{tokens:,} of {window:,} tokens" in messages(at)
    assert (feldspar_home / "packs" / "notes" / "pack.json").is_file()
    listed = at.dataframe[0].value
    assert list(listed["name"]) == ["notes"] and list(listed["tokens"]) == [tokens]
    assert at.selectbox(key="packs_pick").value == "notes"
    record = dict(zip(at.dataframe[1].value["field"], at.dataframe[1].value["value"]))
    assert record["tokens"] == str(tokens) and record["documents"] == "2"
    sources = list(at.dataframe[2].value["path"])
    assert [Path(p).name for p in sources] == names[:2]

    create_through_page(at, names[:1], "notes")  # the name is taken
    assert "already exists" in messages(at)
    assert 'tick "Replace a pack of that name"' in messages(at) and "--force" not in messages(at), messages(at)
    assert at.button(key="packs_delete").disabled
    at.checkbox(key="packs_confirm_delete").check().run()
    at.button(key="packs_delete").click().run()
    assert "deleted pack 'notes'" in messages(at)
    assert library.packs() == [] and not (feldspar_home / "packs" / "notes").exists()
    assert "No packs yet" in messages(at)


def test_cancel_a_pack_mid_creation_saves_nothing_and_a_new_try_works(make_library, allowed, engine, gate,
                                                                      feldspar_home):
    gate.event, gate.armed = "prefill", True
    library = make_library(engine=lambda: engine)
    names = ingested(library, allowed / "notes", 2)
    at = page_app("page_packs").run()
    create_through_page(at, names, "notes")
    assert gate.reached.wait(WAIT_S), "the pack job never reached its prefill"
    at.run()
    assert at.button(key="packs_cancel").label == "Cancel"
    at.button(key="packs_cancel").click().run()
    assert "nothing will be saved" in messages(at), messages(at)
    gate.release.set()
    assert library.wait(WAIT_S)
    at.run()
    view = library.pack_job()
    assert view.state == "cancelled" and "nothing was saved" in view.message, view
    assert library.packs() == [] and not (feldspar_home / "packs" / "notes").exists()
    assert "packs_cancel" not in [button.key for button in at.button]

    gate.armed = False
    create_through_page(at, names, "notes")  # the same name is free: nothing half-made is left
    assert library.wait(WAIT_S)
    assert library.pack_job().state == "done" and [p["name"] for p in library.packs()] == ["notes"]


def test_a_pack_over_the_window_is_a_clear_message(make_library, allowed, small_window_engine, feldspar_home):
    library = make_library(engine=lambda: small_window_engine)
    names = ingested(library, allowed / "notes", 2)
    at = page_app("page_packs").run()
    create_through_page(at, names, "toolong")
    assert library.wait(WAIT_S)
    at.run()
    assert not at.exception
    errors = " ".join(e.value for e in at.error)
    assert "pack 'toolong' would need" in errors and "64-token context window" in errors, messages(at)
    view = library.pack_job()
    assert view.state == "failed" and view.result["tokens"] >= 64 == view.result["window"]
    assert library.packs() == [] and not (feldspar_home / "packs" / "toolong").exists()
    assert len(library.sources("default")) == 2  # nothing ingested was touched
    at.run()
    assert at.button(key="packs_create") is not None  # the page keeps working


def test_start_a_chat_on_a_pack_switches_to_the_chat_page(make_library, allowed, engine):
    from streamlit.testing.v1 import AppTest

    library = make_library(engine=lambda: engine)
    names = ingested(library, allowed / "notes", 1)
    assert library.create_pack("minerals", [str(allowed / "notes" / names[0])]).ok and library.wait(WAIT_S)
    at = AppTest.from_string(NAVIGATION, default_timeout=120).run()
    assert at.selectbox(key="packs_pick").value == "minerals"
    at.button(key="packs_chat").click().run()
    assert not at.exception
    assert [t.value for t in at.title] == ["Chat stand-in"]
    assert at.session_state["chat_pack"] == "minerals"
    assert "chat_pack=minerals" in " ".join(m.value for m in at.markdown)


def test_no_collection_yet_says_what_to_do(make_library):
    make_library()
    at = page_app("page_packs").run()
    assert not at.exception
    assert "Ingest documents on the Documents page first" in messages(at)
    assert "No packs yet" in messages(at)
