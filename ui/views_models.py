"""View functions for the Models page: the catalog, the loaded model, the state cache.

Plain dicts in (as app/webui/models.py shapes them), Streamlit out; no logic beyond formatting.
"""

from __future__ import annotations

from typing import Any

import streamlit as st


def human_bytes(n: int | None) -> str:
    if n is None:
        return "–"
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def render_catalog(rows: list[dict[str, Any]], configured: str | None = None) -> None:
    st.dataframe([{**row, "default": "★" if row["default"] else ""} for row in rows], hide_index=True,
                 width="stretch")
    if configured:
        st.caption(f"Configured model: {configured} (the model setting in config.toml or FELDSPAR_MODEL, "
                   "read when the app starts)")


def choice_line(choice: dict[str, Any]) -> str:
    """``dtype bfloat16 (why) · weights int8 (why) · compiled decode on (why) · kernels · compiled
    prefill scan off``, from what is known."""
    parts = [f"dtype {choice['dtype']} ({choice.get('dtype_reason', '')})" if "dtype" in choice else "",
             f"weights {choice['quant']} ({choice.get('quant_reason', '')})" if "quant" in choice else "",
             f"compiled decode {choice['compile']} ({choice.get('compile_reason', '')})" if "compile" in choice else "",
             choice.get("kernels", ""),
             f"compiled prefill scan {choice['compile_prefill']}" if "compile_prefill" in choice else ""]
    return " · ".join(p for p in parts if p)


def render_loaded(status: dict[str, Any]) -> None:
    """The loaded model's facts, or why it is not loaded."""
    if status.get("chat_backend"):
        st.info(f"Chat answers come from {status['chat_backend']}.")
    if status.get("error"):
        st.error(f"The model could not be loaded: {status['error']}")
    if not status.get("loaded"):
        st.caption(f"`{status.get('configured')}` is not loaded yet: it loads with the first question, "
                   f"or with the button below.")
        return
    if status.get("random_weights"):
        st.warning("RANDOM WEIGHTS: this checkpoint is untrained; its text is noise and every answer is "
                   "labelled so.")
    cols = st.columns(4)
    cols[0].metric("kind", status["kind"])
    cols[1].metric("device", status["device"])
    cols[2].metric("dtype", status["dtype"])
    cols[3].metric("context window", f"{status['context_window']:,}")
    choice = status.get("choice") or {}
    if choice:
        st.caption(f"Chosen for this machine: {choice_line(choice)}.")
    st.dataframe([{"name": status["name"], "source": status["source"], "parameters": f"{status['parameters']:,}",
                   "layers": status["layers"], "chat template": status["chat"],
                   "random weights": status["random_weights"], "state reuse": status["reuse"]}],
                 hide_index=True, width="stretch")


def render_cache(stats: dict[str, Any] | None) -> None:
    """Bytes used of the budget, snapshots and hit rate of the prefix state cache."""
    if stats is None:
        st.caption("no model loaded: no state cache yet")
        return
    if not stats.get("enabled"):
        st.caption("state reuse is off (setting `reuse`): every prompt is computed from scratch")
        return
    share = stats.get("used_share") or 0.0
    st.progress(min(1.0, share), text=f"{human_bytes(stats['bytes'])} of {human_bytes(stats['budget_bytes'])} "
                                      f"budget ({share:.1%})")
    cols = st.columns(3)
    cols[0].metric("snapshots", stats["snapshots"])
    rate = stats.get("hit_rate")
    cols[1].metric("hit rate", "–" if rate is None else f"{rate:.0%}", help="prompts that resumed from a saved state")
    reuse = stats.get("token_reuse")
    cols[2].metric("tokens reused", "–" if reuse is None else f"{reuse:.0%}",
                   help=f"{stats['reused_tokens']:,} of {stats['prompt_tokens']:,} prompt tokens")
