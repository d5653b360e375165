"""Threads on the chat page (AppTest): the ▶ marker, the thread in the URL, titles, a failed question.

Real agent, threads and collection; scripted model words (tests/agents/agent_helpers.py).
"""

from __future__ import annotations

from tests.ui.ui_helpers import ANSWER, QUESTION, ask, chat_page, page_test, texts

def two_threads(make_services):
    svc = make_services([ANSWER, "Two years [1].", ANSWER])
    at = page_test(chat_page, svc)
    at.run()
    ask(at, QUESTION)
    first = at.session_state.thread_id
    at.button(key="new-thread").click().run()
    ask(at, "How long is the warranty?")
    return svc, at, first, at.session_state.thread_id


def marked(at) -> list[str]:
    return [b.key.removeprefix("thread-") for b in at.button if b.key.startswith("thread-") and b.label.startswith("▶")]


def test_the_marker_follows_the_clicked_thread_at_once(make_services):
    svc, at, first, second = two_threads(make_services)
    at.button(key=f"thread-{first}").click().run()
    assert marked(at) == [first] and QUESTION in texts(at)
    at.button(key=f"thread-{second}").click().run()
    assert marked(at) == [second] and "Two years" in texts(at)


def test_the_thread_is_in_the_url_and_a_fresh_session_opens_it(make_services):
    svc, at, first, second = two_threads(make_services)
    at.button(key=f"thread-{first}").click().run()
    assert at.query_params["thread"] in (first, [first])
    fresh = page_test(chat_page, svc)  # a reload (or the link in another browser): a new session
    fresh.query_params["thread"] = first
    fresh.run()
    assert fresh.session_state.thread_id == first and marked(fresh) == [first]
    assert "Hold the recessed button" in texts(fresh)
    fresh.button(key="new-thread").click().run()
    assert "thread" not in fresh.query_params


def test_a_link_to_a_missing_thread_says_so(make_services):
    fresh = page_test(chat_page, make_services([ANSWER]))
    fresh.query_params["thread"] = "no-such-thread"
    fresh.run()
    assert "no-such-thread does not exist" in texts(fresh) and fresh.session_state.thread_id is None


def test_titles_are_cut_on_a_word_dated_and_a_rename_shows_in_the_header(make_services):
    svc = make_services([ANSWER])
    at = page_test(chat_page, svc)
    at.run()
    ask(at, "Could you please tell me how to reset the Feldspar router to factory settings")
    [label] = [b.label for b in at.button if b.key.startswith("thread-")]
    title = label.removeprefix("▶ ").split(" · ")[0]
    assert title == "Could you please tell me how to reset…"
    assert "1 turn ·" in label and "1 thread" in texts(at) and "thread(s)" not in texts(at)
    at.text_input(key="rename-title").input("Router notes").run()
    at.button(key="rename").click().run()
    assert "**Router notes**" in [c.value for c in at.caption][0]


def test_a_failed_question_offers_try_again_at_once_and_is_answered_by_it(make_services, tiny_checkpoint):
    svc = make_services(None, model="granite-4.0-no-such-model")
    at = page_test(chat_page, svc)
    at.run()
    ask(at, QUESTION)
    assert QUESTION in [m.value for m in at.markdown] and "granite-4.0-no-such-model" in at.error[0].value
    assert [b for b in at.button if b.key == "retry"]  # on the same page, not one question later
    svc.switch_model(str(tiny_checkpoint))
    svc.settings = svc.settings.model_copy(update={"device": "cpu", "dtype": "float32", "max_new_tokens": 3})
    at.button(key="retry").click().run(timeout=600)  # loads the model and the embedder on a busy machine
    assert not at.exception and not at.error
    assert "unsent" not in at.session_state and svc.list_threads()[0]["title"] == QUESTION


def test_the_budget_counts_the_question_as_the_agent_will_twice_with_its_search(make_services):
    svc = make_services([ANSWER])
    choice = svc.default_choice()
    assert choice.policy == "always"
    short, long = "Reset?", "Reset? " + "Please explain the router reset procedure in detail. " * 20
    grown = svc.budget(choice, None, long)["prompt_tokens"] - svc.budget(choice, None, short)["prompt_tokens"]
    model = svc.agent(choice).deps.chat_model
    from langchain_core.messages import HumanMessage

    once = len(model.prompt_token_ids([HumanMessage(long)])) - len(model.prompt_token_ids([HumanMessage(short)]))
    assert grown >= 1.9 * once  # the user turn and the search_documents call both carry it
