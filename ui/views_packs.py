"""Small views of the Packs page: the pack list, one pack's record, a token count against a window.

Plain values in (rows, a pack's ``pack.json`` as a dict), Streamlit elements out; nothing here
reads files or decides anything.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from feldspar.ui.views_documents import human_bytes

LIST_COLUMNS = ["name", "model", "dtype", "tokens", "documents", "size", "created", "error"]
DETAIL_FIELDS = ["model", "model_source", "dtype", "tokens", "documents", "state_bytes", "prefill_s", "created",
                 "fingerprint", "torch", "transformers"]


def packs_table(rows: list[dict]) -> None:
    if not rows:
        st.info("No packs yet: choose files of a collection above and create one.")
        return
    shown = [{**row, "size": human_bytes(row.get("state_bytes"))} for row in rows]
    st.dataframe(shown, hide_index=True, column_order=[c for c in LIST_COLUMNS if any(c in r for r in shown)])


def token_gauge(tokens: int, window: int) -> None:
    """How much of the model's context window a pack takes (what is left is for questions)."""
    share = tokens / window if window else 1.0
    st.progress(min(share, 1.0), text=f"{tokens:,} of {window:,} tokens ({100 * share:.1f}% of the window)")


def pack_record(meta: dict[str, Any]) -> None:
    rows = [{"field": key, "value": str(meta[key])} for key in DETAIL_FIELDS if key in meta]
    st.dataframe(rows, hide_index=True)
    sources = [{"path": s.get("path"), "size": human_bytes(s.get("bytes")), "sha256": (s.get("sha256") or "")[:16]}
               for s in meta.get("sources", [])]
    if sources:
        st.caption(f"{len(sources)} source file(s)")
        st.dataframe(sources, hide_index=True)
