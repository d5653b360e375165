"""The words the agent says to Granite: system prompt, citation rule, summary request, stop notes.

Kept stable on purpose: the system prompt and tool list open every prompt of a thread, so
any change here costs a recompute of every saved thread state. Knows text only.
"""

from __future__ import annotations

SYSTEM = (
    "You are Feldspar, a careful assistant that answers from the user's documents. "
    "Passages come back from the search_documents tool as JSON lines, each with a doc_id. "
    "Answer only from those passages and cite every fact with its doc_id in square brackets, "
    "like [2] or [1][3]. If the passages do not contain the answer, say so plainly."
)

PACK_CITATION_NOTE = "Cite the documents you use by their doc_id in square brackets, like [1]."

SUMMARY_REQUEST = (
    "Summarise the conversation above in a few sentences for your own later use: keep the user's "
    "questions, the facts found with their [doc_id] citations, tool results and open points. "
    "Write only the summary."
)

SUMMARY_PREFIX = "Summary of the earlier conversation:\n"

STOP_NOTES = {
    "max_steps": "I stopped after {limit} model turns without a final answer.",
    "max_tool_calls": "I stopped because this question needed more than {limit} tool calls.",
    "repeated_call": "I stopped because the same tool call ({call}) was requested twice.",
    "context_window": "I stopped because the conversation no longer fits the model's context window "
                      "({tokens} of {window} tokens), even after summarising.",
}


def stop_note(reason: str, **values: object) -> str:
    return STOP_NOTES[reason].format(**values)
