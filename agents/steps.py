"""The names of the agent's steps: one name per step for the graph's node, its trace record and its event.

A question runs ``begin`` → ``retrieve`` → ``compact`` → ``model`` → ``approve`` → ``tool`` →
``compact`` … → ``finalize``. Each name is at once the LangGraph node (agents/graph.py), the
``node`` of the trace record the step writes (agents/trace.py; a ``retrieve`` record is also written
by ``tool`` when the model calls ``search_documents``) and the ``kind`` of the ``AgentEvent`` streamed
for that record (agents/runner.py) to the CLI, the web app and the Python API. ``compact`` condenses
a thread's older turns into a summary when its prompt passes the budget; it is not the map-reduce
summarising of documents (agents/summarize.py).

Traces saved by earlier versions used other names (``model_turn``, ``final``, ``summarise`` …):
``current_name`` and ``current_steps`` read them under today's names. Knows strings only.
"""

from __future__ import annotations

from typing import Any, Iterable

BEGIN = "begin"          # a new turn starts; its record (when there is one) says which retrieval mode and why
RETRIEVE = "retrieve"    # a search of the collection (policy ``always``, or a ``search_documents`` call)
COMPACT = "compact"      # older turns condensed into a summary to keep the prompt within its budget
MODEL = "model"          # one model call: tokens, timing, raw text, parsed tool calls
APPROVE = "approve"      # a side-effecting tool call approved or refused
TOOL = "tool"            # the approved tool calls run (one record per call)
FINALIZE = "finalize"    # the answer: why the turn stopped, what it cites

STEPS = (BEGIN, RETRIEVE, COMPACT, MODEL, APPROVE, TOOL, FINALIZE)

# Events that are not steps: streamed text, the finished answer, and a pause for the user's approval.
TOKEN, ANSWER, APPROVAL_REQUEST = "token", "answer", "approval_request"

# Names written by earlier versions: graph nodes and trace records (read from saved threads) and event kinds.
OLD_NAMES = {"mode": BEGIN, "retrieval": RETRIEVE, "summarise": COMPACT, "summary": COMPACT, "agent": MODEL,
             "model_turn": MODEL, "approval": APPROVE, "tools": TOOL, "tool_result": TOOL, "final": FINALIZE,
             "final_step": FINALIZE}


def current_name(name: Any) -> Any:
    """Today's name of a step, given today's or an earlier version's name (anything else: unchanged)."""
    return OLD_NAMES.get(name, name) if isinstance(name, str) else name


def current_steps(trace: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """A saved trace with every record's ``node`` under today's name (new dicts; the saved ones untouched)."""
    return [{**record, "node": current_name(record.get("node"))} if record.get("node") in OLD_NAMES else record
            for record in trace]
