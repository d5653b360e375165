"""The live panel of a page's background job (an ingest, a pack), shared by the Documents and
Packs pages.

``live_job_panel`` draws the job's title, a Cancel button while it runs, optional details and
its progress, in a fragment that reruns every ``POLL_SECONDS`` while the job is active. Once
a job this browser session saw running has ended, it reruns the whole page so the page's
tables refresh (only when the fragment polled on its own: a whole-page run draws them after
the panel anyway). Session-state and widget keys start with the page's ``prefix``. It calls
only the functions it is given.
"""

from __future__ import annotations

from typing import Any, Callable

import streamlit as st

from feldspar.ui.views_documents import job_progress, show_outcome

POLL_SECONDS = 1.0
SHARED_COLLECTION = "kept:collection"  # the collection last chosen on any page (the chat page keeps it too)


def current_collection(default: str, names: list[str]) -> str | None:
    """The collection a page opens on: the one last chosen anywhere, else the app's own, else the first."""
    for name in (st.session_state.get(SHARED_COLLECTION), default):
        if name in names:
            return name
    return names[0] if names else None


def live_job_panel(prefix: str, current: Callable[[], Any], cancel: Callable[[], Any], cancel_help: str,
                   title: Callable[[Any], str], details: Callable[[Any], None] | None = None,
                   hide_ended: float | None = None) -> None:
    """``current()`` is the job's view or None; ``cancel()`` returns an outcome to show. An ended job
    that started at ``hide_ended`` is not drawn (an action since has made it old news)."""
    view = current()
    if view is not None and not view.active and hide_ended is not None and view.started == hide_ended:
        return

    @st.fragment(run_every=POLL_SECONDS if view is not None and view.active else None)
    def panel() -> None:
        shown = current()
        if shown is None:
            return
        st.subheader(title(shown))
        if shown.active and st.button("Cancel", key=f"{prefix}_cancel", help=cancel_help):
            show_outcome(cancel())
            shown = current()
        if details is not None:
            details(shown)
        job_progress(shown, f"{prefix}_job")
        _rerun_when_finished(prefix, shown)

    st.session_state[f"{prefix}_full_run"] = True  # the fragment's first run is part of this page run
    panel()
    st.session_state[f"{prefix}_full_run"] = False


def _rerun_when_finished(prefix: str, view: Any) -> None:
    seen_key = f"{prefix}_job_seen"
    if view.active:
        st.session_state[seen_key] = view.started
    elif st.session_state.get(seen_key) == view.started:
        st.session_state[seen_key] = None
        if not st.session_state.get(f"{prefix}_full_run"):
            st.rerun()
