"""Which chat requests are a client's background tasks, not questions for the agent.

Open WebUI (and other chat front ends) ask the model for a chat title, tags, follow-up
suggestions, search queries or an autocompletion with every user message; sent to
``feldspar-agent`` each would become a full retrieval + answer run stored as a thread.
``utility_task(messages, marked)`` names such a request: a client may mark it with the
``X-Feldspar-Task`` header (Open WebUI: a connection header ``X-Feldspar-Task: {{TASK}}``),
and a last user message in Open WebUI's task-prompt form (``### Task:`` first) is
recognised without one. Knows message dicts; nothing of HTTP or models.
"""

from __future__ import annotations

import re
from typing import Any

TASK_HEADER = "x-feldspar-task"
_TASK_PROMPT = re.compile(r"^\s*#{2,4}\s*Task:", re.IGNORECASE)
_KINDS = (("title", "title_generation"), ("tags", "tags_generation"), ("follow-up", "follow_up_generation"),
          ("follow_up", "follow_up_generation"), ("queries", "query_generation"), ("search quer", "query_generation"),
          ("autocomplet", "autocomplete_generation"), ("emoji", "emoji_generation"))


def utility_task(messages: list[dict[str, Any]], marked: str | None = None) -> str | None:
    """The task's name when this request is a background task (marked, or recognised), else None."""
    if marked and marked.strip() and marked.strip().lower() not in ("0", "false", "no", "none"):
        return marked.strip()[:64]
    last = next((m for m in reversed(messages) if m.get("role") == "user"), None)
    text = str((last or {}).get("content") or "")
    if not _TASK_PROMPT.match(text):
        return None
    head = text[:400].lower()
    return next((name for needle, name in _KINDS if needle in head), "task")
