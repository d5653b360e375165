"""Helpers for agent tests: a scripted Granite chat model and Granite-format tool calls.

Imported by the test modules as ``agent_helpers`` (this folder is on sys.path).
"""

from __future__ import annotations

import json
from typing import Any


def scripted_model(replies: list[Any], **backend_options: Any):
    from feldspar.agents.chat_model import ChatGranite
    from feldspar.agents.scripted import ScriptedBackend

    return ChatGranite(backend=ScriptedBackend(replies, **backend_options))


def tool_call(name: str, **arguments: Any) -> str:
    return f'<tool_call>\n{json.dumps({"name": name, "arguments": arguments})}\n</tool_call>'
