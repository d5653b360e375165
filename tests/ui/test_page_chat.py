"""The chat page under Streamlit's AppTest, with the scripted Granite chat model and a real collection.

The agent, threads, retrieval and citations are the real ones; only the model's words are
scripted (Granite-format text through the real parser).
"""

from __future__ import annotations

from tests.agents.agent_helpers import tool_call
from tests.ui.ui_helpers import ANSWER, QUESTION, ask, chat_page, page_test, texts

def expander(at, prefix):
    return next(e for e in at.expander if e.label.startswith(prefix))


def test_question_streams_a_cited_answer_with_sources_trace_and_budget(make_services):
    svc = make_services([ANSWER])
    at = page_test(chat_page, svc)
    at.run()
    ask(at, QUESTION)
    page = texts(at)
    assert "Hold the recessed button for ten seconds [[1](#src-t1-1)]." in page
    sources = expander(at, "Sources")
    assert sources.label.startswith("Sources (1 cited")
    source_text = "\n".join(m.value for m in sources.markdown)
    assert "guide.md" in source_text and "chars" in source_text
    assert "**[1] guide.md · chars" in source_text and "guide.md — guide.md" not in source_text  # named once
    assert 'id="src-t1-1"' in source_text  # the card the answer's [1] links to
    assert "more retrieved" in sources.label and "Retrieved but not cited" in " ".join(c.value for c in sources.caption)
    assert "Hold the recessed button for ten seconds [[1](#src-t1-1)]." in [m.value for m in at.markdown]
    assert "<mark" in source_text and "ten seconds" in source_text  # the cited span, highlighted in the file
    trace = expander(at, "Trace")
    trace_text = "\n".join(m.value for m in trace.markdown)
    assert "retrieve" in trace_text and "model" in trace_text and "finalize" in trace_text
    budget = expander(at, "Prompt budget")
    labels = {m.label: m.value for m in budget.metric}
    assert int(labels["prompt tokens"].replace(",", "")) > 0
    assert "context window" in budget.get("progress")[0].proto.text
    [thread] = svc.list_threads()
    assert thread["title"] == QUESTION and at.session_state.thread_id == thread["thread_id"]


def test_open_file_serves_only_the_collections_file(make_services):
    svc = make_services([ANSWER])
    at = page_test(chat_page, svc)
    at.run()
    ask(at, QUESTION)
    at.button(key="open-t1-s0").click().run()
    assert not at.exception
    page = "\n".join(m.value for m in at.markdown)
    assert 'id="file-t1-s0"' in page and "](#file-t1-s0)" in page  # the card links to the span in the whole file
    assert "# Router guide" in page and "To reset the Feldspar router" in page
    import pytest

    from feldspar.retrieval.documents import DocumentNotFound

    with pytest.raises(DocumentNotFound):
        svc.source_file("docs", "../../etc/passwd")


def test_follow_up_reuses_the_thread_and_resume_from_sidebar(make_services):
    svc = make_services([ANSWER, "Two years [2]."])
    at = page_test(chat_page, svc)
    at.run()
    ask(at, QUESTION)
    ask(at, "How long is the warranty?")
    [thread] = svc.list_threads()
    assert thread["turns"] == 2
    second = [e for e in at.expander if e.label.startswith("Prompt budget")][1]
    reused = int({m.label: m.value for m in second.metric}["reused"].replace(",", ""))
    assert reused > 0  # the follow-up resumed from the first turn's state
    at.button(key="new-thread").click().run()
    assert at.session_state.thread_id is None and "Two years" not in texts(at)
    at.button(key=f"thread-{thread['thread_id']}").click().run()
    assert "Two years" in texts(at) and QUESTION in texts(at)


def test_side_effecting_tool_waits_for_approve(make_services, tools_module):
    notes = tools_module.with_name("notes.txt")
    svc = make_services([tool_call("save_note", text="reset = 10 s"), "Saved your note [1]."], agent_policy="always")
    at = page_test(chat_page, svc)
    at.run()
    ask(at, "Save a note about the reset")
    assert not notes.exists()  # never runs on its own
    assert "save_note" in texts(at)
    assert at.chat_input(key="question").proto.disabled  # no new question while one call waits
    at.button(key="approve").click().run()
    assert not at.exception, at.exception
    assert notes.read_text(encoding="utf-8") == "reset = 10 s\n"
    assert "Saved your note" in texts(at)
    assert not [b for b in at.button if b.key == "approve"]


def test_rejected_tool_never_runs(make_services, tools_module):
    svc = make_services([tool_call("save_note", text="x"), "I did not save it."])
    at = page_test(chat_page, svc)
    at.run()
    ask(at, "Save a note")
    at.button(key="reject").click().run()
    assert not tools_module.with_name("notes.txt").exists()
    assert "I did not save it." in texts(at)
    trace = "\n".join(m.value for e in at.expander if e.label.startswith("Trace") for m in e.markdown)
    assert "refused" in trace


def test_rename_and_delete_thread(make_services):
    svc = make_services([ANSWER])
    at = page_test(chat_page, svc)
    at.run()
    ask(at, QUESTION)
    thread_id = at.session_state.thread_id
    at.text_input(key="rename-title").input("Router notes").run()
    at.button(key="rename").click().run()
    assert svc.threads.meta(thread_id)["title"] == "Router notes"
    assert any("Router notes" in b.label for b in at.button)
    at.checkbox(key="delete-sure").check().run()
    at.button(key="delete-thread").click().run()
    assert svc.list_threads() == [] and at.session_state.thread_id is None


def test_thread_deleted_in_another_tab_starts_a_new_one(make_services):
    svc = make_services([ANSWER, "Two years [1]."])
    at = page_test(chat_page, svc)
    at.run()
    ask(at, QUESTION)
    old = at.session_state.thread_id
    svc.delete_thread(old)  # what another tab (or `feldspar threads rm`) does
    ask(at, "How long is the warranty?")
    assert f"Thread {old} was deleted" in texts(at)
    assert "Two years" in texts(at)
    [thread] = svc.list_threads()
    assert thread["thread_id"] != old and thread["title"] == "How long is the warranty?"


def test_question_over_the_window_is_warned_about(make_services):
    svc = make_services([ANSWER], context_window=400)
    at = page_test(chat_page, svc)
    at.run()
    at.number_input(key="max-new").set_value(64).run()
    ask(at, "Please explain " + "the router reset procedure in great detail " * 40)
    warnings = "\n".join(w.value for w in at.warning)
    assert "over the model's 400-token context window" in warnings
    assert "no longer fits the model's context window" in texts(at)  # the agent stopped and said why


def test_model_that_fails_to_load_is_a_message_and_the_question_is_kept(make_services):
    svc = make_services(None, model="granite-4.0-no-such-model")
    at = page_test(chat_page, svc)
    at.run()
    ask(at, QUESTION)
    errors = "\n".join(e.value for e in at.error)
    assert "granite-4.0-no-such-model" in errors
    assert at.session_state.unsent["question"] == QUESTION
    assert [b for b in at.button if b.key == "retry"]  # Try again right away, beside the failed question
    assert QUESTION in [m.value for m in at.markdown]
    at.button(key="new-thread").click().run()  # the rest of the page still works
    assert not at.exception
    assert QUESTION in [m.value for m in at.markdown] and [b for b in at.button if b.key == "retry"]


def test_the_sidebar_switches_models_and_a_model_that_cannot_load_is_a_message(make_services, tiny_checkpoint):
    svc = make_services(None, model=str(tiny_checkpoint), device="cpu", dtype="float32", max_new_tokens=3,
                        agent_policy="none")
    at = page_test(chat_page, svc)
    at.run()
    picker = next(s for s in at.selectbox if s.label == "Model")
    assert picker.value == str(tiny_checkpoint) and "granite-4.0-h-micro" in picker.options
    assert f"{tiny_checkpoint} (RANDOM WEIGHTS)" in picker.options
    picker.select("granite-4.0-h-micro").run()  # not downloadable here: the question says so, the page goes on
    assert svc.settings.model == "granite-4.0-h-micro" and not at.exception
    ask(at, QUESTION)
    assert "granite-4.0-h-micro" in "\n".join(e.value for e in at.error)
    next(s for s in at.selectbox if s.label == "Model").select(str(tiny_checkpoint)).run()
    assert svc.settings.model == str(tiny_checkpoint)
    at.button(key="new-thread").click().run()
    ask(at, QUESTION)
    assert not at.error and svc.engine_loaded and "RANDOM WEIGHTS" in texts(at)  # answered, and labelled so


def test_sidebar_choices_survive_a_visit_to_another_page(make_services):
    from tests.ui.ui_helpers import chat_or_models_page

    at = page_test(chat_or_models_page, make_services([ANSWER]))
    at.run()
    at.number_input(key="k").set_value(7).run()
    at.selectbox(key="policy").select("none").run()
    at.session_state["on_models"] = True
    at.run()
    at.session_state["on_models"] = False
    at.run()
    assert not at.exception
    assert at.number_input(key="k").value == 7 and at.selectbox(key="policy").value == "none"
