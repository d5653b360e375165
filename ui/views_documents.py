"""Small views shared by the Documents and Packs pages: outcomes, job progress, tables.

Each function draws one thing from plain values (an ``Outcome``-like object with ``ok`` and
``message``, a job view with ``state``, ``fraction``, ``phase`` …, lists of dicts); none
decides anything or calls a service.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

STATE_WORDS = {"running": "running", "cancelling": "stopping…", "done": "finished",
               "cancelled": "cancelled", "failed": "failed"}


def show_outcome(outcome: Any, success: bool = True) -> None:
    """A service's answer: green when it worked (unless ``success`` is False: its job has said how it
    ended), red with its one-line reason when it did not; each refused item (``problems``) in red."""
    if outcome is None or not (outcome.message or getattr(outcome, "problems", ())):
        return
    problems = "\n".join(f"- {problem}" for problem in getattr(outcome, "problems", ()))
    if outcome.ok:
        if success and outcome.message:
            st.success(outcome.message)
        if problems:
            st.error(f"Refused:\n{problems}")
    else:
        st.error(f"{outcome.message}\n\n{problems}" if problems else outcome.message)


def human_bytes(count: int | None) -> str:
    """``1.5 KiB``; an unknown size (None, or -1 for a file not read yet) is "–", never "-1 B"."""
    if count is None or count < 0:
        return "–"
    if not count:
        return "0 B"
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return ""


def progress_text(view: Any) -> str:
    """One line under a job's bar: state, phase, current file, amounts. An ingest shows its files
    parsed and bytes read from its first second, then bytes indexed and chunks embedded."""
    parts = [STATE_WORDS.get(view.state, view.state)]
    if view.phase and view.active:
        parts.append(view.phase)
    if view.current and view.active:
        parts.append(view.current)
    if view.kind == "ingest":
        parts += _ingest_amounts(view)
    elif view.total:
        parts.append(f"{view.done:,} of {view.total:,} tokens")
    return " · ".join(parts)


def _ingest_amounts(view: Any) -> list[str]:
    parts = []
    if view.files_total:
        parts.append(f"{view.files_done:,} of {view.files_total:,} file{'' if view.files_total == 1 else 's'} "
                     f"read ({human_bytes(view.bytes_read)})")
    if view.total:
        parts.append(f"{human_bytes(view.done)} of {human_bytes(view.total)} indexed")
    if view.files_total or view.chunks:
        parts.append(f"{view.chunks:,} chunk{'' if view.chunks == 1 else 's'} embedded")
    return parts


def job_progress(view: Any, key: str) -> None:
    """The job's progress bar, its notices, and its final message once it ended."""
    st.progress(view.fraction, text=progress_text(view))
    for notice in view.notices[-5:]:
        st.caption(notice)
    if view.active:
        return
    if view.state == "done" and view.result.get("failed"):
        st.warning(view.message)  # finished, but not every file went in: not a green summary
    elif view.state == "done":
        st.success(view.message, icon=None)
    elif view.state == "cancelled":
        st.warning(view.message)
    else:
        st.error(view.message)
    problems = view.result.get("problems") or []
    if problems:
        with st.expander(f"{len(problems)} file(s) not indexed", expanded=False):
            st.dataframe(problems, hide_index=True, key=f"{key}_problems")


def collections_table(rows: list[dict]) -> None:
    if not rows:
        st.info("No collections yet: create one below, then ingest a folder or upload files.")
        return
    st.dataframe(rows, hide_index=True, key="documents_collections_table",
                 column_order=["name", "chunks", "indexed", "skipped", "failed", "pending", "embedding_model",
                               "precision"])


def sources_table(rows: list[dict], key: str) -> None:
    if not rows:
        st.caption("No files match.")
        return
    shown = [{**row, "size": human_bytes(row["size"])} for row in rows]
    st.dataframe(shown, hide_index=True, key=key, column_order=["path", "status", "reason", "chunks", "size", "root"])
