"""Stream an assistant turn's visible text while it is generated, never its tool calls.

``VisibleText`` takes raw text deltas and releases only text that is certain to stay in
``parse_assistant(raw, tools).text``: text inside a ``<tool_call>`` block, a code fence
that may turn out to hold calls, a possible bare-call reply, a half-written tag and
trailing whitespace are held back until they are decided. ``finish()`` returns the rest,
so the released pieces always add up to exactly the parsed text, however the raw text
was split. It uses the very segmentation the parser uses, which is what makes that hold.
Knows text and the tool-call syntax; nothing of models or chat frameworks.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

from feldspar.model.toolcall_schema import ToolTable
from feldspar.model.toolcalls import CLOSE, FENCE, OPEN, ParsedTurn, could_be_bare, fence_calls, parse_assistant, segments

_TRAILING_SPACE = re.compile(r"\s+$")


def held_suffix(text: str, markers: Sequence[str]) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of a marker."""
    for size in range(max(len(m) for m in markers) - 1, 0, -1):
        if len(text) >= size and any(m.startswith(text[-size:]) and len(m) > size for m in markers):
            return size
    return 0


def tidy_prefix(text: str) -> str:
    """What of ``text`` is certain to start the tidied text (trailing whitespace may still go)."""
    kept = _TRAILING_SPACE.sub("", text.lstrip())
    return re.sub(r"\n{3,}", "\n\n", kept)


class VisibleText:
    def __init__(self, tools: Sequence[dict[str, Any]] | None = None) -> None:
        self.tools = list(tools) if tools else None
        self.table = ToolTable(self.tools) if self.tools else None
        self.markers = (OPEN, CLOSE, FENCE) if self.table is not None else (OPEN, CLOSE)
        self.raw = ""
        self.emitted = ""
        self._fences: dict[str, bool] = {}

    def push(self, delta: str) -> str:
        """Add a raw delta; return the newly certain visible text (possibly empty)."""
        self.raw += delta
        certain = self._certain()
        if len(certain) <= len(self.emitted) or not certain.startswith(self.emitted):
            return ""
        released = certain[len(self.emitted):]
        self.emitted = certain
        return released

    def finish(self, turn: ParsedTurn | None = None) -> tuple[str, ParsedTurn]:
        """The rest of the visible text, and the parsed turn of the whole raw text."""
        turn = turn if turn is not None else parse_assistant(self.raw, self.tools)
        rest = turn.text[len(self.emitted):] if turn.text.startswith(self.emitted) else ""
        self.emitted += rest
        return rest, turn

    def _is_call_fence(self, body: str) -> bool:
        if body not in self._fences:
            self._fences[body] = fence_calls(body, self.table) is not None
        return self._fences[body]

    def _certain(self) -> str:
        parts = segments(self.raw, fences=self.table is not None)
        if self.table is not None and all(p.kind == "text" for p in parts) \
                and could_be_bare(self.raw.lstrip(), self.table.names):
            return ""
        visible: list[str] = []
        for part in parts:
            chunk = self.raw[part.start:part.end]
            if part.kind == "text":
                at_end = part.end == len(self.raw)
                visible.append(chunk[:len(chunk) - held_suffix(chunk, self.markers)] if at_end else chunk)
            elif part.kind in ("tag", "fence") and not part.closed:
                break
            elif part.kind == "fence" and not self._is_call_fence(part.body):
                visible.append(chunk)
        return tidy_prefix("".join(visible))
