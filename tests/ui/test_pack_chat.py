"""Chat on a state pack with the tiny random-weight engine: the pack is picked, the thread remembers it."""

from __future__ import annotations

from ui_helpers import chat_page, page_test


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
