"""Text that cannot be tokenised is refused with the place it came from, never a crash.

A Python string can hold an unpaired surrogate (``"\\ud800"`` is valid JSON, and a command-line
argument with bytes that are not UTF-8 arrives as ``\\udcXX``); the tokenizer raises a
``TypeError`` on it. ``check_text`` finds the first one in a value (strings, dicts and lists,
keys too) and raises a ``PromptError`` whose ``param`` names where it is
(``messages.1.content``), so a server answers 400 naming the parameter and a CLI prints one
line. ``check_token_ids`` refuses ids outside the vocabulary before they reach the embedding
(an ``IndexError`` on CPU, a device fault on CUDA). Knows strings and ids; nothing of models.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

from feldspar.model.errors import PromptError

_SURROGATE = re.compile("[\ud800-\udfff]")


def first_surrogate(value: Any, path: str = "") -> tuple[str, int, str] | None:
    """(where, character index, the surrogate) of the first unpaired surrogate in ``value``, else None."""
    if isinstance(value, str):
        found = _SURROGATE.search(value)
        return (path, found.start(), found.group(0)) if found else None
    if isinstance(value, dict):
        for key, item in value.items():
            hit = first_surrogate(key, path) or first_surrogate(item, f"{path}.{key}".lstrip("."))
            if hit:
                return hit
        return None
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            hit = first_surrogate(item, f"{path}.{index}".lstrip("."))
            if hit:
                return hit
    return None


def check_text(value: Any, param: str) -> None:
    """Raise ``PromptError(param=...)`` if ``value`` holds an unpaired surrogate."""
    hit = first_surrogate(value, param)
    if hit is not None:
        where, index, char = hit
        raise PromptError(f"{where} holds an unpaired surrogate (U+{ord(char):04X}) at character {index}, "
                          "which is not valid Unicode text; send UTF-8 text", param=where)


def check_token_ids(ids: Sequence[Any], vocab_size: int, param: str = "prompt") -> None:
    """Raise ``PromptError(param=...)`` for an id that is not an int in ``0..vocab_size-1``."""
    for index, token in enumerate(ids):
        if isinstance(token, bool) or not isinstance(token, int) or not 0 <= token < vocab_size:
            raise PromptError(f"{param}.{index}: token id {token!r} is outside this model's vocabulary "
                              f"(0..{vocab_size - 1})", param=f"{param}.{index}")
