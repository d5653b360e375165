"""Helpers for AppTest: run one page of the app with services registered in this process.

Imported as ``from tests.ui.ui_helpers import …``.
"""

from __future__ import annotations

from typing import Any


QUESTION = "How do I reset the router?"
ANSWER = "Hold the recessed button for ten seconds [1]."


def ask(at, question):
    """Type ``question`` into the chat box and run the page; no exception may surface."""
    at.chat_input(key="question").set_value(question).run()
    assert not at.exception, at.exception
    return at


def chat_page() -> None:
    from feldspar.ui import page_chat

    page_chat.render()


def models_page() -> None:
    from feldspar.ui import page_models

    page_models.render()


def page_test(script, services: Any, timeout: float = 120):
    """An AppTest of ``script`` (a page function above) with ``services`` registered for it."""
    from streamlit.testing.v1 import AppTest

    from feldspar.ui.context import register_services

    register_services(services)
    return AppTest.from_function(script, default_timeout=timeout)


def texts(at: Any) -> str:
    """Everything the page wrote as markdown, captions, alerts and code, as one string."""
    parts = []
    for kind in ("markdown", "caption", "warning", "info", "error", "code", "success", "title", "subheader"):
        parts += [str(getattr(e, "value", "")) for e in getattr(at, kind)]
    return "\n".join(parts)


def chat_or_models_page() -> None:
    """The chat page, or the models page while ``session_state["on_models"]``: a page switch in one AppTest."""
    import streamlit as st

    from feldspar.ui import page_chat, page_models

    (page_models if st.session_state.get("on_models") else page_chat).render()
