"""A random-weight checkpoint's answer in the chat page is labelled as such (real engine, tiny model)."""

from __future__ import annotations

from tests.ui.ui_helpers import chat_page, page_test


def test_random_weight_answers_are_labelled(tiny_checkpoint, make_services):
    svc = make_services(None, model=str(tiny_checkpoint), device="cpu", dtype="float32", max_new_tokens=6)
    at = page_test(chat_page, svc)
    at.run()
    at.selectbox(key="policy").set_value("none").run()
    at.chat_input(key="question").set_value("Hello?").run()
    assert not at.exception, at.exception
    assert svc.engine().random_weights
    labels = [w.value for w in at.warning if "RANDOM WEIGHTS" in w.value]
    assert labels == [svc.random_label]  # once, on the one answer
    [thread] = svc.list_threads()
    assert thread["turns"] == 1
