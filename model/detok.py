"""Incremental detokenization: turn a growing list of token ids into text deltas.

A byte-level BPE token can end in the middle of a UTF-8 character, so a delta is only
released once the decoded text no longer ends in a replacement character. Decoding works
on a short sliding window, so streaming a long answer stays linear. The concatenated
deltas equal ``tokenizer.decode(all_ids)``. Knows tokenizers, not models.
"""

from __future__ import annotations

from typing import Any


class Detokenizer:
    def __init__(self, tokenizer: Any, skip_special_tokens: bool = True) -> None:
        self._tokenizer = tokenizer
        self._skip = skip_special_tokens
        self.ids: list[int] = []
        self._prefix_offset = 0
        self._read_offset = 0
        self._emitted = 0

    def _decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=self._skip, clean_up_tokenization_spaces=False)

    def push(self, token_id: int) -> str:
        """Add one token; return the new text it completes (possibly empty)."""
        self.ids.append(token_id)
        prefix_text = self._decode(self.ids[self._prefix_offset : self._read_offset])
        new_text = self._decode(self.ids[self._prefix_offset :])
        if len(new_text) > len(prefix_text) and not new_text.endswith("\ufffd"):
            delta = new_text[len(prefix_text) :]
            self._prefix_offset = self._read_offset
            self._read_offset = len(self.ids)
            self._emitted += len(delta)
            return delta
        return ""

    def flush(self) -> str:
        """Whatever text is still held back (e.g. an incomplete character at the end)."""
        rest = self.text()[self._emitted :]
        self._emitted += len(rest)
        return rest

    def text(self) -> str:
        return self._decode(self.ids)
