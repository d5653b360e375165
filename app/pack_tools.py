"""Whether a state pack's saved state can serve a chat with the tools that chat offers.

Granite's template renders the tool list before the documents, so a pack prefilled with
one tool set is a different prompt prefix from a chat offering another: its state cannot
be reused and every question would prefill the whole pack again. Packs record the tool
schemas they were made with (model/packs.py ``tools_sha256``); ``reuse_note`` compares
them with the chat's and, when they differ, says so with the fix in words every front end
shares, naming no flag or button: the CLI trace, the web app's budget and trace. Knows pack metadata; nothing of Streamlit.
"""

from __future__ import annotations

from typing import Any


def reuse_note(meta: dict[str, Any], schemas: list[dict] | None) -> dict[str, Any] | None:
    """None when the pack's prefix matches ``schemas``; else the trace's "mode" note saying why not."""
    from feldspar.model.packs import tool_names, tools_digest

    if str(meta.get("tools_sha256") or "") == tools_digest(schemas):
        return None
    made = ", ".join(meta.get("tools") or []) or "no tools"
    now = ", ".join(tool_names(schemas)) or "no tools"
    name = meta.get("name", "?")
    return {"mode": "state pack not reused",
            "why": (f"pack {name!r} was made with {made}; this chat offers {now}, which changes the prompt before "
                    f"the documents, so all {int(meta.get('tokens') or 0):,} pack tokens are computed again for "
                    f"every question. Fix: re-create the pack, replacing it, with the tools module this chat uses."),
            "pack_reused": False}
