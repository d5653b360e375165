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


def held_suffix(text: str, markers: Sequence[str]) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of a marker."""
    for size in range(max(len(m) for m in markers) - 1, 0, -1):
        if len(text) >= size and any(m.startswith(text[-size:]) and len(m) > size for m in markers):
            return size
    return 0


class _Tidy:
    """``tidy`` done incrementally: leading whitespace dropped, a whitespace run released only
    when text follows it (runs of 3+ newlines become 2), so the output is always a prefix of
    ``tidy(everything fed)``."""

    _RUNS = re.compile(r"\s+|\S+")

    def __init__(self) -> None:
        self.started = False
        self.pending = ""

    def feed(self, text: str) -> str:
        out: list[str] = []
        for run in self._RUNS.finditer(text):
            piece = run.group(0)
            if piece[0].isspace():
                self.pending += piece
                continue
            if self.started:
                out.append(re.sub(r"\n{3,}", "\n\n", self.pending))
            self.pending, self.started = "", True
            out.append(piece)
        return "".join(out)


class VisibleText:
    def __init__(self, tools: Sequence[dict[str, Any]] | None = None) -> None:
        self.tools = list(tools) if tools else None
        self.table = ToolTable(self.tools) if self.tools else None
        self.markers = (OPEN, CLOSE, FENCE) if self.table is not None else (OPEN, CLOSE)
        self.raw = ""
        self.emitted = ""
        self._decided = 0  # raw[:_decided] is released or dropped for good
        self._bare_possible = self.table is not None
        self._tidy = _Tidy()
        self._fences: dict[str, bool] = {}

    def push(self, delta: str) -> str:
        """Add a raw delta; return the newly certain visible text (possibly empty)."""
        self.raw += delta
        if self._bare_possible:
            if not any(m in self.raw for m in self.markers) and could_be_bare(self.raw.lstrip(), self.table.names):
                return ""
            self._bare_possible = False
        released = self._tidy.feed(self._advance())
        self.emitted += released
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

    def _advance(self) -> str:
        """Decide what can be decided after ``_decided``; return the visible raw text of it."""
        rest = self.raw[self._decided:]
        visible: list[str] = []
        for part in segments(rest, fences=self.table is not None, final=False):
            chunk = rest[part.start:part.end]
            if part.kind == "text":
                keep = len(chunk) - held_suffix(chunk, self.markers) if part.end == len(rest) else len(chunk)
                visible.append(chunk[:keep])
                self._decided += keep
                if keep < len(chunk):
                    break
                continue
            if not part.closed:
                break
            if part.kind == "fence" and not self._is_call_fence(part.body):
                visible.append(chunk)
            self._decided += len(chunk)
        return "".join(visible)
