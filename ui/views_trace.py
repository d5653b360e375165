"""View functions for an answer's Trace and Prompt budget: the agent's own trace data, drawn.

``render_trace(steps)`` draws the turn's timeline: retrieval (query, hits), each model
turn (tokens, raw output, parsed tool calls, repairs, parse errors), each tool call
(arguments, result or error, duration), approvals, summarisation and why the turn
stopped. ``render_budget(usage)`` draws prompt / reused / computed tokens, TTFT, tokens per
second and how full the model's context window is. Plain dicts in, Streamlit out; no logic
beyond formatting.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from feldspar.agents.steps import APPROVE, BEGIN, COMPACT, FINALIZE, MODEL, RETRIEVE, TOOL, current_name
from feldspar.agents.trace import describe

ICONS = {RETRIEVE: "search", MODEL: "psychology", TOOL: "build", APPROVE: "front_hand",
         COMPACT: "summarize", FINALIZE: "flag", BEGIN: "explore"}  # Material icons ship with Streamlit
STOP_REASONS = {
    "answered": "the model answered", "awaiting_approval": "waiting for your approval",
    "max_steps": "too many model turns", "max_tool_calls": "too many tool calls",
    "repeated_call": "the same tool call was requested twice", "context_window": "the context window was full",
}


def headline(step: dict[str, Any]) -> str:
    """The step's one-line summary (the same words as `feldspar ask --trace`)."""
    return f":material/{ICONS.get(current_name(step.get('node')), 'circle')}: {describe(step).splitlines()[0]}"


def _hits_table(hits: list[dict[str, Any]]) -> None:
    paged = any(h.get("page") is not None for h in hits)  # no "None" column for text files
    rows = [{"doc_id": h.get("doc_id"), "path": h.get("path"), **({"page": h.get("page") or ""} if paged else {}),
             "chars": f"{h.get('start'):,}–{h.get('end'):,}" if h.get("start") is not None else "",
             "heading": h.get("heading") or "",
             "score": h.get("score"), "shown before": bool(h.get("repeat"))} for h in hits]
    if rows:
        st.dataframe(rows, hide_index=True, width="stretch")


def _model_details(step: dict[str, Any]) -> None:
    st.caption("raw output")
    st.code(str(step.get("raw_text") or ""), language=None, wrap_lines=True)
    if step.get("tool_calls"):
        st.caption("parsed tool calls")
        st.json(step["tool_calls"], expanded=False)
    if step.get("repairs"):
        st.caption("repairs: " + "; ".join(map(str, step["repairs"])))
    for error in step.get("parse_errors") or []:
        st.error(f"parse error: {error}")


def _tool_details(step: dict[str, Any]) -> None:
    st.caption(f"arguments · {step.get('duration_s', 0):.3f} s")
    st.json(step.get("args") or {}, expanded=False)
    if step.get("error"):
        st.error(str(step["error"]))
    else:
        st.code(str(step.get("result")), language=None, wrap_lines=True)


def render_step(step: dict[str, Any]) -> None:
    node = current_name(step.get("node"))
    st.markdown(f"**{headline(step)}**")
    if node == RETRIEVE:
        _hits_table(step.get("hits") or [])
    elif node == MODEL:
        _model_details(step)
    elif node == TOOL:
        _tool_details(step)
    elif node == COMPACT and step.get("summary"):
        st.caption("summary")
        st.write(step["summary"])
    elif node == FINALIZE:
        st.caption(f"why the turn stopped: {STOP_REASONS.get(step.get('stop_reason'), step.get('stop_reason'))}")
    elif node == BEGIN and step.get("why"):
        st.caption(str(step["why"]))


def render_trace(steps: list[dict[str, Any]]) -> None:
    if not steps:
        st.caption("no steps recorded")
    for step in steps:
        render_step(step)


def _fmt(value: Any, unit: str = "", digits: int = 2) -> str:
    if value is None:
        return "–"
    return f"{value:.{digits}f}{unit}" if isinstance(value, float) else f"{value:,}{unit}"


def render_budget(usage: dict[str, Any]) -> None:
    """Prompt / reused / computed tokens, TTFT, tokens/s and window fullness of one turn."""
    top = st.columns(3)
    top[0].metric("prompt tokens", _fmt(usage.get("prompt_tokens")))
    top[1].metric("reused", _fmt(usage.get("reused_tokens")))
    top[2].metric("computed", _fmt(usage.get("computed_tokens")))
    low = st.columns(3)
    low[0].metric("TTFT", _fmt(usage.get("ttft_s"), " s"))
    low[1].metric("tokens/s", _fmt(usage.get("tokens_per_s"), "", 1))
    low[2].metric("model calls", _fmt(usage.get("model_calls")))
    if usage.get("pack_not_reused"):
        st.warning(usage["pack_not_reused"])
    share, window = usage.get("window_share"), usage.get("window")
    if window:
        st.progress(min(1.0, share or 0.0), text=f"context window: {usage.get('window_used', 0):,} of "
                                                 f"{window:,} tokens ({(share or 0):.0%}) after the last model call")
        if share is not None and share > 0.9:
            st.warning("The context window is almost full: the next question will make the agent summarise "
                       "older turns, or stop. Start a new thread to keep answers complete.")


def render_budget_warning(budget: dict[str, Any]) -> None:
    """The warnings shown before a question is asked: a pack whose state cannot be reused, a prompt that may not fit."""
    if budget.get("pack_not_reused"):
        st.warning(budget["pack_not_reused"])
    if budget.get("level") in ("over", "near"):
        st.warning(budget["message"], icon="⚠️")
    elif budget.get("level") == COMPACT:
        st.info(budget["message"])
