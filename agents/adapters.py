"""The agent's dependencies as named classes: what `AgentDeps` and `Agent` are handed.

The graph (agents/nodes.py) calls ``deps.search(query, k)``, ``deps.count_tokens(messages, tools,
documents)`` and ``deps.run_tool(tool, args)``; the runner (agents/runner.py) calls
``state_hooks.restore(thread_id)`` before a thread's turn and ``state_hooks.save(thread_id)`` after
it. These are the implementations the composition root wires in:

- ``CollectionSearch(service)``: hybrid search of one retrieval service, hits as plain dicts
  (the same callable backs the ``search_documents`` tool);
- ``PromptTokenCounter(chat_model)``: exact prompt token counts as the backend's model sees them;
- ``run_tool_record(tool, args)``: agents/tools.py's ``run_tool`` as the dict the graph records;
- ``EngineThreadStates(engine, directory, budget_bytes)``: a thread's model state saved after each
  turn and restored in a new process (model/thread_states.py).

Knows the public calls of the retrieval service, the chat model and model/thread_states; never
imports torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class CollectionSearch:
    """``search(query, k)`` over a retrieval service: its hits as dicts (text, source, scores …)."""

    def __init__(self, service: Any) -> None:
        self.service = service

    def __call__(self, query: str, k: int) -> list[dict]:
        return [hit.to_dict() for hit in self.service.search(query, k)]


class PromptTokenCounter:
    """Exact prompt token counts for the agent's budget checks, as the backend's model sees them."""

    def __init__(self, chat_model: Any) -> None:
        self.chat_model = chat_model

    def __call__(self, messages: list, tools: list[dict] | None, documents: list[dict] | None) -> int:
        return len(self.chat_model.prompt_token_ids(messages, tools, documents))


def run_tool_record(tool: Any, args: dict) -> dict:
    """Run one tool call (never raises) and return what the graph records of it."""
    from feldspar.agents.tools import run_tool

    return run_tool(tool, args).to_dict()


class EngineThreadStates:
    """Saves the engine's state at the end of each thread turn and restores it in a new process."""

    def __init__(self, engine: Any, directory: Path, budget_bytes: int) -> None:
        self.engine, self.directory, self.budget = engine, directory, budget_bytes
        self.restored: set[str] = set()

    def restore(self, thread_id: str) -> int:
        """Tokens restored for ``thread_id`` (0: nothing saved, already live, or saved by another model)."""
        from feldspar.model.errors import StateError
        from feldspar.model.thread_states import restore_thread_state

        if thread_id in self.restored:
            return 0
        self.restored.add(thread_id)
        try:
            return restore_thread_state(self.engine, self.directory, thread_id)
        except StateError:  # saved by another model (the thread switched models): recompute from its messages
            return 0

    def save(self, thread_id: str) -> None:
        from feldspar.model.thread_states import save_thread_state

        self.restored.add(thread_id)
        save_thread_state(self.engine, self.directory, thread_id, self.engine.last_ids, self.budget,
                          self.engine.last_prompt_ids)
