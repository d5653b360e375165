"""Stop strings: end a streamed generation when the text reaches one of them.

Deltas pass through ``StopScanner.push``; text that might be the start of a stop string is
held back until it is clear, so nothing after (or part of) a stop string is ever emitted.
Torch-free and tokenizer-free: it sees text deltas only, so any backend can use it.
"""

from __future__ import annotations

from typing import Iterable


class StopScanner:
    def __init__(self, stops: Iterable[str] | None = None) -> None:
        self.stops = tuple(s for s in (stops or ()) if s)
        self.stopped = False
        self._pending = ""
        self.emitted: list[str] = []

    def push(self, delta: str) -> str:
        """Add a delta; return the text that is safe to emit now (possibly empty)."""
        if self.stopped or not delta:
            return ""
        if not self.stops:
            self.emitted.append(delta)
            return delta
        self._pending += delta
        cut = min((i for i in (self._pending.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            return self._emit(self._pending[:cut])
        keep = self._partial_suffix(self._pending)
        return self._emit(self._pending[: len(self._pending) - keep], keep)

    def flush(self) -> str:
        """At the end of generation: the held-back text (it never became a stop string)."""
        if self.stopped:
            return ""
        return self._emit(self._pending)

    def text(self) -> str:
        return "".join(self.emitted)

    def _emit(self, text: str, keep: int = 0) -> str:
        self._pending = self._pending[len(self._pending) - keep:] if keep else ""
        if text:
            self.emitted.append(text)
        return text

    def _partial_suffix(self, text: str) -> int:
        """Length of the longest suffix of ``text`` that is a proper prefix of a stop string."""
        best = 0
        for stop in self.stops:
            for size in range(min(len(stop) - 1, len(text)), best, -1):
                if text.endswith(stop[:size]):
                    best = size
                    break
        return best
