"""A multi-turn chat session over the engine: keeps the message history, nothing else.

Follow-up turns re-render the whole history; the engine's prefix state cache makes that
cheap. Knows messages and the engine's public API; nothing of terminals.
"""

from __future__ import annotations

from typing import Any


class ChatSession:
    def __init__(self, engine, system: str | None = None, tools: list[dict[str, Any]] | None = None,
                 documents: list[dict[str, Any]] | None = None, params=None) -> None:
        self.engine = engine
        self.system = system
        self.tools = tools
        self.documents = documents
        self.params = params
        self.messages: list[dict[str, Any]] = []
        self.reset()

    def reset(self) -> None:
        self.messages = [{"role": "system", "content": self.system}] if self.system else []

    def send(self, text: str, progress=None):
        """Add a user turn and return the engine's stream for the reply."""
        self.messages.append({"role": "user", "content": text})
        return self.engine.chat(self.messages, self.tools, self.documents, self.params, progress)

    def record(self, result) -> None:
        """Add the finished reply (with its parsed tool calls) to the history."""
        turn = result.tool_turn(self.tools)
        message: dict[str, Any] = {"role": "assistant", "content": turn.text if turn.calls else result.text}
        if turn.calls:
            message["tool_calls"] = [
                {"type": "function", "function": {"name": c.name, "arguments": c.arguments}} for c in turn.calls
            ]
        self.messages.append(message)
