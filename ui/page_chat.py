"""The chat page: threads in the sidebar, streamed answers with Sources, Trace and Prompt budget.

The sidebar holds the persistent threads (new, resume, rename, delete: the same threads as
`feldspar threads`), what to answer from (a collection or a state pack), the retrieval
policy and the generation settings. A question streams its answer token by token while the
agent's steps appear in a status box; the finished turn is then drawn from the thread's
saved state, so what the page shows is what the thread holds. A side-effecting tool call
waits for Approve / Reject. Everything comes from ``services()``; this module decides
nothing the agent decides.
"""

from __future__ import annotations

import threading
from typing import Any

import streamlit as st

from feldspar.agents.steps import RETRIEVE, STEPS, TOKEN
from feldspar.ui.context import services
from feldspar.ui.views_chat import render_approval, render_file, render_turn, thread_date, thread_label
from feldspar.ui.views_trace import headline, render_budget_warning

POLICIES = ("always", "auto", "none")


# ---- sidebar ------------------------------------------------------------------------------
def _open_thread(thread_id: str | None) -> None:
    """A click on a thread (or New thread): runs before the page draws, so the ▶ marker is current."""
    st.session_state.thread_id = thread_id
    st.session_state.adopt_choice = thread_id is not None


def _thread_from_url(svc: Any) -> None:
    """The thread in the address (``?thread=…``) opens on a fresh session: reload or a link keeps you there."""
    if st.session_state.get("url-read"):
        return
    st.session_state["url-read"] = True
    wanted = st.query_params.get("thread")
    if wanted and svc.thread_exists(wanted):
        _open_thread(wanted)
    elif wanted:
        st.session_state.notice = {"run": st.session_state.runs, "text": (
            f"The link's thread {wanted} does not exist (it was deleted, or the link is from another server). "
            f"Your question goes to a new thread.")}


def _sync_url() -> None:
    thread_id = st.session_state.get("thread_id")
    if thread_id and st.query_params.get("thread") != thread_id:
        st.query_params["thread"] = thread_id
    elif not thread_id and "thread" in st.query_params:
        del st.query_params["thread"]


def _thread_controls(svc: Any) -> None:
    st.button("New thread", key="new-thread", width="stretch", on_click=_open_thread, args=(None,))
    rows = svc.list_threads()
    current = st.session_state.get("thread_id")
    st.caption(f"{len(rows):,} thread{'' if len(rows) == 1 else 's'}" if rows else "no threads yet")
    for row in rows[:50]:
        mark = "▶ " if row["thread_id"] == current else ""
        st.button(mark + thread_label(row), key=f"thread-{row['thread_id']}", width="stretch",
                  on_click=_open_thread, args=(row["thread_id"],))
    if current and svc.thread_exists(current):
        with st.expander("This thread"):
            title = st.text_input("Title", key="rename-title", placeholder="new title")
            if st.button("Rename", key="rename") and title.strip():
                svc.rename_thread(current, title)
                st.rerun()
            sure = st.checkbox("Yes, delete it and its saved state", key="delete-sure")
            if st.button("Delete thread", key="delete-thread", disabled=not sure):
                svc.delete_thread(current)
                _open_thread(None)
                st.rerun()


def _adopt_thread_choice(svc: Any, base: Any) -> None:
    """Resuming a thread: answer from what it was made with (its collection or pack)."""
    thread = st.session_state.get("thread_id")
    if not (st.session_state.pop("adopt_choice", False) and thread and svc.thread_exists(thread)):
        return
    chosen = svc.thread_choice(thread, st.session_state.get("choice") or base)
    st.session_state["source-kind"] = "State pack" if chosen.pack else "Collection"
    if chosen.pack:
        st.session_state["pack"] = chosen.pack
    elif chosen.collection:
        st.session_state["collection"] = chosen.collection


KEPT = "kept:"  # session-state prefix of the sidebar choices' copies


def _adopt_pack_from_packs_page() -> None:
    """"Start a chat" on the Packs page: a new thread answering from that pack."""
    pack = st.session_state.pop("chat_pack", None)
    if pack:
        st.session_state["source-kind"] = "State pack"
        st.session_state["pack"] = pack
        st.session_state["thread_id"] = None


def _model_picker(svc: Any) -> None:
    models = svc.model_choices()
    chosen = st.selectbox("Model", models, index=models.index(svc.settings.model), format_func=svc.model_label,
                          help="a catalog name or the checkpoint Feldspar was started with; it loads with "
                               "the next question (for everyone using this server)")
    if chosen != svc.settings.model:
        svc.switch_model(chosen)
        st.rerun()


def _choice_controls(svc: Any):
    base = svc.default_choice()
    for key, value in (("source-kind", "Collection"), ("collection", base.collection), ("policy", base.policy),
                       ("max-new", base.max_new_tokens), ("temperature", float(base.temperature)), ("k", base.k)):
        st.session_state.setdefault(key, st.session_state.get(KEPT + key, value))
    if "pack" not in st.session_state and KEPT + "pack" in st.session_state:
        st.session_state["pack"] = st.session_state[KEPT + "pack"]
    _adopt_thread_choice(svc, base)
    _adopt_pack_from_packs_page()
    kind = st.radio("Answer from", ("Collection", "State pack"), key="source-kind", horizontal=True,
                    label_visibility="collapsed")
    collection = pack = None
    if kind == "Collection":
        names = sorted(set(svc.collections()) | {st.session_state["collection"]})
        collection = st.selectbox("Collection", names, key="collection")
        policy = st.selectbox("Retrieval policy", POLICIES, key="policy",
                              help="always: search before every answer; auto: the model decides; none: tools only")
    else:
        packs = svc.packs()
        if st.session_state.get("pack") not in packs:
            st.session_state.pop("pack", None)
        first = {} if "pack" in st.session_state else {"index": 0 if packs else None}
        pack = st.selectbox("State pack", packs, key="pack", placeholder="no packs yet", **first)
        policy = "pack"
    with st.expander("Model and generation"):
        if svc.scripted:
            st.caption(svc.chat_backend_name())
        else:
            _model_picker(svc)
        max_new = st.number_input("Max new tokens", 1, 32768, key="max-new")
        temperature = st.slider("Temperature", 0.0, 2.0, step=0.05, key="temperature")
        k = st.number_input("Passages per search (k)", 1, 50, key="k")
    choice = type(base)(collection=collection, pack=pack, policy=policy, k=int(k), max_new_tokens=int(max_new),
                        temperature=float(temperature))
    st.session_state.choice = choice
    _keep_choices()
    return choice


def _keep_choices() -> None:
    """Streamlit forgets a widget's value on a run that does not draw it (another page): keep copies."""
    for key in ("source-kind", "collection", "policy", "max-new", "temperature", "k", "pack"):
        if key in st.session_state:
            st.session_state[KEPT + key] = st.session_state[key]


# ---- the conversation --------------------------------------------------------------------
def _context_of(svc: Any):
    cache = st.session_state.setdefault("source-contexts", {})

    def context(source: dict[str, Any]) -> dict[str, Any] | None:
        if not source.get("collection") or source.get("start") is None:
            return None
        key = (source["collection"], source.get("path"), source.get("start"), source.get("end"))
        if key not in cache:
            try:
                cache[key] = svc.source_context(source["collection"], source["path"], source["start"], source["end"])
            except svc.user_errors:
                cache[key] = None
        return cache[key]

    return context


def _open_file(svc: Any):
    def show(source: dict[str, Any], key: str) -> None:
        try:
            render_file(svc.source_file(source["collection"], source["path"]), key, source)
        except svc.user_errors as exc:
            st.error(svc.error_text(exc))

    return show


def _history(svc: Any, choice: Any, thread_id: str) -> list[dict[str, Any]]:
    turns = svc.thread_turns(thread_id, svc.known_window(choice))
    for turn in turns:
        render_turn(turn, svc.random_label, _context_of(svc), _open_file(svc))
    return turns


def _stream(svc: Any, choice: Any, question: str | None, resume: bool | None = None) -> bool:
    """Run a question (or an approval decision) with the answer streamed; False when it failed."""
    thread_id = st.session_state.get("thread_id")
    notice = st.session_state.get("notice")
    if notice and notice["run"] < st.session_state.runs:  # shown until the next question
        st.session_state.pop("notice")
    st.session_state.pop("budget", None)
    if question is not None:
        with st.chat_message("user"):
            st.markdown(question)
    with st.chat_message("assistant"):
        loading = not svc.scripted and not svc.engine_loaded  # a sign of life from the first second
        status = st.status("Loading the model…" if loading else "Preparing the prompt…", expanded=True)
        try:
            if svc.random_weights(choice):
                st.warning(svc.random_label)
            if question is not None:
                st.session_state.budget = svc.budget(choice, thread_id, question)  # kept under the answer
                render_budget_warning(st.session_state.budget)
            st.write_stream(_answer_tokens(svc, choice, question, thread_id, resume, status))
            status.update(label="Done", state="complete", expanded=False)
        except svc.user_errors as exc:
            status.update(label="Not answered", state="error", expanded=False)
            if question is None:
                st.error(svc.error_text(exc))
                return False
            st.session_state.unsent = {"question": question, "error": svc.error_text(exc)}
            st.rerun()  # drawn at once with its error and Try again (above the input), not one question late
    st.session_state.pop("unsent", None)
    return True


def _answer_tokens(svc: Any, choice: Any, question: str | None, thread_id: str | None, resume: bool | None,
                   status: Any):
    """The answer's text as it streams, with the status box saying what happens meanwhile."""
    bar = status.empty()
    searching = choice.policy == "always" and question is not None
    status.update(label="Retrieving passages…" if searching else "Reading the prompt…")

    from streamlit.runtime.scriptrunner import add_script_run_ctx, get_script_run_ctx

    page_run = get_script_run_ctx()

    def prefill(done: int, total: int) -> None:  # called on the graph's worker thread: lend it this page run
        add_script_run_ctx(threading.current_thread(), page_run)
        status.update(label=f"Prefilling {total:,} prompt tokens…")
        bar.progress(done / total if total else 1.0, text=f"prefilled {done:,} of {total:,} tokens")

    answering = False
    for event in svc.stream_turn(choice, question, thread_id, resume, on_prefill=prefill):
        st.session_state.thread_id = event.thread_id
        if event.kind == TOKEN:
            if not answering:
                status.update(label="Generating the answer…")
                answering = True
            yield event.text
        elif event.kind in STEPS:
            status.write(headline(event.data))
            if event.kind == RETRIEVE:
                status.update(label="Reading the prompt…")


def _unsent(svc: Any, choice: Any) -> None:
    """A question whose turn failed (a model that cannot load…): kept with its error and a Try again."""
    unsent = st.session_state.get("unsent")
    if not unsent:
        return
    with st.chat_message("user"):
        st.markdown(unsent["question"])
    with st.chat_message("assistant"):
        st.error(unsent["error"])
        st.caption("Not answered yet: the question is kept here.")
        retry = st.button("Try again", key="retry")
    if retry:
        st.session_state.pop("unsent")
        if _stream(svc, choice, unsent["question"]):
            st.rerun()


def _check_thread(svc: Any) -> None:
    """A thread deleted elsewhere (another tab, the CLI): say so and start a new one."""
    thread_id = st.session_state.get("thread_id")
    if thread_id and not svc.thread_exists(thread_id):
        st.session_state.notice = {"run": st.session_state.runs, "text": (
            f"Thread {thread_id} was deleted (in another tab or from the command line). "
            f"Your question goes to a new thread; nothing else was changed.")}
        st.session_state.thread_id = None
    notice = st.session_state.get("notice")
    if notice:
        st.warning(notice["text"])


def _pending(svc: Any, choice: Any, thread_id: str, turns: list[dict[str, Any]]) -> bool:
    """Approve / Reject a side-effecting call the thread waits on; True while one waits."""
    if not turns or turns[-1]["finished"]:
        return False
    try:
        request = svc.pending_approval(choice, thread_id)
    except svc.user_errors as exc:
        st.error(svc.error_text(exc))
        return False
    if request is None:
        return False
    decision = render_approval(request)
    if decision is not None and _stream(svc, choice, None, resume=decision):
        st.rerun()
    return True


def _thread_header(svc: Any, thread_id: str | None) -> str:
    if not thread_id:
        return "New thread"
    row = svc.threads.meta(thread_id)
    return f"**{row.get('title') or 'untitled'}** · {thread_date(row)}"


def _where(choice: Any) -> str:
    if choice.policy == "pack":
        return f"state pack `{choice.pack}`" if choice.pack else "a state pack (none chosen)"
    return f"collection `{choice.collection}` (retrieval policy {choice.policy})"


def render() -> None:
    svc = services()
    st.session_state.setdefault("thread_id", None)
    st.session_state.runs = st.session_state.get("runs", 0) + 1
    _thread_from_url(svc)
    with st.sidebar:
        st.subheader("Threads")
        _thread_controls(svc)
        st.subheader("Answer from")
        choice = _choice_controls(svc)
    st.title("Chat")
    _check_thread(svc)
    thread_id = st.session_state.get("thread_id")
    _sync_url()
    st.caption(f"{_thread_header(svc, thread_id)} · answers from {_where(choice)}")
    turns = _history(svc, choice, thread_id) if thread_id else []
    waiting = False
    if thread_id:
        if turns and st.session_state.get("budget"):
            render_budget_warning(st.session_state.budget)  # the warning given before the last question
        waiting = _pending(svc, choice, thread_id, turns)
    _unsent(svc, choice)
    if choice.policy == "pack" and not choice.pack:
        st.info("Pick a state pack in the sidebar (make one on the Packs page).")
        return
    question = st.chat_input("Approve or reject the tool call first" if waiting else "Ask about your documents",
                             key="question", disabled=waiting)
    if question and _stream(svc, choice, question):
        st.rerun()
