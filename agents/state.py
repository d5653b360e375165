"""The agent's graph state: the whole thread plus this question's bookkeeping.

``messages`` is the full conversation and is never trimmed: summarisation only moves
``summary_upto`` forward and keeps a ``summary`` text that stands in for the older part in
the prompt. ``passages`` maps the document ids shown to the model to where they came from,
so cited ids can be checked and mapped back to file spans. ``trace`` accumulates one dict
per step over the life of the thread. Knows LangGraph reducers; nothing of models or tools.
"""

from __future__ import annotations

import operator
from typing import Annotated, Any, TypedDict

from langchain_core.messages import AnyMessage
from langgraph.graph.message import add_messages


def merge_passages(old: dict[str, dict] | None, new: dict[str, dict] | None) -> dict[str, dict]:
    return {**(old or {}), **(new or {})}


class AgentState(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    question: str
    turn: int                       # questions asked in this thread so far
    summary: str                    # stands in for messages[:summary_upto] in the prompt
    summary_upto: int
    passages: Annotated[dict[str, dict], merge_passages]   # doc id -> passage (path, page, span, text …)
    next_doc_id: int
    steps: int                      # model turns for this question
    tool_calls: int                 # tool calls run for this question
    seen_calls: list[str]           # signatures of this question's calls (repeat detection)
    approvals: dict[str, bool]      # tool call id -> approved
    stop_reason: str | None
    answer: dict[str, Any] | None
    trace: Annotated[list[dict], operator.add]
