"""View functions for the chat page: one turn, its sources, the approval request, the thread list.

Each function draws plain dicts (as app/webui/chat.py shapes them) with Streamlit and returns
what the user clicked; fetching data and acting on clicks is the page's job. Passage text
is escaped before the cited span is highlighted, so a document cannot inject markup.
"""

from __future__ import annotations

import html
import re
from typing import Any, Callable

import streamlit as st

from feldspar.ui.views_trace import STOP_REASONS, render_budget, render_trace

SourceContext = Callable[[dict[str, Any]], dict[str, Any] | None]


def source_title(source: dict[str, Any]) -> str:
    """``[3] docs/guide.md · p. 2 · chars 120–480 · Reset · score 0.031`` (the path once)."""
    path = str(source.get("path") or source.get("source") or "?")
    parts = [f"[{source.get('doc_id')}] {path}"]
    if source.get("page"):
        parts.append(f"p. {source['page']}")
    if source.get("start") is not None:
        parts.append(f"chars {source.get('start'):,}–{source.get('end'):,}")
    if source.get("heading"):
        parts.append(str(source["heading"]))
    if isinstance(source.get("score"), (int, float)):
        parts.append(f"score {source['score']:.3f}")
    return " · ".join(parts)


def highlighted(before: str, span: str, after: str, cut: bool = True) -> str:
    """HTML of a passage with its cited span marked; all text escaped first."""
    def esc(text: str) -> str:
        return html.escape(text).replace("\n", "<br>")

    return (f'<div class="feldspar-passage" style="font-size:0.9em;line-height:1.5">'
            f'<span style="opacity:0.6">{"…" if before and cut else ""}{esc(before)}</span>'
            f'<mark style="background:#ffe58a">{esc(span)}</mark>'
            f'<span style="opacity:0.6">{esc(after)}{"…" if after and cut else ""}</span></div>')


def anchor(turn: int, doc_id: Any) -> str:
    return f"src-t{turn}-{doc_id}"


def linked_citations(answer: str, turn: int, cited: set[str]) -> str:
    """The answer with each cited ``[n]`` a link to its source card (ids not cited are left as they are)."""
    from feldspar.agents.citations import CITATION

    def link(match: re.Match) -> str:
        inner = re.sub(r"\d+", lambda n: f"[{n.group(0)}](#{anchor(turn, n.group(0))})" if n.group(0) in cited
                       else n.group(0), match.group(1))
        return f"[{inner}]" if inner != match.group(1) else match.group(0)

    return CITATION.sub(link, answer)


def render_source(source: dict[str, Any], context: dict[str, Any] | None, key: str, turn: int = 0) -> bool:
    """One cited passage (the target of its ``[n]`` links); returns True when the user asked for the whole file."""
    st.markdown(f'<span id="{anchor(turn, source.get("doc_id"))}"></span>**{html.escape(source_title(source))}**',
                unsafe_allow_html=True)
    if context:
        st.markdown(highlighted(context["before"], context["span"], context["after"]), unsafe_allow_html=True)
    else:
        st.markdown(highlighted("", str(source.get("text") or ""), ""), unsafe_allow_html=True)
    if source.get("collection"):
        return st.button("Open file", key=f"open-{key}", help="show and download the whole file")
    return False


def render_file(file: dict[str, Any], key: str, source: dict[str, Any] | None = None) -> None:
    """The whole file of a source: a download button, and its text when it is text, the cited span
    marked where it sits in the file (with a link from the card to that place)."""
    st.download_button(f"Download {file['name']}", data=file["data"], file_name=file["name"], mime=file["mime"],
                       key=f"dl-{key}")
    if not (file["mime"].startswith("text/") or file["name"].endswith((".md", ".py", ".rst", ".txt", ".json", ".csv"))):
        return
    text = file["data"].decode("utf-8", "replace")
    start, end = (source or {}).get("start"), (source or {}).get("end")
    span = ((source or {}).get("context") or {}).get("span")
    if start is None or end is None or not span or text[start:end] != span:  # offsets of extracted text only
        st.code(text, language=None, wrap_lines=True)
        return
    st.markdown(f"[Go to the passage in {html.escape(file['name'])}](#file-{key})")
    marked = highlighted(text[:start], span, text[end:], cut=False).replace("<mark ", f'<mark id="file-{key}" ', 1)
    st.markdown(f'<div style="max-height:28em;overflow:auto;border:1px solid #ddd;padding:0.5em">{marked}</div>',
                unsafe_allow_html=True)


def render_sources(turn: dict[str, Any], context_of: SourceContext, open_file: Callable[[dict[str, Any], str], None]) -> None:
    sources = turn.get("sources") or []
    if not sources:
        st.caption("The answer cites no passage.")
    for index, source in enumerate(sources):
        key = f"t{turn['turn']}-s{index}"
        context = context_of(source)
        if render_source(source, context, key, turn["turn"]):
            st.session_state[f"show-{key}"] = True
        if st.session_state.get(f"show-{key}"):
            open_file({**source, "context": context}, key)
    if turn.get("unknown_citations"):
        st.caption("Citations of passages the model was never given were dropped: "
                   + ", ".join(f"[{i}]" for i in turn["unknown_citations"]))
    render_retrieved(turn.get("retrieved") or [])


def render_retrieved(hits: list[dict[str, Any]]) -> None:
    """Passages the search found that the answer does not cite: listed, so "0 cited" is not "0 found"."""
    if not hits:
        return
    st.caption(f"Retrieved but not cited ({len(hits):,}):")
    st.markdown("\n".join(f"- {html.escape(source_title(hit))}" for hit in hits))


def render_turn(turn: dict[str, Any], random_label: str, context_of: SourceContext,
                open_file: Callable[[dict[str, Any], str], None]) -> None:
    """One question and its answer, with Sources, Trace and Prompt budget under it."""
    with st.chat_message("user"):
        st.markdown(turn["question"])
    with st.chat_message("assistant"):
        if turn["usage"].get("random_weights"):
            st.warning(random_label)
        if turn.get("answer") is not None:
            cited = {str(s.get("doc_id")) for s in turn.get("sources") or []}
            st.markdown(linked_citations(turn["answer"], turn["turn"], cited) or "_(empty answer)_")
        else:
            st.caption("This turn has not finished (it is waiting for approval or was interrupted).")
        if turn.get("stop_reason") not in (None, "answered"):
            st.caption(f"stopped: {STOP_REASONS.get(turn['stop_reason'], turn['stop_reason'])}")
        cited, found = len(turn.get("sources") or []), len(turn.get("retrieved") or [])
        label = f"Sources ({cited:,} cited" + (f", {found:,} more retrieved)" if found else ")")
        with st.expander(label, expanded=bool(cited)):  # open, so the answer's [n] links land on their cards
            render_sources(turn, context_of, open_file)
        with st.expander(f"Trace ({len(turn.get('steps') or [])} steps)"):
            render_trace(turn.get("steps") or [])
        with st.expander("Prompt budget"):
            render_budget(turn["usage"])


def render_approval(request: dict[str, Any]) -> bool | None:
    """A side-effecting tool call waiting for the user: True approve, False reject, None not yet."""
    with st.container(border=True):
        st.markdown(f"**The agent wants to run `{html.escape(str(request.get('tool')))}`** — it has side effects "
                    f"and runs only if you approve.")
        if request.get("description"):
            st.caption(str(request["description"]))
        st.json(request.get("args") or {})
        left, right = st.columns(2)
        if left.button("Approve", key="approve", type="primary"):
            return True
        if right.button("Reject", key="reject"):
            return False
    return None


def short_title(title: str, width: int = 40) -> str:
    """``title`` cut on a word boundary with an ellipsis when longer than ``width``."""
    title = " ".join(title.split()) or "untitled"
    if len(title) <= width:
        return title
    cut = title[: width - 1].rsplit(" ", 1)[0] if " " in title[: width - 1] else title[: width - 1]
    return cut.rstrip(" ,.;:-") + "…"


def thread_date(row: dict[str, Any]) -> str:
    """When the thread last changed, as ``2 Dec 14:05`` (UTC, as the threads store keeps it)."""
    from datetime import datetime

    try:
        when = datetime.fromisoformat(str(row.get("updated") or row.get("created")))
    except ValueError:
        return ""
    return f"{when.day} {when:%b %H:%M}"


def thread_label(row: dict[str, Any]) -> str:
    where = f"pack {row['pack']}" if row.get("pack") else (row.get("collection") or "")
    turns = row.get("turns") or 0
    parts = (short_title(row.get("title") or ""), thread_date(row), f"{turns:,} turn{'' if turns == 1 else 's'}", where)
    return " · ".join(p for p in parts if p)
