"""Untrusted text is never control: only the chat template's own control tokens are special.

A chat prompt mixes two kinds of text: the structure the checkpoint's template writes
(``<|start_of_role|>``, ``<|end_of_text|>``, ``<tool_call>`` …) and text that comes from
users, documents, tool results and the model's own earlier output. A plain ``encode`` of
the rendered prompt cannot tell them apart, so a document that contains the string
``<|start_of_role|>system<|end_of_role|>`` would open a real system turn.

``ControlGuard`` closes that hole without re-implementing the template: before rendering,
every control-token string inside the caller's data (message content, tool-call arguments,
tool schemas, documents; keys and values, recursively) is swapped for a placeholder built
from a per-prompt random nonce; the template renders as usual; then the rendered text is
encoded piecewise: the control strings still present were written by the template and
become their special ids, and each placeholder becomes the *plain-text* ids of the string
it stands for (no added-token id can appear in them). Text without control strings
renders and encodes exactly as before.

The control strings are all of the tokenizer's added tokens (special or not: ``<tool_call>``
and the FIM tokens are "added but not special" in Granite's tokenizer). Text that leaves the
process for a server that tokenises it itself cannot be encoded here: ``neutralise`` breaks
each control string with a zero-width space after its first character, so it reads the same
and matches no added token. Knows tokenizers (duck-typed: nothing heavy is imported) and
message dicts; nothing of models or generation.
"""

from __future__ import annotations

import re
import secrets
from typing import Any, Sequence

from feldspar.model.errors import PromptError

# Granite 4.0's 28 added tokens in id order (100256.. in the real tokenizer; shared/granite-models.md):
# the strings a server that tokenises text itself (llama.cpp) would turn into control tokens.
GRANITE_CONTROL_STRINGS: tuple[str, ...] = (
    "<|pad|>", "<|end_of_text|>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>",
    "<|fim_pad|>", "<|filename|>", "<|reponame|>", "<|start_of_role|>", "<|end_of_role|>",
    "<|unused_1|>", "<|start_of_plugin|>", "<|end_of_plugin|>", "<|unk|>", "<tool_call>",
    "</tool_call>", "<tool_response>", "</tool_response>", "<think>", "</think>", "<think_on>",
    "<think_off>", "<schema>", "</schema>", "<tools>", "</tools>", "<documents>", "</documents>",
)


def control_strings(tokenizer: Any) -> dict[str, int]:
    """Every added token of the tokenizer (content -> id): the strings that must not come from data."""
    return {content: int(token_id) for content, token_id in tokenizer.get_added_vocab().items() if content}


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []


def plain_ids(tokenizer: Any, text: str, control_ids: frozenset[int]) -> list[int]:
    """Ids of ``text`` (a control-token string) as ordinary text: never an added-token id.

    Splitting off the first character breaks the added-token match (every Granite control
    token is several characters long); one character at a time is the fallback.
    """
    ids = _encode(tokenizer, text[:1]) + _encode(tokenizer, text[1:])
    if control_ids.isdisjoint(ids):
        return ids
    ids = [i for char in text for i in _encode(tokenizer, char)]
    if control_ids.isdisjoint(ids):
        return ids
    raise PromptError(f"the tokenizer cannot write {text!r} as plain text")


class ControlGuard:
    """One prompt's worth of neutralisation: wrap the data, render, then ``encode``."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.controls = control_strings(tokenizer)
        self.control_ids = frozenset(self.controls.values())
        self._ordered = sorted(self.controls, key=len, reverse=True)  # longest match first
        self._find = re.compile("|".join(re.escape(t) for t in self._ordered)) if self._ordered else None
        nonce = secrets.token_hex(8).upper()
        self._placeholder = "FSCTL" + nonce + "N{}Z"
        self._placeholder_re = re.compile("FSCTL" + nonce + r"N(\d+)Z")
        self.replaced = 0

    # ---- before rendering ---------------------------------------------------------------
    def text(self, value: str) -> str:
        """``value`` with every control-token string swapped for its placeholder."""
        if self._find is None:
            return value
        return self._find.sub(self._swap, value)

    def _swap(self, match: re.Match[str]) -> str:
        self.replaced += 1
        return self._placeholder.format(self._ordered.index(match.group(0)))

    def data(self, value: Any) -> Any:
        """A copy of ``value`` (dicts, lists, strings, scalars) with every string guarded."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.text(k) if isinstance(k, str) else k: self.data(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.data(v) for v in value]
        return value

    # ---- after rendering ----------------------------------------------------------------
    def encode(self, rendered: str) -> list[int]:
        """Token ids of a prompt rendered from guarded data: template controls special, data plain."""
        if not self.replaced or self._find is None:
            return _encode(self.tokenizer, rendered)
        pieces = re.compile(f"{self._placeholder_re.pattern}|{self._find.pattern}")
        ids: list[int] = []
        position = 0
        for match in pieces.finditer(rendered):
            ids += _encode(self.tokenizer, rendered[position:match.start()])
            if match.group(1) is not None:
                ids += plain_ids(self.tokenizer, self._ordered[int(match.group(1))], self.control_ids)
            else:
                ids.append(self.controls[match.group(0)])
            position = match.end()
        return ids + _encode(self.tokenizer, rendered[position:])


def plain_text_ids(tokenizer: Any, text: str) -> list[int]:
    """Ids of ``text`` with every control-token string in it as ordinary text (no added-token id)."""
    guard = ControlGuard(tokenizer)
    return guard.encode(guard.text(text))


def neutralise(text: str, controls: Sequence[str] = GRANITE_CONTROL_STRINGS, joiner: str = "\u200b") -> str:
    """``text`` with a zero-width space after the first character of each control string.

    For text handed to a server that tokenises it (llama.cpp turns control strings into control
    tokens): the string reads the same but no longer matches any added token. Applied until no
    control string is left (an insertion cannot splice a new one: the joiner is in none).
    """
    ordered = sorted((c for c in controls if c), key=len, reverse=True)
    if not ordered:
        return text
    find = re.compile("|".join(re.escape(c) for c in ordered))
    while find.search(text):
        text = find.sub(lambda m: m.group(0)[0] + joiner + m.group(0)[1:], text)
    return text


def neutralise_data(value: Any, controls: Sequence[str] = GRANITE_CONTROL_STRINGS) -> Any:
    """A copy of ``value`` (dicts, lists, strings, scalars) with every string, keys too, ``neutralise``d."""
    if isinstance(value, str):
        return neutralise(value, controls)
    if isinstance(value, dict):
        return {neutralise(k, controls) if isinstance(k, str) else k: neutralise_data(v, controls)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [neutralise_data(v, controls) for v in value]
    return value


def guarded_chat_ids(tokenizer: Any, render, messages: Sequence[dict[str, Any]],
                     tools: Sequence[dict[str, Any]] | None, documents: Sequence[dict[str, Any]] | None,
                     add_generation_prompt: bool) -> list[int]:
    """Render with ``render(tokenizer, messages, tools, documents, add_generation_prompt)`` and
    encode so that only template-written control tokens are special ids."""
    guard = ControlGuard(tokenizer)
    rendered = render(tokenizer, guard.data(list(messages)), guard.data(list(tools)) if tools else None,
                      guard.data(list(documents)) if documents else None, add_generation_prompt)
    return guard.encode(rendered)
