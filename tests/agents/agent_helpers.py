"""Helpers for agent tests: a scripted Granite chat model, Granite-format tool calls, the small
collection's documents (``GUIDE``, ``CODE``) and a tools module with a side-effecting tool
(``SAVE_NOTE_TOOLS``), shared by the agent, UI, API and server tests.

Imported as ``from tests.agents.agent_helpers import …``.
"""

from __future__ import annotations

import json
from typing import Any

GUIDE = """# Router guide

## Reset

To reset the Feldspar router, hold the recessed button for ten seconds until the light blinks amber.

## Warranty

The warranty covers hardware faults for two years from purchase.
"""
CODE = '''def hardness(mineral):
    """Mohs hardness of a few minerals."""
    return {"quartz": 7, "feldspar": 6, "mica": 2.5}[mineral]
'''
SAVE_NOTE_TOOLS = '''"""Test tools: one side-effecting tool that appends a note to a file next to this module."""
from pathlib import Path

from feldspar.agents.tools import feldspar_tool

NOTES = Path(__file__).with_name("notes.txt")


@feldspar_tool(side_effects=True)
def save_note(text: str) -> str:
    """Save a note for the user (writes a file)."""
    with NOTES.open("a", encoding="utf-8") as out:
        out.write(text + "\\n")
    return "saved"
'''


def scripted_model(replies: list[Any], **backend_options: Any):
    from feldspar.agents.chat_model import ChatGranite
    from feldspar.agents.scripted import ScriptedBackend

    return ChatGranite(backend=ScriptedBackend(replies, **backend_options))


def tool_call(name: str, **arguments: Any) -> str:
    return f'<tool_call>\n{json.dumps({"name": name, "arguments": arguments})}\n</tool_call>'
