"""Chat on a state pack with the tiny random-weight engine: the pack is picked, the thread remembers it."""

from __future__ import annotations

from tests.ui.ui_helpers import chat_page, page_test


def test_chat_on_a_pack_and_resume_adopts_the_pack(tiny_checkpoint, make_services):
    from feldspar.model.packs import create_pack

    svc = make_services(None, model=str(tiny_checkpoint), device="cpu", dtype="float32", max_new_tokens=4)
    documents = [{"doc_id": "guide.md", "title": "guide.md", "text": "Hold the button for ten seconds to reset."}]
    create_pack(svc.engine(), svc.settings.packs_dir, "router", documents, [{"path": "guide.md"}])
    at = page_test(chat_page, svc)
    at.run()
    at.radio(key="source-kind").set_value("State pack").run()
    assert at.selectbox(key="pack").value == "router"
    at.chat_input(key="question").set_value("How do I reset it?").run()
    assert not at.exception, at.exception
    [thread] = svc.list_threads()
    assert thread["pack"] == "router"
    assert any(svc.random_label == w.value for w in at.warning)  # random weights, labelled
    at.button(key="new-thread").click().run()
    at.radio(key="source-kind").set_value("Collection").run()
    at.button(key=f"thread-{thread['thread_id']}").click().run()  # resuming answers from its pack again
    assert at.radio(key="source-kind").value == "State pack" and at.selectbox(key="pack").value == "router"


def _pack_chat(svc, question="How do I reset it?"):
    at = page_test(chat_page, svc)
    at.run()
    at.radio(key="source-kind").set_value("State pack").run()
    at.chat_input(key="question").set_value(question).run()
    assert not at.exception, at.exception
    [thread] = svc.list_threads()
    [turn] = svc.thread_turns(thread["thread_id"])
    return at, turn


def test_a_pack_made_in_the_app_is_reused_by_a_chat_with_a_tools_module(tiny_checkpoint, make_services):
    from feldspar.model.packs import read_meta

    svc = make_services(None, model=str(tiny_checkpoint), device="cpu", dtype="float32", max_new_tokens=4)
    files = [row["path"] for row in svc.library.pack_candidates("docs")]
    assert svc.library.create_pack("router", files).ok and svc.library.wait(300)
    meta = read_meta(svc.settings.packs_dir, "router")
    assert meta["tools"] == ["save_note"]  # made with the chat's tools
    assert svc.library.packs()[0]["model"].endswith("(RANDOM WEIGHTS)")  # Saved packs and Inspect say so
    assert svc.library.pack_details("router").value["model"].endswith("(RANDOM WEIGHTS)")
    at, turn = _pack_chat(svc)
    model_step = next(s for s in turn["steps"] if s["node"] == "model")
    assert model_step["reused_tokens"] >= meta["tokens"] - 1  # the whole pack prefix came from its state
    assert turn["usage"]["pack_not_reused"] is None
    assert "not reused" not in " ".join(w.value for w in at.warning)
    heard = []  # what the page's status box is told while the prompt is prefilled
    choice = svc.default_choice().__class__(pack="router", policy="pack", max_new_tokens=2)
    list(svc.stream_turn(choice, "And the warranty?", None, on_prefill=lambda done, total: heard.append((done, total))))
    assert heard and heard[-1][0] == heard[-1][1] > 0


def test_a_pack_made_without_the_chats_tools_says_it_is_not_reused_and_how_to_fix(tiny_checkpoint, make_services):
    from feldspar.model.packs import create_pack

    svc = make_services(None, model=str(tiny_checkpoint), device="cpu", dtype="float32", max_new_tokens=4)
    documents = [{"doc_id": "guide.md", "title": "guide.md", "text": "Hold the button for ten seconds to reset."}]
    create_pack(svc.engine(), svc.settings.packs_dir, "router", documents, [{"path": "guide.md"}])  # no tools
    at, turn = _pack_chat(svc)
    note = turn["usage"]["pack_not_reused"]
    assert note and "save_note" in note and "re-create the pack" in note
    assert any(note == w.value for w in at.warning)  # said in the budget, under the answer and before it
    assert any(s["node"] == "begin" and s["why"] == note for s in turn["steps"])  # and in the trace
