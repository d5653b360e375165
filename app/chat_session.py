"""A multi-turn chat session over the engine: the message history, saved and resumed as JSON.

Follow-up turns re-render the whole history; the engine's prefix state cache makes that
cheap. A turn the engine refuses (e.g. over the context window) or that is interrupted
leaves the history as it was before the turn. ``save`` writes the conversation (messages,
tools, documents) atomically; ``read_saved`` reads it back for ``feldspar chat --resume``.
Knows messages and the engine's public API; nothing of terminals or commands.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from feldspar.inputs import check_items, read_text_file
from feldspar.model.errors import PromptError

SAVE_FORMAT = "feldspar-chat"


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

    @property
    def turns(self) -> int:
        """Messages other than the system prompt."""
        return sum(1 for m in self.messages if m["role"] != "system")

    def send(self, text: str, progress=None):
        """Add a user turn and return the engine's stream; a refused turn is taken back."""
        self.messages.append({"role": "user", "content": text})
        try:
            return self.engine.chat(self.messages, self.tools, self.documents, self.params, progress)
        except BaseException:
            self.messages.pop()
            raise

    def take_back(self) -> None:
        """Drop the last user turn (its reply was interrupted before it finished)."""
        if self.messages and self.messages[-1]["role"] == "user":
            self.messages.pop()

    def record(self, result) -> None:
        """Add the finished reply (with its parsed tool calls) to the history."""
        turn = result.tool_turn(self.tools)
        message: dict[str, Any] = {"role": "assistant", "content": turn.text if turn.calls else result.text}
        if turn.calls:
            message["tool_calls"] = [
                {"type": "function", "function": {"name": c.name, "arguments": c.arguments}} for c in turn.calls
            ]
        self.messages.append(message)

    def resume(self, saved: dict[str, Any]) -> None:
        """Continue a saved conversation; a system prompt given now replaces the saved one."""
        messages = [m for m in saved["messages"] if not (self.system and m["role"] == "system")]
        self.messages = ([{"role": "system", "content": self.system}] if self.system else []) + messages
        if not self.system:
            self.system = next((m["content"] for m in messages if m["role"] == "system"), None)

    def to_dict(self) -> dict[str, Any]:
        return {"format": SAVE_FORMAT, "version": 1, "model": self.engine.name,
                "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "tools": self.tools,
                "documents": self.documents, "messages": self.messages}

    def save(self, path: Path) -> Path:
        """Write the conversation to ``path`` (atomically); never over a file that is not a saved chat."""
        path = Path(path).expanduser()
        if path.is_dir():
            raise PromptError(f"{path} is a directory; give a file name")
        if path.exists() and not _is_saved_chat(path):
            raise PromptError(f"{path} exists and is not a saved chat; choose another file name")
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                json.dump(self.to_dict(), out, indent=2, ensure_ascii=False)
                out.write("\n")
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return path


def _is_saved_chat(path: Path) -> bool:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("format") == SAVE_FORMAT


def read_saved(path: Path) -> dict[str, Any]:
    """A conversation written by ``ChatSession.save``: messages, tools and documents, checked."""
    where = f"saved chat {path}"
    try:
        data = json.loads(read_text_file(path, "saved chat"))
    except json.JSONDecodeError as exc:
        raise PromptError(f"{where} is not valid JSON: {exc.msg} (line {exc.lineno})") from None
    if not isinstance(data, dict) or data.get("format") != SAVE_FORMAT or not isinstance(data.get("messages"), list):
        raise PromptError(f"{path} is not a chat saved by `/save` (no \"format\": \"{SAVE_FORMAT}\" with messages)")
    for key in ("messages", "tools", "documents"):
        items = data.get(key)
        if items is not None and (not isinstance(items, list) or not all(isinstance(i, dict) for i in items)):
            raise PromptError(f"{where}: {key} must be a list of objects")
        if items:
            check_items(items, key, where)
    return data
