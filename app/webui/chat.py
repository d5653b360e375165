"""The chat page's data: a thread's turns and the prompt budget, from the agent's own state.

``turns_of(values)`` turns a thread's checkpointed state (messages, passages, trace) into
one plain dict per question: the question, the answer as the agent finalised it (unknown
citations stripped, stop note kept), its sources (the passages it cited), the turn's trace
steps and usage (prompt / reused / computed tokens, TTFT, tokens per second, how full the
window was). ``budget_before`` says, before a question is asked, whether its prompt fits.
Both reuse the agent's functions (final_text, strip_unknown, turn_usage), so the page
shows what the agent decided and re-implements none of it. Knows the agent's state shape;
nothing of Streamlit.
"""

from __future__ import annotations

from typing import Any

from langchain_core.messages import AnyMessage, HumanMessage

from feldspar.agents.steps import BEGIN, COMPACT, FINALIZE, MODEL, RETRIEVE

NEAR_SHARE = 0.9  # warn when a prompt (with its answer) would fill more than this share of the window


def _question(message: HumanMessage) -> str:
    from feldspar.agents.prompts import PACK_CITATION_NOTE

    return str(message.content).removesuffix(f"\n\n{PACK_CITATION_NOTE}")


def _segments(messages: list[AnyMessage]) -> list[list[AnyMessage]]:
    """The thread's messages cut at each question: one list per turn, its question first."""
    segments: list[list[AnyMessage]] = []
    for message in messages:
        if isinstance(message, HumanMessage):
            segments.append([message])
        elif segments:
            segments[-1].append(message)
    return segments


def usage_of(steps: list[dict[str, Any]], turn: int, window: int | None) -> dict[str, Any]:
    """The turn's token counts and speed, and how full its last prompt left the window."""
    from feldspar.agents.nodes import turn_usage

    usage = turn_usage(steps, turn)
    models = [s for s in steps if s.get("node") == MODEL]
    decode = sum(float(s.get("decode_s") or 0) for s in models)
    usage["tokens_per_s"] = usage["completion_tokens"] / decode if decode > 0 else None
    last = models[-1] if models else {}
    filled = int(last.get("prompt_tokens") or 0) + int(last.get("completion_tokens") or 0)
    usage.update(last_prompt_tokens=int(last.get("prompt_tokens") or 0), window=window, window_used=filled,
                 window_share=filled / window if window else None,
                 pack_not_reused=next((s.get("why") for s in steps if s.get("node") == BEGIN
                                       and s.get("pack_reused") is False), None))
    return usage


def turns_of(values: dict[str, Any], window: int | None = None) -> list[dict[str, Any]]:
    """One dict per question of a thread: question, answer, sources, unknown ids, stop reason, trace, usage."""
    from feldspar.agents.citations import strip_unknown
    from feldspar.agents.nodes import final_text

    trace, passages = list(values.get("trace", [])), dict(values.get("passages", {}))
    turns = []
    for number, segment in enumerate(_segments(list(values.get("messages", []))), start=1):
        steps = [s for s in trace if s.get("turn") == number]
        final = next((s for s in steps if s.get("node") == FINALIZE), None)
        turn: dict[str, Any] = {"turn": number, "question": _question(segment[0]), "steps": steps,
                                "usage": usage_of(steps, number, window), "finished": final is not None,
                                "answer": None, "sources": [], "unknown_citations": [], "stop_reason": None}
        if final is not None:
            unknown = list(final.get("unknown_ids") or [])
            text = final_text({"messages": segment, "stop_reason": final.get("stop_reason")
                               if final.get("stop_reason") != "answered" else None})
            turn.update(answer=strip_unknown(text, unknown), unknown_citations=unknown,
                        stop_reason=final.get("stop_reason"),
                        sources=[passages[str(i)] for i in final.get("cited") or [] if str(i) in passages])
        turn["retrieved"] = _uncited(steps, turn["sources"])
        turns.append(turn)
    return turns


def _uncited(steps: list[dict[str, Any]], sources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The passages the turn's searches found that its answer does not cite (once each)."""
    cited = {str(s.get("doc_id")) for s in sources}
    seen: dict[str, dict[str, Any]] = {}
    for hit in (h for s in steps if s.get("node") == RETRIEVE for h in s.get("hits") or []):
        key = str(hit.get("doc_id"))
        if key not in cited and key not in seen:
            seen[key] = hit
    return list(seen.values())


def budget_before(prompt_tokens: int, window: int, max_new_tokens: int, passage_tokens: int,
                  summary_share: float) -> dict[str, Any]:
    """Will a question's prompt fit? ``level``: ok, compact (older turns will be summarised), near or over."""
    with_answer = prompt_tokens + max_new_tokens
    expected = with_answer + passage_tokens
    budget = {"prompt_tokens": prompt_tokens, "max_new_tokens": max_new_tokens, "passage_tokens": passage_tokens,
              "expected_tokens": expected, "window": window, "share": expected / window if window else None}
    if with_answer > window:
        budget.update(level="over", message=(
            f"This question's prompt is {prompt_tokens:,} tokens, plus up to {max_new_tokens:,} for the answer: "
            f"over the model's {window:,}-token context window. Older turns will be summarised first; if it still "
            f"does not fit, the turn stops and says so. Shorten the question, lower max new tokens or start a new "
            f"thread."))
    elif expected > NEAR_SHARE * window:
        budget.update(level="near", message=(
            f"This question's prompt will be about {expected:,} of {window:,} tokens with the retrieved passages "
            f"and the answer: close to the context window. Older turns may be summarised, or the turn stopped."))
    elif prompt_tokens > summary_share * window:
        budget.update(level=COMPACT, message=(
            f"The thread's prompt ({prompt_tokens:,} tokens) is past {summary_share:.0%} of the window: older "
            f"turns will be summarised (nothing is deleted from the thread)."))
    else:
        budget.update(level="ok", message="")
    return budget
