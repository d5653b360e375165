"""Shared by the examples: the command line (--home, --model) and a scripted Granite chat model.

Without --model the examples run on a scripted chat model (replies written in advance, read by
the real Granite tool-call parser), so they need no checkpoint and finish in seconds. With
--model PATH (a checkpoint directory or catalog name) they run on the real engine instead.
"""

from __future__ import annotations

import argparse
import tempfile


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--home", help="Feldspar data home (default: a new temporary folder)")
    parser.add_argument("--model", help="run on this checkpoint instead of the scripted model")
    args = parser.parse_args()
    args.home = args.home or tempfile.mkdtemp(prefix="feldspar-example-")
    return args


def question_of(request: dict) -> str:
    """The last user question of a chat request (what a scripted reply answers)."""
    return next(m["content"] for m in reversed(request["messages"]) if m["role"] == "user")


def scripted_model(replies: list, model: str | None = None):
    """A ChatGranite over scripted replies, or None when a real --model is given."""
    if model:
        return None
    from feldspar.agents.chat_model import ChatGranite
    from feldspar.agents.scripted import ScriptedBackend

    return ChatGranite(backend=ScriptedBackend(replies))
